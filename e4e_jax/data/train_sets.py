"""The training loop's data: held-out, validation and training batches per source kind.

    data = SyntheticData(config, setup) if config.data.train == "synthetic" else ImageData(config)
    for x in data.test_batches(4): ...            # (test_batch_size, H, W, 3) in [-1, 1]
    x = data.holdout_images()                      # fixed images of the image summaries

ImageData reads folders / TFDS through the resumable BatchLoader (each host its slice of the
training batch); SyntheticData draws fixed images G(mapping(z)) from the frozen generator
(training batches of that domain are generated inside the step, so `train` is None).
"""
from __future__ import annotations

import functools
from typing import Iterator

import jax
import numpy as np

from e4e_jax.data import pipeline as data_lib


class ImageData:
    """Training / test loaders for image folders or TFDS (per-host slices)."""

    def __init__(self, config):
        data_lib.hide_accelerators_from_tensorflow()
        size = tuple(int(s) for s in config.data.input_size)
        pi, pc = jax.process_index(), jax.process_count()
        self.train = data_lib.BatchLoader(
            data_lib.make_source(config.data.train, config.data.data_dir),
            data_lib.BatchSpec(config.batch_size, size, seed=config.seed, shuffle=True,
                               flip_prob=config.data.flip_prob, process_index=pi,
                               process_count=pc))
        test_source = data_lib.make_source(config.data.test or config.data.train,
                                           config.data.data_dir)
        # evaluation batches are small: every host decodes them in full
        self.test = data_lib.BatchLoader(
            test_source, data_lib.BatchSpec(config.test_batch_size, size, shuffle=False))
        self.holdout = data_lib.BatchLoader(
            test_source, data_lib.BatchSpec(min(config.holdout, len(test_source)), size,
                                            shuffle=False))

    def test_batches(self, max_batches: int | None) -> Iterator[np.ndarray]:
        """Validation batches (test_batch_size, H, W, 3), at most `max_batches` (None: all)."""
        n = max(1, len(self.test.source) // self.test.spec.global_batch)
        if max_batches:
            n = min(n, int(max_batches))
        for i in range(n):
            yield self.test.batch(i)

    def holdout_images(self) -> np.ndarray:
        """The fixed held-out images (holdout, H, W, 3) of the MSE and the image grids."""
        return self.holdout.batch(0)


class SyntheticData:
    """Held-out / validation images of the synthetic domain: fixed draws of the generator."""

    def __init__(self, config, setup):
        self.config, self.setup = config, setup
        gen = setup.generator
        size = tuple(int(s) for s in config.data.input_size)

        @functools.partial(jax.jit, static_argnums=2)
        def make(variables, key, n):
            x, _ = data_lib.synthetic_batch(gen, variables, key, n, config.data.synthetic_noise)
            if tuple(x.shape[1:3]) != size:
                from e4e_jax.core.ops import adaptive_avg_pool2d
                x = adaptive_avg_pool2d(x, size)
            return x
        self._make = make
        self.train = None

    def _images(self, seed: int, n: int) -> np.ndarray:
        # drawn in one call per set so the values do not depend on batch boundaries
        key = jax.random.key(seed)
        return np.asarray(self._make(self.setup.frozen["generator"], key, n))

    def test_batches(self, max_batches: int | None) -> Iterator[np.ndarray]:
        """`max_batches` (default 4) fixed validation batches (test_batch_size, H, W, 3)."""
        n = int(max_batches or 4)
        b = self.config.test_batch_size
        images = self._images(self.config.seed + 1000, n * b)
        for i in range(n):
            yield images[i * b:(i + 1) * b]

    def holdout_images(self) -> np.ndarray:
        """The fixed held-out images (holdout, H, W, 3) of the MSE and the image grids."""
        return self._images(self.config.seed + 2000, int(self.config.holdout))
