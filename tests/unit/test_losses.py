"""The pure loss functions of e4e_jax.losses and the registry that combines them.

Latent terms are checked against direct transcriptions of the official training coach
(training/coach.py calc_loss / discriminator_loss / discriminator_r1_loss) and pSp's WNormLoss,
evaluated with torch; the discriminator terms also against the latent_discriminator fixture.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.convert.e4e import convert_discriminator
from e4e_jax import losses
from e4e_jax.losses import adversarial
from e4e_jax.losses import LossInputs, LossNet
from e4e_jax.models.arcface import ArcFace
from e4e_jax.models.discriminator import LatentCodesDiscriminator
from e4e_jax.models.lpips import LPIPS
from tests.support.fixtures import assert_close, load_fixture, suggested_atol

torch = pytest.importorskip("torch")
F = torch.nn.functional

N_LATENT, DIM = 6, 16


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def tiny_disc():
    module = LatentCodesDiscriminator(DIM, 3)
    return LossNet(module, module.init(jax.random.key(1), jnp.zeros((1, DIM))))


@pytest.fixture(scope="module")
def w_plus():
    r = _rng(2)
    w = r.standard_normal((4, 1, DIM)).astype(np.float32)
    deltas = 0.3 * r.standard_normal((4, N_LATENT, DIM)).astype(np.float32)
    deltas[:, 0] = 0
    latent_avg = r.standard_normal((N_LATENT, DIM)).astype(np.float32)
    # like the official `latent`: codes (w repeated + deltas) plus latent_avg, here with distinct
    # rows so a broadcast of row 0 would be caught
    return (w + deltas + latent_avg).astype(np.float32), latent_avg


# ------------------------------------------------------------------------------------------ #
# image terms
# ------------------------------------------------------------------------------------------ #

def test_l2_matches_torch_mse():
    r = _rng(3)
    a = r.standard_normal((2, 8, 8, 3)).astype(np.float32)
    b = r.standard_normal((2, 8, 8, 3)).astype(np.float32)
    want = F.mse_loss(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert_close("l2_loss", losses.l2_loss(jnp.asarray(a), jnp.asarray(b)), want, 1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        losses.l2_loss(jnp.asarray(a), jnp.asarray(b[:1]))


# ------------------------------------------------------------------------------------------ #
# discriminator terms (latent_discriminator fixture)
# ------------------------------------------------------------------------------------------ #

def test_discriminator_terms_match_fixture():
    name = "latent_discriminator"
    fx = load_fixture(name)
    config, variables = convert_discriminator(fx.container()["discriminator_state_dict"])
    disc = LossNet(LatentCodesDiscriminator(config["style_dim"], config["n_mlp"]), variables)
    real_w, fake_w = jnp.asarray(fx.inputs["real_w"]), jnp.asarray(fx.inputs["fake_w"])

    d_loss, parts = jax.jit(losses.discriminator_loss)(disc, real_w, fake_w)
    for key, got in (("d_loss", d_loss), ("d_real_loss", parts["d_real_loss"]),
                     ("d_fake_loss", parts["d_fake_loss"])):
        assert_close(f"{name} {key}", got, fx.expected[key], suggested_atol(name, key))
    r1 = jax.jit(losses.discriminator_r1_loss)(disc, real_w)
    assert_close(f"{name} r1_penalty", r1, fx.expected["r1_penalty"],
                 suggested_atol(name, "r1_penalty"))
    # one discriminated row: the encoder's term is softplus(-D(fake_w)).mean()
    adv = losses.encoder_adversarial_loss(disc, fake_w[:, None, :])
    assert_close(f"{name} enc_adv_loss", adv, fx.expected["enc_adv_loss"],
                 suggested_atol(name, "enc_adv_loss"))
    # the R1 term is differentiable w.r.t. the discriminator (the training step needs that)
    g = jax.grad(lambda v: losses.discriminator_r1_loss(LossNet(disc.module, v), real_w))(
        disc.variables)
    leaves = jax.tree_util.tree_leaves(g)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert max(float(jnp.abs(x).max()) for x in leaves) > 0


def test_reexports_are_the_adversarial_functions():
    assert losses.d_logistic_loss is adversarial.d_logistic_loss
    assert losses.g_nonsaturating_loss is adversarial.g_nonsaturating_loss
    assert losses.r1_penalty is adversarial.r1_penalty


def _official_adv(disc, w_plus, stage):
    """Coach.calc_loss's adversarial loop, with D evaluated row by row."""
    dims = list(range(N_LATENT)) if stage is None else list(range(N_LATENT))[:stage + 1]
    total = 0.0
    for i in dims:
        pred = torch.from_numpy(np.array(disc(jnp.asarray(w_plus[:, i, :]))))
        total += F.softplus(-pred).mean().item()
    return total / len(dims)


