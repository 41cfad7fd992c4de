"""`e4e-jax prepare` (e4e_jax/data/prepared.py): a folder as ArrayRecord shards at the training size.

Pixels equal FolderSource's at the prepared size; the manifest lists names, hashes and skipped
files with the loader's reasons; the output does not depend on --workers; an interrupted run
resumes and keeps its complete shards; outputs that are not prepared datasets are refused."""
import hashlib
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from e4e_jax.data import prepared
from e4e_jax.data.loader import BatchLoader, BatchSpec, SourceImages
from e4e_jax.data.sources import DataError, FolderSource, make_source

SIZE = (16, 16)


def make_folder(root, n=20, bad=True, seed=0):
    """n RGB 32x32 PNG/JPEG images (some in a subfolder), a 16-bit grey PNG, a CMYK JPEG and,
    with `bad`, an undecodable .png, a truncated PNG and a text file."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    for i in range(n):
        a = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        name = f"sub/img{i:02d}.png" if i % 3 == 0 else f"img{i:02d}.png"
        Image.fromarray(a).save(os.path.join(root, name))
    grey = (rng.random((32, 40)) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(os.path.join(root, "grey16.png"))
    Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).convert("CMYK").save(
        os.path.join(root, "cmyk.jpg"))
    if bad:
        with open(os.path.join(root, "bad.png"), "wb") as f:
            f.write(b"not a png")
        with open(os.path.join(root, "img01.png"), "rb") as f:
            data = f.read()
        with open(os.path.join(root, "truncated.png"), "wb") as f:
            f.write(data[:len(data) // 2])
        with open(os.path.join(root, "notes.txt"), "w") as f:
            f.write("labels\n")
    return root


def tree_hashes(folder):
    return {n: hashlib.sha256(pathlib.Path(os.path.join(folder, n)).read_bytes()).hexdigest()
            for n in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module")
def dataset(folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared") / "ds")
    prepared.prepare(folder, out, SIZE, workers=1, shard_size=8)
    return out


def test_pixels_equal_folder_source_at_the_prepared_size(folder, dataset):
    src, ref = make_source(dataset), FolderSource(folder)
    assert isinstance(src, prepared.PreparedSource)
    index = {name: i for i, name in enumerate(ref.files)}
    assert len(src) == 20 + 2
    for i in range(len(src)):
        got = src.load(i, SIZE)
        assert got.dtype == np.uint8 and got.shape == SIZE + (3,)
        np.testing.assert_array_equal(got, ref.load(index[src.name(i)], SIZE))
    # another size resizes the stored image (same function), so it is not the folder's pixels
    assert src.load(0, (8, 12)).shape == (8, 12, 3)


def test_manifest_lists_counts_hashes_and_skipped_files_with_reasons(folder, dataset):
    with open(os.path.join(dataset, "manifest.json")) as f:
        m = json.load(f)
    assert m["format"] == prepared.FORMAT and m["format_version"] == prepared.FORMAT_VERSION
    assert m["size"] == list(SIZE) and m["count"] == 22 and m["encoding"] == "raw"
    files = sorted(os.listdir(dataset))
    assert files == ["manifest.json"] + [prepared.shard_name(k, 4) for k in range(4)]
    assert [s["file"] for s in m["shards"]] == files[1:]
    assert sum(s["records"] for s in m["shards"]) == m["count"] == len(m["images"])
    for s in m["shards"]:
        data = pathlib.Path(os.path.join(dataset, s["file"])).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"]
    names = [i["name"] for i in m["images"]]
    assert names == sorted(names) and "sub/img00.png" in names and "cmyk.jpg" in names
    for entry in m["images"]:
        data = pathlib.Path(os.path.join(folder, entry["name"])).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    skipped = {s["name"]: s["reason"] for s in m["skipped"]}
    assert sorted(skipped) == ["bad.png", "notes.txt", "truncated.png"]
    assert skipped["bad.png"].startswith("cannot read 'bad.png' as an image: "
                                         "UnidentifiedImageError")
    assert "truncated" in skipped["truncated.png"].lower() or "OSError" in skipped[
        "truncated.png"]
    assert "not an image file" in skipped["notes.txt"]
    # the loader reports the same files unreadable (the text file it does not list)
    with pytest.raises(Exception) as e:
        FolderSource(folder).load(FolderSource(folder).files.index("bad.png"), SIZE)
    assert "UnidentifiedImageError" in str(e.value)


def test_png_records_give_the_same_pixels(folder, dataset, tmp_path):
    out = str(tmp_path / "png")
    m = prepared.prepare(folder, out, SIZE, workers=1, shard_size=8, encoding="png")
    assert m["encoding"] == "png"
    raw, png = make_source(dataset), make_source(out)
    for i in range(len(raw)):
        np.testing.assert_array_equal(png.load(i, SIZE), raw.load(i, SIZE))
        np.testing.assert_array_equal(png.load(i, (8, 12)), raw.load(i, (8, 12)))
    assert png.record(0).startswith(b"\x89PNG\r\n\x1a\n")
    assert len(raw.record(0)) == SIZE[0] * SIZE[1] * 3


def test_output_is_byte_identical_for_any_worker_count(folder, dataset, tmp_path):
    out = str(tmp_path / "two")
    prepared.prepare(folder, out, SIZE, workers=2, shard_size=8)
    assert tree_hashes(out) == tree_hashes(dataset)


def test_loaders_read_a_prepared_folder_like_the_image_folder(tmp_path):
    images = make_folder(str(tmp_path / "clean"), n=10, bad=False)
    out = str(tmp_path / "ds")
    prepared.prepare(images, out, SIZE, workers=1, shard_size=4)
    spec = BatchSpec(4, SIZE, seed=3, flip_prob=0.5)
    a, b = BatchLoader(make_source(out), spec), BatchLoader(make_source(images), spec)
    for step in (0, 1, 5):
        np.testing.assert_array_equal(a.batch(step), b.batch(step))
    ba = list(SourceImages(make_source(out), out).read(SIZE, 5))
    bb = list(SourceImages(make_source(images), images).read(SIZE, 5))
    assert [x.names for x in ba] == [x.names for x in bb]
    for x, y in zip(ba, bb):
        np.testing.assert_array_equal(x.images, y.images)


class Stop(Exception):
    pass


def interrupted_run(folder, out, after_files):
    """A run killed once `after_files` files are decoded (the progress callback raises)."""
    def progress(done, total):
        if done >= after_files:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        prepared.prepare(folder, out, SIZE, workers=1, shard_size=8, progress=progress)


def test_an_interrupted_run_resumes_and_keeps_complete_shards(folder, dataset, tmp_path):
    out = str(tmp_path / "ds")
    interrupted_run(folder, out, after_files=16)
    files = sorted(os.listdir(out))
    assert "manifest.json" not in files and prepared.IN_PROGRESS in files
    first = os.path.join(out, prepared.shard_name(0, 4))
    assert os.path.exists(first)
    stat = os.stat(first)
    # a shard being written when the run died, and a shard whose record list never came
    pathlib.Path(out, prepared.shard_name(2, 4) + ".tmp").write_bytes(b"partial")
    pathlib.Path(out, prepared.shard_name(3, 4)).write_bytes(b"orphan")
    with pytest.raises(prepared.PrepareError, match="already holds|not a prepared"):
        prepared.prepare(folder, str(tmp_path), SIZE, workers=1)     # not ours: refused
    notes = []
    prepared.prepare(folder, out, SIZE, workers=1, shard_size=8, log=notes.append)
    assert any("keeping 1 of 4" in n for n in notes), notes
    assert os.stat(first).st_ino == stat.st_ino                       # kept, not rewritten
    assert tree_hashes(out) == tree_hashes(dataset)


def test_a_resumed_run_redoes_shards_whose_files_changed(tmp_path):
    images = make_folder(str(tmp_path / "in"), n=12, bad=False)
    out = str(tmp_path / "ds")
    interrupted_run(images, out, after_files=10)
    first = os.path.join(out, prepared.shard_name(0, 2))
    inode = os.stat(first).st_ino
    changed = min(FolderSource(images).files)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(os.path.join(images, changed))
    prepared.prepare(images, out, SIZE, workers=1, shard_size=8)
    assert os.stat(first).st_ino != inode
    src = make_source(out)
    np.testing.assert_array_equal(src.load(src.files.index(changed), SIZE), 0)


def test_refusals(folder, dataset, tmp_path):
    with pytest.raises(prepared.PrepareError, match="already holds a prepared dataset.*--overwrite"):
        prepared.prepare(folder, dataset, SIZE, workers=1, shard_size=8)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(prepared.PrepareError, match="not a prepared dataset"):
            prepared.prepare(folder, str(other), SIZE, overwrite=overwrite)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(prepared.PrepareError, match="inside --input"):
        prepared.prepare(folder, os.path.join(folder, "out"), SIZE)
    with pytest.raises(prepared.PrepareError, match="is not a folder"):
        prepared.prepare(str(tmp_path / "missing"), str(tmp_path / "o"), SIZE)
    with pytest.raises(prepared.PrepareError, match="already a prepared dataset"):
        prepared.prepare(dataset, str(tmp_path / "o"), SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(prepared.PrepareError, match="no image files"):
        prepared.prepare(str(empty), str(tmp_path / "o2"), SIZE)
    (empty / "b.png").write_bytes(b"junk")
    with pytest.raises(prepared.NothingReadableError, match="none of the files"):
        prepared.prepare(str(empty), str(tmp_path / "o3"), SIZE)


def test_overwrite_prepares_again(folder, tmp_path):
    out = str(tmp_path / "ds")
    prepared.prepare(folder, out, SIZE, workers=1, shard_size=8)
    m = prepared.prepare(folder, out, (8, 8), workers=1, shard_size=16, overwrite=True)
    assert m["size"] == [8, 8] and len(m["shards"]) == 2
    assert sorted(os.listdir(out)) == ["manifest.json"] + [prepared.shard_name(k, 2)
                                                            for k in range(2)]
    assert make_source(out).load(0, (8, 8)).shape == (8, 8, 3)


def test_prepared_source_refuses_other_formats(dataset, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    m = json.loads(pathlib.Path(os.path.join(dataset, "manifest.json")).read_text())
    (bad / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(DataError, match="version 99.*prepare the dataset again"):
        make_source(str(bad))
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepared.PreparedSource(str(tmp_path))


def test_input_files_of_a_prepared_folder_read_like_the_images(folder, dataset):
    """encode / invert list and open images through list_inputs / input_file: a prepared
    folder's are its records, which image_io.read_rgb reads as the stored pixels."""
    from e4e_jax.data import image_io
    src = make_source(dataset)
    assert prepared.list_inputs(dataset) == src.files
    assert prepared.list_inputs(folder) == FolderSource(folder).files
    for name in ("cmyk.jpg", "sub/img03.png"):
        img = image_io.read_rgb(prepared.input_file(dataset, name))
        np.testing.assert_array_equal(np.asarray(img), src.load(src.files.index(name), SIZE))
    assert prepared.input_file(folder, "img02.png") == os.path.join(folder, "img02.png")


