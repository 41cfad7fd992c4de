"""The path layer (e4e_jax.core.fs) on a local folder and on a bucket (a GCS emulator on the
loopback interface, reached by gcsfs exactly as on a pod)."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from e4e_jax.core import fs
from e4e_jax.data import image_io
from e4e_jax.data.sources import DataError, FolderSource


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """An empty folder: local, or a fresh prefix of the emulated bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    gcs = request.getfixturevalue("gcs")
    return gcs.url(f"fs_{os.path.basename(str(tmp_path))}")


def test_is_remote_and_join():
    assert fs.is_remote("gs://b/x") and fs.is_remote("memory://x")
    assert not fs.is_remote("/tmp/x") and not fs.is_remote("file:///tmp/x")
    assert fs.join("gs://b/x/", "/sub/", "a.png") == "gs://b/x/sub/a.png"
    assert fs.join("dir", "a.png") == os.path.join("dir", "a.png")
    assert fs.basename("gs://b/x/y.png") == "y.png" and fs.basename("gs://b/x/") == "x"
    assert fs.protocol("gs://b") == "gs" and fs.protocol("x/y") == "file"


def test_write_list_read_rename_remove(root):
    assert not fs.exists(root) and not fs.isdir(root)
    with pytest.raises(FileNotFoundError):
        fs.list_files(root)
    fs.makedirs(root)
    for name in ["b.txt", "sub/z.txt", "a.txt", "sub/deeper/y.txt"]:
        if not fs.is_remote(root):
            fs.makedirs(os.path.dirname(fs.join(root, name)))
        with fs.open(fs.join(root, name), "w") as f:
            f.write(name.upper())
    # recursive, sorted, '/'-separated names relative to the root
    assert fs.list_files(root) == ["a.txt", "b.txt", "sub/deeper/y.txt", "sub/z.txt"]
    assert fs.isdir(root) and fs.isdir(fs.join(root, "sub"))
    assert fs.isfile(fs.join(root, "a.txt")) and not fs.isdir(fs.join(root, "a.txt"))
    assert fs.exists(fs.join(root, "sub/z.txt")) and not fs.exists(fs.join(root, "nope.txt"))
    with fs.open(fs.join(root, "sub/deeper/y.txt"), "r") as f:
        assert f.read() == "SUB/DEEPER/Y.TXT"
    fs.rename(fs.join(root, "a.txt"), fs.join(root, "c.txt"))
    assert fs.list_files(root) == ["b.txt", "c.txt", "sub/deeper/y.txt", "sub/z.txt"]
    assert fs.read_bytes(fs.join(root, "c.txt")) == b"A.TXT"
    fs.remove(fs.join(root, "c.txt"))
    assert not fs.exists(fs.join(root, "c.txt"))
    with pytest.raises(FileNotFoundError):
        fs.open(fs.join(root, "c.txt"), "rb")
    with pytest.raises(FileNotFoundError):
        fs.remove(fs.join(root, "c.txt"))


def test_binary_roundtrip_of_an_npy(root):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, x)
    fs.write_bytes(fs.join(root, "x.npy"), buf.getvalue())
    np.testing.assert_array_equal(np.load(io.BytesIO(fs.read_bytes(fs.join(root, "x.npy")))), x)


def test_listing_sees_files_written_by_another_client(gcs):
    """list_files drops gcsfs's listing cache: objects written by another process (here: a
    second client instance) appear."""
    import gcsfs
    root = gcs.url("other_writer")
    fs.write_bytes(fs.join(root, "a.txt"), b"a")
    assert fs.list_files(root) == ["a.txt"]
    other = gcsfs.GCSFileSystem(token="anon", skip_instance_cache=True)
    with other.open(f"{gcs.bucket}/other_writer/b.txt", "wb") as f:
        f.write(b"b")
    assert fs.list_files(root) == ["a.txt", "b.txt"]


def test_missing_bucket(gcs):
    assert not fs.exists("gs://no-such-bucket/x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fs.list_files("gs://no-such-bucket/photos")
    with pytest.raises(FileNotFoundError, match="gcloud storage buckets create"):
        fs.OutputFolder("gs://no-such-bucket/out")


def test_output_folder_uploads_changes_and_cleans_up(gcs):
    target = gcs.url("outfolder")
    out = fs.OutputFolder(target, interval=3600)
    assert os.path.isdir(out.local) and out.path("a.txt") == target + "/a.txt"
    with open(os.path.join(out.local, "a.txt"), "w") as f:
        f.write("one")
    assert out.sync() == 0                        # within the interval: nothing yet
    assert out.sync(force=True) == 1
    assert fs.read_bytes(fs.join(target, "a.txt")) == b"one"
    assert out.sync(force=True) == 0              # unchanged files are not sent again
    os.makedirs(os.path.join(out.local, "sub"))
    with open(os.path.join(out.local, "a.txt"), "a") as f:
        f.write(" two")
    with open(os.path.join(out.local, "sub", "b.txt"), "w") as f:
        f.write("b")
    out.close()
    assert not os.path.exists(out.local)
    assert fs.list_files(target) == ["a.txt", "sub/b.txt"]
    assert fs.read_bytes(fs.join(target, "a.txt")) == b"one two"


def test_output_folder_local_is_the_target(tmp_path):
    out = fs.OutputFolder(str(tmp_path / "o"))
    assert out.local == str(tmp_path / "o") and os.path.isdir(out.local)
    assert out.sync(force=True) == 0
    out.close()
    assert os.path.isdir(out.local)


def test_folder_source_from_a_bucket_equals_local(gcs_photos):
    local, url = gcs_photos
    a, b = FolderSource(local), FolderSource(url)
    assert a.files == b.files == ["a.png", "b.png", "c.png", "d.png", "sub/e.png", "sub/f.png"]
    for i in range(len(a)):
        np.testing.assert_array_equal(a.load(i, (16, 16)), b.load(i, (16, 16)))
    with pytest.raises(DataError, match="does not exist"):
        FolderSource(url + "_missing")


def test_read_rgb_accepts_paths_urls_and_file_objects(gcs_photos):
    local, url = gcs_photos
    ref = np.asarray(Image.open(os.path.join(local, "a.png")).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(image_io.read_rgb(fs.join(url, "a.png"))), ref)
    with open(os.path.join(local, "a.png"), "rb") as f:
        np.testing.assert_array_equal(np.asarray(image_io.read_rgb(f)), ref)
    with pytest.raises(image_io.ImageReadError, match="missing.png"):
        image_io.read_rgb(fs.join(url, "missing.png"))
    assert image_io.list_images(url, recursive=False) == ["a.png", "b.png", "c.png", "d.png"]


def test_save_png_to_a_bucket(gcs):
    u8 = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = image_io.save_png(u8, gcs.url("pngs", "x.png"))
    np.testing.assert_array_equal(np.asarray(image_io.read_rgb(path)), u8)


def test_missing_gcsfs_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "gcsfs", None)     # `import gcsfs` raises ImportError
    with pytest.raises(fs.RemoteError, match=r"pip install 'e4e_jax\[gcs\]'"):
        fs.exists("gs://bkt/x")


