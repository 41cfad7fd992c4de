"""SIGTERM / SIGINT during a real `python train.py` process: the step in flight is finished and
saved, one line says where the run stopped, the exit status is 143 / 130 with no traceback, and
rerunning the same command resumes to the same parameters and summary.json as an uninterrupted
run. Rerunning a finished run keeps its summary.json."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tests.support.train_utils as train_utils
from e4e_jax.nets.model_dir import flatten_tree, load_model_dir

TRAIN = os.path.join(train_utils.ROOT, "train.py")
CONFIG = os.path.join(train_utils.HERE, "tiny_train_config.py")
STEPS = 12
TIMES = ("seconds", "step_time_s", "images_per_s")


def command(workdir, steps=STEPS):
    return [sys.executable, TRAIN, "--config", f"{CONFIG}:slow", "--workdir", str(workdir),
            f"--config.max_steps={steps}"]


def environment():
    return train_utils.subprocess_env()


def start(workdir):
    return subprocess.Popen(command(workdir), env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def train(workdir):
    p = subprocess.run(command(workdir), env=environment(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:]
    return p.stdout


def signal_after_checkpoint(proc, workdir, signum, step=4, timeout=900, repeat=1):
    """Sends `signum` once WORKDIR/checkpoints/<step> is complete; returns (rc, output)."""
    target = os.path.join(str(workdir), "checkpoints", str(step))
    t0 = time.time()
    while not os.path.isdir(target):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)
    for _ in range(repeat):
        proc.send_signal(signum)
        time.sleep(0.01)
    out = proc.communicate(timeout=600)[0]
    return proc.returncode, out


def params(workdir):
    return flatten_tree(load_model_dir(os.path.join(str(workdir), "export"),
                                       "e4e_inverter").variables)


def summary_values(workdir):
    with open(os.path.join(str(workdir), "summary.json")) as f:
        s = json.load(f)
    s.pop("export")                          # the workdirs differ
    s.pop("trained_steps_this_run")          # by definition
    s["last_train_metrics"] = {k: v for k, v in s["last_train_metrics"].items()
                               if k not in TIMES}
    return {k: v for k, v in s.items() if k not in TIMES}


@pytest.mark.slow
def test_sigterm_saves_the_step_and_resumes_bit_identically(tmp_path):
    part, full = tmp_path / "part", tmp_path / "full"
    rc, out = signal_after_checkpoint(start(part), part, signal.SIGTERM)
    print(out[-1500:])
    assert rc == 143, out[-3000:]
    assert "Traceback" not in out
    m = re.search(r"SIGTERM: stopped after step (\d+) of 12; checkpoint (\S+) holds it; rerun "
                  r"the same command to resume from step (\d+)\.", out)
    assert m, out[-3000:]
    stopped = int(m.group(1))
    assert 4 < stopped < STEPS and int(m.group(3)) == stopped
    assert m.group(2) == os.path.join(str(part), "checkpoints", str(stopped))
    assert os.path.isdir(m.group(2))             # saved at the step it stopped, not a multiple
    assert not (part / "summary.json").exists()
    # quiet by default: no TensorFlow banner, no orbax chatter, whole progress lines
    assert "oneDNN" not in out and "waiting for" not in out.lower()
    assert "checkpoint_manager.py" not in out and "async_checkpointer.py" not in out
    for line in out.splitlines():
        if "validation loss" in line:
            assert re.fullmatch(r"step \d+: validation loss [\d.]+", line), line
    resumed = train(part)
    assert f"resumed from {part}/checkpoints at step {stopped}" in resumed
    train(full)
    a, b = params(full), params(part)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert summary_values(part) == summary_values(full)
    # a finished run rerun: nothing trained, its record untouched
    before = (part / "summary.json").read_bytes()
    again = train(part)
    assert "nothing to train" in again and "kept unchanged" in again
    assert (part / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130_without_traceback(tmp_path):
    rc, out = signal_after_checkpoint(start(tmp_path / "run"), tmp_path / "run", signal.SIGINT)
    print(out[-1500:])
    assert rc == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert re.search(r"SIGINT: stopped after step \d+ of 12; checkpoint \S+ holds it; rerun the "
                     r"same command to resume", out), out[-3000:]
