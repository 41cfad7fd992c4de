"""End-to-end test of `python -m e4e_jax.encode` on a folder of mixed image files."""
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

import e4e_jax
from e4e_jax.apps import encode as encode_app
from e4e_jax.cli import encode
from e4e_jax.data import image_io
from e4e_jax.nets.encoder import save_inverter
from e4e_jax.models import encoders as E
from tests.parity.test_encoders import tiny_config, tiny_generator

from tests.support.paths import REPO  # noqa: E402
READABLE = ["a.jpg", "c.png", "d.png", "e.jpg", "f.bmp", os.path.join("sub", "b.png")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    g = tiny_generator(32)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(32, 32))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    la = np.random.default_rng(0).standard_normal((g.n_latent, 32)).astype(np.float32)
    return save_inverter(str(tmp_path_factory.mktemp("model") / "tiny_e4e"), cfg, v, g, la)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files of mixed sizes and modes, one corrupt file and one non-image file."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)

    def rnd(h, w, c):
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)

    Image.fromarray(rnd(80, 100, 3)).save(d / "a.jpg", quality=95)
    os.makedirs(d / "sub")
    Image.fromarray(rnd(70, 50, 1)[..., 0], "L").save(d / "sub" / "b.png")
    Image.fromarray(rnd(40, 40, 4), "RGBA").save(d / "c.png")
    Image.fromarray(rnd(32, 64, 3)).convert("P").save(d / "d.png")
    Image.fromarray(rnd(60, 60, 3)).convert("CMYK").save(d / "e.jpg")
    Image.fromarray(rnd(33, 31, 3)).save(d / "f.bmp")
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "notes.txt").write_text("not an image")
    return str(d)


def official_transform(path, size):
    """Image.open(...).convert('RGB') -> Resize((H, W)) (PIL bilinear) -> ToTensor -> Normalize."""
    img = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
    return (np.asarray(img, np.float32) / 255 - 0.5) / 0.5


def test_encode_folder(model_dir, images, tmp_path):
    out = tmp_path / "out"
    rc = encode.main(["--checkpoint", model_dir, "--input", images, "--output", str(out),
                      "--batch-size", "4", "--save-images"])
    assert rc == 0
    files = (out / "files.txt").read_text().splitlines()
    assert files == sorted(READABLE)
    lat = np.load(out / "latents.npy")
    assert lat.shape == (6, 8, 32) and lat.dtype == np.float32
    skipped = (out / "skipped.txt").read_text()
    assert skipped.startswith("bad.jpg\t") and "notes.txt" not in skipped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["latents"] == 6 and summary["skipped"] == 1
    assert summary["compilations"] == 1       # 4 + 2 padded: one compiled shape
    # rows equal encoding each file alone with the official transform
    inv = e4e_jax.load_encoder(model_dir)
    x = np.stack([official_transform(os.path.join(images, f), (32, 32)) for f in files])
    np.testing.assert_array_equal(x, image_io.load_images([os.path.join(images, f) for f in files],
                                                          (32, 32)))
    np.testing.assert_allclose(lat, np.asarray(inv.encode(x)), atol=1e-5)
    w, rec = inv.invert(x[:1])
    r = np.asarray(Image.open(out / "reconstructions" / "a.png"))
    # another batch size rounds differently: at most one uint8 step apart
    assert np.abs(r.astype(int) - image_io.to_uint8(rec[0]).astype(int)).max() <= 1
    sbs = np.asarray(Image.open(out / "side_by_side" / "sub" / "b.png"))
    b = files.index(os.path.join("sub", "b.png"))
    rec_b = np.asarray(Image.open(out / "reconstructions" / "sub" / "b.png"))
    np.testing.assert_array_equal(sbs, encode_app.side_by_side_grid(
        os.path.join("sub", "b.png"), image_io.to_uint8(x[b]), rec_b))
    # an existing output is not overwritten silently
    assert encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                        str(out)]) == 2


@pytest.mark.slow
def test_interrupted_run_keeps_written_rows(model_dir, images, tmp_path, monkeypatch):
    real = encode_app.load_rows

    def load(path, rel, size, align):
        if rel == "e.jpg":
            raise KeyboardInterrupt
        return real(path, rel, size, align)

    monkeypatch.setattr(encode_app, "load_rows", load)
    out = tmp_path / "out"
    rc = encode.main(["--checkpoint", model_dir, "--input", images, "--output", str(out),
                      "--batch-size", "2"])
    assert rc == 130
    lat = np.load(out / "latents.npy")
    assert lat.shape == (2, 8, 32)
    assert (out / "files.txt").read_text().splitlines() == ["a.jpg", "c.png"]
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


