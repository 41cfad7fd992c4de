"""Prepared datasets: an image folder turned into ArrayRecord shards of images at the training size.

    summary = prepare("photos/", "prepared/", (256, 256), workers=8)   # or gs://... either side
    source = PreparedSource("prepared/")          # what make_source("prepared/") returns
    len(source), source.name(i)                   # image count, the source file's name
    u8 = source.load(i, (256, 256))               # (256, 256, 3) uint8

Why: training decodes a full-size PNG (FFHQ: 1024x1024) and resizes it on the host for every
image of every step, though the encoder sees 256x256. Preparing does that once; a training host
then copies the stored pixels (benchmarks/data.py measures both).

The folder DIR holds:
  shard-00000-of-00003.array_record ...  ArrayRecord files, one record per image: the image at
                                         `size`, RGB uint8, as raw H*W*3 bytes (encoding "raw",
                                         the default) or a PNG (encoding "png": lossless, about
                                         0.6x the bytes, decoded ~10x slower; the measurements
                                         that chose raw are in benchmarks/RESULTS.md)
  manifest.json                          format and version, `count`, `size` [H, W], `shards`
                                         [{file, records, sha256, bytes}], `images` [{name, sha256}] in
                                         record order (name: the source file's path relative to
                                         the folder; sha256: of the source file's bytes), and
                                         `skipped` [{name, reason, sha256}]: every file that is not an
                                         image (by extension) or that the loader cannot decode,
                                         with the reason the loader gives.

Pixels: each image is read by image_io.read_rgb (every PIL mode, 16-bit included) and resized
by image_io.resize, exactly as FolderSource.load does, so PreparedSource.load(i, size) at the
prepared size returns the very uint8 pixels FolderSource gives at that size. At another size it
resizes the prepared image (image_io.resize again), which is not the folder's resize of the
original: prepare at the size you train at.

Determinism and resume: images are the folder's files in sorted order; shard k holds files
k*shard_size .. (k+1)*shard_size - 1 of that order (minus the skipped ones), whatever the number
of workers, and nothing in a shard or the manifest depends on time or on the workers, so the
same input gives byte-identical output. A shard is written under a temporary name and renamed
when complete, then its record list (`shard-*.json`) is written the same way; a rerun keeps
every complete shard whose source files still have the recorded hashes and redoes the rest.
The manifest is written last, and the record lists are folded into it.

Buckets (`gs://...`, through e4e_jax.core.fs): ArrayRecord reads and writes local files only.
For a remote output each shard is written in a local temporary folder and uploaded when
complete. A remote dataset is read by downloading each shard, on first use, into a local cache
folder ($E4E_JAX_CACHE, default ~/.cache/e4e_jax/prepared/), keyed by the shard's sha256, so a
host downloads only the shards it reads, once; random access then is a local file read.

Errors: PrepareError (a ValueError) for a bad request (missing input, an output folder that is
not a prepared dataset, a size outside MIN_SIZE..MAX_SIZE, no readable image), WorkerDiedError (a
PrepareError) when a decoding process dies (out of memory; complete shards are kept);
FileNotFoundError for an output bucket that does not exist; fs.RemoteError when a bucket cannot
be reached. When reading, DataError (from sources) for a folder that is not a prepared dataset,
has an unknown format version, or has a shard missing or of another size than recorded (a rerun
of prepare with the same arguments repairs it: a finished dataset with damaged shards is
reopened as a started run); image_io.ImageReadError from load() for a record that cannot be
decoded.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from e4e_jax.core import fs
from e4e_jax.data import image_io
from e4e_jax.data.sources import DataError

FORMAT = "e4e_jax.prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IN_PROGRESS = "prepare-in-progress.json"   # marks a started, unfinished run (it resumes)
SHARD_SIZE = 1024
# stored image sides: below 8 nothing is left of a face; above 4096 (4x the largest generator,
# 16x the encoders' 256) one decoded image is 50 MB per worker, and far larger sizes make the
# workers run out of memory
MIN_SIZE, MAX_SIZE = 8, 4096
ENCODINGS = ("raw", "png")
# one record per chunk (random access reads one image); no chunk compression: PNG bytes do not
# compress further, and raw pixels are stored raw for speed (the point of the format)
WRITER_OPTIONS = "group_size:1,uncompressed"
READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
TASK_IMAGES = 8            # images per task sent to a worker process


class PrepareError(ValueError):
    """A prepare request that cannot be carried out (the message names the fix)."""


class NothingReadableError(PrepareError):
    """Every file of the input was skipped: there is nothing to write a dataset of."""


class WorkerDiedError(PrepareError):
    """A decoding process died (killed by the system, most often for memory); the complete
    shards are kept and a rerun resumes."""


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """(H, W) as ints; PrepareError outside MIN_SIZE..MAX_SIZE."""
    h, w = (int(s) for s in size)
    if min(h, w) < MIN_SIZE or max(h, w) > MAX_SIZE:
        raise PrepareError(f"--size {h},{w} is outside {MIN_SIZE}..{MAX_SIZE}: give the "
                           f"encoder's input size (256, or 192,256 for cars).")
    return h, w


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}.array_record"


def _records_name(shard: str) -> str:
    return shard[:-len(".array_record")] + ".json"


# --------------------------------------------------------------------------------------------
# Reading one source file (runs in the worker processes)
# --------------------------------------------------------------------------------------------

class _NamedBytes(io.BytesIO):
    """File bytes that print as the file's name, so the loader's message names the file (and
    holds no memory address, which would make the manifest differ between runs)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name                   # image_io.read_rgb names a file object by it
        self._display = name

    def __repr__(self) -> str:
        return repr(self._display)


