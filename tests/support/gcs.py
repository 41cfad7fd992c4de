"""A real GCS JSON API on the loopback interface for the bucket tests (no mocked client).

    with GcsEmulator(bucket="bkt") as gcs:        # sets STORAGE_EMULATOR_HOST while open
        gcs.upload_folder("tests/data/photos", "photos")   # -> gs://bkt/photos/...
        e4e_jax.core.fs.list_files(gcs.url("photos"))

gcp-storage-emulator (PyPI) serves the API in this process, in memory; gcsfs reaches it through
STORAGE_EMULATOR_HOST with `token="anon"` (what e4e_jax.core.fs does when that variable is
set). Subprocesses started while it is open inherit the variable, so a CLI run in a child
process talks to the same bucket. GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: newer gcsfs first
probes every bucket over gRPC (60 s against an emulator that only speaks JSON).
"""
from __future__ import annotations

import os
import socket

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


class GcsEmulator:
    """gcp-storage-emulator on a free 127.0.0.1 port with one empty bucket."""

    def __init__(self, bucket: str = "bkt"):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._saved: dict[str, str | None] = {}

    def start(self) -> "GcsEmulator":
        from gcp_storage_emulator.server import create_server
        self._server = create_server("127.0.0.1", self.port, in_memory=True,
                                     default_bucket=self.bucket)
        self._server.start()
        for k, v in dict(ENV, STORAGE_EMULATOR_HOST=self.endpoint).items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        clear_client_caches()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        clear_client_caches()

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