@pytest.mark.slow
def test_align_faces_rows(model_dir, images, tmp_path, monkeypatch):
    calls = []

    def align_faces(image, size):
        calls.append(size)
        if image.size == (40, 40):
            return []                                   # c.png: no face
        faces = [image.resize((size, size))]
        if image.size == (100, 80):
            faces.append(image.crop((0, 0, 50, 50)))    # a.jpg: two faces
        return faces

    fake = types.ModuleType("e4e_jax.align")
    fake.align_faces = align_faces
    monkeypatch.setitem(sys.modules, "e4e_jax.align", fake)
    out = tmp_path / "out"
    assert encode.main(["--checkpoint", model_dir, "--input", images, "--output", str(out),
                        "--align", "--batch-size", "3"]) == 0
    files = (out / "files.txt").read_text().splitlines()
    assert files == ["a.jpg", "a.jpg#face1", "d.png", "e.jpg", "f.bmp",
                     os.path.join("sub", "b.png")]
    assert np.load(out / "latents.npy").shape == (6, 8, 32)
    assert set(calls) == {32}
    skipped = (out / "skipped.txt").read_text()
    assert "c.png\tno face found" in skipped and "bad.jpg" in skipped


def test_align_without_extras(model_dir, images, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "e4e_jax.align", None)     # import fails
    assert encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                        str(tmp_path / "out"), "--align"]) == 1     # as align's exit code
    assert "pip install .[align]" in capsys.readouterr().err


