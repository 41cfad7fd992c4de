"""The one image loader: decoding in a thread pool, in order, into fixed-size padded batches.

    for batch in SourceImages(make_source("photos/"), "photos/").batches(inv, 8):
        batch.images, batch.valid, batch.names       # (8, H, W, 3) float32, real rows, names
    for x in BatchLoader(source, BatchSpec(16, (256, 256), seed=0)).iterate(start_step=100):
        ...                                          # training: the batch of each step

Every batched reader of image files (training's folder / TFDS source and its test sets,
eval.py, the encode and edit commands) goes through `read_in_order` (a thread pool that returns
results in input order, with a bounded number of images in flight) and every fixed set of images
is cut into `Batch`es by `fixed_batches` with ONE padding rule (the invert command optimises one
image at a time and reads each with image_io directly):

    every batch has exactly `batch_size` rows, so each jitted function compiles once; the last
    batch is padded with zero images (mid-grey in [-1, 1]) and `Batch.valid` says how many rows
    are real. Consumers drop rows >= valid (`Batch.mask`); nothing is computed from padding.

Images are float32 (N, H, W, 3) in [-1, 1] at the requested size, decoded and resized like the
official test transform (e4e_jax.data.image_io). An unreadable file is reported once through the
caller's `on_skip(name, error)` (each command words it its own way) and listed in `skipped`;
training's endless stream instead replaces it by the next readable image of the epoch's order,
so a corrupt file never stops a run and batch shapes never change.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import itertools
import logging
import os
import sys
import threading
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from e4e_jax.data import image_io
from e4e_jax.data.sources import DataError

log = logging.getLogger(__name__)


_END = object()   # the end of read_in_order's items (None may be an item)


def default_workers() -> int:
    """Decoding threads when the caller gives none: min(4, CPUs)."""
    return min(4, os.cpu_count() or 1)


def read_in_order(fn: Callable, items: Iterable, workers: int | None = None,
                  prefetch: int | None = None) -> Iterator:
    """fn(item) for every item, computed in a pool of `workers` threads, yielded in the order of
    `items` with at most `prefetch` items in flight (default 2 * workers).

    PIL releases the GIL while decoding, so threads give the parallel decode speed of processes
    without copying images between them. An exception raised by fn is raised here at its
    item's position (callers that skip bad items catch them inside fn). Closing the iterator
    early cancels the items not started yet.
    """
    workers = max(1, int(workers or default_workers()))
    prefetch = max(1, int(prefetch or 2 * workers))
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= prefetch:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)



@dataclasses.dataclass
class Batch:
    """One fixed-size batch: `images` (batch_size, H, W, 3) float32 in [-1, 1] whose rows
    >= `valid` are zero padding; `names` of the `valid` real rows."""
    images: np.ndarray
    valid: int
    names: list[str]

    @property
    def mask(self) -> np.ndarray:
        """(batch_size,) bool: True for the real rows."""
        return np.arange(len(self.images)) < self.valid


def pad_batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    """The padding rule: `x` (n <= batch_size, ...) extended with zero rows to batch_size rows
    (one compiled shape for every batch); `x` itself when already full."""
    x = np.asarray(x)
    pad = batch_size - len(x)
    if pad <= 0:
        return x
    return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])


def fixed_batches(rows: Iterable[tuple[str, np.ndarray]], batch_size: int) -> Iterator[Batch]:
    """(name, image) rows -> Batches of exactly `batch_size` rows (the last one padded), each
    yielded as soon as it is full."""
    names: list[str] = []
    images: list[np.ndarray] = []
    for name, x in rows:
        names.append(name)
        images.append(x)
        if len(images) == batch_size:
            yield Batch(np.stack(images), batch_size, names)
            names, images = [], []
    if images:
        yield Batch(pad_batch(np.stack(images), batch_size), len(images), names)


def batches_of(images: np.ndarray, batch_size: int, names: Sequence[str] | None = None
               ) -> Iterator[Batch]:
    """An in-memory set (N, ...) cut into padded Batches (names default to row numbers)."""
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield Batch(pad_batch(chunk, batch_size), len(chunk), names[start:start + len(chunk)])


def warn_skip(name: str, error: Exception) -> None:
    """eval.py's report of an unreadable file (stderr)."""
    print(f"warning: skipping unreadable image {name}: {error}", file=sys.stderr)


class SourceImages:
    """The first `num_images` images of a source (all by default), read at a model's input size
    like the official test transform, in order, in fixed-size padded batches.

    Unreadable files are skipped, reported once per file through `on_skip` and listed in
    `skipped` after each pass. `num_images` counts files (eval.py: a set of N slots with one
    broken file holds N - 1 images) or, with `fill`, readable images (the edit command and
    training's fixed sets: a broken file is replaced by the next readable one, so the set keeps
    its size while the source has enough readable files).
    """

    def __init__(self, source, description: str, num_images: int | None = None,
                 workers: int | None = None,
                 on_skip: Callable[[str, Exception], None] = warn_skip, fill: bool = False):
        self.source = source
        self.description = description
        self.count = len(source) if not num_images else min(len(source), int(num_images))
        self.workers = max(1, int(workers or default_workers()))
        self.on_skip = on_skip
        self.fill = bool(fill)
        self.skipped: list[str] = []
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return self.count

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        """Batches at `inv.input_size` (the evaluators' protocol: `inv` is the Inverter)."""
        return self.read(inv.input_size, batch_size)

    def read(self, size: Sequence[int], batch_size: int) -> Iterator[Batch]:
        """Batches (batch_size, H, W, 3) of the readable images at `size` (H, W)."""
        skipped: list[str] = []

        def load(i):
            name = self.source.name(i)
            try:
                return name, image_io.to_model_input(self.source.load(i, size))
            except image_io.ImageReadError as e:
                return name, e

        def readable():
            files = range(len(self.source) if self.fill else self.count)
            decoded = read_in_order(load, files, self.workers, 2 * batch_size)
            n = 0
            try:
                for name, x in decoded:
                    if isinstance(x, Exception):
                        skipped.append(name)
                        if name not in self._reported:        # once, not on every pass
                            self._reported.add(name)
                            self.on_skip(name, x)
                        continue
                    yield name, x
                    n += 1
                    if n == self.count:
                        break
            finally:
                decoded.close()                # stops the files read ahead

        yield from fixed_batches(readable(), batch_size)
        self.skipped = skipped