def _png(u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")      # PIL writes no time chunk: deterministic
    return buf.getvalue()


def _read_file(root: str, name: str) -> bytes:
    with fs.open(fs.join(root, name), "rb") as f:
        return f.read()


def _prepare_one(root: str, name: str, size: tuple[int, int], encoding: str
                 ) -> tuple[str, str, bytes | None, str | None]:
    """(name, sha256 of the file, the record or None, reason it was skipped or None)."""
    data = _read_file(root, name)
    digest = hashlib.sha256(data).hexdigest()
    if not name.lower().endswith(image_io.IMAGE_EXTENSIONS):
        return name, digest, None, (f"not an image file: its extension is not one of "
                                    f"{', '.join(image_io.IMAGE_EXTENSIONS)}")
    try:
        img = image_io.read_rgb(_NamedBytes(data, name))
    except image_io.ImageReadError as e:
        return name, digest, None, str(e)
    u8 = np.asarray(image_io.resize(img, size), dtype=np.uint8)
    return name, digest, (_png(u8) if encoding == "png" else u8.tobytes()), None


def _ignore_interrupts() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _prepare_task(args) -> list:
    root, names, size, encoding = args
    return [_prepare_one(root, n, size, encoding) for n in names]


def _hash_task(args) -> list[str]:
    root, names = args
    return [hashlib.sha256(_read_file(root, n)).hexdigest() for n in names]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

class _Pool:
    """Ordered results of tasks run in `workers` processes (in this process when workers is 1),
    with a bounded number of tasks in flight."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.pool = None
        if self.workers > 1:
            # spawn: forking a process that has started JAX's or gcsfs's threads is unsafe
            # workers ignore Ctrl-C and SIGTERM (sent to the whole process group by a shell,
            # `timeout` or a batch system): the main process stops them, keeping what is
            # complete; a worker dying of the signal would break the pool mid-shutdown
            self.pool = cf.ProcessPoolExecutor(self.workers,
                                               mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_ignore_interrupts)

    def map(self, fn: Callable, tasks: Sequence) -> Iterator:
        if self.pool is None:
            for t in tasks:
                yield fn(t)
            return
        pending: collections.deque = collections.deque()
        it = iter(tasks)
        # the first submits start the worker processes (one per submit): a Ctrl-C / SIGTERM
        # landing while one is being started leaves it half-started (it dies with a
        # traceback); hold the signals until they are up (the workers inherit the mask, and
        # ignore both anyway)
        with _signals_held():
            for t in it:
                pending.append(self.pool.submit(fn, t))
                if len(pending) >= 4 * self.workers:
                    break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(self.pool.submit(fn, nxt))
            yield result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block ends, then arrive. Blocked in this thread (so
    processes started here inherit the block) and deferred by a recording handler (another
    thread of this process may take the signal; Python still runs its handler here)."""
    held = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in held}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)     # pending ones are recorded too
        for s, h in handlers.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)   # None: set outside Python
        if arrived:
            signal.raise_signal(arrived[0])


