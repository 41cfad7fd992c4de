"""Multi-host start-up: check config.distributed, gather the processes, then
jax.distributed.initialize.

    initialize(config)          # what train_and_evaluate calls first; no-op unless
                                # config.distributed.initialize

Three steps, each failing in one line instead of a traceback or a C++ abort:

1. `check_settings(config.distributed)` (no network): coordinator_address, num_processes and
   process_id go together (all three, or none for jax's auto-detection on TPU pods / Slurm);
   num_processes=1 alone (no address; process_id omitted or 0) is a single process and needs no
   start-up at all; num_processes >= 1; 0 <= process_id < num_processes; the address is
   HOST:PORT; the timeout
   is >= 1 s; none of them is set while `initialize` is False (a setting that would be
   ignored). Raises DistributedSettingsError (train.py: exit 2).
2. `gather(...)` (explicit addresses only): a rendezvous of our own on the coordinator's port
   before JAX's. Process 0 listens on the port, the others connect to it and say who they
   are; every ~`progress_every` seconds a line says who is still missing. When
   `initialization_timeout` seconds pass, process 0 names the processes that did not arrive
   and the others say that process 0 was not reached (TrainingError: exit 1). Duplicate
   process ids and disagreeing num_processes are refused by process 0 and reported on both
   sides. When every process is there, process 0 releases the port and all of them go on.
3. `jax.distributed.initialize(..., initialization_timeout=)`: the processes are known to be
   running, so it only has to connect. JAX's coordination service treats a failure here as
   fatal and aborts the process from C++ (a "Check failure stack trace", exit 134); the
   rendezvous makes that the rare case (a process dying between steps 2 and 3), it cannot
   remove it.

Why a rendezvous of our own: JAX 0.10's initialize does not return when the peers are late; it
blocks in C++ for the whole timeout, prints nothing, and then aborts the process with a stack
trace that does not say which process was missing (the service knows, Python never sees it).
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable

from e4e_jax.train.errors import DistributedSettingsError, TrainingError

DEFAULT_TIMEOUT = 300            # seconds; jax.distributed.initialize's own default
TRIO = ("coordinator_address", "num_processes", "process_id")
_ADDRESS = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d+)$")


def _setting(d, key, default=None):
    value = d.get(key, default) if hasattr(d, "get") else getattr(d, key, default)
    return default if value is None or value == "" else value


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port). Raises ValueError saying what is wrong."""
    m = _ADDRESS.match(str(address).strip())
    if not m:
        raise ValueError(f"{address!r} is not HOST:PORT")
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} of {address!r} is not in 1..65535")
    return m.group("ip6") or m.group("host"), port


def check_settings(d) -> None:
    """Checks config.distributed (module docstring, step 1) without touching the network.
    Raises DistributedSettingsError naming the setting and the fix."""
    given = {k: _setting(d, k) for k in TRIO}
    timeout = _setting(d, "initialization_timeout", DEFAULT_TIMEOUT)
    if not _setting(d, "initialize", False):
        ignored = [k for k, v in given.items() if v is not None]
        if ignored:
            raise DistributedSettingsError(
                f"config.distributed.{ignored[0]} is set but config.distributed.initialize is "
                f"False, so it would be ignored: add --config.distributed.initialize=True for a "
                f"multi-host run, or drop the distributed settings.")
        return
    missing = [k for k, v in given.items() if v is None]
    if single_process(d):
        missing = []             # one process needs neither a coordinator nor a peer
    if missing and len(missing) < len(TRIO):
        have = ", ".join(f"{k}={given[k]!r}" for k in TRIO if given[k] is not None)
        raise DistributedSettingsError(
            f"config.distributed.{' and '.join(missing)} missing (given: {have}): "
            f"coordinator_address, num_processes and process_id go together; set all three "
            f"(process_id differs per host), or none of them to let JAX detect a TPU pod / "
            f"Slurm job.")
    n, pid, address = given["num_processes"], given["process_id"], given["coordinator_address"]
    if n is not None and int(n) < 1:
        raise DistributedSettingsError(
            f"config.distributed.num_processes={n}: it counts the hosts taking part, at least 1.")
    if pid is not None and not 0 <= int(pid) < int(n):
        raise DistributedSettingsError(
            f"config.distributed.process_id={pid} with num_processes={n}: each host takes a "
            f"different id in 0..{int(n) - 1} (process 0 runs the coordinator).")
    if address is not None:
        try:
            parse_address(address)
        except ValueError as e:
            raise DistributedSettingsError(
                f"config.distributed.coordinator_address: {e}; give process 0's host and a free "
                f"port, e.g. 10.0.0.1:1234 (the same on every host).") from None
    try:
        ok = float(timeout) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DistributedSettingsError(
            f"config.distributed.initialization_timeout={timeout!r}: seconds to wait for every "
            f"process to join, at least 1 (default {DEFAULT_TIMEOUT}).")