@pytest.mark.parametrize("stage", [None, 0, 2, N_LATENT - 1, 18])
def test_encoder_adversarial_loss_rows(tiny_disc, w_plus, stage):
    w, _ = w_plus
    want = _official_adv(tiny_disc, w, stage)
    got = losses.encoder_adversarial_loss(tiny_disc, jnp.asarray(w), stage)
    assert_close(f"adv stage {stage}", got, want, 1e-6)
    if stage is not None:  # a traced stage gives the same value
        traced = jax.jit(losses.encoder_adversarial_loss)(tiny_disc, jnp.asarray(w),
                                                         jnp.int32(stage))
        assert_close(f"adv traced stage {stage}", traced, want, 1e-6)


def test_discriminated_rows():
    assert np.asarray(losses.discriminated_rows(5, None)).all()
    np.testing.assert_array_equal(np.asarray(losses.discriminated_rows(5, 2)),
                                  [True, True, True, False, False])
    assert np.asarray(losses.discriminated_rows(5, 18)).all()


# ------------------------------------------------------------------------------------------ #
# delta regularization (eq. 1) and W-norm
# ------------------------------------------------------------------------------------------ #

def _official_delta(w_plus, stage, p):
    """Coach.calc_loss's delta loop (progressive training; stage 18 = Inference skips it)."""
    if stage is None or stage == 18:
        return 0.0, {}
    latent = torch.from_numpy(w_plus)
    first_w = latent[:, 0, :]
    total, per = 0.0, {}
    for i in range(1, stage + 1):
        delta = latent[:, i, :] - first_w
        per[i] = torch.norm(delta, p, dim=1).mean().item()
        total += per[i]
    return total, per


@pytest.mark.parametrize("stage,p", [(None, 2), (0, 2), (1, 2), (3, 2), (N_LATENT - 1, 2),
                                     (18, 2), (3, 1)])
def test_delta_regularization_matches_official(w_plus, stage, p):
    w, _ = w_plus
    want, per = _official_delta(w, stage, p)
    total, per_delta = losses.delta_regularization(jnp.asarray(w), stage, p)
    assert_close(f"d_reg stage {stage} p {p}", total, want, 1e-5)
    assert per_delta.shape == (N_LATENT - 1,)
    for i in range(1, N_LATENT):
        assert_close(f"delta{i}", per_delta[i - 1], per.get(i, 0.0), 1e-5)
    if stage is not None:
        traced, _ = jax.jit(losses.delta_regularization, static_argnums=2)(
            jnp.asarray(w), jnp.int32(stage), p)
        assert_close(f"d_reg traced stage {stage}", traced, want, 1e-5)


def test_delta_regularization_gradient_with_equal_rows():
    # at the start of a stage the new deltas are exactly zero; the gradient must stay finite
    w = jnp.tile(jnp.asarray(_rng(4).standard_normal((2, 1, DIM)), jnp.float32), (1, N_LATENT, 1))
    w = w.at[:, 1].add(0.1)
    g = jax.grad(lambda a: losses.delta_regularization(a, 3)[0])(w)
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    assert np.abs(g[:, 1]).max() > 0 and np.abs(g[:, 4:]).max() == 0


def test_w_norm_matches_pSp(w_plus):
    w, latent_avg = w_plus
    lat = torch.from_numpy(w)
    want = (torch.sum((lat - torch.from_numpy(latent_avg)).norm(2, dim=(1, 2))) / w.shape[0]).item()
    assert_close("w_norm", losses.w_norm_loss(jnp.asarray(w), jnp.asarray(latent_avg)), want, 1e-5)
    want_raw = (torch.sum(lat.norm(2, dim=(1, 2))) / w.shape[0]).item()
    assert_close("w_norm no avg", losses.w_norm_loss(jnp.asarray(w)), want_raw, 1e-5)


