"""Latent-code discriminator and the adversarial losses: parity with the official outputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.fixtures as fu

from e4e_jax.convert import e4e as conv
from e4e_jax.convert.common import ConversionError, load_torch_file
from e4e_jax.losses import adversarial as adv
from e4e_jax.models.discriminator import LatentCodesDiscriminator, init_discriminator

FIX = "latent_discriminator"


@pytest.fixture(scope="module")
def fx():
    return fu.load_fixture(FIX)


@pytest.fixture(scope="module")
def disc(fx, tmp_path_factory):
    """(module, params) from the official state dict written with torch.save and converted."""
    path = fu.save_torch(fx.container(), str(tmp_path_factory.mktemp("d") / "d.pt"))
    cfg, variables = conv.convert_discriminator(load_torch_file(path)["discriminator_state_dict"])
    assert cfg == {"style_dim": 512, "n_mlp": 4}
    return LatentCodesDiscriminator(**cfg), variables["params"]


def d_apply_of(module):
    return lambda p, w: module.apply({"params": p}, w)


def check(name, got, fx):
    fu.assert_close(name, got, fx.expected[name], fu.suggested_atol(FIX, name))


def test_predictions(disc, fx):
    module, params = disc
    check("real_pred", module.apply({"params": params}, fx.inputs["real_w"]), fx)
    check("fake_pred", module.apply({"params": params}, fx.inputs["fake_w"]), fx)


def test_losses(disc, fx):
    module, params = disc
    real = module.apply({"params": params}, fx.inputs["real_w"])
    fake = module.apply({"params": params}, fx.inputs["fake_w"])
    check("d_loss", adv.d_logistic_loss(real, fake), fx)
    real_loss, fake_loss = adv.d_logistic_loss_terms(real, fake)
    check("d_real_loss", real_loss, fx)
    check("d_fake_loss", fake_loss, fx)
    check("enc_adv_loss", adv.g_nonsaturating_loss(fake), fx)


def test_r1_penalty_and_gradient(disc, fx):
    module, params = disc
    d_apply = d_apply_of(module)
    penalty, grad = jax.jit(lambda p, w: adv.r1_penalty(d_apply, p, w))(params,
                                                                        fx.inputs["real_w"])
    check("r1_penalty", penalty, fx)
    check("r1_grad", grad, fx)
    # the regulariser is trained through: its gradient w.r.t. the weights exists and is finite
    g = jax.grad(lambda p: adv.r1_penalty(d_apply, p, fx.inputs["real_w"])[0])(params)
    leaves = jax.tree_util.tree_leaves(g)
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
    assert float(jnp.abs(g["dense_0"]["kernel"]).max()) > 0


def test_latent_adversarial_loss_rows(disc, fx):
    """Mean over the discriminated W+ rows: rows 0..stage while training progressively."""
    module, params = disc
    d_apply = d_apply_of(module)
    rng = np.random.default_rng(0)
    w_plus = rng.standard_normal((3, 6, 512)).astype(np.float32)
    per_row = [float(adv.g_nonsaturating_loss(module.apply({"params": params}, w_plus[:, i])))
               for i in range(6)]
    f = jax.jit(lambda p, w, s: adv.latent_adversarial_loss(d_apply, p, w, s))
    for stage in (0, 2, 5, 18):
        want = np.mean(per_row[:min(stage, 5) + 1])
        np.testing.assert_allclose(float(f(params, w_plus, stage)), want, rtol=1e-6)
    np.testing.assert_allclose(float(adv.latent_adversarial_loss(d_apply, params, w_plus)),
                               np.mean(per_row), rtol=1e-6)


def test_init_is_torch_linear():
    v = init_discriminator(jax.random.PRNGKey(0))
    p = v["params"]
    assert sorted(p) == ["dense_0", "dense_1", "dense_2", "dense_3"]
    assert p["dense_3"]["kernel"].shape == (512, 1)
    bound = 1 / np.sqrt(512)
    for layer in p.values():
        for leaf in layer.values():
            a = np.asarray(leaf)
            assert np.abs(a).max() <= bound
            if a.size > 100:     # uniform over the whole interval
                assert np.abs(a).max() > 0.95 * bound and abs(a.mean()) < 0.1 * bound


def test_converter_errors(fx):
    state = dict(fx.container()["discriminator_state_dict"])
    bad = {k: v for k, v in state.items() if k != "mlp.2.bias"}
    with pytest.raises(ConversionError, match=r"missing keys \(1\): mlp\.2\.bias"):
        conv.convert_discriminator(bad)
    bad = dict(state, **{"mlp.4.weight": np.zeros((512, 256), np.float32)})
    with pytest.raises(ConversionError, match=r"wrong shape for mlp\.4\.weight"):
        conv.convert_discriminator(bad)
    with pytest.raises(ConversionError, match="not a LatentCodesDiscriminator"):
        conv.convert_discriminator({"weight": np.zeros(3)})
