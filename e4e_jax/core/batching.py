"""Fixed-size batching: pad the last batch, drop the padded rows (one compiled shape per run).

Inputs are numpy / jax arrays (N, ...) or iterables of such batches (tuples `(images, ...)` from a
data loader are accepted; the first item is used). Used by the metrics
(e4e_jax.evaluation.metrics re-exports these names) and by the networks that run over image sets
(e4e_jax.nets.inception).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


def first_leaf(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def iterate_batches(data: Any, batch_size: int) -> Iterator[tuple[np.ndarray | jax.Array, int]]:
    """Yields `(batch, n_valid)` with every batch exactly `batch_size` long.

    `data` is an array (N, ...) or an iterable of batches of at most `batch_size` items. A short
    batch is padded by repeating its last item; the caller keeps the first `n_valid` results.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        n = data.shape[0]
        batches = (data[i:i + batch_size] for i in range(0, n, batch_size))
    else:
        batches = (first_leaf(b) for b in data)
    for batch in batches:
        if not (hasattr(batch, "shape") and hasattr(batch, "dtype")):
            batch = np.asarray(batch)
        m = batch.shape[0]
        if m == 0:
            continue
        if m > batch_size:
            raise ValueError(f"a batch of {m} items is larger than batch_size={batch_size}; "
                             f"pass batch_size >= the data loader's batch size.")
        if m < batch_size:
            xp = jnp if isinstance(batch, jax.Array) else np
            pad = xp.repeat(batch[-1:], batch_size - m, axis=0)
            batch = xp.concatenate([batch, pad], axis=0)
        yield batch, m


def run_batched(fn: Callable, data: Any, batch_size: int) -> Any:
    """Applies `fn` to fixed-size batches of `data` and concatenates the valid rows (numpy)."""
    outs = []
    for batch, m in iterate_batches(data, batch_size):
        out = fn(batch)
        outs.append(jax.tree.map(lambda o: np.asarray(o)[:m], out))
    if not outs:
        raise ValueError("no data: the input holds no images.")
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outs)


def as_float_images(x: Any) -> jax.Array:
    """uint8 images become u8 / 255 (as torchvision's ToTensor); anything else float32."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)
