"""One path layer for local folders and buckets (`gs://`, and any protocol fsspec speaks).

    from e4e_jax.core import fs
    fs.is_remote("gs://bucket/photos")            # True
    fs.list_files("gs://bucket/photos")           # sorted relative names of every file below
    with fs.open(fs.join(root, name), "rb") as f: data = f.read()
    with fs.OutputFolder("gs://bucket/out") as out:   # a command's output folder
        np.save(os.path.join(out.local, "latents.npy"), codes); out.sync()

Local paths (and `file://` URLs) go through the operating system as before; a URL with a
protocol goes through fsspec (for `gs://`, gcsfs: `pip install 'e4e_jax[gcs]'`). Credentials are
gcsfs's own discovery (application default credentials: a TPU / GCE VM's service account,
`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS); when none is found
gcsfs goes on anonymously, which reads public buckets only. When STORAGE_EMULATOR_HOST is set (a
local GCS emulator, as in the tests) `gs://` talks to that endpoint without credentials.

Why fsspec and not tf.io.gfile: TensorFlow's GCS filesystem cannot be pointed at an emulator
(it always calls www.googleapis.com), so the bucket code path could not be tested against a
real object-store API on the loopback interface; gcsfs honours STORAGE_EMULATOR_HOST.

Object stores have no folders: a "folder" is a name prefix, `makedirs` is a no-op there, and
`rename` is a copy then a delete (atomic only on a local disk). A command writing a folder of
outputs to a bucket writes them to a local staging folder and uploads them (`OutputFolder`), so
code that appends to or seeks in its files works unchanged.

Errors: FileNotFoundError for a missing path or bucket; RemoteError (an OSError) when the store
cannot be reached or refuses the request (its message says which credentials were used and how
to get some), or when the protocol is unknown or its package is missing (gcsfs for gs://: it
names the extra to install, e4e_jax[gcs]).
"""
from __future__ import annotations

import atexit
import builtins
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import IO

GCS_PROTOCOLS = ("gs", "gcs")
CREDENTIALS_HINT = ("set up Google Cloud credentials (`gcloud auth application-default login`, "
                    "GOOGLE_APPLICATION_CREDENTIALS=KEY.json, or a VM service account with "
                    "access to the bucket)")


class RemoteError(OSError):
    """A bucket could not be reached or refused the request (network, credentials, permission),
    or its client library is not installed. The message names the path, the reason and the
    fix; commands print it as their one-line error."""


def is_remote(path: str) -> bool:
    """True for a URL with a protocol other than file:// (gs://b/x, s3://b/x, memory://x)."""
    return "://" in str(path) and not str(path).startswith("file://")


def protocol(path: str) -> str:
    """'gs' for gs://b/x, 'file' for a local path or file:// URL."""
    return str(path).split("://", 1)[0] if is_remote(path) else "file"


def _local(path: str) -> str:
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _filesystem(path: str):
    """(fsspec filesystem, the path in that filesystem's own spelling) of a remote path.

    fsspec caches filesystems by their arguments, so every call for one bucket shares one
    client (and one connection pool)."""
    proto = protocol(path)
    try:
        from fsspec.core import url_to_fs
    except ImportError as e:  # pragma: no cover - fsspec comes with the base install
        raise ImportError(f"reading {path!r} needs fsspec: pip install fsspec") from e
    kwargs = {}
    if proto in GCS_PROTOCOLS:
        try:
            import gcsfs  # noqa: F401
        except ImportError as e:
            raise RemoteError(f"cannot access {path}: gs:// needs gcsfs, which is not installed "
                              f"({e}); pip install 'e4e_jax[gcs]'.") from e
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            kwargs["token"] = "anon"        # an emulator checks no credentials
    try:
        return url_to_fs(str(path), **kwargs)
    except (ValueError, ImportError) as e:   # an unknown protocol, or its package missing
        raise RemoteError(f"cannot access {path}: {e}; use a local path, gs://BUCKET/PATH, or "
                          f"another protocol fsspec knows, with its package installed.") from e


