"""InterFaceGAN and GANSpace edits of W+ codes (paper section 7), and the GANSpace PCA.

    edited = interfacegan_edit(w_plus, direction, factor=-3)      # w + factor * direction
    edited = ganspace_edit(w_plus, pca, [(54, 7, 8, 5)])          # the official tuple
    pca = compute_ganspace_pca(generator)                         # PCA of sampled w

W+ codes are (N, n_latent, style_dim) float arrays (numpy or jax); results are jax float32.
Official source: omertov/encoder4editing editings/latent_editor.py.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.editing.files import pca_dict


def as_wplus(w_plus: Any) -> jax.Array:
    w = jnp.asarray(w_plus, jnp.float32)
    if w.ndim != 3:
        raise ValueError(f"W+ codes must be (N, n_latent, style_dim), got shape {tuple(w.shape)}.")
    return w


def broadcast_direction(direction: Any, w: jax.Array) -> jax.Array:
    d = jnp.asarray(direction, jnp.float32)
    if d.ndim == 1:
        d = d[None]
    if d.ndim == 2:  # (1, S): one W direction for every row
        if d.shape != (1, w.shape[2]):
            raise ValueError(f"a W direction must be (1, {w.shape[2]}), got {tuple(d.shape)}.")
        return d[:, None, :]
    if d.ndim == 3 and d.shape[0] == 1 and d.shape[2] == w.shape[2]:
        if d.shape[1] != w.shape[1]:
            raise ValueError(f"the W+ direction has {d.shape[1]} rows but the codes have "
                             f"{w.shape[1]} (a direction for another generator resolution).")
        return d
    raise ValueError(f"direction must be (1, {w.shape[2]}) or (1, {w.shape[1]}, {w.shape[2]}), "
                     f"got {tuple(d.shape)}.")


def interfacegan_edit(w_plus: Any, direction: Any, factor: float = 1.0,
                      factor_range: Sequence[int] | None = None) -> jax.Array:
    """w_plus + factor * direction, a (1, 512) W direction added to every row or a
    (1, n_latent, 512) W+ direction row by row (official `apply_interfacegan`).

    With `factor_range` = (start, stop[, step]) the official range of integer factors
    `range(*factor_range)` is applied and the results are stacked factor-major:
    (len(range) * N, n_latent, 512).
    """
    w = as_wplus(w_plus)
    d = broadcast_direction(direction, w)
    if factor_range is None:
        return w + factor * d
    factors = list(range(*factor_range))
    if not factors:
        raise ValueError(f"factor_range {tuple(factor_range)} is empty.")
    f = jnp.asarray(factors, jnp.float32)[:, None, None, None]
    return (w[None] + f * d[None]).reshape(-1, *w.shape[1:])


def _edit_tuples(edits: Any) -> list[tuple[int, int, int, float]]:
    if len(edits) == 4 and not isinstance(edits[0], (tuple, list)):
        edits = [edits]
    out = []
    for e in edits:
        if len(e) != 4:
            raise ValueError(f"a GANSpace edit is (pca_idx, start, end, strength), got {e!r}.")
        out.append((int(e[0]), int(e[1]), int(e[2]), float(e[3])))
    return out


def ganspace_edit(w_plus: Any, pca: Mapping[str, Any],
                  edits: Sequence[tuple[int, int, int, float]] | tuple) -> jax.Array:
    """The official GANSpace edit (editings/ganspace.py), for one or several
    (pca_idx, start, end, strength) tuples.

    For each code and edit: the coordinate of row 0 minus the mean along comp[pca_idx], in
    units of std[pca_idx], is moved to `strength`: delta = (strength - coordinate) *
    comp[pca_idx] * std[pca_idx], added to rows start..end-1. Output (N * E, n_latent, 512),
    code-major as the official loop (for latent: for edit: ...).
    """
    w = as_wplus(w_plus)
    p = pca_dict(pca, "pca")
    edits = _edit_tuples(edits)
    n, k, s = w.shape
    if p["mean"].shape[1] != s:
        raise ValueError(f"the PCA is for {p['mean'].shape[1]}-d latents, the codes are {s}-d.")
    idx = np.asarray([e[0] for e in edits])
    if idx.min() < 0 or idx.max() >= p["std"].shape[0]:
        raise ValueError(f"pca_idx must lie in 0..{p['std'].shape[0] - 1}, got {idx.tolist()}.")
    rows = np.zeros((len(edits), k), np.float32)
    for i, (_, start, end, _) in enumerate(edits):
        if not 0 <= start < end <= k:
            raise ValueError(f"GANSpace rows {start}..{end} do not fit {k} W+ rows.")
        rows[i, start:end] = 1.0
    comp = jnp.asarray(p["comp"][idx, 0])                    # (E, S)
    std = jnp.asarray(p["std"][idx])                          # (E,)
    strength = jnp.asarray([e[3] for e in edits], jnp.float32)
    centered = w[:, 0] - jnp.asarray(p["mean"])               # (N, S)
    coord = jnp.sum(centered[:, None, :] * comp[None], axis=-1) / std       # (N, E)
    delta = (strength - coord)[..., None] * comp[None] * std[None, :, None]  # (N, E, S)
    edited = w[:, None] + jnp.asarray(rows)[None, :, :, None] * delta[:, :, None, :]
    return edited.reshape(n * len(edits), k, s)


def compute_ganspace_pca(generator: Any, n_samples: int = 100_000, n_components: int = 80,
                         batch_size: int = 10_000, seed: int = 0,
                         style_dim: int | None = None) -> dict[str, np.ndarray]:
    """A GANSpace PCA of W from `n_samples` mapped z ~ N(0, I), in the official file's format.

    `generator`: a LoadedGenerator (its `mapping`) or any callable z (B, style_dim) -> w.
    Components are the leading eigenvectors of the sample covariance (float64), unit norm,
    sorted by variance, each signed so its largest-magnitude entry is positive; std is the
    standard deviation of the samples along each (the square root of its eigenvalue).
    """
    mapping: Callable = getattr(generator, "mapping", generator)
    if not callable(mapping):
        raise TypeError("generator must be a LoadedGenerator or a callable z -> w.")
    style_dim = int(style_dim or getattr(generator, "style_dim", 512))
    if not 0 < n_components <= style_dim:
        raise ValueError(f"n_components must be in 1..{style_dim}, got {n_components}.")
    if n_samples <= n_components:
        raise ValueError(f"n_samples ({n_samples}) must exceed n_components ({n_components}).")
    key = jax.random.key(seed)
    shift = None
    total = np.zeros(style_dim)
    outer = np.zeros((style_dim, style_dim))
    done, index = 0, 0
    while done < n_samples:
        m = min(batch_size, n_samples - done)
        z = jax.random.normal(jax.random.fold_in(key, index), (batch_size, style_dim))
        w = np.asarray(mapping(z), np.float64)[:m]
        if shift is None:  # centring on a first estimate keeps the sums well conditioned
            shift = w.mean(axis=0)
        w = w - shift
        total += w.sum(axis=0)
        outer += w.T @ w
        done += m
        index += 1
    mean = total / n_samples
    cov = (outer - n_samples * np.outer(mean, mean)) / (n_samples - 1)
    eigval, eigvec = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(eigval)[::-1][:n_components]
    comp = eigvec[:, order].T
    signs = np.sign(comp[np.arange(n_components), np.argmax(np.abs(comp), axis=1)])
    comp = comp * signs[:, None]
    return {"mean": (mean + shift)[None].astype(np.float32),
            "comp": comp[:, None, :].astype(np.float32),
            "std": np.sqrt(np.clip(eigval[order], 0.0, None)).astype(np.float32)}
