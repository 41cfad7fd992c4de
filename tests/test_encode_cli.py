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
from e4e_jax import encode, image_io
from e4e_jax.inverter import save_inverter
from e4e_jax.models import encoders as E
from test_encoders import tiny_config, tiny_generator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    assert sbs.shape == (256, 32 + 4 + 256, 3)
    # an existing output is not overwritten silently
    with pytest.raises(SystemExit, match="--overwrite"):
        encode.main(["--checkpoint", model_dir, "--input", images, "--output", str(out)])


@pytest.mark.slow
def test_interrupted_run_keeps_written_rows(model_dir, images, tmp_path, monkeypatch):
    real = encode._load_rows

    def load(path, rel, size, align):
        if rel == "e.jpg":
            raise KeyboardInterrupt
        return real(path, rel, size, align)

    monkeypatch.setattr(encode, "_load_rows", load)
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


def test_align_without_extras(model_dir, images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "e4e_jax.align", None)     # import fails
    with pytest.raises(SystemExit, match=r"pip install \.\[align\]"):
        encode.main(["--checkpoint", model_dir, "--input", images, "--output",
                     str(tmp_path / "out"), "--align"])


def test_bad_arguments(model_dir, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no image files"):
        encode.main(["--checkpoint", model_dir, "--input", str(empty), "--output",
                     str(tmp_path / "o")])
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
