"""A test that kills its own process with SIGSEGV, as a native crash in jaxlib or torch would.
tests/unit/test_conftest.py runs it in pytest-xdist workers to check the crash handling of
tests/conftest.py. The file's name keeps it out of ordinary collection."""
import os
import signal


def test_dies_of_a_segfault():
    marker = os.environ["E4E_CRASH_MARKER"]
    if os.environ.get("E4E_CRASH_ALWAYS") or not os.path.exists(marker):
        with open(marker, "a") as f:
            f.write("crashed\n")
        os.kill(os.getpid(), signal.SIGSEGV)
