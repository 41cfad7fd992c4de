"""Training and test data: image folders, TFDS datasets, and the synthetic domain.

Every batch is a pure function of (seed, step): sample positions step*B .. step*B + B - 1 of an
endless stream of per-epoch permutations, horizontal flips drawn from (seed, step). So

- a resumed run reads exactly the batches an uninterrupted run would (the data position is the
  step counter stored in the checkpoint),
- every host of a multi-host run reads only its slice of the global batch, and the global batch
  is the same for any number of hosts,
- decoding runs in parallel in a tf.data pipeline (`Dataset.range(step) -> map(load batch)`),
  with prefetching, deterministic order.

Images are decoded and resized with PIL exactly like the official transforms
(e4e_jax.data.image_io). An unreadable file is counted, reported once, and replaced by the next
readable file of the epoch's order, so a corrupt file never stops a run and batch shapes never
change.

The synthetic domain has no files: images are generated on the fly from the generator's own W
(z -> mapping -> synthesis) inside the jitted step, which also yields the ground-truth w.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from typing import Any, Iterator, Sequence

import numpy as np

from e4e_jax.data import image_io

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data source is missing, empty, or unreadable."""


# --------------------------------------------------------------------------------------------
# Sources: random access to uint8 RGB images
# --------------------------------------------------------------------------------------------

class FolderSource:
    """JPEG/PNG (and other PIL formats) files under a folder, recursively, sorted by path."""

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise DataError(f"image folder {root!r} does not exist.")
        self.root = root
        self.files = image_io.list_images(root, recursive=True)
        if not self.files:
            raise DataError(f"no images (JPEG/PNG/...) found under {root!r}.")

    def __len__(self) -> int:
        return len(self.files)

    def name(self, i: int) -> str:
        return self.files[i]

    def load(self, i: int, size: Sequence[int]) -> np.ndarray:
        img = image_io.read_rgb(os.path.join(self.root, self.files[i]))
        return np.asarray(image_io.resize(img, size))

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, {len(self)} images)"


class TFDSSource:
    """A TFDS dataset prepared under `data_dir` (random access, ArrayRecord format)."""

    def __init__(self, name: str, split: str, data_dir: str | None = None,
                 image_key: str = "image"):
        import tensorflow_datasets as tfds
        self.name_, self.split, self.image_key = name, split, image_key
        try:
            self.ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # tfds raises several types for missing / non-random-access data
            raise DataError(
                f"cannot open TFDS dataset {name!r} split {split!r} in data_dir {data_dir!r}: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Prepare it "
                f"first (e.g. `tfds build {name} --data_dir DIR --file_format array_record`); "
                f"this machine will not download it.") from e
        if len(self.ds) == 0:
            raise DataError(f"TFDS dataset {name!r} split {split!r} is empty.")

    def __len__(self) -> int:
        return len(self.ds)

    def name(self, i: int) -> str:
        return f"{self.name_}/{self.split}[{i}]"

    def load(self, i: int, size: Sequence[int]) -> np.ndarray:
        from PIL import Image
        try:
            image = np.asarray(self.ds[i][self.image_key])
            img = Image.fromarray(image.astype(np.uint8)).convert("RGB")
        except Exception as e:
            raise image_io.ImageReadError(f"cannot read {self.name(i)}: {e}") from e
        return np.asarray(image_io.resize(img, size))

    def __repr__(self) -> str:
        return f"TFDSSource({self.name_!r}, {self.split!r}, {len(self)} images)"


def make_source(spec: str, data_dir: str | None = None):
    """'tfds:NAME:SPLIT' -> TFDSSource; anything else is an image folder."""
    if spec.startswith("tfds:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise DataError(f"TFDS sources are written 'tfds:NAME:SPLIT', got {spec!r}.")
        return TFDSSource(parts[1], parts[2], data_dir)
    return FolderSource(spec)


# --------------------------------------------------------------------------------------------
# Deterministic batches
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchSpec:
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
    """Batches of a source as a pure function of the step (see the module docstring)."""

    def __init__(self, source, spec: BatchSpec, max_bad_fraction: float = 0.5):
        self.source = source
        self.spec = spec
        self.n = len(source)
        self.max_bad = max(1, int(self.n * max_bad_fraction))
        self._bad: set[int] = set()
        self._lock = threading.Lock()
        self._perm_cache: dict[int, np.ndarray] = {}

    # The corrupt-file counter is shared by the loader threads.
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
        """(local_batch, H, W, 3) float32 in [-1, 1] for `step`."""
        images = np.stack([self._load_position(p) for p in self._positions(step)])
        flips = self._flips(step)
        images[flips] = images[flips, :, ::-1]
        return image_io.to_model_input(images)

    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.spec.global_batch)

    def iterate(self, start_step: int = 0, num_steps: int | None = None,
                prefetch: int = 2) -> Iterator[np.ndarray]:
        """Batches of steps start_step, start_step + 1, ... decoded in parallel by tf.data."""
        import tensorflow as tf
        h, w = self.spec.size
        stop = np.iinfo(np.int64).max if num_steps is None else start_step + num_steps
        ds = tf.data.Dataset.range(start_step, stop)
        ds = ds.map(lambda s: tf.numpy_function(lambda v: self.batch(int(v)), [s], tf.float32),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(lambda x: tf.ensure_shape(x, (self.spec.local_batch, h, w, 3)))
        ds = ds.prefetch(prefetch)
        yield from ds.as_numpy_iterator()


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the host: keep TensorFlow off the GPUs/TPUs JAX uses."""
    import tensorflow as tf
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass


# --------------------------------------------------------------------------------------------
# Synthetic domain (pure jax; runs inside the jitted step)
# --------------------------------------------------------------------------------------------

def synthetic_batch(generator, variables, rng, batch_size: int, noise: str = "random"
                    ) -> tuple[Any, Any]:
    """(images (N, R, R, 3), ground-truth w (N, 512)): z ~ N(0, I) -> mapping -> synthesis."""
    import jax
    kz, kn = jax.random.split(rng)
    z = jax.random.normal(kz, (batch_size, generator.z_dim))
    w = generator.map(variables, z)
    w_plus = jax.numpy.broadcast_to(w[:, None], (batch_size, generator.n_latent, w.shape[-1]))
    images = generator.synthesize(variables, w_plus, noise, kn if noise == "random" else None)
    return images, w
