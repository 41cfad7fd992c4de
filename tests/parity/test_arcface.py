"""ArcFace IR-SE-50 identity loss against the official criteria/id_loss.py outputs.

The fixture weights are written as model_ir_se50.pth (a plain state dict) with torch.save,
converted by `e4e-jax convert arcface`'s CLI and read back with e4e_jax.load_arcface. Also checks
the PyTorch adaptive-pooling windows of e4e_jax.core.ops.adaptive_avg_pool2d that the loss relies on.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import e4e_jax
from e4e_jax.convert import arcface as arcface_cli
from e4e_jax import losses
from e4e_jax.models.arcface import crop_and_pool
from e4e_jax.core.ops import adaptive_avg_pool2d
from tests.support.fixtures import (assert_close, load_fixture, nchw_to_nhwc, save_torch,
                           suggested_atol)

NAME = "arcface_ir_se50"


@pytest.fixture(scope="module")
def arcface(tmp_path_factory):
    fx = load_fixture(NAME)
    tmp = tmp_path_factory.mktemp("arcface")
    src = save_torch(fx.container(), str(tmp / "model_ir_se50.pth"))
    dst = str(tmp / "converted")
    assert arcface_cli.main([src, dst]) == 0
    images = {k: nchw_to_nhwc(fx.inputs[k]) for k in ("x", "y", "y_hat")}
    return fx, e4e_jax.load_arcface(dst), images


@pytest.mark.parametrize("in_hw,out_hw", [((188, 188), (112, 112)), ((64, 64), (256, 256)),
                                          ((37, 100), (112, 30))])
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3) + in_hw).astype(np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out_hw).numpy()
    got = adaptive_avg_pool2d(jnp.asarray(nchw_to_nhwc(x)), out_hw)
    assert_close(f"adaptive_avg_pool2d {in_hw}->{out_hw}", got, nchw_to_nhwc(want), 1e-6)


def test_parity_features(arcface):
    fx, net, images = arcface
    for k in ("x", "y", "y_hat"):
        f = net.features(images[k])
        assert f.shape == (3, 512)
        assert_close(f"{NAME} feats_{k}", f, fx.expected[f"feats_{k}"],
                     suggested_atol(NAME, f"feats_{k}"))


def test_parity_loss(arcface):
    fx, net, images = arcface
    loss, improvement, sims = net.loss(images["y_hat"], images["y"], images["x"])
    assert_close(f"{NAME} loss", loss, fx.expected["loss"], suggested_atol(NAME, "loss"))
    assert_close(f"{NAME} sim_improvement", improvement, fx.expected["sim_improvement"],
                 suggested_atol(NAME, "sim_improvement"))
    assert_close(f"{NAME} id_logs", sims, fx.expected["id_logs"], suggested_atol(NAME, "id_logs"))


def test_features_see_only_the_face_crop(arcface):
    _, net, images = arcface
    x = np.array(images["x"][:1])
    outside = x.copy()
    outside[:, :35] = 1.0       # rows above the crop
    outside[:, 223:] = -1.0     # rows below
    outside[:, :, :32] = 0.5    # columns left of it
    outside[:, :, 220:] = -0.5  # and right of it
    inside = x.copy()
    inside[:, 100:140, 100:140] = 1.0
    f = np.asarray(net.features(np.concatenate([x, outside, inside])))
    np.testing.assert_array_equal(f[0], f[1])
    assert np.abs(f[0] - f[2]).max() > 1e-3


@pytest.mark.slow
def test_gradient_reaches_images(arcface):
    _, net, images = arcface
    y_hat, y, x = (jnp.asarray(images[k][:2]) for k in ("y_hat", "y", "x"))
    g = jax.jit(jax.grad(lambda a, n: losses.similarity_loss(n, a, y, x)[0]))(y_hat, net.net)
    g = np.asarray(g)
    print(f"arcface |grad| max {np.abs(g).max():.3e}")
    assert np.all(np.isfinite(g))
    assert np.abs(g[0]).max() > 0 and np.abs(g[1]).max() > 0
    # only the crop is seen, so pixels outside it get no gradient
    assert np.abs(g[:, :35]).max() == 0 and np.abs(g[:, :, 220:]).max() == 0
    assert np.abs(g[:, 35:223, 32:220]).max() > 0


def test_crop_and_pool_needs_256(arcface):
    _, net, _ = arcface
    with pytest.raises(ValueError, match="256x256"):
        crop_and_pool(jnp.zeros((1, 128, 128, 3)))
    with pytest.raises(ValueError, match="256x256"):
        net.features(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match="NHWC"):
        net.features(np.zeros((1, 3, 256, 256), np.float32))
