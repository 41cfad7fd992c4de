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