def test_a_failing_bucket_is_not_an_unreadable_image(monkeypatch):
    """read_rgb raises the store's RemoteError, not ImageReadError: the loaders skip unreadable
    images, and a bucket failure must stop a run instead of silently changing its data."""
    import sys
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    with pytest.raises(fs.RemoteError):
        image_io.read_rgb("gs://bkt/photos/a.png")


def test_staging_folder_of_a_failed_command_is_kept_only_if_not_uploaded(gcs):
    """What the exit hook does for a command that raised before `close`."""
    import atexit
    done, pending = fs.OutputFolder(gcs.url("failed_a")), fs.OutputFolder(gcs.url("failed_b"))
    for out in (done, pending):
        with open(os.path.join(out.local, "a.txt"), "w") as f:
            f.write("a")
    done.sync(force=True)
    for out in (done, pending):
        atexit.unregister(out.discard_if_uploaded)
        out.discard_if_uploaded()
    assert not os.path.exists(done.local) and os.path.isfile(os.path.join(pending.local, "a.txt"))
    pending.close()
    assert fs.read_bytes(gcs.url("failed_b", "a.txt")) == b"a"


class _FailingStore:
    """An fsspec filesystem stand-in whose every request fails with `exc`."""

    def __init__(self, exc, method="anon"):
        self.exc = exc
        self.credentials = type("Creds", (), {"method": method})()

    def invalidate_cache(self, p):
        pass

    def info(self, p):
        raise self.exc


@pytest.mark.parametrize("network", [True, False])
def test_unreachable_store_says_network_not_credentials(monkeypatch, network):
    """A DNS / connection failure is reported as the network; only a refusal by the store
    points at credentials."""
    import socket
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    if network:
        try:
            raise OSError("Cannot connect to host storage.googleapis.com:443") \
                from socket.gaierror(-3, "Temporary failure in name resolution")
        except OSError as e:
            exc = e
    else:
        exc = PermissionError("403 Forbidden")
    monkeypatch.setattr(fs, "_filesystem", lambda path: (_FailingStore(exc), path))
    with pytest.raises(fs.RemoteError) as e:
        fs.exists("gs://bkt/imgs")
    msg = str(e.value)
    assert msg.startswith("cannot access gs://bkt/imgs: ")
    assert ("cannot be reached" in msg and "network" in msg) == network
    assert ("credentials" in msg) != network
    assert fs.is_network_error(exc) == network


def test_an_unreadable_bucket_file_is_named_as_given_without_object_reprs(gcs, tmp_path):
    """From gs:// the image arrives as in-memory bytes: PIL's reason names the BytesIO object;
    the message names the file relative to the folder, as a local read does."""
    from e4e_jax.data.sources import FolderSource
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "corrupt.png").write_bytes(b"not a png")
    url = gcs.upload_folder(str(tmp_path), "corrupt_only")
    want = ("cannot read 'sub/corrupt.png' as an image: UnidentifiedImageError: cannot "
            "identify image file")
    for root in (str(tmp_path), url):
        with pytest.raises(image_io.ImageReadError) as e:
            FolderSource(root).load(0, (8, 8))
        assert str(e.value) == want
    with pytest.raises(image_io.ImageReadError) as e:
        image_io.read_rgb(fs.join(url, "sub/corrupt.png"))
    assert "object at 0x" not in str(e.value) and str(e.value).startswith(
        f"cannot read '{url}/sub/corrupt.png' as an image: UnidentifiedImageError")


def test_emulator_leaves_no_thread_in_the_test_process():
    """The bucket tests' emulator serves from its own process, and stopping it ends fsspec's
    IO thread: no thread of the bucket tests outlives them (tests/support/gcs.py)."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    import threading

    from tests.support.gcs import GcsEmulator
    before = {t.ident for t in threading.enumerate()}
    with GcsEmulator("other") as emulator:
        fs.write_bytes(emulator.url("x.bin"), b"abc")
        assert fs.read_bytes(emulator.url("x.bin")) == b"abc"
        assert any(t.name == "fsspecIO" for t in threading.enumerate())
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], left
    assert not [t for t in threading.enumerate() if t.name == "fsspecIO" and t.is_alive()]
    assert "STORAGE_EMULATOR_HOST" not in os.environ or os.environ.get(
        "STORAGE_EMULATOR_HOST") != emulator.endpoint
