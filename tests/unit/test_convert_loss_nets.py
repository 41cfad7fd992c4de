"""Converters of the loss networks (LPIPS, ArcFace, MoCo): full-size files and clear errors.

Fixture-size files are converted through the CLIs in test_lpips.py / test_arcface.py /
test_moco.py (parity). Here: full-size state dicts built from tests/fixtures/real_size_manifests
(shape checks through the pure convert functions, two torch.save round trips marked slow), the
`lpips` package fallback for the linear layers, and the errors for wrong or broken files.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import e4e_jax
from e4e_jax.convert import arcface as arcface_cli
from e4e_jax.convert import lpips as lpips_cli
from e4e_jax.convert import moco as moco_cli
from e4e_jax.convert.common import ConversionError
from e4e_jax.nets.model_dir import check_tree
from e4e_jax.nets.loss_nets import arcface_module, moco_module
from e4e_jax.models.lpips import LPIPS
from tests.support.fixtures import REAL_SIZE, build_container, load_fixture, load_real_size, save_torch


def zeros_state(manifest_name: str) -> tuple[dict, dict]:
    """(manifest, {key: zeros}) at full size; np.zeros pages are only touched where read."""
    with open(os.path.join(REAL_SIZE, manifest_name)) as f:
        manifest = json.load(f)
    state = {k: np.zeros(spec["shape"], spec["dtype"]) for k, spec in manifest["tensors"].items()}
    return manifest, state


def expected_shapes(module, *args):
    return jax.eval_shape(module.init, jax.random.key(0), *args)


# ------------------------------------------------------------------------------------------ #
# full size, shapes only (pure convert functions)
# ------------------------------------------------------------------------------------------ #

@pytest.mark.parametrize("net,backbone", [("alex", "torchvision_alexnet.json"),
                                          ("vgg", "torchvision_vgg16.json")])
def test_lpips_full_size_shapes(net, backbone):
    _, bb = zeros_state(backbone)
    _, lin = zeros_state(f"lpips_v0.1_{net}.json")
    assert any(k.startswith("classifier.") for k in bb)  # real files carry it; it is ignored
    variables = lpips_cli.convert_lpips(bb, lin, net)
    probe = jnp.zeros((1, 64, 64, 3))
    check_tree(expected_shapes(LPIPS(net), probe, probe), variables, f"lpips {net}")


def test_arcface_full_size_shapes():
    _, state = zeros_state("model_ir_se50.json")
    variables = arcface_cli.convert_arcface(state)
    check_tree(expected_shapes(arcface_module({}), jnp.zeros((1, 256, 256, 3))), variables,
               "arcface")


def test_moco_full_size_shapes():
    manifest, state = zeros_state("moco_v2_800ep_pretrain.json")
    ckpt = build_container(manifest, state, {})
    ckpt.update({"epoch": 800, "arch": "resnet50", "optimizer": {"state": {}, "param_groups": []}})
    variables = moco_cli.convert_moco(ckpt)
    check_tree(expected_shapes(moco_module({}), jnp.zeros((1, 224, 224, 3))), variables, "moco")


# ------------------------------------------------------------------------------------------ #
# full size through torch.save and the CLIs
# ------------------------------------------------------------------------------------------ #

@pytest.mark.slow
def test_arcface_full_size_round_trip(tmp_path):
    manifest, state, extra = load_real_size("model_ir_se50.json")
    src = save_torch(build_container(manifest, state, extra), str(tmp_path / "model_ir_se50.pth"))
    dst = str(tmp_path / "arcface")
    assert arcface_cli.main([src, dst]) == 0
    net = e4e_jax.load_arcface(dst)
    direct = arcface_cli.convert_arcface(state)
    np.testing.assert_array_equal(np.asarray(net.variables["params"]["linear"]["kernel"]),
                                  direct["params"]["linear"]["kernel"])
    img = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    f = np.asarray(net.features(img))
    assert f.shape == (1, 512) and np.all(np.isfinite(f))
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_moco_full_size_round_trip(tmp_path):
    manifest, state, extra = load_real_size("moco_v2_800ep_pretrain.json")
    ckpt = build_container(manifest, state, extra)
    ckpt.update({"epoch": 800, "arch": "resnet50"})
    src = save_torch(ckpt, str(tmp_path / "moco_v2_800ep_pretrain.pth.tar"))
    dst = str(tmp_path / "moco")
    assert moco_cli.main([src, dst]) == 0
    net = e4e_jax.load_moco(dst)  # the loader checks every variable's shape
    np.testing.assert_array_equal(
        np.asarray(net.variables["params"]["resnet"]["conv1"]["kernel"]),
        np.transpose(state["module.encoder_q.conv1.weight"], (2, 3, 1, 0)))


# ------------------------------------------------------------------------------------------ #
# LPIPS linear layers from an installed lpips package
# ------------------------------------------------------------------------------------------ #

@pytest.fixture(scope="module")
def alex_files(tmp_path_factory):
    fx = load_fixture("lpips_alex")
    files = fx.container()["files"]
    tmp = tmp_path_factory.mktemp("lpips_files")
    return (save_torch(files["backbone"]["layout"], str(tmp / "alexnet.pth")),
            save_torch(files["lin"]["layout"], str(tmp / "alex.pth")), files)


def test_lpips_lin_from_installed_package(alex_files, tmp_path, monkeypatch):
    backbone, lin, files = alex_files
    pkg = tmp_path / "site" / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    save_torch(files["lin"]["layout"], str(pkg / "weights" / "v0.1" / "alex.pth"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert lpips_cli.installed_lin_file("alex") == str(pkg / "weights" / "v0.1" / "alex.pth")
    dst = str(tmp_path / "out")
    assert lpips_cli.main(["--net", "alex", "--backbone", backbone, dst]) == 0
    lp = e4e_jax.load_lpips(dst)
    np.testing.assert_array_equal(np.asarray(lp.variables["params"]["lin_2"]["kernel"])[0, 0, :, 0],
                                  files["lin"]["layout"]["lin2.model.1.weight"][0, :, 0, 0])
    # the package without the file
    with pytest.raises(ConversionError, match="vgg.pth"):
        lpips_cli.installed_lin_file("vgg")


def test_lpips_without_lin_and_package(alex_files, tmp_path, monkeypatch, capsys):
    backbone, _, _ = alex_files
    monkeypatch.setattr(lpips_cli.importlib.util, "find_spec", lambda name: None)
    assert lpips_cli.main(["--net", "alex", "--backbone", backbone, str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--lin" in err and "lpips" in err
    assert not os.path.exists(tmp_path / "o")


# ------------------------------------------------------------------------------------------ #
# wrong files
# ------------------------------------------------------------------------------------------ #

def test_lpips_wrong_files(alex_files, tmp_path, capsys):
    backbone, lin, files = alex_files
    out = str(tmp_path / "o")
    # swapped arguments
    assert lpips_cli.main(["--net", "alex", "--backbone", lin, "--lin", backbone, out]) == 2
    assert "--lin" in capsys.readouterr().err
    # AlexNet files converted as VGG
    assert lpips_cli.main(["--net", "vgg", "--backbone", backbone, "--lin", lin, out]) == 2
    assert "holds torchvision AlexNet weights; convert it with --net alex" in (
        capsys.readouterr().err)
    # a broken backbone: the missing and mis-shaped keys are named
    broken = dict(files["backbone"]["layout"])
    del broken["features.8.bias"]
    broken["features.10.weight"] = broken["features.10.weight"][:, :, :1]
    with pytest.raises(ConversionError) as e:
        lpips_cli.convert_lpips(broken, files["lin"]["layout"], "alex")
    assert "missing keys (1): features.8.bias" in str(e.value)
    assert "wrong shape for features.10.weight: expected (256, 256, 3, 3)" in str(e.value)
    # linear layers of the other net
    _, vgg_lin = zeros_state("lpips_v0.1_vgg.json")
    with pytest.raises(ConversionError, match="(?s)linear layers.*wrong shape for lin1.model.1.weight"):
        lpips_cli.convert_lpips(files["backbone"]["layout"], vgg_lin, "alex")
    with pytest.raises(ConversionError, match="net"):
        lpips_cli.convert_lpips(files["backbone"]["layout"], files["lin"]["layout"], "squeeze")
    assert not os.path.exists(out)


def test_corrupt_and_missing_files(tmp_path, capsys):
    bad = tmp_path / "model_ir_se50.pth"
    bad.write_bytes(b"this is not a torch file")
    assert arcface_cli.main([str(bad), str(tmp_path / "o")]) == 2
    assert "Could not read" in capsys.readouterr().err
    assert moco_cli.main([str(tmp_path / "nope.pth.tar"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_arcface_wrong_files():
    manifest, state = zeros_state("moco_v2_800ep_pretrain.json")
    with pytest.raises(ConversionError, match="missing keys.*input_layer.0.weight"):
        arcface_cli.convert_arcface({k[len("module.encoder_q."):]: v for k, v in state.items()})
    _, state = zeros_state("model_ir_se50.json")
    with pytest.raises(ConversionError, match="e4e / pSp checkpoint"):
        arcface_cli.convert_arcface({"state_dict": state})
    broken = dict(state)
    broken["output_layer.3.weight"] = np.zeros((512, 512 * 14 * 14), np.float32)  # input 224
    del broken["body.5.res_layer.1.weight"]
    broken["output_layer.9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as e:
        arcface_cli.convert_arcface(broken)
    msg = str(e.value)
    assert "missing keys (1): body.5.res_layer.1.weight" in msg
    assert "unexpected keys (1): output_layer.9.weight" in msg
    assert "wrong shape for output_layer.3.weight" in msg
    nan = dict(state)
    nan["output_layer.4.running_var"] = np.full(512, np.nan, np.float32)
    with pytest.raises(ConversionError, match="non-finite"):
        arcface_cli.convert_arcface(nan)
    # files from before torch 0.4.1 have no num_batches_tracked: still fine
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    arcface_cli.convert_arcface(old)


def test_moco_wrong_files():
    manifest, state = zeros_state("moco_v2_800ep_pretrain.json")
    with pytest.raises(ConversionError, match="no 'state_dict' entry"):
        moco_cli.convert_moco(state)
    with pytest.raises(ConversionError, match="module.encoder_q"):
        moco_cli.convert_moco({"state_dict": {k.replace("encoder_q", "encoder_k"): v
                                              for k, v in state.items()}})
    with pytest.raises(ConversionError, match="dict"):
        moco_cli.convert_moco([1, 2])
    # encoder_k and queue entries of a full MoCo training state are ignored, like officially
    full = dict(state)
    full["module.encoder_k.conv1.weight"] = state["module.encoder_q.conv1.weight"]
    full["module.queue"] = np.zeros((128, 16), np.float32)
    moco_cli.convert_moco({"state_dict": full})
    del full["module.encoder_q.layer3.2.conv2.weight"]
    with pytest.raises(ConversionError, match="layer3.2.conv2.weight"):
        moco_cli.convert_moco({"state_dict": full})