def test_bucket_input_and_output(gcs, gcs_photos, tmp_path, monkeypatch):
    """gs:// on both sides (the GCS emulator): shards are uploaded when complete, byte-identical
    to a local run's; reading downloads each shard once into the cache folder."""
    from e4e_jax.core import fs
    local_in, url_in = gcs_photos
    local_out, url_out = str(tmp_path / "local"), url_in.rsplit("/", 1)[0] + "/prepared_test"
    monkeypatch.setenv("E4E_JAX_CACHE", str(tmp_path / "cache"))
    m_local = prepared.prepare(local_in, local_out, SIZE, workers=1, shard_size=4)
    m_url = prepared.prepare(url_in, url_out, SIZE, workers=2, shard_size=4)
    assert {**m_url, "input": None} == {**m_local, "input": None}
    assert sorted(fs.list_files(url_out)) == sorted(os.listdir(local_out))
    for s in m_url["shards"]:
        with fs.open(fs.join(url_out, s["file"]), "rb") as f:
            assert f.read() == pathlib.Path(os.path.join(local_out, s["file"])).read_bytes()
    remote, local = make_source(url_out), make_source(local_out)
    assert isinstance(remote, prepared.PreparedSource)
    for i in range(len(local)):
        np.testing.assert_array_equal(remote.load(i, SIZE), local.load(i, SIZE))
    assert len(os.listdir(tmp_path / "cache")) == len(m_url["shards"])
    with pytest.raises(prepared.PrepareError, match="already holds"):
        prepared.prepare(url_in, url_out, SIZE, workers=1)


