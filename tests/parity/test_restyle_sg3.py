"""ReStyle over StyleGAN3 (yuval-alaluf/stylegan3-editing at 36ce2b4: inversion/models/e4e3.py,
psp3.py, utils/inference_utils.py): official checkpoints converted by `e4e-jax convert restyle`
(and `python -m convert_weights.restyle`), the encoders' codes, the average image and
run_on_batch's 3 iterations against tests/fixtures/restyle_sg3, and the converter's StyleGAN3
behaviours (identity transform, encoder-only file with a StyleGAN3 generator directory, head
count refusal) and `e4e-jax invert --method restyle` over the converted checkpoint."""
import json
import os
import pathlib

import jax
import numpy as np
import pytest

import e4e_jax
import tests.support.fixtures as fu
from e4e_jax.cli import convert as convert_cli
from e4e_jax.convert import restyle as conv
from e4e_jax.convert.common import ConversionError
from e4e_jax.inversion import restyle

FIXTURE = "restyle_sg3"
MODELS = {"e4e_backbone": "ProgressiveBackboneEncoder", "psp_backbone": "BackboneEncoder"}
ITERATIONS = 3
N_STYLES = 16
RESOLUTION = 32


def atol(key):
    return fu.suggested_atol(FIXTURE, key)


@pytest.fixture(scope="module")
def files():
    folder = os.path.join(fu.FIXTURES, FIXTURE)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    return (manifest, dict(np.load(os.path.join(folder, "inputs.npz"))),
            dict(np.load(os.path.join(folder, "expected.npz"))))


def official_container(entry):
    """The dict coach_restyle_*.py saves, opts' Path entries as pathlib paths."""
    state, extra = fu.state_from_manifest(entry)
    container = fu.build_container(entry, state, extra)
    container["opts"] = {k: (pathlib.PosixPath(v) if k in entry["path_opts"] else v)
                         for k, v in container["opts"].items()}
    return container


def _convert(name, files, tmp_path_factory, cli=True):
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp(name)
    src = fu.save_torch(official_container(files[0]["models"][name]), str(d / "ckpt.pt"))
    dst = str(d / "converted")
    if cli:
        assert convert_cli.main(["restyle", src, dst]) == 0
    else:
        from convert_weights import restyle as module_entry
        assert module_entry.main([src, dst]) == 0
    return name, e4e_jax.load_encoder(dst)


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def official(request, files, tmp_path_factory):
    # e4e through `e4e-jax convert restyle`, pSp through `python -m convert_weights.restyle`
    return _convert(request.param, files, tmp_path_factory, cli=request.param.startswith("e4e"))


def test_converted_model(official):
    name, model = official
    assert model.encoder_config["encoder_type"] == MODELS[name]
    assert model.n_latent == N_STYLES and model.generator.resolution == RESOLUTION
    assert conv.is_stylegan3(model.generator) and restyle.is_restyle(model)
    # the stored rotation was dropped: the official forward renders with the identity
    np.testing.assert_array_equal(model.generator.transform, np.eye(3, dtype=np.float32))
    assert model.config["generator_kind"] == "stylegan3"


def test_codes_avg_and_loop_parity(official, files):
    """net.encoder on a 6-channel input, get_average_image, run_on_batch (3 iterations,
    resize_outputs=False: raw 32 px images)."""
    name, model = official
    _, inputs, expected = files
    x = fu.nchw_to_nhwc(inputs[f"{name}/x"])
    x6 = np.concatenate([x, fu.nchw_to_nhwc(inputs[f"{name}/y"])], axis=-1)
    key = f"{name}/codes"
    fu.assert_close(key, jax.jit(model.encoder.apply)(model.variables, x6), expected[key],
                    atol(key))
    key = f"{name}/avg_image"
    fu.assert_close(key, np.transpose(restyle.average_image(model), (2, 0, 1)), expected[key],
                    atol(key))
    w, images = e4e_jax.restyle.invert(model, x, iterations=ITERATIONS, resize=False)
    assert w.shape == (ITERATIONS, 2, N_STYLES, 512)
    assert images.shape == (ITERATIONS, 2, RESOLUTION, RESOLUTION, 3)
    for t in range(ITERATIONS):
        for key, got in ((f"{name}/loop_latents", w[t]),
                         (f"{name}/loop_images", np.transpose(images[t], (0, 3, 1, 2)))):
            fu.assert_close(f"{key}[{t}]", got, expected[key][t], atol(key))