def _chunks(names: Sequence[str], n: int) -> list[list[str]]:
    return [list(names[i:i + n]) for i in range(0, len(names), n)]


def _write_json(path: str, obj) -> None:
    """Writes JSON under a temporary name, then renames it (complete or absent)."""
    tmp = path + ".tmp"
    with fs.open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    fs.rename(tmp, path)


def _read_json(path: str):
    with fs.open(path, "r") as f:
        return json.load(f)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_output(output: str, overwrite: bool, log=lambda s: None) -> bool:
    """Refuses an output that is not (the start of) a prepared dataset; returns True when a
    started run is resumed. With `overwrite`, a finished dataset is emptied first; without it,
    a finished dataset with missing or truncated shards is reopened as a started run (the
    intact shards are kept, the damaged ones redone)."""
    if not fs.exists(output):
        return False
    if not fs.isdir(output):
        raise PrepareError(f"--output {output!r} is a file; give a folder (it is created if "
                           f"missing).")
    files = fs.list_files(output)
    if MANIFEST in files:
        if not overwrite and _reopen_damaged(output, files, log):
            return True
        if not overwrite:
            raise PrepareError(f"{output!r} already holds a prepared dataset ({MANIFEST}); pass "
                               f"--overwrite to prepare it again, or choose another --output.")
        for name in files:
            if name == MANIFEST or name.startswith("shard-"):
                fs.remove(fs.join(output, name))
        return False
    if IN_PROGRESS in files:
        return True
    if files:
        raise PrepareError(f"--output {output!r} holds files and is not a prepared dataset "
                           f"(no {MANIFEST}); choose a new or empty folder.")
    return False


def shard_problems(root: str, manifest: dict, files: Sequence[str] | None = None
                   ) -> list[str]:
    """'FILE is missing' / 'FILE has N bytes, not M' for each shard of `manifest` that is not in
    `root` whole (sizes are checked where the manifest records them and `root` is local; the
    sha256 is not: that would read every shard)."""
    if files is None:
        files = fs.list_files(root)
    present = set(files)
    problems = []
    for s in manifest.get("shards", []):
        if s["file"] not in present:
            problems.append(f"{s['file']} is missing")
        elif "bytes" in s and not fs.is_remote(root):
            got = os.path.getsize(os.path.join(root, s["file"]))
            if got != int(s["bytes"]):
                problems.append(f"{s['file']} has {got} bytes, not {s['bytes']}")
    return problems


def _reopen_damaged(output: str, files: list[str], log) -> bool:
    """Turns a finished dataset whose shards are damaged back into a started run (record lists
    of its intact shards, the in-progress marker, no manifest); False when it is whole."""
    try:
        m = _read_json(fs.join(output, MANIFEST))
    except (OSError, ValueError):
        return False
    bad = shard_problems(output, m, files)
    if not bad or m.get("format") != FORMAT:
        return False
    names = sorted([i["name"] for i in m["images"]] + [s["name"] for s in m["skipped"]])
    plan = _chunks(names, int(m["shard_size"]))
    if len(plan) != len(m["shards"]):
        return False
    digests = {i["name"]: i["sha256"] for i in m["images"]}
    skipped = {s["name"]: s for s in m["skipped"]}
    header = {k: m[k] for k in ("format", "format_version", "size", "encoding", "shard_size")}
    damaged = {p.split(" ", 1)[0] for p in bad}
    for k, shard in enumerate(m["shards"]):
        if shard["file"] in damaged:
            continue
        entry = {**header, "file": shard["file"], "records": shard["records"],
                 "sha256": shard["sha256"],
                 "images": [{"name": n, "sha256": digests[n]} for n in plan[k] if n in digests],
                 "skipped": [{"name": n, "sha256": skipped[n].get("sha256"),
                              "reason": skipped[n]["reason"]} for n in plan[k] if n in skipped]}
        if "bytes" in shard:
            entry["bytes"] = shard["bytes"]
        _write_json(fs.join(output, _records_name(shard["file"])), entry)
    _write_json(fs.join(output, IN_PROGRESS), header)
    fs.remove(fs.join(output, MANIFEST))
    log(f"repairing: {'; '.join(bad)}; the other {len(plan) - len(damaged)} shard(s) are "
        f"kept if their files are unchanged")
    return True


