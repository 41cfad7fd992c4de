"""Images for eval.py and the edit command, in fixed-size padded batches.

    images = SyntheticImages(100, seed=0)          # G(mapping(z_i)) of each checkpoint's generator
    images = SourceImages(make_source("photos/"), "photos/", num_images=500)
    for batch in images.batches(inv, 8): batch.images, batch.valid, batch.names

Every batch has exactly `batch_size` rows (the last one padded by repeating its last row and
`valid` saying how many are real), so each jitted function compiles once. Images are float32
(batch_size, H, W, 3) in [-1, 1] at the encoder's input size (the official test transform).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import sys
from typing import Callable, Iterator

import numpy as np

from e4e_jax.data import image_io
from e4e_jax.data.pipeline import DataError


@dataclasses.dataclass
class Batch:
    """One fixed-size batch: images (batch_size, H, W, 3) float32 in [-1, 1], padded by repeating
    the last row; `valid` real rows; their `names`."""
    images: np.ndarray        # (batch_size, H, W, 3) float32, padded by repeating the last row
    valid: int                # rows that are real images
    names: list[str]


class SourceImages:
    """An image folder or a TFDS split (e4e_jax.data sources), read at the model's input size
    like the official test transform; unreadable files are skipped and listed."""

    def __init__(self, source, description: str, num_images: int | None = None,
                 workers: int = 4):
        self.source = source
        self.description = description
        self.count = len(source) if not num_images else min(len(source), int(num_images))
        self.workers = max(1, int(workers))
        self.skipped: list[str] = []
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return self.count

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        """Batches of the readable images at `inv.input_size`, decoded in threads in order;
        unreadable files are warned about once and listed in `skipped` after the pass."""
        size = inv.input_size
        skipped: list[str] = []

        def load(i):
            try:
                return self.source.name(i), image_io.to_model_input(self.source.load(i, size))
            except image_io.ImageReadError as e:
                return self.source.name(i), e

        names, rows = [], []
        with cf.ThreadPoolExecutor(self.workers) as pool:
            pending = collections.deque()
            indices = iter(range(self.count))
            for i in indices:
                pending.append(pool.submit(load, i))
                if len(pending) >= 2 * batch_size:
                    break
            while pending:
                name, x = pending.popleft().result()
                nxt = next(indices, None)
                if nxt is not None:
                    pending.append(pool.submit(load, nxt))
                if isinstance(x, Exception):
                    skipped.append(name)
                    if name not in self._warned:        # once, not on every pass
                        self._warned.add(name)
                        print(f"warning: skipping unreadable image {name}: {x}",
                              file=sys.stderr)
                    continue
                names.append(name)
                rows.append(x)
                if len(rows) == batch_size:
                    yield Batch(np.stack(rows), batch_size, names)
                    names, rows = [], []
        if rows:
            yield Batch(pad_batch(np.stack(rows), batch_size), len(rows), names)
        self.skipped = skipped


class SyntheticImages:
    """The checkpoint generator's own domain: image i is G(mapping(z_i)) with stored noise,
    z_i ~ N(0, I) from fold_in(key(seed), i) (independent of the batch size), pooled to the
    encoder's input size when the generator's resolution differs (as training does)."""

    def __init__(self, num_images: int, seed: int = 0):
        if num_images < 1:
            raise DataError(f"--num_images must be >= 1 for synthetic data, got {num_images}.")
        self.count = int(num_images)
        self.seed = int(seed)
        self.skipped: list[str] = []
        self.description = (f"synthetic: the generator's own domain, G(mapping(z)) with seed "
                            f"{self.seed}")
        self._fns: dict[int, Callable] = {}

    def __len__(self) -> int:
        return self.count

    def _fn(self, inv):
        import jax
        import jax.numpy as jnp

        from e4e_jax.core.ops import adaptive_avg_pool2d
        g = inv.generator
        if g.c_dim:
            raise DataError("--data synthetic needs an unconditional generator; this one takes "
                            f"class labels (c_dim={g.c_dim}).")
        size = tuple(inv.input_size)

        def make(variables, key, first, n):
            idx = first + jnp.arange(n)
            z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i),
                                                     (g.z_dim,)))(idx)
            w = g.map(variables, z)
            w_plus = jnp.broadcast_to(w[:, None], (n, g.n_latent, w.shape[-1]))
            x = g.synthesize(variables, w_plus, "const")
            if tuple(x.shape[1:3]) != size:
                x = adaptive_avg_pool2d(x, size)
            return x
        return jax.jit(make, static_argnums=3)

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        """Batches of G(mapping(z_i)) for `inv`'s generator (one jitted program per model)."""
        import jax
        fn = self._fns.get(id(inv))
        if fn is None:
            fn = self._fns[id(inv)] = self._fn(inv)
        key = jax.random.key(self.seed)
        for start in range(0, self.count, batch_size):
            m = min(batch_size, self.count - start)
            x = np.asarray(fn(inv.generator.variables, key, start, batch_size))
            yield Batch(pad_batch(x[:m], batch_size), m,
                        [f"synthetic_{i:05d}" for i in range(start, start + m)])


def pad_batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pads a short batch by repeating its last row (one compiled shape for every batch)."""
    pad = batch_size - len(x)
    if pad <= 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
