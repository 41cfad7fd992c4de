"""The test session's housekeeping (tests/conftest.py): everything a run writes to the temporary
folder (pytest's tmp_path directories, the persistent XLA compilation cache) lives under one root
that is removed when the session ends."""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_tmp_path_and_xla_cache_are_set_up(tmp_path):
    import jax
    import jax.numpy as jnp

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    assert cache, "conftest sets JAX_COMPILATION_CACHE_DIR"
    assert jax.config.jax_compilation_cache_dir == cache
    (tmp_path / "marker.txt").write_text("written by a test")
    # a compilation, so the cache directory is used for real
    y = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0))(jnp.arange(64.0))
    np.testing.assert_allclose(np.asarray(y)[-1], np.sum(np.sin(np.arange(64.0)) * 2.0),
                               rtol=1e-5)
    # read back by test_a_session_leaves_nothing_in_the_temp_folder
    print(f"\nTMP_PATH={tmp_path}\nXLA_CACHE={cache}")


def test_a_session_leaves_nothing_in_the_temp_folder(tmp_path):
    """Runs a pytest session of the test above with TMPDIR pointing to an empty folder; after the
    session the folder must be empty again, and the paths the inner test used must have been
    inside it."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                        "PYTEST_ADDOPTS")}
    env.update(TMPDIR=str(tmpdir), PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         os.path.join(HERE, "test_conftest.py") + "::test_tmp_path_and_xla_cache_are_set_up"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    used = dict(line.split("=", 1) for line in out.splitlines()
                if line.startswith(("TMP_PATH=", "XLA_CACHE=")))
    assert set(used) == {"TMP_PATH", "XLA_CACHE"}, out
    for name, path in used.items():
        assert os.path.realpath(path).startswith(os.path.realpath(tmpdir) + os.sep), (name, path)
        assert not os.path.exists(path), f"{name} {path} was left behind"
    left = sorted(os.listdir(tmpdir))
    assert left == [], f"the test session left {left} in its temporary folder"
