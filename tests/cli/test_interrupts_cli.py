"""SIGINT / SIGTERM on every subcommand (cli.run_main): exit 130 / 143, exactly one line saying
so, no traceback, no segfault, whatever the moment (imports, compilation, the work itself).

The bug these pin down: a KeyboardInterrupt landing while XLA compiled or ran on its own threads
made the interpreter's teardown segfault (exit 139) after the interrupt line, and one landing in
jax's gc callback was swallowed with an "Exception ignored in" traceback while the command went
on. Each case runs as a real process (real signals) and repeats, since both were intermittent.

"import" sends the signal as soon as the command's handlers are installed (/proc shows SIGTERM
caught), i.e. during the heavy imports; "compile" / "work" wait for a line of the command or a
delay after that. Linux only (/proc). The suite runs each case once; set
E4E_INTERRUPT_REPEATS=3 to repeat them (the crash was intermittent).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.parity.test_encoders import save_tiny_inverter
from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")

CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupts")
    model = save_tiny_inverter(root / "tiny")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            images / f"{i}.png")
    return {"model": str(model), "images": str(images)}


def command(name: str, f: dict, out: str) -> list[str]:
    m, i = f["model"], f["images"]
    args = {
        "encode": ["--checkpoint", m, "--input", i, "--output", out],
        "invert": ["--checkpoint", m, "--input", i, "--output", out],
        "eval": ["--checkpoint", m, "--input", i, "--output", out, "--num-images", "6",
                 "--batch-size", "2"],
        "edit": ["--checkpoint", m, "--input", i, "--edit", "sefa:0:3", "--output", out,
                 "--batch-size", "2"],
        "sample": ["--n", "4", "--output", os.path.join(out + ".png")],
        "directions": ["--synthetic", "64", "--checkpoint", m, "--output", out],
    }[name]
    return [sys.executable, "-m", "e4e_jax.cli.main", name] + args


def _catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def interrupt(argv: list[str], signum: int, moment: str, tmp_path) -> tuple[int, str]:
    """Runs argv, sends `signum` at `moment` ("import", "after:S" seconds after the handlers
    are in, or "line:TEXT" once stderr shows TEXT); returns (exit code, stderr)."""
    err_path = tmp_path / f"err_{time.monotonic_ns()}.txt"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    with open(err_path, "w") as err:
        p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 120
        while not _catches_sigterm(p.pid) and p.poll() is None:
            assert time.monotonic() < deadline, "handlers never installed"
            time.sleep(0.005)
        if moment.startswith("after:"):
            time.sleep(float(moment[6:]))
        elif moment.startswith("line:"):
            while moment[5:] not in err_path.read_text() and p.poll() is None:
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.02)
        # a SIGTERM handler gone again means the command finished its work and is exiting: a
        # signal now would meet the default action (exit -15), not the command (an idle machine
        # finished `encode` just as the 5 s passed)
        if p.poll() is None and (signum != signal.SIGTERM or _catches_sigterm(p.pid)):
            p.send_signal(signum)
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
    return rc, err_path.read_text()


def check(rc: int, err: str, signum: int) -> None:
    assert rc != -11 and rc != 139 and "Segmentation fault" not in err, (rc, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert rc == CODES[signum], (rc, err)
    name = signal.Signals(signum).name
    lines = [x for x in err.splitlines() if "interrupted" in x]
    assert len(lines) == 1, err
    assert lines[0].startswith((f"{name}:", "interrupted")), lines[0]


# during the imports: quick, so every subcommand and both signals are in the fast set
@pytest.mark.parametrize("name", ["encode", "invert", "eval", "edit", "sample", "directions"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_interrupt_during_imports(files, tmp_path, name, signum):
    rc, err = interrupt(command(name, files, str(tmp_path / "out")), signum, "import",
                        tmp_path)
    check(rc, err, signum)
    assert len(err.strip().splitlines()) == 1, err      # nothing but the one line


# later moments: SIGINT at 2 s (compiling), SIGTERM at 5 s (working), once each in the suite;
# E4E_INTERRUPT_REPEATS=3 with more moments is the stress run that found the intermittent crash
REPEATS = int(os.environ.get("E4E_INTERRUPT_REPEATS", "1"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["encode", "invert", "eval", "edit", "sample", "directions"])
@pytest.mark.parametrize("signum,moment", [(signal.SIGINT, "after:2"),
                                           (signal.SIGTERM, "after:5")], ids=["INT", "TERM"])
def test_interrupt_later(files, tmp_path, name, signum, moment):
    for k in range(REPEATS):
        rc, err = interrupt(command(name, files, str(tmp_path / f"out{k}")), signum, moment,
                            tmp_path)
        if rc == 0:                    # finished before the signal: nothing to check
            continue
        check(rc, err, signum)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_invert_interrupted_mid_work_says_how_far_and_resumes(files, tmp_path, signum):
    """The reported crash: invert's own line, then a segfault on the way out (4 of 4 runs)."""
    for k in range(REPEATS):
        out = str(tmp_path / f"out{k}")
        rc, err = interrupt(command("invert", files, out), signum, "line:[1/6] 0.png: started",
                            tmp_path)
        check(rc, err, signum)
        assert "rerun the same command to resume" in err, err
        assert os.path.isfile(os.path.join(out, "summary.json"))
