"""The test session's housekeeping (tests/conftest.py): everything a run writes to the temporary
folder (pytest's tmp_path directories) lives under one root that is removed when the session
ends, and no persistent XLA compilation cache is written (its serialization segfaults on CPU)."""
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_tmp_path_is_set_up_without_a_compilation_cache(tmp_path):
    import jax
    import jax.numpy as jnp

    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:     # the user's own setting is kept
        assert not jax.config.jax_compilation_cache_dir
    (tmp_path / "marker.txt").write_text("written by a test")
    y = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 2.0))(jnp.arange(64.0))
    np.testing.assert_allclose(np.asarray(y)[-1], np.sum(np.sin(np.arange(64.0)) * 2.0),
                               rtol=1e-5)
    # read back by test_a_session_leaves_nothing_in_the_temp_folder
    print(f"\nTMP_PATH={tmp_path}")


def test_a_session_leaves_nothing_in_the_temp_folder(tmp_path):
    """Runs a pytest session of the test above with TMPDIR pointing to an empty folder; after the
    session the folder must be empty again, and the paths the inner test used must have been
    inside it."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "PYTEST_ADDOPTS")}
    env.update(TMPDIR=str(tmpdir), PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         os.path.join(HERE, "test_conftest.py")
         + "::test_tmp_path_is_set_up_without_a_compilation_cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    used = dict(line.split("=", 1) for line in out.splitlines()
                if line.startswith("TMP_PATH="))
    assert set(used) == {"TMP_PATH"}, out
    for name, path in used.items():
        assert os.path.realpath(path).startswith(os.path.realpath(tmpdir) + os.sep), (name, path)
        assert not os.path.exists(path), f"{name} {path} was left behind"
    left = sorted(os.listdir(tmpdir))
    assert left == [], f"the test session left {left} in its temporary folder"


def _run_crashing_test(tmp_path, always):
    marker = tmp_path / "crashes.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(E4E_CRASH_MARKER=str(marker), PYTHONPATH=REPO)
    if always:
        env["E4E_CRASH_ALWAYS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "1", "-p", "no:cacheprovider",
         os.path.join(REPO, "tests", "support", "crash_worker.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    crashes = marker.read_text().count("crashed") if marker.exists() else 0
    return proc.returncode, proc.stdout + proc.stderr, crashes


def test_a_test_that_crashes_its_worker_once_runs_again_in_a_fresh_worker(tmp_path):
    pytest.importorskip("xdist")
    rc, out, crashes = _run_crashing_test(tmp_path, always=False)
    assert rc == 0 and crashes == 1, out
    assert "1 passed, 1 rerun" in out, out
    assert "crash_worker.py::test_dies_of_a_segfault: 1 crash(es), rerun in a fresh worker" in out


def test_a_test_that_crashes_its_worker_twice_fails(tmp_path):
    pytest.importorskip("xdist")
    rc, out, crashes = _run_crashing_test(tmp_path, always=True)
    assert rc == 1 and crashes == 2, out
    assert "1 failed, 1 rerun" in out, out
    assert "2 crash(es), failed: it crashed again" in out, out