def test_size_outside_the_supported_range_is_refused_before_any_work(folder, tmp_path):
    for size in ((1, 1), (7, 256), (256, 4097), (100000, 100000)):
        with pytest.raises(prepared.PrepareError, match=r"outside 8\.\.4096"):
            prepared.prepare(folder, str(tmp_path / "o"), size, workers=1)
    assert not os.path.exists(tmp_path / "o")


class DyingPool:
    """A pool whose worker dies (as the kernel's OOM killer does) after `ok` tasks."""

    def __init__(self, workers, ok=2):
        self.ok = ok

    def map(self, fn, tasks):
        import concurrent.futures.process as cfp
        for k, t in enumerate(tasks):
            if k >= self.ok:
                raise cfp.BrokenProcessPool("A process in the process pool was terminated")
            yield fn(t)

    def close(self):
        pass


def test_a_dying_worker_is_one_error_keeping_complete_shards(folder, dataset, tmp_path,
                                                              monkeypatch):
    out = str(tmp_path / "ds")
    monkeypatch.setattr(prepared, "_Pool", DyingPool)     # 2 tasks of 8 images = 2 shards
    with pytest.raises(prepared.WorkerDiedError, match=r"most likely out of memory.*"
                       r"2 complete shard\(s\).*fewer --workers \(e\.g\. --workers 1\)"):
        prepared.prepare(folder, out, SIZE, workers=3, shard_size=8)
    files = sorted(os.listdir(out))
    assert prepared.shard_name(1, 4) in files and prepared.shard_name(2, 4) not in files
    assert not any(f.endswith(".tmp") for f in files), files
    monkeypatch.undo()
    notes = []
    prepared.prepare(folder, out, SIZE, workers=1, shard_size=8, log=notes.append)
    assert any("keeping 2 of 4" in n for n in notes), notes
    assert tree_hashes(out) == tree_hashes(dataset)