# ------------------------------------------------------------------------------------------ #
# registry
# ------------------------------------------------------------------------------------------ #

@pytest.fixture(scope="module")
def tiny_inputs(tiny_disc, w_plus):
    r = _rng(5)
    y = r.uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32)
    y_hat = np.clip(y + 0.2 * r.standard_normal(y.shape), -1, 1).astype(np.float32)
    x = np.clip(y + 0.1 * r.standard_normal(y.shape), -1, 1).astype(np.float32)
    probe = jnp.zeros((1, 64, 64, 3))
    lp = LPIPS("alex")
    lp_net = LossNet(lp, random_variables(lp, 3, probe, probe))
    arc = ArcFace(widths=(8, 8, 8, 8), units=(1, 1, 1, 1), embedding_dim=16)
    arc_net = LossNet(arc, random_variables(arc, 4, jnp.zeros((1, 256, 256, 3))))
    w, latent_avg = w_plus
    return LossInputs(x=jnp.asarray(x), y=jnp.asarray(y), y_hat=jnp.asarray(y_hat),
                      w_plus=jnp.asarray(w[:2]), latent_avg=jnp.asarray(latent_avg),
                      progressive_stage=jnp.int32(3),
                      nets={"lpips": lp_net, "id": arc_net, "discriminator": tiny_disc})


