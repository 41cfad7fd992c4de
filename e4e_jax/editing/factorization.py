"""SeFa: closed-form semantic directions from the generator's own modulation weights.

    eigenvalues, eigenvectors = sefa(generator)              # sorted, row i <-> value i
    edited = sefa_edit(w_plus, eigenvectors, semantic=0, layers=[2, 3, 4, 5])

Reproduces genforce/sefa (Shen & Zhou 2021) `factorize_weight` on this package's StyleGAN2
parameter tree; edits act on the W+ rows that feed the chosen style layers (`sefa_rows`).

StyleGAN3 (a LoadedStyleGAN3): the same factorization of the kernels of each synthesis layer's
`affine` (the layer's style projection, StyleGAN2's `modulation`); layer i is fed by W+ row
i + 1 (row 0 drives the input's rotation / translation affine, left out), so edits move rows
first_row + i with first_row = 1 (`first_style_row`). Neither genforce/sefa nor
stylegan3-editing ships a StyleGAN3 SeFa; this is the direct transfer of the method.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.editing.directions import as_wplus


def _params_of(generator: Any) -> Mapping[str, Any]:
    variables = getattr(generator, "variables", generator)
    if isinstance(variables, Mapping) and "params" in variables:
        return variables["params"]
    if isinstance(variables, Mapping):
        return variables
    raise TypeError("sefa needs a LoadedGenerator, its variables or its params.")


def _num_conv_layers(params: Mapping[str, Any]) -> int:
    if "conv1" not in params:
        raise ValueError("no 'conv1' in the generator params; pass a StyleGAN2 LoadedGenerator "
                         "or its variables.")
    j = 0
    while f"convs_{j}" in params:
        j += 1
    return 1 + j


def first_style_row(generator: Any) -> int:
    """The W+ row that feeds style layer 0: 0 for StyleGAN2 (conv1), 1 for StyleGAN3 (its
    row 0 drives the input transform)."""
    return int(getattr(generator, "first_style_row", 0))


def _sefa_layers(layers: Any, count: int) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all' or a list of layer indices, got {layers!r}.")
        return list(range(count))
    out = [int(i) for i in layers]
    bad = [i for i in out if not 0 <= i < count]
    if bad or not out:
        raise ValueError(f"SeFa layer indices must lie in 0..{count - 1} (0 = conv1, i = "
                         f"convs.{{i-1}}), got {list(layers)}.")
    return out


def modulation_weights(generator: Any, layers: Any = "all") -> np.ndarray:
    """The official factorize_weight's matrix: the (S, Cin) modulation kernels (= official
    `modulation.weight.T`) of the chosen style convolutions side by side, float32.

    Layer i is the style convolution fed by W+ row i: 0 = conv1, i >= 1 = convs.{i-1}. For a
    StyleGAN3 generator: the (w_dim, Cin) affine kernels of synthesis layers `layers`, in the
    listed order (LoadedStyleGAN3.style_affines).
    """
    if callable(getattr(generator, "style_affines", None)):
        return generator.style_affines(layers)[1]
    params = _params_of(generator)
    chosen = _sefa_layers(layers, _num_conv_layers(params))
    # Official order: conv1 first when chosen, then the others as listed.
    names = (["conv1"] if 0 in chosen else []) + [f"convs_{i - 1}" for i in chosen if i != 0]
    return np.concatenate([np.asarray(params[n]["modulation"]["kernel"], np.float32)
                           for n in names], axis=1)


def sefa(generator: Any, layers: Any = "all") -> tuple[np.ndarray, np.ndarray]:
    """Closed-form factorization (SeFa) of the modulation weights of `layers` ('all' or a list
    of style-convolution indices, 0 = conv1, i = convs.{i-1}), as the official factorize_weight.

    Returns (eigenvalues (S,) sorted descending, eigenvectors (S, S) with row i the unit
    eigenvector of eigenvalue i) of W W^T, W the column-normalised concatenated weights. The
    official code takes numpy's unsorted `eig`; here the symmetric solver in float64 (same
    eigenpairs up to sign and float32 rounding).
    """
    weight = modulation_weights(generator, layers)
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    w64 = weight.astype(np.float64)
    eigval, eigvec = np.linalg.eigh(w64 @ w64.T)
    order = np.argsort(eigval)[::-1]
    return eigval[order].astype(np.float32), eigvec[:, order].T.astype(np.float32)


def sefa_rows(layers: Any, n_latent: int, official_rows: bool = False,
              first_row: int = 0) -> list[int]:
    """W+ rows a SeFa edit of `layers` changes (first_row: `first_style_row` of the generator,
    1 for StyleGAN3, whose layer i is fed by row i + 1; official_rows is StyleGAN2's only).

    Style convolution i is fed by W+ row i, so by default the rows are the layer indices ('all'
    = rows 0..n_latent-2, every style convolution). The official `sefa.edit` instead reuses the
    list factorize_weight returns, which is shifted by one and drops conv1: explicit layers l
    edit rows l-1 (l != 0) and 'all' rows 0..n_latent-3; `official_rows=True` reproduces that.
    """
    count = n_latent - 1
    if first_row:
        if official_rows:
            raise ValueError("official_rows reproduces the StyleGAN2 script's row shift; it "
                             "has no meaning for a StyleGAN3 generator.")
        return [first_row + i for i in _sefa_layers(layers, count)]
    if isinstance(layers, str):
        _sefa_layers(layers, count)
        return list(range(count - 1)) if official_rows else list(range(count))
    chosen = _sefa_layers(layers, count)
    return [i - 1 for i in chosen if i != 0] if official_rows else chosen


def sefa_edit(w_plus: Any, eigenvectors: Any, semantic: int | Sequence[int] = 0,
              layers: Any = "all", start_distance: float = -15.0, end_distance: float = 15.0,
              steps: int = 11, distances: Sequence[float] | None = None,
              official_rows: bool = False, first_row: int = 0) -> jax.Array:
    """Moves W+ codes along SeFa eigenvectors by a range of distances on the chosen layers
    (official `editings/sefa.py` edit, defaults -15..15 in 11 steps).

    eigenvectors: (k, S) rows (as `sefa` returns them, sorted) or one (S,) direction;
    `semantic` picks rows (an int or a list). Output (n_semantics * N * n_distances, n_latent,
    S), ordered semantic, code, distance as the official loops; see `sefa_rows` for which rows
    move, `official_rows` and `first_row` (1 for StyleGAN3).
    """
    w = as_wplus(w_plus)
    n, k, s = w.shape
    vecs = jnp.asarray(eigenvectors, jnp.float32)
    if vecs.ndim == 1:
        vecs = vecs[None]
    sems = [semantic] if np.ndim(semantic) == 0 else list(semantic)
    if vecs.ndim != 2 or vecs.shape[1] != s:
        raise ValueError(f"eigenvectors must be (k, {s}) or ({s},), got {tuple(vecs.shape)}.")
    if any(not 0 <= int(i) < vecs.shape[0] for i in sems):
        raise ValueError(f"semantic indices must lie in 0..{vecs.shape[0] - 1}, got {sems}.")
    if distances is None:
        distances = np.linspace(start_distance, end_distance, steps)
    dist = jnp.asarray(np.asarray(distances, np.float32))
    mask = np.zeros((k,), np.float32)
    mask[sefa_rows(layers, k, official_rows, first_row)] = 1.0
    boundary = vecs[jnp.asarray([int(i) for i in sems])]                       # (E, S)
    delta = (dist[None, :, None] * boundary[:, None, :])                        # (E, D, S)
    edited = (w[None, :, None] + jnp.asarray(mask)[None, None, None, :, None]
              * delta[:, None, :, None, :])                                    # (E, N, D, K, S)
    return edited.reshape(-1, k, s)
