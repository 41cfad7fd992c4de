"""Latent Editing Consistency (eq. 8) and proximity to W (section 8.2).

    lec = latent_editing_consistency(images, encode, generate, edit, edit.inverse)
    latent_variation(w_plus)                               # mean ||w - w_mu||_2
    latent_deviation(encode, generate, mapping, n_latent)  # E_w ||E(G(w)) - w||_2

Reproduces omertov/encoder4editing metrics/LEC.py (groups of the official batch size, outliers
filtered like the official script).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.evaluation.metrics.batching import iterate_batches, run_batched


@jax.jit
def _wplus_distance(a, b):
    """||a - b||_2 over each whole W+ code (official `.norm(2, dim=(1, 2))`)."""
    d = (a - b).reshape(a.shape[0], -1)
    return jnp.sqrt(jnp.sum(jnp.square(d), axis=-1))


def filter_outliers(values: Any) -> np.ndarray:
    """The official LEC filter: keep lo <= x <= hi with lo / hi the 1st / 99th percentiles
    (numpy 'lower' / 'higher' interpolation, i.e. actual sample values)."""
    arr = np.asarray(values)
    lo = np.percentile(arr, 1, method="lower")
    hi = np.percentile(arr, 99, method="higher")
    return arr[(lo <= arr) & (arr <= hi)]


def latent_editing_consistency(images: Any, encode: Callable, generate: Callable,
                               edit: Callable, inverse_edit: Callable, batch_size: int = 8,
                               group_size: int | None = 8, return_details: bool = False):
    """LEC (eq. 8): E_x || E(x) - f^-1(E(G(f(E(x))))) ||_2, as `metrics/LEC.py` computes it.

    encode(images) -> W+ codes (with latent_avg, as the official `_encode`); generate(w_plus) ->
    images the encoder accepts (the official `_generate`: face_pool, cars crop); edit /
    inverse_edit: W+ -> W+. Distances are the 2-norm of each whole W+ difference. The official
    script averages them per data-loader batch (`--batch` 8, drop_last) and drops the batch
    means outside the [1st, 99th] percentile before averaging; `group_size` reproduces those
    groups (consecutive images; an incomplete last group is dropped) independently of the
    `batch_size` used for computing, and `group_size=None` filters per-image distances instead.
    """
    dists = []
    for batch, m in iterate_batches(images, batch_size):
        codes = encode(batch)
        edited_image = generate(edit(codes))
        inverse_codes = inverse_edit(encode(edited_image))
        dists.append(np.asarray(_wplus_distance(jnp.asarray(codes), jnp.asarray(inverse_codes)))[:m])
    if not dists:
        raise ValueError("no data: the input holds no images.")
    per_image = np.concatenate(dists)
    if group_size:
        n_groups = len(per_image) // group_size
        if n_groups == 0:
            raise ValueError(f"LEC with group_size={group_size} needs at least {group_size} "
                             f"images, got {len(per_image)}.")
        values = per_image[:n_groups * group_size].reshape(n_groups, group_size).mean(axis=1)
    else:
        values = per_image
    kept = filter_outliers(values)
    lec = float(kept.mean())
    if return_details:
        return {"lec": lec, "per_image": per_image, "values": values, "kept": int(kept.size)}
    return lec


@jax.jit
def _variation(w_plus):
    w_mu = jnp.mean(w_plus, axis=1, keepdims=True)
    return _wplus_distance(w_plus, jnp.broadcast_to(w_mu, w_plus.shape))


def latent_variation(w_plus: Any, batch_size: int = 256) -> float:
    """Section 8.2: mean over codes of ||w - w_mu||_2, w_mu the mean of the code's rows repeated.

    `w_plus`: (N, n_latent, 512) array or iterable of batches. 0 for codes in W (equal rows).
    """
    def one(batch):
        batch = jnp.asarray(batch, jnp.float32)
        if batch.ndim != 3:
            raise ValueError(f"W+ codes must be (N, n_latent, style_dim), got {tuple(batch.shape)}")
        return _variation(batch)
    return float(np.mean(run_batched(one, w_plus, batch_size)))


def latent_deviation(encode: Callable, generate: Callable, mapping: Callable, n_latent: int,
                     n_samples: int = 5000, batch_size: int = 50, seed: int = 0,
                     style_dim: int = 512, return_distances: bool = False):
    """Section 8.2: E_w ||E(G(w)) - w||_2 over `n_samples` w = mapping(z), z ~ N(0, I).

    w is broadcast to all `n_latent` W+ rows for the generator and compared with the encoded
    W+ code as a whole. generate(w_plus) -> images the encoder accepts (e.g. an Inverter's
    decode), encode(images) -> W+ codes with latent_avg. Deterministic given `seed` and
    `batch_size`.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    key = jax.random.key(seed)
    dists, done, index = [], 0, 0
    while done < n_samples:
        z = jax.random.normal(jax.random.fold_in(key, index), (batch_size, style_dim))
        w = jnp.asarray(mapping(z), jnp.float32)
        w_plus = jnp.broadcast_to(w[:, None, :], (batch_size, n_latent, w.shape[-1]))
        encoded = jnp.asarray(encode(generate(w_plus)))
        if encoded.shape != w_plus.shape:
            raise ValueError(f"encode returned codes of shape {tuple(encoded.shape)}, expected "
                             f"{tuple(w_plus.shape)} (n_latent={n_latent}).")
        m = min(batch_size, n_samples - done)
        dists.append(np.asarray(_wplus_distance(encoded, w_plus))[:m])
        done += m
        index += 1
    d = np.concatenate(dists)
    return (float(d.mean()), d) if return_distances else float(d.mean())