def random_variables(module, seed, *args):
    """Fan-in scaled random weights without tracing `init` (only its shapes)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    r = _rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name in ("var", "scale"):
            return jnp.ones(s.shape, s.dtype)
        if name in ("mean", "bias"):
            return jnp.zeros(s.shape, s.dtype)
        if name == "alpha":
            return jnp.full(s.shape, 0.25, s.dtype)
        fan_in = int(np.prod(s.shape[:-1]))
        return jnp.asarray(r.standard_normal(s.shape) * np.sqrt(2.0 / fan_in), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


WEIGHTS = {"l2": 1.0, "lpips": 0.8, "id": 0.1, "d_reg": 2e-4, "adv": 0.1, "w_norm": 0.005}


def test_combine_is_the_weighted_sum(tiny_inputs):
    i = tiny_inputs
    total, metrics = jax.jit(lambda inp: losses.combine(WEIGHTS, inp))(i)

    @jax.jit
    def separately(i):
        return {
            "l2": losses.l2_loss(i.y_hat, i.y),
            "lpips": losses.lpips_loss(i.nets["lpips"], i.y_hat, i.y),
            "id": losses.similarity_loss(i.nets["id"], i.y_hat, i.y, i.x)[0],
            "d_reg": losses.delta_regularization(i.w_plus, 3)[0],
            "adv": losses.encoder_adversarial_loss(i.nets["discriminator"], i.w_plus, 3),
            "w_norm": losses.w_norm_loss(i.w_plus, i.latent_avg),
        }

    parts = separately(i)
    want = sum(WEIGHTS[k] * float(v) for k, v in parts.items())
    assert_close("combine total", total, want, 1e-5)
    for k, v in parts.items():
        assert_close(f"combine loss_{k}", metrics[f"loss_{k}"], v, 1e-5)
    expected_keys = ({f"loss_{k}" for k in WEIGHTS} | {"loss", "id_improve", "total_delta_loss"}
                     | {f"delta{k}_loss" for k in range(1, N_LATENT)})
    assert set(metrics) == expected_keys
    assert all(np.shape(v) == () for v in metrics.values())
    assert float(metrics["delta4_loss"]) == 0.0 and float(metrics["delta3_loss"]) > 0


@pytest.mark.slow
def test_combine_gradients_reach_images_and_latents(tiny_inputs):
    def total(y_hat, w, inputs):
        return losses.combine(WEIGHTS, inputs.replace(y_hat=y_hat, w_plus=w))[0]

    # the frozen networks travel as an argument (a pytree), the stage as traced data
    g_img, g_w = jax.jit(jax.grad(total, argnums=(0, 1)))(tiny_inputs.y_hat, tiny_inputs.w_plus,
                                                          tiny_inputs)
    for name, g in (("y_hat", g_img), ("w_plus", g_w)):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), name
        assert np.abs(g).max() > 0, name
    # rows beyond the stage get gradient only from W-norm (not d_reg, not adv)
    only_wnorm = jax.grad(lambda w: WEIGHTS["w_norm"] * losses.w_norm_loss(
        w, tiny_inputs.latent_avg))(tiny_inputs.w_plus)
    np.testing.assert_allclose(np.asarray(g_w)[:, 4:], np.asarray(only_wnorm)[:, 4:],
                               rtol=1e-5, atol=1e-9)


def test_zero_weights_are_skipped(tiny_inputs):
    bare = tiny_inputs.replace(nets={})
    total, metrics = losses.combine({"l2": 1.0, "lpips": 0.0, "id": 0}, bare)
    assert set(metrics) == {"loss_l2", "loss"}
    assert_close("l2 only", total, losses.l2_loss(bare.y_hat, bare.y), 1e-7)


def test_combine_errors(tiny_inputs):
    with pytest.raises(KeyError, match="unknown loss term.*registered"):
        losses.combine({"l2": 1.0, "perceptual": 1.0}, tiny_inputs)
    with pytest.raises(KeyError, match="load_lpips"):
        losses.combine({"lpips": 1.0}, tiny_inputs.replace(nets={}))
    with pytest.raises(ValueError, match="w_plus"):
        losses.combine({"d_reg": 1.0}, tiny_inputs.replace(w_plus=None))
    with pytest.raises(ValueError, match="identifier"):
        losses.register_loss("not a name")


def test_options_reach_the_term(tiny_inputs):
    _, metrics = losses.combine({"d_reg": 1.0}, tiny_inputs, options={"d_reg": {"p": 1}})
    want = losses.delta_regularization(tiny_inputs.w_plus, 3, p=1)[0]
    assert_close("d_reg p=1 via options", metrics["loss_d_reg"], want, 1e-6)


# a new latent-space regularizer, defined here only: one function and a name
@pytest.fixture
def custom_term():
    @losses.register_loss("test_delta_l1")
    def delta_l1(inputs: LossInputs, scale: float = 1.0):
        d = inputs.latents("test_delta_l1")[:, 1:] - inputs.w_plus[:, :1]
        value = scale * jnp.mean(jnp.abs(d))
        return value, {"test_delta_max": jnp.max(jnp.abs(d))}

    yield delta_l1
    losses.unregister_loss("test_delta_l1")


def test_new_term_from_a_test_file(tiny_inputs, custom_term):
    assert "test_delta_l1" in losses.registered_losses()
    weights = {"l2": 1.0, "test_delta_l1": 0.5}

    @jax.jit
    def step(w, inputs):
        return losses.combine(weights, inputs.replace(w_plus=w),
                              options={"test_delta_l1": {"scale": 2.0}})

    total, metrics = step(tiny_inputs.w_plus, tiny_inputs)
    d = np.asarray(tiny_inputs.w_plus[:, 1:] - tiny_inputs.w_plus[:, :1])
    assert_close("custom term", metrics["loss_test_delta_l1"], 2.0 * np.abs(d).mean(), 1e-6)
    assert_close("custom metric", metrics["test_delta_max"], np.abs(d).max(), 1e-6)
    assert_close("custom total", total, float(metrics["loss_l2"]) + 0.5 * 2.0 * np.abs(d).mean(),
                 1e-6)
    g = jax.grad(lambda w: step(w, tiny_inputs)[0])(tiny_inputs.w_plus)
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
    # the name is taken now
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss("test_delta_l1")(lambda inputs: 0.0)
    losses.register_loss("test_delta_l1", overwrite=True)(custom_term)


def test_term_must_return_a_scalar(tiny_inputs):
    losses.register_loss("test_vector")(lambda inputs: jnp.zeros(3))
    try:
        with pytest.raises(ValueError, match="scalar"):
            losses.combine({"test_vector": 1.0}, tiny_inputs)
    finally:
        losses.unregister_loss("test_vector")