@pytest.mark.slow
def test_encoder_only_file_with_stylegan3_dir(files, tmp_path):
    """An encoder-only file converts with --generator DIR (`e4e-jax convert stylegan3` of the
    decoder, here with a non-identity stored transform): the identity is stored, and a
    generator whose W+ rows differ from the heads is refused in one line."""
    pytest.importorskip("torch")
    from e4e_jax.convert.stylegan3 import convert_torch_state
    from e4e_jax.nets.stylegan3 import load_stylegan3
    entry = files[0]["models"]["e4e_backbone"]
    container = official_container(entry)
    decoder = {k[len("decoder."):]: a for k, a in container["state_dict"].items()
               if k.startswith("decoder.")}
    gen, _ = convert_torch_state(decoder)
    assert not np.allclose(gen.transform, np.eye(3))   # the fixture stores a rotation
    gen_dir = gen.save(str(tmp_path / "sg3"))
    container["state_dict"] = {k: a for k, a in container["state_dict"].items()
                               if k.startswith("encoder.")}
    src = fu.save_torch(container, str(tmp_path / "encoder_only.pt"))
    dst = str(tmp_path / "converted")
    assert convert_cli.main(["restyle", src, dst, "--generator", gen_dir]) == 0
    model = e4e_jax.load_encoder(dst)
    np.testing.assert_array_equal(model.generator.transform, np.eye(3, dtype=np.float32))
    for have, want in zip(jax.tree_util.tree_leaves(model.generator.variables["params"]),
                          jax.tree_util.tree_leaves(load_stylegan3(gen_dir).variables["params"])):
        np.testing.assert_array_equal(np.asarray(have), np.asarray(want))
    # a generator taking 10 W+ rows for an encoder with 16 heads
    with pytest.raises(ConversionError, match="16 style heads .* takes 10 W\\+ rows"):
        conv.restyle_config_from_opts(
            container["opts"], {k[len("encoder."):]: v for k, v in container["state_dict"].items()},
            "ckpt", n_styles=10)


def test_stylegan3_state_detection():
    assert conv.is_stylegan3_state({"mapping.fc0.weight": 0, "synthesis.input.freqs": 0})
    assert not conv.is_stylegan3_state({"style.1.weight": 0, "conv1.conv.weight": 0})


@pytest.mark.slow
def test_invert_command_over_stylegan3(files, tmp_path):
    """`e4e-jax invert --method restyle` with a converted stylegan3-editing checkpoint: the last
    iteration's W+ codes are run_on_batch's."""
    pytest.importorskip("torch")
    from PIL import Image

    from e4e_jax.cli import invert
    name = "e4e_backbone"
    manifest, inputs, expected = files
    src = fu.save_torch(official_container(manifest["models"][name]), str(tmp_path / "ckpt.pt"))
    assert convert_cli.main(["restyle", src, str(tmp_path / "conv")]) == 0
    (tmp_path / "imgs").mkdir()
    # the inputs are uint8 patterns mapped to [-1, 1]: the PNG holds them exactly
    u8 = np.rint((fu.nchw_to_nhwc(inputs[f"{name}/x"])[0] + 1) * 127.5).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "imgs" / "a.png")
    assert invert.main(["--checkpoint", str(tmp_path / "conv"), "--input", str(tmp_path / "imgs"),
                        "--output", str(tmp_path / "out"), "--method", "restyle",
                        "--iterations", str(ITERATIONS)]) == 0
    key = f"{name}/loop_latents"
    fu.assert_close(f"{key} (invert command)", np.load(tmp_path / "out" / "latents.npy")[0],
                    expected[key][ITERATIONS - 1][0], atol(key))