def _check_input(input_dir: str, output: str) -> list[str]:
    if not fs.isdir(input_dir):
        raise PrepareError(f"--input {input_dir!r} is not a folder.")
    if fs.is_remote(input_dir) != fs.is_remote(output):
        inside = False
    elif fs.is_remote(input_dir):
        inp, out = input_dir.rstrip("/") + "/", output.rstrip("/") + "/"
        inside = fs.protocol(input_dir) == fs.protocol(output) and out.startswith(inp)
    else:
        inp, out = os.path.abspath(input_dir), os.path.abspath(output)
        inside = os.path.commonpath([inp, out]) == inp
    if inside:
        raise PrepareError(f"--output {output!r} is inside --input {input_dir!r}: its shards "
                           f"would become inputs; choose a folder outside it.")
    if fs.exists(fs.join(input_dir, MANIFEST)):
        raise PrepareError(f"--input {input_dir!r} is already a prepared dataset; use it "
                           f"directly wherever an image folder is taken.")
    names = fs.list_files(input_dir)
    if not any(n.lower().endswith(image_io.IMAGE_EXTENSIONS) for n in names):
        raise PrepareError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) under "
                           f"{input_dir!r}.")
    return names


class _ShardWriter:
    """Writes one shard locally (a temporary folder for a remote output) and publishes it
    under its final name once complete."""

    def __init__(self, output: str, name: str, scratch: str):
        from array_record.python.array_record_module import ArrayRecordWriter
        self.output, self.name = output, name
        local_dir = scratch if fs.is_remote(output) else output
        self.local = os.path.join(local_dir, name + ".tmp")
        self.writer = ArrayRecordWriter(self.local, WRITER_OPTIONS)
        self.records = 0

    def write(self, record: bytes) -> None:
        self.writer.write(record)
        self.records += 1

    def abort(self) -> None:
        """Drops the unfinished shard (a failed or interrupted run leaves no partial file)."""
        with contextlib.suppress(Exception):   # already closed or broken: the file goes anyway
            self.writer.close()
        if os.path.exists(self.local):
            os.remove(self.local)

    def finish(self) -> str:
        """Closes, publishes and returns the shard's sha256."""
        self.writer.close()
        digest = _sha256_file(self.local)
        self.bytes = os.path.getsize(self.local)
        final = fs.join(self.output, self.name)
        if fs.is_remote(self.output):
            tmp = final + ".tmp"
            with open(self.local, "rb") as src, fs.open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            fs.rename(tmp, final)
            os.remove(self.local)
        else:
            fs.rename(self.local, final)
        return digest


