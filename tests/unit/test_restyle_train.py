"""ReStyle training (e4e_jax.train.restyle): the official recipe's gradient and the config.

The official coach (coach_restyle_e4e.py `perform_train_iteration_on_batch`) calls
`loss.backward()` once per iteration on detached copies of the previous output, then one
`optimizer.step()`: the batch's gradient is the SUM of the per-iteration gradients, each with the
previous W+ and reconstruction held constant. `test_gradient_is_the_sum_of_per_iteration_grads`
computes those per-iteration gradients one by one, in a Python loop with concrete (hence
constant) previous outputs, and compares with the scanned step's single gradient.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax import losses as L
from e4e_jax.inversion import restyle as inversion_restyle
from e4e_jax.models.discriminator import init_discriminator
from e4e_jax.train import restyle
from e4e_jax.train import setup as S
from e4e_jax.train.errors import TrainingError
from tests.support.train_utils import tiny_config

N_ITERS = 3


def restyle_config(**overrides):
    base = {"encoder.type": "ProgressiveBackboneEncoder", "encoder.n_iters_per_batch": N_ITERS,
            "encoder.init": "random"}
    base.update(overrides)
    return tiny_config(**base)


@pytest.fixture(scope="module")
def built():
    setup = S.build(restyle_config())
    state = S.create_train_state(setup)
    return setup, state


def _inputs(setup, state):
    spec = setup.spec
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    disc = init_discriminator(jax.random.key(3), spec.inverter.generator.style_dim)["params"]
    nets = {"discriminator": L.LossNet(spec.discriminator, {"params": disc})}
    stage = jnp.int32(2)   # deltas 1..2 on: d-reg and the adversarial rows both matter
    return spec, x, nets, stage


@pytest.mark.slow   # compiles the scanned step (minutes on a shared 2-core CPU)
def test_gradient_is_the_sum_of_per_iteration_grads(built):
    setup, state = built
    spec, x, nets, stage = _inputs(setup, state)
    gen, la = setup.frozen["generator"], setup.frozen["latent_avg"]
    k_noise, k_loss = jax.random.key(11), jax.random.key(12)
    params, stats = state.params, state.batch_stats
    assert spec.weights_dict["adv"] > 0 and spec.weights_dict["d_reg"] > 0

    @jax.jit
    def scanned(p):
        return jax.value_and_grad(
            lambda q: restyle.iterations_loss(spec, q, stats, x, x, stage, stage, la, gen, nets,
                                              k_noise, k_loss)[0])(p)

    total, grads = scanned(params)

    inv = spec.inverter

    @jax.jit
    def one_iteration(p, st, w_prev, y_prev, t):
        """Iteration t alone, with w_prev / y_prev given as constants (official detach)."""
        def loss(q):
            x6 = jnp.concatenate([x, y_prev], -1)
            codes, upd = inv.module.apply({"params": q, "batch_stats": st}, x6, train=True,
                                          mutable=["batch_stats"], progressive_stage=stage)
            w = codes + w_prev
            y_hat = inv.apply_decode(gen, w, noise="random", rng=jax.random.fold_in(k_noise, t))
            inputs = L.LossInputs(x=x, y=x, y_hat=y_hat, w_plus=w, latent_avg=la,
                                  progressive_stage=stage, nets=nets,
                                  rng=jax.random.fold_in(k_loss, t), extras={})
            value, _ = L.combine(spec.weights_dict, inputs, spec.options_dict)
            return value, (w, y_hat, upd["batch_stats"])
        return jax.value_and_grad(loss, has_aux=True)(p)

    avg = inversion_restyle.apply_average_image(inv, gen, la)
    w_prev = jnp.broadcast_to(la[None], (2,) + la.shape)
    y_prev = jnp.broadcast_to(avg, x.shape)
    st, values, summed = stats, [], None
    for t in range(N_ITERS):
        (value, (w_prev, y_prev, st)), g = one_iteration(params, st, w_prev, y_prev, t)
        values.append(float(value))
        summed = g if summed is None else jax.tree_util.tree_map(jnp.add, summed, g)
    np.testing.assert_allclose(float(total), sum(values), rtol=1e-5)
    flat_s, flat_g = jax.tree_util.tree_leaves(summed), jax.tree_util.tree_leaves(grads)
    # float32 rounding of two programs (one scan, N separate calls) through training-mode
    # BatchNorm: 1e-4 of the largest gradient entry (a missing detach moves them by O(1); the
    # biases before a BatchNorm have gradients of rounding size only)
    scale = max(float(np.abs(np.asarray(a)).max()) for a in flat_s)
    for a, b in zip(flat_s, flat_g):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=1e-4 * scale)
    # and it is not the gradient of the last iteration alone (the sum is what is tested)
    last = jax.tree_util.tree_leaves(one_iteration(params, st, w_prev, y_prev, N_ITERS - 1)[1])
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(last, flat_g)) > 1e-4


@pytest.mark.slow   # compiles the scanned step (minutes on a shared 2-core CPU)
def test_one_train_step_updates_once_and_reports_every_iteration(built):
    setup, state = built
    state = jax.tree_util.tree_map(jnp.copy, state)       # the step donates its state
    new, metrics = setup.train_step(state, setup.frozen, {})
    assert int(new.step) == 1 and bool(metrics["all_finite"])
    per_iter = [float(metrics[f"loss_iteration_{t + 1}"]) for t in range(N_ITERS)]
    # the official loss dict is the last iteration's
    assert float(metrics["loss"]) == pytest.approx(per_iter[-1], rel=1e-6)
    assert f"loss_iteration_{N_ITERS + 1}" not in metrics


@pytest.mark.slow   # compiles the scanned step (minutes on a shared 2-core CPU)
def test_reconstruct_is_the_inference_loop(built):
    setup, state = built
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
    w, rec = setup.reconstruct(state, setup.frozen, x)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    ws, recs = inversion_restyle.apply_restyle(setup.inverter, variables,
                                               setup.frozen["generator"],
                                               setup.frozen["latent_avg"], x, N_ITERS,
                                               progressive_stage=jnp.int32(0))
    np.testing.assert_allclose(np.asarray(w), np.asarray(ws[-1]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(rec), np.asarray(recs[-1]), atol=1e-5)


@pytest.mark.parametrize("overrides,needle", [
    ({"encoder.type": "Encoder4Editing", "encoder.n_iters_per_batch": 2},
     "applies to the ReStyle encoders"),
    ({"encoder.n_iters_per_batch": 0}, "n_iters_per_batch must be >= 1"),
    ({"start_from_latent_avg": False}, "start_from_latent_avg=True"),
])
def test_config_refusals(overrides, needle):
    with pytest.raises(TrainingError, match=needle):
        S.build(restyle_config(**overrides))


def test_progressive_needs_an_e4e_kind_encoder():
    with pytest.raises(TrainingError, match="progressive training"):
        S.build(restyle_config(**{"encoder.type": "BackboneEncoder"}))


def test_arcface_init_puts_the_rgb_kernel_in_the_first_three_channels(monkeypatch):
    """Official __get_encoder_checkpoint for input_nc = 6: ArcFace's input layer and body, its
    RGB kernel in input channels 0..2, random values in 3..5."""
    from types import SimpleNamespace

    from e4e_jax.models import encoders as E
    from e4e_jax.nets import loss_nets
    c = restyle_config(**{"encoder.init": "arcface", "encoder.arcface": "unused"})
    e = c.encoder
    rgb_cfg = E.encoder_config("Encoder4Editing", 6, (16, 16), widths=tuple(e.widths),
                               units=tuple(e.units) if e.units else None, style_dim=512,
                               head_width=e.head_width)
    arc = E.init_encoder(jax.random.key(5), rgb_cfg)
    monkeypatch.setattr(loss_nets, "load_arcface", lambda path: SimpleNamespace(variables=arc))
    setup = S.build(c)
    state = S.create_train_state(setup)
    k = np.asarray(state.params["input_layer"]["conv"]["kernel"])
    want = np.asarray(arc["params"]["input_layer"]["conv"]["kernel"])
    assert k.shape == want.shape[:2] + (6, want.shape[3])
    np.testing.assert_array_equal(k[:, :, :3], want)
    assert np.std(k[:, :, 3:]) > 0.5                  # N(0, 1), not ArcFace's small weights
    for a, b in zip(jax.tree_util.tree_leaves(state.params["body"]),
                    jax.tree_util.tree_leaves(arc["params"]["body"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
