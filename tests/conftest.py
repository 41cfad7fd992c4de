import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The temporary root this session created (None when the user gave both --basetemp and a cache
# directory): removed again in pytest_unconfigure, so a run leaves nothing in the temp folder.
_CREATED_ROOT: str | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """One temporary root per test session holding both pytest's tmp_path directories and a
    persistent XLA compilation cache (the training tests compile the same tiny programs in
    several runs and worker processes, which then compile once). The root is removed at the end
    of the session. tryfirst: pytest's tmpdir plugin reads `--basetemp` in its own
    pytest_configure, which must see the value set here."""
    global _CREATED_ROOT
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    # pytest-xdist workers and our own subprocesses inherit the variable: the controller owns it
    if not cache or not config.option.basetemp:
        _CREATED_ROOT = tempfile.mkdtemp(prefix="e4e_jax_tests_")
    if not cache:
        cache = os.path.join(_CREATED_ROOT, "xla_cache")
        os.makedirs(cache)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache  # inherited by worker processes
    if not config.option.basetemp:
        config.option.basetemp = os.path.join(_CREATED_ROOT, "pytest")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    try:
        import tqdm
        # its monitor thread wakes every 10 s and runs Python beside the XLA compilations of
        # the test process (see tests/support/gcs.py for why the suite keeps no such thread)
        tqdm.tqdm.monitor_interval = 0
    except ImportError:
        pass
    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_unconfigure(config):
    global _CREATED_ROOT
    if _CREATED_ROOT is not None:
        if os.environ.get("JAX_COMPILATION_CACHE_DIR", "").startswith(_CREATED_ROOT):
            os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
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
