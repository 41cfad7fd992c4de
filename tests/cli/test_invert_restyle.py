"""`invert --method restyle --iterations N` on a tiny ReStyle model: the outputs hold the last
iteration (the library's numbers), the grid and iterations/<name>.npy every one, and the
one-line refusals (--iterations with another method, restyle with an e4e checkpoint)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from e4e_jax.cli import invert
from e4e_jax.data import image_io
from e4e_jax.inversion import restyle
from e4e_jax.nets.encoder import load_encoder, save_inverter
from tests.parity.test_encoders import save_tiny_inverter
from tests.parity.test_restyle import tiny_model


@pytest.fixture(scope="module")
def restyle_dir(tmp_path_factory):
    m = tiny_model()
    return save_inverter(str(tmp_path_factory.mktemp("m") / "restyle"), m.encoder_config,
                         m.variables, m.generator, m.latent_avg, face_pool=16)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)).save(d / name)
    return str(d)


def run(*args):
    return invert.main([str(a) for a in args])


def test_restyle_outputs_are_the_last_iteration(restyle_dir, images, tmp_path):
    out = tmp_path / "out"
    assert run("--checkpoint", restyle_dir, "--input", images, "--output", out,
               "--method", "restyle", "--iterations", 3) == 0
    latents = np.load(out / "latents.npy")
    assert latents.shape == (2, 6, 32)
    assert (out / "files.txt").read_text().split() == ["a.png", "b.png"]
    model = load_encoder(restyle_dir)
    x = image_io.load_image(image_io.read_rgb(os.path.join(images, "a.png")), model.input_size)
    ws, recs = restyle.invert(model, x[None], iterations=3)
    np.testing.assert_allclose(latents[0], np.asarray(ws)[-1, 0], atol=1e-5)
    per_iter = np.load(out / "iterations" / "a.npy")
    assert per_iter.shape == (3, 6, 32)
    np.testing.assert_allclose(per_iter, np.asarray(ws)[:, 0], atol=1e-5)
    # the iterations differ (the residuals are not zero), so "last" is a real choice
    assert np.abs(per_iter[0] - per_iter[-1]).max() > 1e-4
    rec = np.asarray(Image.open(out / "reconstructions" / "a.png"))
    np.testing.assert_array_equal(rec, image_io.to_uint8(np.asarray(recs)[-1, 0]))
    grid = Image.open(out / "side_by_side" / "a.png")
    one = Image.open(out / "side_by_side" / "b.png")
    assert grid.size == one.size and grid.size[0] > 4 * 16    # input + 3 iteration columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "restyle" and summary["iterations"] == 3
    mse = summary["images"][0]["mse_per_iteration"]
    assert len(mse) == 3
    want = [float(np.mean((np.asarray(r)[0] - x) ** 2)) for r in recs]
    np.testing.assert_allclose(mse, want, atol=1e-5)


def test_default_iterations_is_five(restyle_dir, images, tmp_path):
    assert run("--checkpoint", restyle_dir, "--input", images, "--output", tmp_path / "o",
               "--method", "restyle") == 0
    assert np.load(tmp_path / "o" / "iterations" / "b.npy").shape[0] == 5


@pytest.mark.parametrize("extra,needle", [
    (["--iterations", "3"], "--iterations applies to --method restyle only"),
    (["--method", "pti", "--iterations", "2"], "--iterations applies to --method restyle only"),
    (["--method", "restyle", "--iterations", "0"], "--iterations must be >= 1"),
    (["--method", "restyle", "--steps", "5"], "does not apply to --method restyle"),
])
def test_refusals(restyle_dir, images, tmp_path, capsys, extra, needle):
    assert run("--checkpoint", restyle_dir, "--input", images, "--output", tmp_path / "o",
               *extra) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "o" / "latents.npy")


def test_restyle_needs_a_restyle_checkpoint(restyle_dir, images, tmp_path, capsys):
    e4e_dir = save_tiny_inverter(tmp_path / "e4e")
    assert run("--checkpoint", e4e_dir, "--input", images, "--output", tmp_path / "o",
               "--method", "restyle") == 2
    err = capsys.readouterr().err.strip()
    assert "--method restyle needs a ReStyle checkpoint" in err and len(err.splitlines()) == 1
    # and the other way round: a ReStyle checkpoint with the default e4e method
    assert run("--checkpoint", restyle_dir, "--input", images, "--output", tmp_path / "p") == 2
    err = capsys.readouterr().err.strip()
    assert "use --method restyle" in err and len(err.splitlines()) == 1


def test_edit_encodes_images_with_the_official_iterations(restyle_dir, images, tmp_path, capsys):
    """`edit --input` with a ReStyle checkpoint encodes with the official 5 iterations (its
    latents.npy is the last one's codes) and says so; `encode` refuses it in one line."""
    from e4e_jax.cli import edit, encode
    out = tmp_path / "edit"
    assert edit.main(["--checkpoint", restyle_dir, "--input", images, "--edit", "sefa:0",
                      "--output", str(out)]) == 0
    assert "encoded with 5 iterations" in capsys.readouterr().err
    model = load_encoder(restyle_dir)
    x = image_io.load_images([os.path.join(images, n) for n in ("a.png", "b.png")],
                             model.input_size)
    ws, _ = restyle.invert(model, x, iterations=5)
    np.testing.assert_allclose(np.load(out / "latents.npy"), np.asarray(ws)[-1], atol=1e-5)
    assert encode.main(["--checkpoint", restyle_dir, "--input", images, "--output",
                        str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err.strip()
    assert "use `e4e-jax invert --method restyle" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "enc" / "latents.npy").exists()