# --------------------------------------------------------------------------------------------
# Training's endless stream
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchSpec:
    """A training stream: the global batch, image size (H, W), seed, order and flips, and this
    process's share (global_batch must divide by process_count: DataError)."""
    global_batch: int
    size: tuple[int, int]
    seed: int = 0
    shuffle: bool = True
    flip_prob: float = 0.0
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch % self.process_count:
            raise DataError(f"the global batch ({self.global_batch}) must be divisible by the "
                            f"number of processes ({self.process_count}).")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count


class BatchLoader:
    """Training batches of a source as a pure function of the step.

    The batch of step s holds positions s*B .. s*B + B - 1 of an endless stream of per-epoch
    permutations (seeded by (seed, epoch)), flipped horizontally with flip_prob (drawn from
    (seed, step)); each process reads only its slice of the global batch. So a resumed run
    reads exactly the batches an uninterrupted run would (the data position is the step
    counter stored in the checkpoint), and the global batch is the same for any number of
    hosts. Images are read by index (`source.load(i)`), so with a bucket folder each host
    fetches only the objects of its own slice. An unreadable file is counted, reported once, and replaced by the next readable file
    of the epoch's order; more than `max_bad_fraction` of the source unreadable is a DataError.
    """

    def __init__(self, source, spec: BatchSpec, max_bad_fraction: float = 0.5,
                 workers: int | None = None):
        self.source = source
        self.spec = spec
        self.n = len(source)
        self.max_bad = max(1, int(self.n * max_bad_fraction))
        self.workers = workers
        self._bad: set[int] = set()
        self._lock = threading.Lock()          # the bad-file set and the permutation cache
        self._perm_cache: dict[int, np.ndarray] = {}

    @property
    def num_bad(self) -> int:
        return len(self._bad)

    @property
    def bad_files(self) -> list[str]:
        return sorted(self.source.name(i) for i in self._bad)

    def _perm(self, epoch: int) -> np.ndarray:
        if not self.spec.shuffle:
            return np.arange(self.n)
        with self._lock:
            p = self._perm_cache.get(epoch)
            if p is None:
                p = np.random.default_rng([self.spec.seed, epoch]).permutation(self.n)
                self._perm_cache = {epoch: p, **{k: v for k, v in self._perm_cache.items()
                                                 if k >= epoch - 1}}
            return p

    def _positions(self, step: int) -> np.ndarray:
        """Global stream positions of this host's part of the batch of `step`."""
        b = self.spec.global_batch
        lo = step * b + self.spec.process_index * self.spec.local_batch
        return np.arange(lo, lo + self.spec.local_batch, dtype=np.int64)

    def _flips(self, step: int) -> np.ndarray:
        if self.spec.flip_prob <= 0:
            return np.zeros(self.spec.local_batch, bool)
        u = np.random.default_rng([self.spec.seed, step, 1]).random(self.spec.global_batch)
        start = self.spec.process_index * self.spec.local_batch
        return u[start:start + self.spec.local_batch] < self.spec.flip_prob

    def _load_position(self, pos: int) -> np.ndarray:
        epoch, k = divmod(int(pos), self.n)
        perm = self._perm(epoch)
        for attempt in range(self.n):
            idx = int(perm[(k + attempt) % self.n])
            if idx in self._bad:
                continue
            try:
                return self.source.load(idx, self.spec.size)
            except image_io.ImageReadError as e:
                with self._lock:
                    first = idx not in self._bad
                    self._bad.add(idx)
                    too_many = len(self._bad) > self.max_bad
                if first:
                    log.warning("skipping unreadable image (%d so far): %s", len(self._bad), e)
                    sys.stdout.write(f"warning: skipping unreadable image ({len(self._bad)} "
                                     f"so far): {e}\n")
                    sys.stdout.flush()
                if too_many:
                    raise DataError(f"more than {self.max_bad} of {self.n} images are unreadable "
                                    f"(e.g. {self.bad_files[:3]}); check the data.") from e
        raise DataError(f"no readable image in {self.source!r}.")

    def batch(self, step: int) -> np.ndarray:
        """(local_batch, H, W, 3) float32 in [-1, 1] for `step` (never padded)."""
        images = np.stack([self._load_position(p) for p in self._positions(step)])
        flips = self._flips(step)
        images[flips] = images[flips, :, ::-1]
        return image_io.to_model_input(images)

    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.spec.global_batch)

    def iterate(self, start_step: int = 0, num_steps: int | None = None,
                prefetch: int = 2) -> Iterator[np.ndarray]:
        """Batches of steps start_step, start_step + 1, ...: each step's batch decoded by one
        thread of `read_in_order`, `prefetch` steps beyond the pool's width in flight."""
        workers = max(1, int(self.workers or min(8, os.cpu_count() or 1)))
        steps = (range(start_step, start_step + num_steps) if num_steps is not None
                 else itertools.count(start_step))
        yield from read_in_order(self.batch, steps, workers, workers + prefetch)