def prepare(input_dir: str, output: str, size: Sequence[int] = (256, 256),
            workers: int | None = None, shard_size: int = SHARD_SIZE, overwrite: bool = False,
            encoding: str = "raw",
            progress: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] = lambda s: None) -> dict:
    """Prepares every file under `input_dir` (a local folder or a URL) into `output`.

    size: (H, W) of the stored images. encoding: "raw" (uint8 pixels, the fastest to read) or
    "png" (smaller). workers: processes decoding images (default: the host's CPUs); the output
    does not depend on it. progress(done, total) is called as files are done; log(text)
    receives one-line notes (resume, skipped files).
    Returns the manifest (a dict; also DIR/manifest.json). Raises PrepareError for a bad
    request, NothingReadableError when no file is readable (the started output is kept);
    KeyboardInterrupt leaves complete shards in place for a rerun to keep.
    """
    size = check_size(size)
    if encoding not in ENCODINGS:
        raise PrepareError(f"--encoding must be one of {', '.join(ENCODINGS)}, got "
                           f"{encoding!r}.")
    if shard_size < 1:
        raise PrepareError(f"--shard-size must be >= 1, got {shard_size}.")
    workers = max(1, int(workers or os.cpu_count() or 1))
    fs.check_bucket(output)         # before any work: else the first upload fails, cryptically
    names = _check_input(input_dir, output)
    resuming = _check_output(output, overwrite, log)
    fs.makedirs(output)
    plan = _chunks(names, shard_size)
    n_shards = len(plan)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "size": list(size),
              "encoding": encoding, "shard_size": shard_size}
    before = _previous_header(output) if resuming else None
    _write_json(fs.join(output, IN_PROGRESS), header)
    kept = _kept_shards(input_dir, output, plan, header, workers) if resuming else {}
    changed = [k for k in ("size", "encoding", "shard_size")
               if before is not None and before.get(k) != header[k]]
    if changed:
        was = ", ".join(f"--{k.replace('_', '-')} {_setting(before.get(k))}" for k in changed)
        now = ", ".join(f"--{k.replace('_', '-')} {_setting(header[k])}" for k in changed)
        log(f"resuming: the interrupted run in {output} used {was}, this one {now}: its "
            f"complete shards are discarded and all {n_shards} shard(s) are prepared again")
    elif resuming:
        log(f"resuming: keeping {len(kept)} of {n_shards} complete shard(s) whose files are "
            f"unchanged")
    total = len(names)
    done = sum(len(plan[k]) for k in kept)
    if progress:
        progress(done, total)
    scratch = tempfile.mkdtemp(prefix="e4e_jax_prepare_") if fs.is_remote(output) else ""
    pool = _Pool(workers)
    try:
        todo = [k for k in range(n_shards) if k not in kept]
        tasks = [(input_dir, chunk, size, encoding) for k in todo
                 for chunk in _chunks(plan[k], TASK_IMAGES)]

        def rows():
            nonlocal done
            for chunk in pool.map(_prepare_task, tasks):
                done += len(chunk)          # decoded; written as the shard writer takes them
                if progress:
                    progress(done, total)
                yield from chunk

        results = rows()
        for k in todo:
            kept[k] = _write_shard(output, k, n_shards, plan[k], results, scratch, header, log)
    except cf.process.BrokenProcessPool as e:
        done_shards = len(kept)
        raise WorkerDiedError(
            f"a decoding worker process died (most likely out of memory: {workers} workers "
            f"decoding images at {size[0]}x{size[1]}); the {done_shards} complete shard(s) in "
            f"{output} are kept: run again with fewer --workers (e.g. --workers "
            f"{max(1, workers // 2)}) to resume.") from e
    finally:
        pool.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return _finish(output, input_dir, header, [kept[k] for k in range(n_shards)], n_shards)


