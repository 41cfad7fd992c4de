import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The temporary root this session created (None when the user gave --basetemp): removed again in
# pytest_unconfigure, so a run leaves nothing in the temp folder.
_CREATED_ROOT: str | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """One temporary root per test session for pytest's tmp_path directories, removed at the end
    of the session (pytest-xdist workers get their folders inside it). tryfirst: pytest's tmpdir
    plugin reads `--basetemp` in its own pytest_configure, which must see the value set here.

    No persistent XLA compilation cache: with jax 0.10.2 on CPU, serializing some compiled
    programs into it (jax's compilation_cache.put_executable_and_time ->
    LoadedExecutable.serialize) segfaults: a CI run died of it (exit 139) in test_pti, and the
    one before in test_precision with the cache on. Every process compiles for itself (a
    JAX_COMPILATION_CACHE_DIR set in the environment still turns the cache on, at that risk)."""
    global _CREATED_ROOT
    if not config.option.basetemp:
        _CREATED_ROOT = tempfile.mkdtemp(prefix="e4e_jax_tests_")
        config.option.basetemp = os.path.join(_CREATED_ROOT, "pytest")
    try:
        import tqdm
        # its monitor thread wakes every 10 s to run Python in the test process; nothing in the
        # tests needs it
        tqdm.tqdm.monitor_interval = 0
    except ImportError:
        pass


def pytest_unconfigure(config):
    global _CREATED_ROOT
    if _CREATED_ROOT is not None:
        shutil.rmtree(_CREATED_ROOT, ignore_errors=True)
        _CREATED_ROOT = None


@pytest.fixture(scope="module")
def gcs():
    """A GCS emulator (tests/support/gcs.py) with bucket `bkt` for one test module, reached by
    gs:// paths through STORAGE_EMULATOR_HOST; skipped without the `test` extra's packages."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    from tests.support.gcs import GcsEmulator
    with GcsEmulator("bkt") as emulator:
        yield emulator


@pytest.fixture(scope="module")
def gcs_photos(gcs, tmp_path_factory):
    """(local folder, gs://bkt/photos): six small RGB PNGs, two of them in sub/, the same bytes
    in both places."""
    import numpy as np
    from PIL import Image
    local = tmp_path_factory.mktemp("gcs_photos")
    rng = np.random.default_rng(7)
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png", "sub/e.png", "sub/f.png"]):
        path = local / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24 + 4 * i, 28, 3), dtype=np.uint8)).save(path)
    return str(local), gcs.upload_folder(str(local), "photos")