def single_process(d) -> bool:
    """num_processes=1 without a coordinator_address: a single process, which needs no
    coordinator, so `initialize` runs no distributed start-up at all (process_id may be left
    out or 0)."""
    n = _setting(d, "num_processes")
    try:
        return n is not None and int(n) == 1 and _setting(d, "coordinator_address") is None
    except (TypeError, ValueError):
        return False


def _progress_every(timeout: float) -> float:
    return min(30.0, max(1.0, timeout / 10))


def _names(ids) -> str:
    ids = sorted(ids)
    return ("process " if len(ids) == 1 else "processes ") + ", ".join(map(str, ids))


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn: socket.socket, deadline: float) -> dict | None:
    """One JSON line from `conn` (None: closed or past the deadline)."""
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = conn.recv(4096)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    try:
        return json.loads(data)
    except ValueError:
        return None


def _listen(port: int) -> socket.socket:
    """A socket listening on `port` of every interface (as JAX's service binds [::]:port)."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                    reuse_port=False)
    return socket.create_server(("", port))


def gather(address: str, num_processes: int, process_id: int, timeout: float,
           say: Callable[[str], None], progress_every: float | None = None) -> None:
    """The rendezvous of the module docstring (step 2): returns once all `num_processes`
    processes have reached process 0 at `address` (HOST:PORT), within `timeout` seconds.

    Raises TrainingError naming the processes that did not arrive (process 0), or saying that
    process 0 was not reached / refused this process (the others); DistributedSettingsError
    when process 0 cannot listen on the port."""
    if num_processes <= 1:
        return
    host, port = parse_address(address)
    every = progress_every or _progress_every(timeout)
    if process_id == 0:
        _coordinate(host, port, num_processes, timeout, every, say)
    else:
        _join(host, port, num_processes, process_id, timeout, every, say)


def _coordinate(host, port, n, timeout, every, say) -> None:
    try:
        server = _listen(port)
    except OSError as e:
        raise DistributedSettingsError(
            f"config.distributed.coordinator_address {host}:{port}: process 0 cannot listen on "
            f"port {port} ({e.strerror or e}); another run may hold it: choose a free port (the "
            f"same on every host).") from None
    start = time.monotonic()
    deadline, next_line = start + timeout, start + every
    peers: dict[int, socket.socket] = {}
    problem = None
    try:
        server.settimeout(0.2)
        while len(peers) < n - 1 and problem is None:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_line:
                say(f"waiting for processes to join the coordinator at {host}:{port}: "
                    f"{len(peers) + 1} of {n} here, {_names(set(range(n)) - set(peers) - {0})}"
                    f" missing ({now - start:.0f} s of {timeout:.0f} s)")
                next_line = now + every
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            hello = _receive(conn, time.monotonic() + 5)
            if not isinstance(hello, dict):
                conn.close()                 # not one of ours (a port scanner, a health check)
                continue
            pid, their_n = hello.get("process_id"), hello.get("num_processes")
            if their_n != n:
                problem = (f"process {pid} was started with config.distributed.num_processes="
                           f"{their_n}, process 0 with {n}: give every host the same value.")
            elif pid in peers or pid == 0:
                problem = (f"two processes were started with config.distributed.process_id="
                           f"{pid}: give each host its own id in 0..{n - 1}.")
            if problem:
                _send(conn, {"error": problem})
                conn.close()
                break
            peers[pid] = conn
        if problem is None and len(peers) < n - 1:
            missing = set(range(1, n)) - set(peers)
            problem = (f"{len(peers) + 1} of {n} processes joined the coordinator at "
                       f"{host}:{port} within config.distributed.initialization_timeout="
                       f"{timeout:g} s; {_names(missing)} did not arrive (not started, or "
                       f"another coordinator_address / a firewall); start them, or raise "
                       f"the timeout.")
        for conn in peers.values():
            try:
                _send(conn, {"error": f"process 0 gave up: {problem}"} if problem
                      else {"go": True})
            except OSError:
                pass
        if problem is None:
            # the peers close first, so the port is free of our connections for JAX's service
            end = time.monotonic() + 5
            for conn in peers.values():
                _receive(conn, end)
    finally:
        for conn in peers.values():
            conn.close()
        server.close()
    if problem:
        raise TrainingError(problem)
    say(f"all {n} processes joined the coordinator at {host}:{port}")


def _join(host, port, n, pid, timeout, every, say) -> None:
    start = time.monotonic()
    deadline, next_line = start + timeout, start + every
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise TrainingError(
                f"process {pid} could not reach the coordinator (process 0) at {host}:{port} "
                f"within config.distributed.initialization_timeout={timeout:g} s: start "
                f"process 0, or check config.distributed.coordinator_address and the firewall.")
        if now >= next_line:
            say(f"process {pid}: waiting for the coordinator (process 0) at {host}:{port} "
                f"({now - start:.0f} s of {timeout:.0f} s)")
            next_line = now + every
        try:
            conn = socket.create_connection((host, port), timeout=min(2.0, deadline - now))
        except OSError:
            time.sleep(0.2)
            continue
        with conn:
            try:
                _send(conn, {"process_id": pid, "num_processes": n})
            except OSError:
                continue
            # process 0 has the last word once it is reached: its own deadline may be later
            answer = _receive(conn, time.monotonic() + timeout + 5)
        if answer is None:
            continue          # process 0 restarted or gave up on another process: try again
        if answer.get("go"):
            return
        raise TrainingError(str(answer.get("error")))


def initialize(config, say: Callable[[str], None] | None = None) -> None:
    """Steps 1-3 of the module docstring when config.distributed.initialize is set (explicit
    addresses, or JAX's auto-detection on TPU pods / Slurm when only `initialize` is).

    Raises DistributedSettingsError (bad settings) or TrainingError (a process missing)."""
    import jax
    say = say or (lambda line: print(line, flush=True))
    d = config.distributed
    check_settings(d)
    if not _setting(d, "initialize", False):
        return
    if single_process(d):
        say("config.distributed.num_processes=1 without a coordinator_address: a single "
            "process, no multi-host start-up needed")
        return
    timeout = float(_setting(d, "initialization_timeout", DEFAULT_TIMEOUT))
    kwargs: dict = {"initialization_timeout": round(timeout)}
    address = _setting(d, "coordinator_address")
    if address:
        n, pid = int(d.num_processes), int(d.process_id)
        gather(address, n, pid, timeout, say)
        kwargs.update(coordinator_address=address, num_processes=n, process_id=pid)
    if jax.config.jax_platforms in (None, "", "cpu") and os.environ.get("JAX_PLATFORMS",
                                                                        "cpu") == "cpu":
        # multi-process CPU runs need a collectives implementation
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = f"at {address}" if address else "(auto-detected)"
    stop = progress_thread(say, lambda t: f"connecting to JAX's coordination service {where} "
                                          f"({t:.0f} s of {timeout:.0f} s)",
                           _progress_every(timeout))
    try:
        jax.distributed.initialize(**kwargs)
    finally:
        stop.set()


def progress_thread(say, message: Callable[[float], str], every: float) -> threading.Event:
    """Starts a daemon thread calling say(message(elapsed)) every `every` seconds until the
    returned Event is set."""
    stop = threading.Event()
    start = time.monotonic()

    def beat():
        while not stop.wait(every):
            say(message(time.monotonic() - start))
    threading.Thread(target=beat, daemon=True).start()
    return stop
