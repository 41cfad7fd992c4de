"""One path layer for local folders and buckets (`gs://`, and any protocol fsspec speaks).

    from e4e_jax.core import fs
    fs.is_remote("gs://bucket/photos")            # True
    fs.list_files("gs://bucket/photos")           # sorted relative names of every file below
    with fs.open(fs.join(root, name), "rb") as f: data = f.read()

Local paths go through the operating system as before; a URL with a protocol goes through
fsspec (for `gs://`, gcsfs: `pip install e4e_jax[gcs]`). Credentials are the library's own
discovery (application default credentials on a TPU VM). When STORAGE_EMULATOR_HOST is set,
as for a local GCS emulator, `gs://` talks to that endpoint without credentials.

Errors: FileNotFoundError for a missing path; ImportError naming the extra to install when the
protocol's package is missing.
"""
from __future__ import annotations

import builtins
import os
import posixpath
from typing import IO, Iterator


def is_remote(path: str) -> bool:
    """True for a URL with a protocol other than file:// (gs://b/x, s3://b/x, memory://x)."""
    return "://" in str(path) and not str(path).startswith("file://")


def _local(path: str) -> str:
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _filesystem(path: str):
    """The fsspec filesystem for a remote path."""
    protocol = str(path).split("://", 1)[0]
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec comes with the base install
        raise ImportError(f"reading {path!r} needs fsspec: pip install fsspec") from e
    kwargs = {}
    if protocol in ("gs", "gcs"):
        try:
            import gcsfs  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"reading {path!r} needs gcsfs: pip install 'e4e_jax[gcs]'") from e
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            kwargs["token"] = "anon"
    return fsspec.filesystem(protocol, **kwargs)


def join(base: str, *parts: str) -> str:
    """`base/part/...` with '/' for URLs and os.path.join for local paths; no doubled '/'."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    return _filesystem(path).exists(path) if is_remote(path) else os.path.exists(_local(path))


def isdir(path: str) -> bool:
    return _filesystem(path).isdir(path) if is_remote(path) else os.path.isdir(_local(path))


def makedirs(path: str) -> None:
    """Create a folder and its parents (a no-op on object stores, which have no folders)."""
    if is_remote(path):
        _filesystem(path).makedirs(path, exist_ok=True)
    else:
        os.makedirs(_local(path), exist_ok=True)


def open(path: str, mode: str = "rb") -> IO:  # noqa: A001 - mirrors the builtin on purpose
    """A file object for `path` ('rb', 'wb', 'r', 'w'); FileNotFoundError when missing."""
    if is_remote(path):
        return _filesystem(path).open(path, mode)
    return builtins.open(_local(path), mode)


def list_files(root: str) -> list[str]:
    """Every file below `root`, recursively, as sorted '/'-separated names relative to it.
    FileNotFoundError when `root` is not a folder."""
    if not isdir(root):
        raise FileNotFoundError(f"{root!r} is not a folder")
    return sorted(_walk(root))


def _walk(root: str) -> Iterator[str]:
    if is_remote(root):
        fs_ = _filesystem(root)
        prefix = fs_._strip_protocol(root).rstrip("/") + "/"
        for full in fs_.find(root):
            yield full[len(prefix):] if full.startswith(prefix) else full
        return
    local = _local(root)
    for dirpath, dirnames, files in os.walk(local):
        dirnames.sort()
        for f in files:
            yield os.path.relpath(os.path.join(dirpath, f), local).replace(os.sep, "/")


def rename(src: str, dst: str) -> None:
    """Move `src` to `dst` (atomic on a local disk: how a finished file appears at once)."""
    if is_remote(src):
        _filesystem(src).mv(src, dst)
    else:
        os.replace(_local(src), _local(dst))


def remove(path: str) -> None:
    if is_remote(path):
        _filesystem(path).rm(path)
    else:
        os.remove(_local(path))
