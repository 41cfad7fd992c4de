import os
import sys

# Tests import the fixture helpers as top-level modules.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config):
    """One persistent XLA compilation cache per test session: the training tests compile the
    same tiny programs in several runs (and worker processes), which then compile once."""
    import tempfile

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not cache:
        cache = tempfile.mkdtemp(prefix="e4e_jax_xla_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache  # inherited by worker processes
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
