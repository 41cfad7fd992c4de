"""MoCo v2 ResNet-50 similarity loss against the official criteria/moco_loss.py outputs.

The fixture weights are written as a MoCo checkpoint ({'state_dict': module.encoder_q.*}) with
torch.save, converted by `e4e-jax convert moco`'s CLI and read back with e4e_jax.load_moco.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import e4e_jax
from e4e_jax.convert import moco as moco_cli
from e4e_jax import losses
from e4e_jax.models.resnet import l2_normalize, resize_nearest
from tests.support.fixtures import (assert_close, load_fixture, nchw_to_nhwc, save_torch,
                           suggested_atol)

NAME = "moco_resnet50"


@pytest.fixture(scope="module")
def moco(tmp_path_factory):
    fx = load_fixture(NAME)
    tmp = tmp_path_factory.mktemp("moco")
    src = save_torch(fx.container(), str(tmp / "moco_v2_800ep_pretrain.pth.tar"))
    dst = str(tmp / "converted")
    assert moco_cli.main([src, dst]) == 0
    images = {k: nchw_to_nhwc(fx.inputs[k]) for k in ("x", "y", "y_hat")}
    return fx, e4e_jax.load_moco(dst), images


def test_parity_features(moco):
    fx, net, images = moco
    for k in ("x", "y", "y_hat"):
        f = net.features(images[k])
        assert f.shape == (3, 2048)
        assert_close(f"{NAME} feats_{k}", f, fx.expected[f"feats_{k}"],
                     suggested_atol(NAME, f"feats_{k}"))


def test_parity_loss(moco):
    fx, net, images = moco
    loss, improvement, sims = net.loss(images["y_hat"], images["y"], images["x"])
    assert_close(f"{NAME} loss", loss, fx.expected["loss"], suggested_atol(NAME, "loss"))
    assert_close(f"{NAME} sim_improvement", improvement, fx.expected["sim_improvement"],
                 suggested_atol(NAME, "sim_improvement"))
    assert_close(f"{NAME} sim_logs", sims, fx.expected["sim_logs"], suggested_atol(NAME, "sim_logs"))


def test_registry_id_term_with_moco(moco):
    fx, net, images = moco
    inputs = losses.LossInputs(x=jnp.asarray(images["x"]), y=jnp.asarray(images["y"]),
                               y_hat=jnp.asarray(images["y_hat"]), nets={"id": net.net})
    total, metrics = jax.jit(lambda i: losses.combine({"id": 1.0}, i))(inputs)
    assert_close(f"{NAME} combine loss_id", metrics["loss_id"], fx.expected["loss"],
                 suggested_atol(NAME, "loss"))
    assert_close(f"{NAME} combine id_improve", metrics["id_improve"],
                 fx.expected["sim_improvement"], suggested_atol(NAME, "sim_improvement"))
    assert float(total) == float(metrics["loss"]) == float(metrics["loss_id"])


@pytest.mark.slow
def test_gradient_reaches_images(moco):
    _, net, images = moco
    y_hat, y, x = (jnp.asarray(images[k][:2]) for k in ("y_hat", "y", "x"))
    g = jax.jit(jax.grad(lambda a, n: losses.similarity_loss(n, a, y, x)[0]))(y_hat, net.net)
    g = np.asarray(g)
    print(f"moco |grad| max {np.abs(g).max():.3e}")
    assert np.all(np.isfinite(g))
    assert np.abs(g[0]).max() > 0 and np.abs(g[1]).max() > 0


@pytest.mark.parametrize("in_hw,out_hw", [((256, 256), (224, 224)), ((100, 37), (224, 224)),
                                          ((64, 64), (128, 128)), ((224, 224), (224, 224)),
                                          ((299, 300), (7, 11))])
def test_resize_nearest_matches_torch(in_hw, out_hw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3) + in_hw).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_hw).numpy()
    got = resize_nearest(jnp.asarray(nchw_to_nhwc(x)), out_hw)
    np.testing.assert_array_equal(np.asarray(got), nchw_to_nhwc(want))


def test_l2_normalize_zero_vector():
    v = jnp.zeros((2, 5)).at[0].set(jnp.arange(5.0))
    out = l2_normalize(v, eps=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out[0])), 1.0, rtol=1e-6)
    assert float(jnp.abs(out[1]).max()) == 0.0
    g = jax.grad(lambda a: jnp.sum(l2_normalize(a, eps=1e-12)))(v)
    assert np.all(np.isfinite(np.asarray(g)))


def test_input_errors(moco):
    fx, net, images = moco
    with pytest.raises(ValueError, match="NHWC"):
        net.features(fx.inputs["x"])
    with pytest.raises(ValueError, match="equal shapes"):
        net.loss(images["y_hat"][:2], images["y"], images["x"])
