"""A real GCS JSON API on the loopback interface for the bucket tests (no mocked client).

    with GcsEmulator(bucket="bkt") as gcs:        # sets STORAGE_EMULATOR_HOST while open
        gcs.upload_folder("tests/data/photos", "photos")   # -> gs://bkt/photos/...
        e4e_jax.core.fs.list_files(gcs.url("photos"))

gcp-storage-emulator (PyPI) serves the API, in memory, from a child process of its own; gcsfs
reaches it through STORAGE_EMULATOR_HOST with `token="anon"` (what e4e_jax.core.fs does when that
variable is set). Subprocesses started while it is open inherit the variable, so a CLI run in a
child process talks to the same bucket. GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: newer gcsfs first
probes every bucket over gRPC (60 s against an emulator that only speaks JSON).

Why a child process, and why `stop()` ends fsspec's event-loop thread: the test process runs
the rest of the session too, and no thread of the bucket tests should outlive their module
(the fixtures in tests/conftest.py are module-scoped): an emulator thread serving requests in
the test process, and fsspec's asyncio thread waking for aiohttp's connection timers, ran Python
beside every later test.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clear_client_caches() -> None:
    """Drops fsspec's cached filesystem instances (they keep the endpoint they were made with,
    and their listing caches)."""
    import gcsfs
    gcsfs.GCSFileSystem.clear_instance_cache()


def stop_fsspec_loop() -> None:
    """Ends fsspec's IO thread and its event loop; fsspec starts a new one on next use."""
    import gc

    import fsspec.asyn
    loop, thread = fsspec.asyn.loop[0], fsspec.asyn.iothread[0]
    if loop is None:
        return
    gc.collect()                       # closes dropped clients' sessions while the loop runs
    with fsspec.asyn.get_lock():
        fsspec.asyn.loop[0] = fsspec.asyn.iothread[0] = None
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout=10)
    if not loop.is_running():
        loop.close()


class GcsEmulator:
    """gcp-storage-emulator on a free 127.0.0.1 port with one empty bucket."""

    def __init__(self, bucket: str = "bkt"):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._saved: dict[str, str | None] = {}

    def start(self, timeout: float = 60.0) -> "GcsEmulator":
        """Starts the emulator process and waits until its port answers (RuntimeError with the
        process's output if it exits or stays silent for `timeout` seconds)."""
        cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
               "--port", str(self.port), "--default-bucket", self.bucket, "--in-memory", "-q"]
        # a file, not a pipe: nobody reads the log while it runs, and a full pipe would block it
        self._log = tempfile.TemporaryFile(mode="w+")
        self._server = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._server.poll() is not None:
                self._server = None
                self._log.seek(0)
                out = self._log.read()
                self._log.close()
                raise RuntimeError(f"the GCS emulator exited at start-up: {out.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the GCS emulator did not answer on port {self.port} "
                                       f"within {timeout:.0f} s")
                time.sleep(0.1)
        for k, v in dict(ENV, STORAGE_EMULATOR_HOST=self.endpoint).items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        clear_client_caches()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._log.close()
            self._server = None
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved.clear()
        clear_client_caches()
        stop_fsspec_loop()

    def __enter__(self) -> "GcsEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, *parts: str) -> str:
        """gs://BUCKET/part/... ."""
        return "/".join([f"gs://{self.bucket}", *[p.strip("/") for p in parts]])

    def upload_folder(self, local: str, prefix: str) -> str:
        """Copies every file under `local` to gs://BUCKET/prefix/<relative path>; returns the
        folder's URL."""
        from e4e_jax.core import fs
        for rel in fs.list_files(local):
            fs.upload(os.path.join(local, rel), self.url(prefix, rel))
        return self.url(prefix)

    def download_folder(self, prefix: str, local: str) -> str:
        """Copies gs://BUCKET/prefix/... to `local`; returns `local`."""
        from e4e_jax.core import fs
        for rel in fs.list_files(self.url(prefix)):
            fs.write_bytes(os.path.join(local, rel), fs.read_bytes(self.url(prefix, rel)))
        return local