# exception class names (anywhere in the cause chain) that mean the store was never reached:
# DNS, refused or dropped connections, timeouts (aiohttp's, asyncio's, the OS's)
_NETWORK_ERRORS = ("ClientConnectorError", "ClientConnectorDNSError", "ClientConnectionError",
                   "ServerDisconnectedError", "ServerTimeoutError", "ClientOSError",
                   "gaierror", "ConnectionError", "ConnectionRefusedError",
                   "ConnectionResetError", "TimeoutError", "ConnectTimeoutError")


def is_network_error(e: BaseException) -> bool:
    """Whether `e` (or an exception it was raised from) says the store could not be reached
    over the network, as opposed to a refusal by the store (credentials, permission)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(c.__name__ in _NETWORK_ERRORS for c in type(e).__mro__):
            return True
        e = e.__cause__ or e.__context__
    return False


def _remote_error(path: str, fs_, e: Exception) -> RemoteError:
    reason = " ".join(str(e).split()) or type(e).__name__
    if is_network_error(e):
        # credentials are beside the point when the service was never reached
        return RemoteError(f"cannot access {path}: the bucket service cannot be reached "
                           f"({type(e).__name__}: {reason[:200]}); check this machine's "
                           f"network connection (DNS, proxy, firewall) and try again.")
    hint = ""
    if protocol(path) in GCS_PROTOCOLS and not os.environ.get("STORAGE_EMULATOR_HOST"):
        method = getattr(getattr(fs_, "credentials", None), "method", None)
        hint = (f"; no Google Cloud credentials were found, so the request was anonymous: "
                f"{CREDENTIALS_HINT}" if method == "anon" else
                f"; check the bucket name and that these credentials ({method}) may read it")
    return RemoteError(f"cannot access {path}: {type(e).__name__}: {reason[:300]}{hint}.")


def _info(path: str) -> dict | None:
    """fsspec's info of a remote path (fresh, not from the listing cache); None if missing."""
    fs_, p = _filesystem(path)
    try:
        fs_.invalidate_cache(p)
        return fs_.info(p)
    except FileNotFoundError:
        return None
    except Exception as e:  # clients raise many types (HTTP, auth, network)
        raise _remote_error(path, fs_, e) from e


def join(base: str, *parts: str) -> str:
    """`base/part/...` with '/' for URLs and os.path.join for local paths; no doubled '/'."""
    if is_remote(base):
        return posixpath.join(str(base).rstrip("/"), *[str(p).strip("/") for p in parts])
    return os.path.join(base, *parts)


def basename(path: str) -> str:
    """The last component of a local path or URL ('gs://b/x/y.png' -> 'y.png')."""
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else \
        os.path.basename(os.path.normpath(_local(path)))


def exists(path: str) -> bool:
    """Whether a file or folder is at `path` (for a bucket: an object or a name prefix).
    RemoteError when the store cannot be asked."""
    return _info(path) is not None if is_remote(path) else os.path.exists(_local(path))


def isdir(path: str) -> bool:
    """Whether `path` is a folder (for a bucket: a name prefix with objects under it, or the
    bucket itself). RemoteError when the store cannot be asked."""
    if not is_remote(path):
        return os.path.isdir(_local(path))
    info = _info(path)
    return info is not None and info.get("type") == "directory"


def isfile(path: str) -> bool:
    """Whether `path` is a file (an object). RemoteError when the store cannot be asked."""
    if not is_remote(path):
        return os.path.isfile(_local(path))
    info = _info(path)
    return info is not None and info.get("type") == "file"


def check_bucket(path: str) -> None:
    """Raises FileNotFoundError when the bucket of a gs:// path does not exist (writes to it
    would fail only at the first upload); a no-op for other paths, and when the bucket cannot
    be asked (credentials that may write objects but not read the bucket's metadata)."""
    if protocol(path) not in GCS_PROTOCOLS:
        return
    bucket = str(path).split("://", 1)[1].split("/", 1)[0]
    try:
        found = bool(bucket) and isdir(f"gs://{bucket}")
    except RemoteError:
        return      # e.g. may write objects but not read the bucket's metadata: writes will tell
    if not found:
        raise FileNotFoundError(f"bucket gs://{bucket} of {path} does not exist (or these "
                                f"credentials cannot see it); create it with `gcloud storage "
                                f"buckets create gs://{bucket}` or fix the name.")