def test_bad_arguments(model_dir, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert encode.main(["--checkpoint", model_dir, "--input", str(empty), "--output",
                        str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert encode.main(["--checkpoint", str(empty), "--input", images, "--output",
                        str(tmp_path / "o")]) == 2
    assert "not a converted model directory" in capsys.readouterr().err
    assert encode.main(["--checkpoint", model_dir, "--input", str(tmp_path / "missing"),
                        "--output", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_data_parallel_two_devices(model_dir, images, tmp_path):
    """`python -m e4e_jax.encode` on 2 (forced) host devices: batch 3 is rounded up to 4, the
    batch is split over the devices and the latents equal the single-device ones."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "out2"
    proc = subprocess.run([sys.executable, "-m", "e4e_jax.encode", "--checkpoint", model_dir,
                           "--input", images, "--output", str(out), "--batch-size", "3"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipping bad.jpg" in proc.stderr and "images/s" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["batch_size"] == 4
    inv = e4e_jax.load_encoder(model_dir)
    files = (out / "files.txt").read_text().splitlines()
    x = image_io.load_images([os.path.join(images, f) for f in files], (32, 32))
    np.testing.assert_allclose(np.load(out / "latents.npy"), np.asarray(inv.encode(x)),
                               atol=1e-5)


def test_output_names_never_collide(model_dir, tmp_path):
    """Same stem with different extensions, names differing only in case, and a face-suffix
    clash: every row gets its own PNG, images.txt maps row -> PNG (issue 13 item 1)."""
    d = tmp_path / "clash"
    d.mkdir()
    rng = np.random.default_rng(1)
    names = ["a.jpg", "a.png", "A.bmp", "two.jpg", "two_face1.jpg"]
    for n in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / n)

    out = tmp_path / "out"
    assert encode.main(["--checkpoint", model_dir, "--input", str(d), "--output", str(out),
                        "--save-images", "--batch-size", "2"]) == 0
    rows = (out / "files.txt").read_text().splitlines()
    pngs = (out / "images.txt").read_text().splitlines()
    assert len(rows) == len(pngs) == 5
    assert len({p.lower() for p in pngs}) == 5             # unique even ignoring case
    mapping = dict(zip(rows, pngs))
    assert mapping["A.bmp"] == "A.png"                      # first in sorted order keeps it
    assert mapping["a.jpg"] == "a_jpg.png" and mapping["a.png"] == "a_png.png"
    assert mapping["two.jpg"] == "two.png" and mapping["two_face1.jpg"] == "two_face1.png"
    for p in pngs:
        assert (out / "reconstructions" / p).is_file() and (out / "side_by_side" / p).is_file()
    # the reconstruction file of each row is that row's own image
    lat = np.load(out / "latents.npy")
    inv = e4e_jax.load_encoder(model_dir)
    for k in (rows.index("a.jpg"), rows.index("a.png")):
        _, rec = inv.invert(image_io.load_images([str(d / rows[k])], (32, 32)))
        got = np.asarray(Image.open(out / "reconstructions" / pngs[k])).astype(int)
        assert np.abs(got - image_io.to_uint8(np.asarray(rec)[0]).astype(int)).max() <= 1
    assert lat.shape[0] == 5


def test_align_face_suffix_clash(model_dir, tmp_path, monkeypatch):
    """two.jpg with two faces plus a file two_face1.jpg: three distinct PNGs."""
    d = tmp_path / "faces"
    d.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / "two.jpg")
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(d / "two_face1.jpg")

    def align_faces(image, size):
        faces = [image.resize((size, size))]
        if image.size == (40, 40):
            faces.append(image.resize((size, size)))
        return faces

    fake = types.ModuleType("e4e_jax.align")
    fake.align_faces = align_faces
    monkeypatch.setitem(sys.modules, "e4e_jax.align", fake)
    out = tmp_path / "out"
    assert encode.main(["--checkpoint", model_dir, "--input", str(d), "--output", str(out),
                        "--align", "--save-images"]) == 0
    rows = (out / "files.txt").read_text().splitlines()
    pngs = (out / "images.txt").read_text().splitlines()
    assert rows == ["two.jpg", "two.jpg#face1", "two_face1.jpg"]
    assert pngs == ["two.png", "two_face1.png", "two_face1_jpg.png"]
    assert sorted(os.listdir(out / "reconstructions")) == sorted(pngs)


def test_exit_1_when_nothing_readable(model_dir, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.jpg").write_bytes(b"not a jpeg")
    (d / "y.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert encode.main(["--checkpoint", model_dir, "--input", str(d), "--output",
                        str(out)]) == 1
    assert "none of the 2 files could be read" in capsys.readouterr().err
    assert np.load(out / "latents.npy").shape == (0, 8, 32)


def test_workdir_hint(model_dir, images, tmp_path, capsys):
    import shutil
    workdir = tmp_path / "run"
    workdir.mkdir()
    shutil.copytree(model_dir, workdir / "export")
    assert encode.main(["--checkpoint", str(workdir), "--input", images, "--output",
                        str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pass " + repr(str(workdir / "export")) in err and "WORKDIR/export" in err


def test_dtype_precision_reach_loader(model_dir, images, tmp_path, monkeypatch):
    import e4e_jax.nets.encoder as inverter
    seen = []
    real = inverter.load_encoder

    def fake(path, **kw):
        seen.append(kw)
        return real(path)

    monkeypatch.setattr(inverter, "load_encoder", fake)
    assert encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                        str(tmp_path / "o1")]) == 0
    assert encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                        str(tmp_path / "o2"), "--dtype", "bfloat16",
                        "--precision", "highest"]) == 0
    assert seen == [{}, {"dtype": "bfloat16", "precision": "highest"}]
    with pytest.raises(SystemExit) as e:
        encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                     str(tmp_path / "o3"), "--dtype", "float16"])
    assert e.value.code == 2


def test_side_by_side_pngs_are_captioned_and_enlarged(model_dir, tmp_path):
    """encode --save-images writes its input | reconstruction PNGs like the other commands'
    grids (titled, captioned, small cells magnified by nearest neighbour), not a bare 68x32
    strip."""
    from e4e_jax.outputs.grids import grid_layout
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "x.png")
    out = tmp_path / "out"
    assert encode.main(["--checkpoint", model_dir, "--input", str(d), "--output", str(out) + "/",
                        "--save-images"]) == 0
    sbs = np.asarray(Image.open(out / "side_by_side" / "x.png"))
    rec = np.asarray(Image.open(out / "reconstructions" / "x.png"))
    inp = image_io.to_uint8(image_io.load_images([str(d / "x.png")], (32, 32))[0])
    assert sbs.shape[0] >= 128 and sbs.shape[1] >= 2 * 128
    np.testing.assert_array_equal(sbs, encode_app.side_by_side_grid("x.png", inp, rec))
    # the cells: the input magnified (nearest) to the reconstruction's size, then the
    # reconstruction; the caption lines above them are not image pixels
    k = rec.shape[0] // 32
    layout = grid_layout(1, 2, rec.shape[0], rec.shape[1])
    top, left, h, w = layout.box(0, 0)
    big = np.repeat(np.repeat(inp, k, 0), k, 1)
    np.testing.assert_array_equal(sbs[top:top + big.shape[0] * layout.scale:layout.scale,
                                      left:left + big.shape[1] * layout.scale:layout.scale], big)
    top, left, h, w = layout.box(0, 1)
    np.testing.assert_array_equal(sbs[top:top + h:layout.scale, left:left + w:layout.scale], rec)
    assert layout.title_h > 0 and (sbs[:layout.title_h] < 128).any()     # a title is drawn