def _setting(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _extra_args(m: dict) -> str:
    """The non-default prepare arguments a manifest records, as flags."""
    extra = f" --shard-size {m['shard_size']}" if m.get("shard_size", SHARD_SIZE) != SHARD_SIZE \
        else ""
    return extra + (f" --encoding {m['encoding']}" if m.get("encoding", "raw") != "raw" else "")


def _previous_header(output: str) -> dict | None:
    """The settings of the interrupted run being resumed (None when unreadable)."""
    try:
        return _read_json(fs.join(output, IN_PROGRESS))
    except (OSError, ValueError):
        return None


def _write_shard(output: str, k: int, n_shards: int, names: list[str], results: Iterator,
                 scratch: str, header: dict, log) -> dict:
    name = shard_name(k, n_shards)
    writer = _ShardWriter(output, name, scratch)
    images, skipped = [], []
    try:
        for expected in names:
            fname, digest, record, reason = next(results)
            assert fname == expected, (fname, expected)   # the pool keeps the order
            if record is None:
                skipped.append({"name": fname, "sha256": digest, "reason": reason})
                log(f"skipping {fname}: {reason}")
            else:
                writer.write(record)
                images.append({"name": fname, "sha256": digest})
        shard_sha = writer.finish()
    except BaseException:
        writer.abort()
        raise
    entry = {**header, "file": name, "records": len(images), "sha256": shard_sha,
             "bytes": writer.bytes, "images": images, "skipped": skipped}
    _write_json(fs.join(output, _records_name(name)), entry)
    return entry


def _kept_shards(input_dir: str, output: str, plan: list[list[str]], header: dict,
                 workers: int) -> dict:
    """{k: record list} of the complete shards of an earlier run whose settings and source
    files (names and hashes) match the plan; the others are removed."""
    n = len(plan)
    existing = set(fs.list_files(output))
    candidates = {}
    for k, names in enumerate(plan):
        name = shard_name(k, n)
        rec = _records_name(name)
        if name in existing and rec in existing:
            try:
                entry = _read_json(fs.join(output, rec))
            except (OSError, ValueError):
                continue
            listed = sorted([i["name"] for i in entry.get("images", [])]
                            + [s["name"] for s in entry.get("skipped", [])])
            if all(entry.get(key) == value for key, value in header.items()) and \
                    listed == sorted(names) and entry.get("file") == name:
                candidates[k] = entry
    kept = {}
    if candidates:
        pool = _Pool(workers)
        try:
            order = sorted(candidates)
            hashes = pool.map(_hash_task, [(input_dir, plan[k]) for k in order])
            for k, digests in zip(order, hashes):
                entry = candidates[k]
                recorded = {i["name"]: i["sha256"] for i in entry["images"] + entry["skipped"]}
                if [recorded[nm] for nm in plan[k]] == digests:
                    kept[k] = entry
        finally:
            pool.close()
    keep_files = {shard_name(k, n) for k in kept} | {_records_name(shard_name(k, n))
                                                     for k in kept}
    for name in existing:
        if name.startswith("shard-") and name not in keep_files:
            fs.remove(fs.join(output, name))
    return kept


def _finish(output: str, input_dir: str, header: dict, entries: list[dict],
            n_shards: int) -> dict:
    count = sum(e["records"] for e in entries)
    if count == 0:
        raise NothingReadableError(f"none of the files under {input_dir!r} is a readable image "
                           f"(the reasons are in {output!r}'s shard-*.json); nothing to train "
                           f"on.")
    manifest = {**header, "input": input_dir, "count": count,
                "shards": [{k: e[k] for k in ("file", "records", "sha256", "bytes") if k in e}
                           for e in entries],
                "images": [i for e in entries for i in e["images"]],
                "skipped": [{"name": s["name"], "reason": s["reason"], "sha256": s["sha256"]}
                            for e in entries for s in e["skipped"]]}
    _write_json(fs.join(output, MANIFEST), manifest)
    for e in entries:
        fs.remove(fs.join(output, _records_name(e["file"])))
    fs.remove(fs.join(output, IN_PROGRESS))
    return manifest


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def is_prepared(path: str) -> bool:
    """True when `path` (a folder or URL) holds a prepared dataset's manifest. fs.RemoteError
    (naming `path`, the folder the user gave) when a bucket cannot be asked."""
    manifest = fs.join(path, MANIFEST)
    try:
        return fs.exists(manifest)
    except fs.RemoteError as e:
        raise fs.RemoteError(str(e).replace(manifest, str(path))) from e


@functools.lru_cache(maxsize=8)
def _opened(root: str) -> PreparedSource:
    return PreparedSource(root)


def list_inputs(folder: str) -> list[str]:
    """The image names of an image folder (image_io.list_images: sorted relative paths) or of
    a prepared dataset (its source names, in record order): what encode and invert iterate."""
    if is_prepared(folder):
        return list(_opened(folder).files)
    return image_io.list_images(folder)


def input_file(folder: str, name: str):
    """What image_io.read_rgb reads for image `name` of `folder` (a list_inputs name): its
    path, or for a prepared dataset a binary file object of the stored image (named `name`)."""
    if is_prepared(folder):
        return _opened(folder).open(name)
    return fs.join(folder, name)


def cache_dir() -> str:
    return os.environ.get("E4E_JAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "e4e_jax", "prepared")


class PreparedSource:
    """The images of a prepared dataset, by index, as FolderSource gives those of a folder.

    Raises DataError when `root` has no manifest, or one of another format or version."""

    def __init__(self, root: str):
        path = fs.join(root, MANIFEST)
        if not fs.exists(path):
            raise DataError(f"{root!r} is not a prepared dataset (no {MANIFEST}); make one with "
                            f"`e4e-jax prepare --input FOLDER --output {root}`.")
        try:
            m = _read_json(path)
        except ValueError as e:
            raise DataError(f"{path!r} is not valid JSON ({e}); prepare the dataset again.") \
                from e
        if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path!r} is format {m.get('format')!r} version "
                            f"{m.get('format_version')!r}; this e4e_jax reads {FORMAT!r} "
                            f"version {FORMAT_VERSION}: prepare the dataset again.")
        self.root, self.manifest = root, m
        self.size = tuple(int(s) for s in m["size"])
        self.encoding = m.get("encoding")
        if self.encoding not in ENCODINGS:
            raise DataError(f"{path!r} has encoding {self.encoding!r}; this e4e_jax reads "
                            f"{', '.join(ENCODINGS)}: prepare the dataset again.")
        problems = shard_problems(root, m)
        if problems:
            raise DataError(
                f"prepared dataset {root} is damaged: {'; '.join(problems)}; rerun `e4e-jax "
                f"prepare` with the same arguments (--input {m.get('input')} --output {root} "
                f"--size {_setting(m['size'])}{_extra_args(m)}): it redoes the missing or "
                f"damaged shards.")
        self.files = [i["name"] for i in m["images"]]
        counts = [int(s["records"]) for s in m["shards"]]
        self._starts = np.cumsum([0] + counts)
        self._index: dict[str, int] | None = None
        self._readers: dict[int, object] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def name(self, i: int) -> str:
        """The source file's path relative to the prepared folder."""
        return self.files[i]

    def _reader(self, k: int):
        reader = self._readers.get(k)
        if reader is None:
            from array_record.python.array_record_module import ArrayRecordReader
            local = self._local_shard(k)
            try:
                reader = ArrayRecordReader(local, READER_OPTIONS)
            except (RuntimeError, OSError, ValueError) as e:   # a shard damaged after opening
                raise DataError(
                    f"shard {self.manifest['shards'][k]['file']} of prepared dataset "
                    f"{self.root} cannot be read ({' '.join(str(e).split())[:200]}); rerun "
                    f"`e4e-jax prepare` with the same arguments: it redoes damaged "
                    f"shards.") from e
            self._readers[k] = reader
        return reader

    def _local_shard(self, k: int) -> str:
        shard = self.manifest["shards"][k]
        path = fs.join(self.root, shard["file"])
        if not fs.is_remote(path):
            return path
        local = os.path.join(cache_dir(), shard["sha256"] + ".array_record")
        if not os.path.exists(local):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            tmp = f"{local}.{os.getpid()}.{threading.get_ident()}.tmp"
            with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.replace(tmp, local)
        return local

    def open(self, name: str) -> io.BytesIO:
        """A binary file object of image `name` (KeyError if absent) that PIL reads: the stored
        PNG, or the raw pixels behind a PPM header."""
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.files)}
        data = self.record(self._index[name])
        if self.encoding == "raw":
            data = f"P6 {self.size[1]} {self.size[0]} 255\n".encode() + data
        return _NamedBytes(data, name)

    def record(self, i: int) -> bytes:
        """The stored bytes of image i (raw H*W*3 uint8 pixels, or a PNG)."""
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        with self._lock:      # one reader per shard, shared by the loader's threads
            return self._reader(k).read([int(i - self._starts[k])])[0]

    def load(self, i: int, size: Sequence[int]) -> np.ndarray:
        """Image i as (H, W, 3) uint8 at `size` (H, W); ImageReadError when undecodable."""
        data = self.record(i)
        h, w = self.size
        if self.encoding == "raw":
            if len(data) != h * w * 3:
                raise image_io.ImageReadError(
                    f"record {i} ({self.files[i]!r}) of {self.root!r} holds {len(data)} bytes, "
                    f"not {h}x{w}x3: the shard is damaged; prepare the dataset again.")
            u8 = np.frombuffer(data, np.uint8).reshape(h, w, 3)
            if (int(size[0]), int(size[1])) == (h, w):
                return u8.copy()             # writable, like every source's images
            return np.asarray(image_io.resize(Image.fromarray(u8), size))
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                img = image_io.to_rgb(im)
        except Exception as e:  # PIL raises many types for broken data
            raise image_io.ImageReadError(f"cannot read record {i} ({self.files[i]!r}) of "
                                          f"{self.root!r}: {type(e).__name__}: {e}") from e
        return np.asarray(image_io.resize(img, size))

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    def __repr__(self) -> str:
        return f"PreparedSource({self.root!r}, {len(self)} images at {self.size[0]}x{self.size[1]})"