def test_a_real_dead_worker_process_raises_broken_pool():
    """What the catch above relies on: a worker process that dies breaks the pool."""
    import concurrent.futures.process as cfp
    pool = prepared._Pool(2)
    try:
        with pytest.raises(cfp.BrokenProcessPool):
            list(pool.map(os._exit, [3, 3]))
    finally:
        pool.close()


def test_resuming_with_another_size_says_so(folder, tmp_path):
    out = str(tmp_path / "ds")
    interrupted_run(folder, out, after_files=16)
    notes = []
    m = prepared.prepare(folder, out, (8, 12), workers=1, shard_size=8, log=notes.append)
    resumed = [n for n in notes if n.startswith("resuming")]
    assert len(resumed) == 1 and "used --size 16,16, this one --size 8,12" in resumed[0]
    assert "discarded and all 4 shard(s) are prepared again" in resumed[0]
    assert m["size"] == [8, 12] and make_source(out).load(0, (8, 12)).shape == (8, 12, 3)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_dataset_is_one_data_error_and_a_rerun_repairs_it(folder, dataset, tmp_path,
                                                                     damage):
    import shutil
    out = str(tmp_path / "ds")
    shutil.copytree(dataset, out)
    shard = pathlib.Path(out, prepared.shard_name(1, 4))
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:1000])
    for opener in (lambda: make_source(out), lambda: prepared.list_inputs(out),
                   lambda: prepared.input_file(out, "img02.png")):
        prepared._opened.cache_clear()
        with pytest.raises(DataError) as e:
            opener()
        msg = str(e.value)
        assert prepared.shard_name(1, 4) in msg and "\n" not in msg
        assert ("is missing" if damage == "missing" else "has 1000 bytes, not") in msg
        assert f"rerun `e4e-jax prepare` with the same arguments (--input {folder} " \
               f"--output {out} --size 16,16 --shard-size 8)" in msg
    notes = []
    prepared.prepare(folder, out, SIZE, workers=1, shard_size=8, log=notes.append)
    assert any(n.startswith("repairing: " + prepared.shard_name(1, 4)) for n in notes), notes
    assert any("keeping 3 of 4" in n for n in notes), notes
    assert tree_hashes(out) == tree_hashes(dataset)


def test_unreadable_files_are_named_as_given_without_object_reprs(folder, dataset):
    """One wording (image_io.read_error_message) from a path, a file object and a prepared
    run: the name relative to the input folder and PIL's reason, no `<... at 0x...>`."""
    import io

    from e4e_jax.data import image_io
    m = json.loads(pathlib.Path(os.path.join(dataset, "manifest.json")).read_text())
    reason = {s["name"]: s["reason"] for s in m["skipped"]}["bad.png"]
    assert reason == "cannot read 'bad.png' as an image: UnidentifiedImageError: cannot " \
                     "identify image file"
    for src in (os.path.join(folder, "bad.png"), io.BytesIO(b"not a png")):
        with pytest.raises(image_io.ImageReadError) as e:
            image_io.read_rgb(src, name="bad.png")
        assert str(e.value) == reason and e.value.named("x/bad.png") == reason.replace(
            "'bad.png'", "'x/bad.png'")
    src = FolderSource(folder)
    with pytest.raises(image_io.ImageReadError) as e:
        src.load(src.files.index("bad.png"), SIZE)
    assert str(e.value) == reason
