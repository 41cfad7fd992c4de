"""Multi-host start-up (issue 22, item 7): config.distributed is checked before anyone waits
(one line, exit 2), the wait for the other processes is config.distributed.
initialization_timeout with a progress line, and it ends in one line naming the processes that
did not arrive, without JAX's C++ abort. Processes are threads (the rendezvous) or child
processes (jax.distributed.initialize, train.py) on 127.0.0.1 with free ports."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from e4e_jax.train import distributed
from e4e_jax.train.config import base_config
from e4e_jax.train.errors import DistributedSettingsError, TrainingError
from tests.support.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(**given):
    d = base_config().distributed
    d.initialize = True
    for k, v in given.items():
        d[k] = v
    return d


FULL = dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)


@pytest.mark.parametrize("given,message", [
    (dict(FULL, process_id=5), "process_id=5 with num_processes=2: each host takes a different "
                               "id in 0..1"),
    (dict(FULL, process_id=-1), "process_id=-1 with num_processes=2"),
    (dict(FULL, num_processes=0, process_id=0), "num_processes=0: it counts the hosts"),
    (dict(coordinator_address="127.0.0.1:1234"),
     "config.distributed.num_processes and process_id missing (given: coordinator_address="),
    (dict(num_processes=2, process_id=0), "config.distributed.coordinator_address missing"),
    (dict(FULL, coordinator_address="127.0.0.1"), "'127.0.0.1' is not HOST:PORT"),
    (dict(FULL, coordinator_address="host:99999"), "port 99999 of 'host:99999' is not in"),
    (dict(FULL, coordinator_address="http://h:12"), "is not HOST:PORT"),
    (dict(FULL, initialization_timeout=0), "initialization_timeout=0: seconds to wait"),
])
def test_bad_settings_are_refused_naming_the_setting(given, message):
    with pytest.raises(DistributedSettingsError) as e:
        distributed.check_settings(settings(**given))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_good_settings_pass():
    distributed.check_settings(settings(**FULL))
    distributed.check_settings(settings(**dict(FULL, coordinator_address="[::1]:80")))
    distributed.check_settings(settings())                  # auto-detection: nothing given
    distributed.check_settings(base_config().distributed)   # single host


def test_one_process_needs_no_coordinator(monkeypatch):
    """issue 22: num_processes=1 without an address asked for a coordinator_address; a single
    process needs none, so it passes and no distributed start-up runs."""
    import jax
    monkeypatch.setattr(jax.distributed, "initialize",
                        lambda **kw: pytest.fail(f"jax.distributed.initialize({kw})"))
    for given in (dict(num_processes=1), dict(num_processes=1, process_id=0)):
        distributed.check_settings(settings(**given))
        config = base_config()
        config.distributed = settings(**given)
        lines = []
        distributed.initialize(config, say=lines.append)
        assert len(lines) == 1 and "a single process" in lines[0], lines
    with pytest.raises(DistributedSettingsError, match="process_id=1 with num_processes=1"):
        distributed.check_settings(settings(num_processes=1, process_id=1))


def test_a_setting_ignored_without_initialize_is_refused():
    d = base_config().distributed
    d.num_processes = 2
    with pytest.raises(DistributedSettingsError, match="initialize is False, so it would be "
                                                       "ignored"):
        distributed.check_settings(d)


def _gather_all(n, port, timeout, ids=None, nums=None):
    """Runs gather for the process ids `ids` (default 0..n-1) as threads; returns
    {id: None or the exception}, and the lines said."""
    ids = list(range(n)) if ids is None else ids
    results, lines = {}, []

    def one(pid):
        try:
            distributed.gather(f"127.0.0.1:{port}", (nums or {}).get(pid, n), pid, timeout,
                               lines.append, progress_every=0.5)
            results[pid] = None
        except TrainingError as e:
            results[pid] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in reversed(threads):        # the peers start before process 0
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(timeout + 10)
    return results, lines


def test_every_process_arrives():
    results, lines = _gather_all(3, free_port(), 10)
    assert results == {0: None, 1: None, 2: None}
    assert any("all 3 processes joined" in line for line in lines)


def test_process_zero_names_the_processes_that_did_not_arrive():
    port = free_port()
    t0 = time.time()
    results, lines = _gather_all(4, port, 2, ids=[0, 2])
    assert time.time() - t0 < 8
    zero, two = str(results[0]), str(results[2])
    assert zero.startswith(f"2 of 4 processes joined the coordinator at 127.0.0.1:{port} within "
                           f"config.distributed.initialization_timeout=2 s; processes 1, 3 did "
                           f"not arrive"), zero
    assert two.startswith("process 0 gave up: 2 of 4 processes joined"), two
    assert any(f"waiting for processes to join the coordinator at 127.0.0.1:{port}: 2 of 4 "
               f"here, processes 1, 3 missing (" in line for line in lines), lines


def test_a_process_without_coordinator_says_so():
    port = free_port()
    results, lines = _gather_all(2, port, 1.5, ids=[1])
    assert str(results[1]).startswith(f"process 1 could not reach the coordinator (process 0) "
                                      f"at 127.0.0.1:{port} within config.distributed."
                                      f"initialization_timeout=1.5 s"), results
    assert any("process 1: waiting for the coordinator" in line for line in lines)


def test_duplicate_ids_and_disagreeing_counts_are_refused():
    results, _ = _gather_all(3, free_port(), 5, ids=[0, 1, 1])
    assert "two processes were started with config.distributed.process_id=1" in str(results[0])
    results, _ = _gather_all(2, free_port(), 5, nums={1: 3})
    assert "process 1 was started with config.distributed.num_processes=3, process 0 with 2" \
        in str(results[1])


def test_a_port_in_use_is_a_settings_error():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(DistributedSettingsError, match=f"cannot listen on port {port}"):
            distributed.gather(f"127.0.0.1:{port}", 2, 0, 1, print)


CHILD = """
import sys
from e4e_jax.train.config import base_config
from e4e_jax.train.setup import maybe_initialize_distributed
c = base_config()
d = c.distributed
d.initialize, d.coordinator_address = True, sys.argv[1]
d.num_processes, d.process_id, d.initialization_timeout = 2, int(sys.argv[2]), 20
maybe_initialize_distributed(c)
import jax
print("joined", jax.process_index(), "of", jax.process_count(), flush=True)
"""


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
                JAX_PLATFORMS="cpu")


def test_two_processes_initialize_jax_after_the_rendezvous():
    """JAX's own service takes the port our rendezvous released: the handover works with the
    peer starting first."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in (1, 0):
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, address, str(pid)],
                                      env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
        time.sleep(1.0)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "joined 1 of 2" in outs[0] and "joined 0 of 2" in outs[1], outs


def _train(*overrides, timeout=120):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--config",
           os.path.join(REPO, "configs", "demo.py"), "--workdir", os.devnull + "/nowhere"]
    return subprocess.run(cmd + [f"--config.distributed.{o}" for o in overrides], env=_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_train_exits_2_on_bad_settings_and_names_missing_processes(tmp_path):
    p = _train("initialize=True", "coordinator_address=127.0.0.1:1234", "num_processes=2",
               "process_id=5")
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1].startswith(
        "error: config.distributed.process_id=5 with num_processes=2"), p.stderr[-2000:]
    port = free_port()
    p = _train("initialize=True", f"coordinator_address=127.0.0.1:{port}", "num_processes=3",
               "process_id=0", "initialization_timeout=3")
    assert p.returncode == 1, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 3 processes joined the coordinator at 127.0.0.1:{port} within "
        f"config.distributed.initialization_timeout=3 s; processes 1, 2 did not arrive (not "
        f"started, or another coordinator_address / a firewall); start them, or raise the "
        f"timeout."), p.stderr[-2000:]
    assert "waiting for processes to join the coordinator" in p.stdout, p.stdout
    assert "Check failure" not in p.stderr + p.stdout and "Traceback" not in p.stderr
