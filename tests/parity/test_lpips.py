"""LPIPS (AlexNet / VGG16) against the official criteria/lpips outputs of the fixtures.

The fixture weights are written as the two official files (torchvision backbone state dict and
the lpips package's linear layers) with torch.save, converted by `e4e-jax convert lpips`'s CLI
and read back with e4e_jax.load_lpips.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import e4e_jax
from e4e_jax.convert import lpips as lpips_cli
from e4e_jax import losses
from e4e_jax.nets.model_dir import ModelDirError, load_model_dir, save_model_dir
from e4e_jax.models.lpips import unit_normalize
from tests.support.fixtures import (assert_close, load_fixture, nchw_to_nhwc, save_torch,
                           suggested_atol)


# VGG16 costs most (full-size features, several times AlexNet's); the fast subset keeps AlexNet
@pytest.fixture(scope="module", params=["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def converted(request, tmp_path_factory):
    net = request.param
    fx = load_fixture(f"lpips_{net}")
    files = fx.container()["files"]
    tmp = tmp_path_factory.mktemp(f"lpips_{net}")
    backbone = save_torch(files["backbone"]["layout"], str(tmp / "backbone.pth"))
    lin = save_torch(files["lin"]["layout"], str(tmp / f"{net}.pth"))
    dst = str(tmp / "converted")
    assert lpips_cli.main(["--net", net, "--backbone", backbone, "--lin", lin, dst]) == 0
    lp = e4e_jax.load_lpips(dst)
    return net, fx, lp, dst


def test_parity_distances(converted):
    net, fx, lp, _ = converted
    name = f"lpips_{net}"
    x, y = nchw_to_nhwc(fx.inputs["x"]), nchw_to_nhwc(fx.inputs["y"])
    per_pair = lp(x, y)
    assert per_pair.shape == (3,)
    assert_close(f"{name} lpips_per_pair", per_pair, fx.expected["lpips_per_pair"],
                 suggested_atol(name, "lpips_per_pair"))
    assert_close(f"{name} lpips_batch", lp.loss(x, y), fx.expected["lpips_batch"],
                 suggested_atol(name, "lpips_batch"))
    assert_close(f"{name} lpips_self", lp.loss(x, x), fx.expected["lpips_self"],
                 suggested_atol(name, "lpips_self"))
    # the pure loss function, jitted with the weights as an argument, gives the same value
    batch = jax.jit(losses.lpips_loss)(lp.net, jnp.asarray(x), jnp.asarray(y))
    assert_close(f"{name} lpips_loss (jit)", batch, fx.expected["lpips_batch"],
                 suggested_atol(name, "lpips_batch"))


def test_parity_features(converted):
    net, fx, lp, _ = converted
    name = f"lpips_{net}"
    feats = lp.features(nchw_to_nhwc(fx.inputs["probe"]))
    assert len(feats) == 5
    for k, f in enumerate(feats):
        key = f"probe_feat_{k}"
        assert_close(f"{name} {key}", f, nchw_to_nhwc(fx.expected[key]), suggested_atol(name, key))


def test_distance_properties(converted):
    _, fx, lp, _ = converted
    x, y = nchw_to_nhwc(fx.inputs["x"]), nchw_to_nhwc(fx.inputs["y"])
    d_xy, d_yx = np.asarray(lp(x, y)), np.asarray(lp(y, x))
    np.testing.assert_allclose(d_xy, d_yx, rtol=1e-5)
    assert np.all(d_xy > 0)
    # the similar pair (pair 0 is a 75/25 blend) is the closest
    assert d_xy[0] < d_xy[1:].min()


def test_gradient_reaches_images(converted):
    net, fx, lp, _ = converted
    x = jnp.asarray(nchw_to_nhwc(fx.inputs["x"]))[:2]
    y = jnp.asarray(nchw_to_nhwc(fx.inputs["y"]))[:2]
    g = jax.jit(jax.grad(lambda a, n: losses.lpips_loss(n, a, y)))(x, lp.net)
    g = np.asarray(g)
    print(f"lpips {net} |grad| max {np.abs(g).max():.3e}")
    assert np.all(np.isfinite(g))
    assert np.abs(g).max() > 0
    assert np.abs(g[0]).max() > 0 and np.abs(g[1]).max() > 0


def test_unit_normalize_zero_map_has_finite_gradient():
    f = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([3.0, 4.0, 0.0, 0.0]))
    out = unit_normalize(f)
    np.testing.assert_allclose(np.asarray(out[0, 0, 0]), [0.6, 0.8, 0, 0], rtol=1e-6)
    assert float(jnp.abs(out[0, 1, 1]).max()) == 0.0
    g = jax.grad(lambda a: jnp.sum(unit_normalize(a) * 1.5))(f)
    assert np.all(np.isfinite(np.asarray(g)))


def test_input_errors(converted):
    _, fx, lp, _ = converted
    with pytest.raises(ValueError, match="NHWC"):
        lp(fx.inputs["x"], fx.inputs["y"])  # NCHW arrays
    x = nchw_to_nhwc(fx.inputs["x"])
    with pytest.raises(ValueError, match="equal shape"):
        lp(x[:2], x)
    with pytest.raises(ValueError, match="float"):
        lp(np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8))


def test_loader_checks_directory(converted, tmp_path):
    net, _, _, dst = converted
    md = load_model_dir(dst, "lpips")
    # a directory of another kind
    other = save_model_dir(str(tmp_path / "other"), "moco_resnet50", {}, variables={})
    with pytest.raises(ModelDirError, match="moco_resnet50"):
        e4e_jax.load_lpips(other)
    # wrong net in the config
    bad = save_model_dir(str(tmp_path / "bad_net"), "lpips", {"net": "squeeze"},
                         variables=md.variables)
    with pytest.raises(ModelDirError, match="squeeze"):
        e4e_jax.load_lpips(bad)
    # a missing linear layer is named
    params = dict(md.variables["params"])
    del params["lin_4"]
    partial = save_model_dir(str(tmp_path / "partial"), "lpips", md.config,
                             variables={"params": params})
    with pytest.raises(ModelDirError, match="lin_4"):
        e4e_jax.load_lpips(partial)
    # the other backbone's weights do not fit
    other_net = "vgg" if net == "alex" else "alex"
    swapped = save_model_dir(str(tmp_path / "swapped"), "lpips", {"net": other_net},
                             variables=md.variables)
    with pytest.raises(ModelDirError, match="does not match"):
        e4e_jax.load_lpips(swapped)
    with pytest.raises(ModelDirError, match="not a directory"):
        e4e_jax.load_lpips(str(tmp_path / "missing"))