def makedirs(path: str) -> None:
    """Create a folder and its parents (a no-op on object stores, which have no folders)."""
    if is_remote(path):
        fs_, p = _filesystem(path)
        try:
            fs_.makedirs(p, exist_ok=True)
        except Exception as e:
            raise _remote_error(path, fs_, e) from e
    else:
        os.makedirs(_local(path), exist_ok=True)


def open(path: str, mode: str = "rb") -> IO:  # noqa: A001 - mirrors the builtin on purpose
    """A file object for `path` ('rb', 'wb', 'r', 'w'); FileNotFoundError when missing.

    A remote file opened for writing appears when it is closed (objects are written whole);
    remote files opened for writing cannot seek back."""
    if not is_remote(path):
        return builtins.open(_local(path), mode)
    fs_, p = _filesystem(path)
    try:
        return fs_.open(p, mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    except Exception as e:
        raise _remote_error(path, fs_, e) from e


def read_bytes(path: str) -> bytes:
    """The whole content of a file; FileNotFoundError when missing."""
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file (creating local parent folders)."""
    if not is_remote(path):
        parent = os.path.dirname(os.path.abspath(_local(path)))
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def list_files(root: str) -> list[str]:
    """Every file below `root`, recursively, as sorted '/'-separated names relative to it.

    FileNotFoundError when `root` is not a folder (a missing bucket included); RemoteError when
    the store cannot be asked. The listing is fresh (fsspec's listing cache is dropped first),
    so files another process wrote are seen."""
    if not isdir(root):
        raise FileNotFoundError(f"{root} is not a folder.")
    return sorted(_walk(root))


def _walk(root: str) -> Iterator[str]:
    if is_remote(root):
        fs_, p = _filesystem(root)
        prefix = p.rstrip("/") + "/"
        try:
            fs_.invalidate_cache(p)
            found = fs_.find(p)
        except FileNotFoundError:
            raise FileNotFoundError(f"{root} is not a folder.") from None
        except Exception as e:
            raise _remote_error(root, fs_, e) from e
        for full in found:
            # find() returns paths without the protocol, as url_to_fs spells `p`
            if full.startswith(prefix) and not full.endswith("/"):
                yield full[len(prefix):]
        return
    local = _local(root)
    for dirpath, dirnames, files in os.walk(local):
        dirnames.sort()
        for f in files:
            yield os.path.relpath(os.path.join(dirpath, f), local).replace(os.sep, "/")


def rename(src: str, dst: str) -> None:
    """Move the file `src` to `dst`, replacing it. Atomic on a local disk (how a finished file
    appears at once); on a bucket a copy then a delete, and both must be on the same store."""
    if is_remote(src) != is_remote(dst) or protocol(src) != protocol(dst):
        raise ValueError(f"rename {src} -> {dst}: both paths must be on the same filesystem.")
    if not is_remote(src):
        os.replace(_local(src), _local(dst))
        return
    fs_, p = _filesystem(src)
    _, q = _filesystem(dst)
    try:
        fs_.mv(p, q)
    except FileNotFoundError:
        raise FileNotFoundError(f"{src} does not exist.") from None
    except Exception as e:
        raise _remote_error(src, fs_, e) from e


def remove(path: str) -> None:
    """Delete the file `path`; FileNotFoundError when missing."""
    if not is_remote(path):
        os.remove(_local(path))
        return
    fs_, p = _filesystem(path)
    try:
        fs_.rm_file(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    except Exception as e:
        raise _remote_error(path, fs_, e) from e


def upload(local_path: str, path: str) -> None:
    """Copies the local file `local_path` to `path` (local or remote)."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(_local(path))), exist_ok=True)
        shutil.copyfile(local_path, _local(path))
        return
    fs_, p = _filesystem(path)
    try:
        fs_.put_file(local_path, p)
    except Exception as e:
        raise _remote_error(path, fs_, e) from e


class OutputFolder:
    """The folder a command writes its outputs to: `local` is a real folder on this machine.

    For a local `target`, `local` is the target itself (created) and `sync` does nothing. For a
    remote target (gs://...), `local` is a staging folder under the system's temp directory:
    the command writes there as it would on a local disk (streamed .npy files, appended text
    files, PNGs, model directories) and `sync` uploads every file that is new or changed since
    the last upload, at most once per `interval` seconds unless forced; `close` uploads the rest
    and deletes the staging folder. If an upload fails, the staging folder is kept and the
    RemoteError names it, so no written output is lost. An object appears in the bucket whole
    (an interrupted upload leaves the previous version). The staging folder holds a full copy of
    the outputs until `close`.

    `path(*parts)` is the target-side name of an output, for messages and summaries.
    """

    def __init__(self, target: str, interval: float = 30.0):
        self.target = str(target)
        self.remote = is_remote(self.target)
        self.interval = float(interval)
        self._sent: dict[str, tuple[int, int]] = {}
        self._last = time.monotonic()
        if self.remote:
            check_bucket(self.target)
            if isfile(self.target):
                raise FileExistsError(f"{self.target} is a file; give a folder.")
            self.local = tempfile.mkdtemp(prefix="e4e_jax_output_")
            # a command that fails before `close` leaves a staging folder: dropped at exit
            # when everything in it reached the bucket, else kept (its files exist nowhere else)
            atexit.register(self.discard_if_uploaded)
        else:
            self.local = _local(self.target)
            os.makedirs(self.local, exist_ok=True)

    def path(self, *parts: str) -> str:
        return join(self.target, *parts)

    def _changed(self) -> list[tuple[str, tuple[int, int]]]:
        out = []
        for rel in _walk(self.local):
            st = os.stat(os.path.join(self.local, rel))
            key = (st.st_size, st.st_mtime_ns)
            if self._sent.get(rel) != key:
                out.append((rel, key))
        return out

    def fetch(self, *names: str) -> list[str]:
        """Copies the files `names` (relative) that exist at a remote target into `local`, as
        already uploaded (what a command resuming a run reads back); returns those found.
        Local targets: the files found, nothing copied."""
        found = [n for n in names if isfile(join(self.target, n))]
        if self.remote:
            for rel in found:
                local = os.path.join(self.local, rel)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                with builtins.open(local, "wb") as f:
                    f.write(read_bytes(join(self.target, rel)))
                st = os.stat(local)
                self._sent[rel] = (st.st_size, st.st_mtime_ns)
        return found

    def sync(self, force: bool = False) -> int:
        """Uploads new or changed files (remote targets; at most once per `interval` seconds
        unless `force`); returns how many were uploaded. RemoteError keeps the staging folder
        and names it."""
        if not self.remote or (not force and time.monotonic() - self._last < self.interval):
            return 0
        changed = self._changed()
        for rel, key in changed:
            try:
                upload(os.path.join(self.local, rel), join(self.target, rel))
            except RemoteError as e:
                raise RemoteError(f"{e} The outputs written so far are kept in {self.local}; "
                                  f"copy them with `gcloud storage cp -r {self.local}/* "
                                  f"{self.target}/`.") from e
            self._sent[rel] = key
        self._last = time.monotonic()
        return len(changed)

    def close(self) -> None:
        """Uploads what is left and removes the staging folder (remote targets)."""
        if self.remote and os.path.isdir(self.local):
            self.sync(force=True)
            shutil.rmtree(self.local, ignore_errors=True)
            atexit.unregister(self.discard_if_uploaded)

    def discard_if_uploaded(self) -> None:
        """Removes the staging folder when every file in it is in the bucket (the exit hook of
        a command that stopped before `close`); keeps it otherwise."""
        if os.path.isdir(self.local) and not self._changed():
            shutil.rmtree(self.local, ignore_errors=True)

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
