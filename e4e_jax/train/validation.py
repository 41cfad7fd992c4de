"""Validation during training: the loss terms on test batches, and the held-out MSE."""
from __future__ import annotations

import jax
import numpy as np

from e4e_jax.train.setup import Compiled, Setup, host_to_global, to_host


def holdout_mse(compiled: Compiled, state, frozen, images: np.ndarray, batch: int) -> float:
    """Reconstruction MSE (the L2 loss) of fixed held-out images, inference mode."""
    errs = []
    n = len(images)
    for i in range(0, n, batch):
        chunk = images[i:i + batch]
        pad = (-len(chunk)) % batch
        padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        _, rec = compiled.reconstruct(state, frozen,
                                      host_to_global(padded, compiled.batch_sharding))
        rec = to_host(rec)[:len(chunk)]
        errs.append(np.mean((rec - chunk) ** 2, axis=(1, 2, 3)))
    return float(np.mean(np.concatenate(errs)))


def pad_to(images: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pads the batch axis up to a multiple of `multiple`."""
    pad = (-len(images)) % multiple
    if not pad:
        return images
    return np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])


def validate(compiled: Compiled, state, setup: Setup, data, config) -> dict:
    """Mean of every eval_step metric (the loss terms and "loss") over the validation batches
    (at most config.max_val_batches), with a fixed key per batch."""
    totals: dict[str, float] = {}
    n = 0
    key = jax.random.key(config.seed + 3)
    for i, x in enumerate(data.test_batches(config.max_val_batches)):
        m = to_host(compiled.eval_step(state, setup.frozen,
                                       host_to_global(x, compiled.batch_sharding),
                                       jax.random.fold_in(key, i)))
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in totals.items()}
