"""The edit command (`python -m e4e_jax.edit`) and the edit spec syntax shared with eval.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from e4e_jax import editing
from e4e_jax.apps import edit as edit_app
from e4e_jax.cli import edit
from e4e_jax.data import image_io
from e4e_jax.editing.spec import EditSpecError, parse_edit_spec
from e4e_jax.nets.encoder import load_encoder
from e4e_jax.outputs.grids import grid_layout
from tests.parity.test_encoders import save_tiny_inverter

from tests.support.paths import REPO  # noqa: E402
READABLE = ["a.png", "c.jpg", "d.png", "e.png", os.path.join("sub", "b.png")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_inverter(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def inv(model_dir):
    return load_encoder(model_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    os.makedirs(d / "sub")
    for name, size in zip(READABLE, [(40, 40), (32, 48), (32, 32), (50, 30), (20, 20)]):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(d / name)
    (d / "bad.png").write_bytes(b"not an image")
    return str(d)


@pytest.fixture(scope="module")
def edit_files(tmp_path_factory, inv):
    d = tmp_path_factory.mktemp("edit_files")
    direction = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    np.save(d / "smile.npy", direction)
    pca = editing.compute_ganspace_pca(inv.generator, n_samples=256, n_components=6,
                                       batch_size=256)
    np.savez(d / "pca.npz", **pca)
    np.save(d / "ffhq_like.npy", np.ones((1, 512), np.float32))
    return str(d / "smile.npy"), str(d / "pca.npz"), str(d / "ffhq_like.npy")


# ---------------------------------------------------------------------- spec syntax

@pytest.mark.parametrize("text, want", [
    ("interfacegan:dirs/age.pt", dict(kind="interfacegan", path="dirs/age.pt", strength=None,
                                      name="interfacegan:age", default=3.0)),
    ("interfacegan:C:/d/age.npy:-2.5", dict(path="C:/d/age.npy", strength=-2.5)),
    ("ganspace:pca.npz:54,7,8,5", dict(kind="ganspace", path="pca.npz", index=54, rows=(7, 8),
                                       strength=5.0, name="ganspace:pca:54,7,8")),
    ("ganspace:x/pca.pt:1,0,2", dict(index=1, rows=(0, 2), strength=None, default=5.0)),
    ("sefa:0", dict(kind="sefa", index=0, layers="all", strength=None, name="sefa:0")),
    ("sefa:3:-7", dict(index=3, strength=-7.0)),
    ("sefa:1:2:2-5", dict(layers=(2, 3, 4, 5), strength=2.0, name="sefa:1:2-5")),
    ("SeFa:1::2,4", dict(kind="sefa", layers=(2, 4), strength=None, name="sefa:1:2,4")),
])
def test_parse_edit_spec(text, want):
    spec = parse_edit_spec(text)
    for key, value in want.items():
        got = {"name": spec.name, "default": spec.default_strength}.get(key) \
            if key in ("name", "default") else getattr(spec, key)
        assert got == value, (key, got, value)
    assert spec.describe(-3) == f"{spec.name} -3"


@pytest.mark.parametrize("text, message", [
    ("", "cannot parse"), ("sefa", "cannot parse"), ("sefa:", "cannot parse"),
    ("warp:1", "cannot parse"), ("sefa:a", "SEMANTIC must be an integer"),
    ("sefa:0:x", "STRENGTH must be a number"), ("sefa:0:nan", "must be finite"),
    ("sefa:0:1:2-x", "LAYERS"), ("sefa:0:1:2:3", "SEMANTIC[:STRENGTH[:LAYERS]]"),
    ("sefa:-1", "SEMANTIC must be >= 0"), ("ganspace:pca.npz:1,2", "IDX,START,END"),
    ("ganspace:1,2,3", "needs PATH"), ("ganspace:p.npz:1,5,3", "START < END"),
    ("ganspace:p.npz:1,a,3", "START must be an integer"), ("interfacegan:", "cannot parse"),
])
def test_bad_edit_specs(text, message):
    with pytest.raises(EditSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_edit_spec(text)


def test_strength_columns():
    a, b = parse_edit_spec("sefa:0:5"), parse_edit_spec("sefa:1")
    assert edit_app.columns([a], None) == (5.0,)
    assert edit_app.columns([a, b], None) == (-3.0, 0.0, 3.0, 5.0)
    assert edit_app.columns([a, b], [1, -1]) == (1.0, -1.0)


def test_strengths_and_a_spec_with_its_own_strength_are_refused(tmp_path, capsys):
    """`--edit sefa:0:5:0-2 --strengths -5 0 5` used to drop the spec's 5 silently."""
    out = tmp_path / "e"
    assert edit.main(["--checkpoint", str(tmp_path / "none"), "--synthetic", "1", "--edit",
                      "sefa:0:5:0-2", "--edit", "sefa:1", "--strengths", "-5", "0", "5",
                      "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("--strengths replaces the strength written in sefa:0:5:0-2: drop --strengths"
            in err and len(err.strip().splitlines()) == 1), err
    assert not out.exists()


# ---------------------------------------------------------------------- the command

def magnified(u8, k):
    return np.repeat(np.repeat(u8, k, axis=0), k, axis=1)


def cell(grid, layout, r, c):
    top, left, h, w = layout.box(r, c)
    return grid[top:top + h, left:left + w]


@pytest.mark.slow
def test_edit_images(model_dir, inv, images, edit_files, tmp_path, capsys):
    direction_path, pca_path, _ = edit_files
    out = tmp_path / "out"
    specs = ["sefa:1", f"interfacegan:{direction_path}", f"ganspace:{pca_path}:2,1,3"]
    args = ["--checkpoint", model_dir, "--images", images, "--strengths", "-2", "0", "2",
            "--out", str(out), "--batch_size", "3"]
    for s in specs:
        args += ["--edit", s]
    assert edit.main(args) == 0
    err = capsys.readouterr().err
    assert "skipping bad.png" in err and "wrote 5 grids (3 edit(s) x 3 strength(s))" in err
    names = (out / "files.txt").read_text().splitlines()
    assert names == sorted(READABLE)
    x = image_io.load_images([os.path.join(images, n) for n in names], (32, 32))
    lat = np.load(out / "latents.npy")
    np.testing.assert_allclose(lat, np.asarray(inv.encode(x)), atol=1e-5)

    # edited codes are the official edits of the inversions, at every strength
    ed = np.load(out / "edited_latents.npy")
    assert ed.shape == (5, 3, 3, inv.n_latent, 32)
    strengths = [-2.0, 0.0, 2.0]
    vec = editing.sefa(inv.generator)[1][1]
    shape = ed[:, 0].shape
    want = [
        np.asarray(editing.sefa_edit(lat, vec, 0, "all", distances=strengths)).reshape(shape),
        np.stack([np.asarray(editing.interfacegan_edit(lat, np.load(direction_path), s))
                  for s in strengths], axis=1),
        np.asarray(editing.ganspace_edit(lat, dict(np.load(pca_path)),
                                         [(2, 1, 3, s) for s in strengths])).reshape(shape),
    ]
    for e in range(3):
        np.testing.assert_allclose(ed[:, e], want[e], atol=1e-5, err_msg=specs[e])
    assert not np.allclose(ed[:, 0, 0], ed[:, 0, 2])                 # strengths differ

    # the grid of sub/b.png: rows = edits, columns = source | inversion | 3 strengths
    i = names.index(os.path.join("sub", "b.png"))
    grid = np.asarray(Image.open(out / "sub" / "b.png"))
    layout = grid_layout(3, 5, 32, 32)
    assert grid.shape[:2] == layout.shape and layout.scale == 4
    np.testing.assert_array_equal(cell(grid, layout, 1, 0),
                                  magnified(image_io.to_uint8(x[i]), 4))
    inversion = image_io.to_uint8(np.asarray(inv.decode(lat[i:i + 1]))[0])
    assert np.abs(cell(grid, layout, 0, 1).astype(int) - magnified(inversion, 4)).max() <= 1
    edited = image_io.to_uint8(np.asarray(inv.decode(ed[i, 2, 2][None]))[0])   # ganspace +2
    assert np.abs(cell(grid, layout, 2, 4).astype(int) - magnified(edited, 4)).max() <= 1
    summary = json.loads((out / "edits.json").read_text())
    assert summary["strengths"] == strengths and summary["has_source_column"] is True
    assert summary["edit_labels"] == ["sefa:1", "interfacegan:smile", "ganspace:pca:2,1,3"]
    assert summary["skipped"] == ["bad.png"] and summary["edited_latents_shape"] == list(ed.shape)

    # from the saved latents: no source column, names from files.txt, the spec's own strength
    out2 = tmp_path / "from_latents"
    assert edit.main(["--checkpoint", model_dir, "--latents", str(out / "latents.npy"),
                      "--edit", "sefa:0:5", "--out", str(out2), "--num_images", "4"]) == 0
    summary = json.loads((out2 / "edits.json").read_text())
    assert summary["has_source_column"] is False and summary["strengths"] == [5.0]
    assert summary["names"] == names[:4]
    ed2 = np.load(out2 / "edited_latents.npy")
    assert ed2.shape == (4, 1, 1, inv.n_latent, 32)
    grid = np.asarray(Image.open(out2 / "a.png"))
    layout = grid_layout(1, 2, 32, 32)
    assert grid.shape[:2] == layout.shape
    inversion = image_io.to_uint8(np.asarray(inv.decode(lat[:1]))[0])
    assert np.abs(cell(grid, layout, 0, 0).astype(int) - magnified(inversion, 4)).max() <= 1


@pytest.mark.slow
def test_edit_synthetic_images(model_dir, inv, tmp_path):
    """--synthetic N: the checkpoint generator's own images (eval.py's synthetic domain) as the
    source column, no files needed."""
    from e4e_jax.evaluation import SyntheticImages
    out = tmp_path / "out"
    assert edit.main(["--checkpoint", model_dir, "--synthetic", "3", "--seed", "5", "--edit",
                      "sefa:0:4", "--out", str(out), "--batch_size", "2"]) == 0
    summary = json.loads((out / "edits.json").read_text())
    assert summary["names"] == [f"synthetic_{i:05d}" for i in range(3)]
    assert summary["has_source_column"] is True and summary["input"] == "synthetic (seed 5)"
    x = np.concatenate([b.images[:b.valid] for b in SyntheticImages(3, 5).batches(inv, 3)])
    grid = np.asarray(Image.open(out / "synthetic_00002.png"))
    layout = grid_layout(1, 3, 32, 32)
    assert grid.shape[:2] == layout.shape
    np.testing.assert_array_equal(cell(grid, layout, 0, 0), magnified(image_io.to_uint8(x[2]), 4))
    np.testing.assert_allclose(np.load(out / "latents.npy"), np.asarray(inv.encode(x)), atol=1e-5)


def test_edit_refuses_to_overwrite_an_earlier_run(model_dir, tmp_path, capsys):
    """A second run into the same --out exits 2 before any work and keeps the first run's files;
    --overwrite replaces them. An encode folder's latents.npy is protected the same way."""
    out = tmp_path / "out"
    args = ["--checkpoint", model_dir, "--synthetic", "1", "--edit", "sefa:0:1", "--out",
            str(out)]
    assert edit.main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert edit.main(args + ["--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "already holds edits.json, edited_latents.npy, latents.npy, files.txt" in err, err
    assert "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert edit.main(args + ["--seed", "3", "--overwrite"]) == 0
    assert (out / "latents.npy").read_bytes() != before["latents.npy"]
    encoded = tmp_path / "encoded"
    encoded.mkdir()
    np.save(encoded / "latents.npy", np.zeros((1, 8, 32), np.float32))
    assert edit.main(args[:-1] + [str(encoded)]) == 2
    assert "already holds latents.npy" in capsys.readouterr().err
    assert edit.main(args[:-1] + [str(encoded / "latents.npy")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    # edits from saved latents write no latents.npy, so that folder's file is not in the way
    (encoded / "files.txt").write_text("x\n")
    assert edit.main(["--checkpoint", model_dir, "--latents", str(encoded / "latents.npy"),
                      "--edit", "sefa:0:1", "--out", str(encoded)]) == 0


def test_edit_errors(model_dir, images, edit_files, tmp_path, capsys):
    _, pca_path, ffhq_like = edit_files
    bad_latents = tmp_path / "bad.npy"
    np.save(bad_latents, np.zeros((3, 4, 32), np.float32))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    gen_dir = os.path.join(model_dir, "generator")
    cases = [
        (["--checkpoint", gen_dir, "--images", images, "--edit", "sefa:0"],
         "not an encoder checkpoint"),
        (["--checkpoint", model_dir, "--images", str(tmp_path / "nope"), "--edit", "sefa:0"],
         "is not a directory"),
        (["--checkpoint", model_dir, "--images", str(empty), "--edit", "sefa:0"],
         "no image files"),
        (["--checkpoint", model_dir, "--latents", str(bad_latents), "--edit", "sefa:0"],
         "takes W+ codes (8, 32)"),
        (["--checkpoint", model_dir, "--latents", str(tmp_path / "none.npy"), "--edit", "sefa:0"],
         "does not exist"),
        (["--checkpoint", model_dir, "--images", images, "--edit", "sefa:x"],
         "SEMANTIC must be an integer"),
        (["--checkpoint", model_dir, "--images", images, "--edit", f"interfacegan:{ffhq_like}"],
         "does not fit this model"),
        (["--checkpoint", model_dir, "--images", images, "--edit", f"ganspace:{pca_path}:1,2,9"],
         "do not fit the 8 W+ rows"),
        (["--checkpoint", model_dir, "--images", images, "--edit", f"ganspace:{pca_path}:6,1,2"],
         "the PCA has 6 components"),
        (["--checkpoint", model_dir, "--images", images, "--edit", "sefa:40"],
         "SEMANTIC must be < 32"),
        (["--checkpoint", model_dir, "--synthetic", "0", "--edit", "sefa:0"],
         "--synthetic must be >= 1"),
    ]
    for args, message in cases:
        assert edit.main(args + ["--out", out]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
    with pytest.raises(SystemExit) as e:       # argparse: exactly one input
        edit.main(["--checkpoint", model_dir, "--images", images, "--latents", "x.npy",
                   "--edit", "sefa:0", "--out", out])
    assert e.value.code == 2


def test_module_entry_point(model_dir, images, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "e4e_jax.edit", "--checkpoint",
                           os.path.dirname(model_dir), "--images", images, "--edit", "sefa:0",
                           "--out", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not a converted model directory" in proc.stderr, proc.stderr


def test_edit_reads_official_latents_pt_and_refuses_non_finite_codes(model_dir, inv, tmp_path,
                                                                     capsys):
    """`--latents latents.pt` (what the official scripts/inference.py saves) and an .npz edit
    like the .npy; NaN / Inf codes are refused naming the rows; a one-row file without
    files.txt names its grid after the file (a per-image code of `invert`)."""
    torch = pytest.importorskip("torch", reason="the [convert] extra installs torch")
    codes = np.asarray(inv.encode(np.zeros((2,) + tuple(inv.input_size) + (3,), np.float32)))
    torch.save(torch.from_numpy(codes.copy()), tmp_path / "latents.pt")
    np.savez(tmp_path / "codes.npz", w_plus=codes, extra=codes[:1])
    for spec, out in ((tmp_path / "latents.pt", "pt"), (f"{tmp_path / 'codes.npz'}:w_plus", "z")):
        assert edit.main(["--checkpoint", model_dir, "--latents", str(spec), "--edit", "sefa:0",
                          "--out", str(tmp_path / out)]) == 0, capsys.readouterr().err
        assert sorted(f for f in os.listdir(tmp_path / out) if f.endswith(".png")) == \
            ["latent_00000.png", "latent_00001.png"]
    bad = codes.copy()
    bad[1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert edit.main(["--checkpoint", model_dir, "--latents", str(tmp_path / "nan.npy"),
                      "--edit", "sefa:0", "--out", str(tmp_path / "nan")]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 rows hold NaN or Inf (rows 1)" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "nan" / "edited_latents.npy")
    os.makedirs(tmp_path / "inv" / "latents")
    np.save(tmp_path / "inv" / "latents" / "face.npy", codes[:1])
    assert edit.main(["--checkpoint", model_dir, "--latents",
                      str(tmp_path / "inv" / "latents" / "face.npy"), "--edit", "sefa:0",
                      "--out", str(tmp_path / "one")]) == 0
    assert os.path.isfile(tmp_path / "one" / "face.png")


def test_edit_generator_keeps_the_dtype_and_precision(model_dir, inv, tmp_path, monkeypatch):
    """edit --generator DIR --dtype bfloat16 --precision highest decodes with DIR's weights under
    the checkpoint's policy: bfloat16 convolutions at HIGHEST precision (the generator is given
    to the Inverter with `with_generator`, not assigned over its policy)."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.nets import encoder as encoder_module
    from e4e_jax.nets.generator import load_generator, save_generator
    from tests.parity.test_encoders import tiny_generator
    gen_dir = save_generator(tiny_generator(32, seed=7), str(tmp_path / "tuned"))
    latents = tmp_path / "latents.npy"
    w = np.asarray(inv.encode(np.zeros((1, 32, 32, 3), np.float32)))
    np.save(latents, w)
    used = []
    make_decoder = encoder_module.make_decoder
    monkeypatch.setattr(encoder_module, "make_decoder",
                        lambda model: used.append(model) or make_decoder(model))
    out = tmp_path / "out"
    assert edit.main(["--checkpoint", model_dir, "--latents", str(latents), "--generator",
                      gen_dir, "--dtype", "bfloat16", "--precision", "highest", "--edit",
                      "sefa:0:1", "--out", str(out)]) == 0
    (model,) = used
    g = model.generator
    assert g.module.dtype == jnp.bfloat16 and g.module.precision == jax.lax.Precision.HIGHEST
    assert model.module.dtype == jnp.bfloat16            # the encoder keeps the same policy
    tuned = load_generator(gen_dir)
    for a, b in zip(jax.tree_util.tree_leaves(g.variables),
                    jax.tree_util.tree_leaves(tuned.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the inversion cell is the bfloat16 decode, which differs from the float32 one
    bf16 = np.asarray(model.decode(w))
    f32 = np.asarray(inv.with_generator(tuned).decode(w))
    assert np.abs(bf16 - f32).max() > 1e-4
    grid = np.asarray(Image.open(out / "latents.png"))
    layout = grid_layout(1, 2, 32, 32)
    inversion = magnified(image_io.to_uint8(bf16[0]), 4)
    assert np.abs(cell(grid, layout, 0, 0).astype(int) - inversion).max() <= 1


def test_edit_says_which_generator_and_refuses_the_generators_folder(model_dir, inv, tmp_path,
                                                                     capsys):
    """The console names the generator that decodes (the export's, or --generator's with its
    path); PTI's OUT/generators (one tuned generator per image) gets the per-image hint, not
    "convert the official file first"."""
    from e4e_jax.nets.generator import save_generator
    pti = tmp_path / "pti"
    for name in ("face", "other"):
        save_generator(inv.generator, str(pti / "generators" / name))
    base = ["--checkpoint", model_dir, "--synthetic", "1", "--edit", "sefa:0:1"]
    assert edit.main(base + ["--output", str(tmp_path / "own")]) == 0
    err = capsys.readouterr().err
    assert f"generator: the checkpoint's own ({os.path.join(model_dir, 'generator')}" in err, err
    tuned = str(pti / "generators" / "face")
    assert edit.main(base + ["--generator", tuned, "--output", str(tmp_path / "tuned")]) == 0
    err = capsys.readouterr().err
    assert f"generator: --generator {tuned} (" in err and f"with the generator {tuned}" in err
    out = tmp_path / "parent"
    assert edit.main(base + ["--generator", str(pti / "generators") + "/", "--output",
                             str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Convert the official file" not in err, err
    assert "folder of per-image generators (face, other)" in err
    assert f"--generator {tuned} (with its pivot --latents {pti / 'latents' / 'face.npy'})" in err
    assert not out.exists()


def test_edit_takes_input_and_output_like_every_command(model_dir, images, tmp_path, capsys):
    out = tmp_path / "e"
    assert edit.main(["--checkpoint", model_dir, "--input", images, "--edit", "sefa:0:1",
                      "--output", str(out), "--num-images", "1"]) == 0
    assert (out / "a.png").is_file() and (out / "files.txt").read_text() == "a.png\n"
    assert edit.main(["--checkpoint", model_dir, "--input", str(tmp_path / "nope"), "--edit",
                      "sefa:0", "--output", str(tmp_path / "x")]) == 2
    assert "--input" in capsys.readouterr().err


def test_edit_latents_folder_names_the_file_inside(model_dir, tmp_path, capsys):
    """--latents FOLDER (an encode output) is told it is a folder and pointed to
    FOLDER/latents.npy, not "does not exist"."""
    enc = tmp_path / "enc"
    enc.mkdir()
    base = ["--checkpoint", model_dir, "--edit", "sefa:0:1", "--output", str(tmp_path / "e")]
    assert edit.main(base + ["--latents", str(enc)]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a latents file" in err and "does not exist" not in err, err
    assert "pass a latents file inside it" in err
    np.save(enc / "latents.npy", np.zeros((2, 4, 32), np.float32))
    assert edit.main(base + ["--latents", str(enc)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pass --latents {enc / 'latents.npy'}." in err, err
    assert not (tmp_path / "e").exists()


def test_edit_refuses_pti_generator_with_all_pivots(model_dir, inv, tmp_path, capsys):
    """One image's PTI-tuned generator (OUT/generators/NAME) with PTI's all-pivots
    OUT/latents.npy (or another image's pivot) would edit every image with NAME's generator:
    refused in one line naming OUT/latents/NAME.npy; the pivot itself is accepted."""
    from e4e_jax.nets.generator import save_generator
    pti = tmp_path / "pti"
    save_generator(inv.generator, str(pti / "generators" / "face"))
    (pti / "latents").mkdir()
    w = np.zeros((1, inv.n_latent, inv.generator.style_dim), np.float32)
    np.save(pti / "latents" / "face.npy", w)
    np.save(pti / "latents" / "other.npy", w)
    np.save(pti / "latents.npy", np.concatenate([w, w]))
    pivot = pti / "latents" / "face.npy"
    base = ["--checkpoint", model_dir, "--edit", "sefa:0:1",
            "--generator", str(pti / "generators" / "face")]
    for latents in (pti / "latents.npy", pti / "latents" / "other.npy"):
        out = tmp_path / ("e_" + latents.stem)
        assert edit.main(base + ["--latents", str(latents), "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pass --latents {pivot}" in err, err
        assert "tuned to 'face' only" in err
        assert not out.exists()
    with pytest.raises(edit_app.EditError, match="holds 2 codes"):
        edit_app.check_pti_pair(str(pti / "generators" / "face"), str(pti / "latents.npy"))
    assert edit.main(base + ["--latents", str(pivot), "--output", str(tmp_path / "ok")]) == 0
    err = capsys.readouterr().err           # singular for one code, one grid
    assert "editing 1 latent code with" in err and "wrote 1 grid (" in err, err
