import faulthandler
import os
import shutil
import tempfile

import pytest

import e4e_jax  # noqa: F401  (before any test computes: its XLA_FLAGS workaround, core/xla_flags.py)

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
    global _CREATED_ROOT, _CRASH_DIR
    if _CRASH_DIR is not None:
        shutil.rmtree(_CRASH_DIR, ignore_errors=True)
        _CRASH_DIR = None
    if _CREATED_ROOT is not None:
        shutil.rmtree(_CREATED_ROOT, ignore_errors=True)
        _CREATED_ROOT = None


# pytest-xdist: a test whose worker process died (a fatal signal in native code: jaxlib, torch)
# runs once more, in the fresh worker xdist starts in its place. CI saw such a crash about once
# in a thousand tests, each time in a different test that passes alone (jaxlib 0.10.2's YNNPACK
# fusions, now turned off by `import e4e_jax`: e4e_jax/core/xla_flags.py); a second crash of the
# same test fails the run. The workers write their faulthandler stacks to files in
# E4E_TEST_CRASH_DIR, and the end of the run lists every crash with the crashed worker's stacks.
CRASH_RERUNS = 1
_crashes = pytest.StashKey[dict]()
_CRASH_DIR: str | None = None
_RUNNER_LIBS = ("pluggy", "_pytest", "execnet", "xdist")
_crash_file = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    global _CRASH_DIR, _crash_file
    workerinput = getattr(session.config, "workerinput", None)
    if workerinput is None:
        if not session.config.pluginmanager.hasplugin("dsession"):
            return
        # the xdist controller (tryfirst: before its own sessionstart starts the workers, which
        # inherit the variable)
        _CRASH_DIR = tempfile.mkdtemp(prefix="e4e_jax_crashes_")
        os.environ["E4E_TEST_CRASH_DIR"] = _CRASH_DIR
    elif os.environ.get("E4E_TEST_CRASH_DIR"):
        # replaces pytest's faulthandler target (stderr) in this worker
        _crash_file = open(os.path.join(os.environ["E4E_TEST_CRASH_DIR"],
                                        f"{workerinput['workerid']}.txt"), "w")
        faulthandler.enable(file=_crash_file, all_threads=True)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    crashes = sched.config.stash.setdefault(_crashes, {})
    stacks = ""
    if _CRASH_DIR is not None:
        path = os.path.join(_CRASH_DIR, f"{report.node.gateway.id}.txt")
        if os.path.exists(path):
            with open(path) as f:
                # the test runner's own frames left out: CI keeps only the end of a run's output
                stacks = "".join(line for line in f if not line.startswith("Extension modules")
                                 and not any(f"/{lib}/" in line for lib in _RUNNER_LIBS))
    crashes.setdefault(crashitem, []).append(stacks)
    if len(crashes[crashitem]) <= CRASH_RERUNS:
        sched.mark_test_pending(crashitem)
        report.outcome = "rerun"


def pytest_report_teststatus(report):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    crashes = config.stash.get(_crashes, {})
    if not crashes:
        return
    terminalreporter.section("worker crashes", sep="=", yellow=True)
    for nodeid, stacks in crashes.items():
        outcome = ("rerun in a fresh worker" if len(stacks) <= CRASH_RERUNS
                   else "failed: it crashed again")
        terminalreporter.line(f"{nodeid}: {len(stacks)} crash(es), {outcome}")
        for i, text in enumerate(stacks, 1):
            terminalreporter.line(f"--- crash {i}: the worker's stacks (faulthandler) ---")
            terminalreporter.line(text.rstrip() or "(none written)")


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
