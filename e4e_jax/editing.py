"""Latent editing in W / W+: InterFaceGAN, GANSpace, SeFa and interpolation (paper section 7).

    direction = e4e_jax.load_interfacegan_direction("editings/interfacegan_directions/age.pt")
    edited = e4e_jax.interfacegan_edit(w_plus, direction, factor=-3)
    pca = e4e_jax.load_ganspace_pca("editings/ganspace_pca/ffhq_pca.pt")
    edited = e4e_jax.ganspace_edit(w_plus, pca, [(54, 7, 8, 5)])
    eigenvalues, eigenvectors = e4e_jax.sefa(generator)          # sorted, row i <-> value i
    edited = e4e_jax.sefa_edit(w_plus, eigenvectors, semantic=0, layers=[2, 3, 4, 5])
    mixed = e4e_jax.interpolate(w_psp, w_e4e, [0.0, 0.5, 1.0])

W+ codes are (N, n_latent, 512) arrays (numpy or jax); results are jax arrays. Outputs that
stack several edits keep the official order (see each function). The official data files are
PyTorch files: reading them needs torch (only for .pt; read with weights_only=True); the same
data as .npy / .npz loads without torch, and `convert_editing_file` writes those.

For the Latent Editing Consistency metric, `LinearEdit` bundles an invertible edit with its
inverse (InterFaceGAN, a GANSpace shift, a SeFa step).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PCA_KEYS = ("mean", "comp", "std")


# ----------------------------------------------------------------------------------------------
# Files


def _load_any(path: str) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist or is not a file.")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if ext in (".pt", ".pth"):
        try:
            from convert_weights._common import load_torch_file
        except ImportError as e:  # pragma: no cover - the package ships convert_weights
            raise ImportError("reading .pt files needs the convert_weights package and torch") from e
        return load_torch_file(path)
    raise ValueError(f"{path!r}: unknown editing file type {ext!r}; expected .pt/.pth (official, "
                     f"needs torch), .npy (a direction) or .npz.")


def _direction_array(obj: Any, what: str) -> np.ndarray:
    if isinstance(obj, Mapping):
        if "direction" in obj:
            obj = obj["direction"]
        elif len(obj) == 1:
            obj = next(iter(obj.values()))
        else:
            raise ValueError(f"{what}: expected one direction array, found entries "
                             f"{sorted(map(str, obj))}.")
    d = np.asarray(obj, np.float32)
    if d.ndim == 1:
        d = d[None]
    if not (d.ndim == 2 and d.shape[0] == 1) and not (d.ndim == 3 and d.shape[0] == 1):
        raise ValueError(f"{what}: an InterFaceGAN direction is (1, 512) in W or (1, n_latent, "
                         f"512) in W+, got shape {d.shape}.")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{what}: the direction holds non-finite values.")
    return d


def load_interfacegan_direction(path: str) -> np.ndarray:
    """An InterFaceGAN direction: (1, 512) in W or (1, n_latent, 512) in W+, float32.

    Reads the official .pt tensors (needs torch), .npy, or .npz (key 'direction' or one array).
    """
    return _direction_array(_load_any(path), repr(os.fspath(path)))


def _pca_dict(obj: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping) or any(k not in obj for k in PCA_KEYS):
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{what}: a GANSpace PCA holds 'mean' (1, 512), 'comp' (k, 1, 512) and "
                         f"'std' (k,); found {found}.")
    mean = np.asarray(obj["mean"], np.float32).reshape(1, -1)
    comp = np.asarray(obj["comp"], np.float32)
    std = np.asarray(obj["std"], np.float32).reshape(-1)
    dim = mean.shape[1]
    if comp.ndim == 2:
        comp = comp[:, None, :]
    if comp.shape != (std.shape[0], 1, dim):
        raise ValueError(f"{what}: 'comp' must be (k, 1, {dim}) with k = len(std) = "
                         f"{std.shape[0]}, got {comp.shape}.")
    return {"mean": mean, "comp": comp, "std": std}


def load_ganspace_pca(path: str) -> dict[str, np.ndarray]:
    """A GANSpace PCA {'mean' (1, 512), 'comp' (k, 1, 512), 'std' (k,)} from .pt (official,
    needs torch) or .npz."""
    return _pca_dict(_load_any(path), repr(os.fspath(path)))


def convert_editing_file(src: str, dst: str | None = None) -> str:
    """Writes an official editing file as numpy: a direction to .npy, a GANSpace PCA to .npz.

    `dst` defaults to `src` with the new extension. Returns the written path.
    """
    obj = _load_any(src)
    if isinstance(obj, Mapping) and all(k in obj for k in PCA_KEYS):
        pca = _pca_dict(obj, repr(src))
        dst = dst or os.path.splitext(src)[0] + ".npz"
        np.savez(dst, **pca)
    else:
        d = _direction_array(obj, repr(src))
        dst = dst or os.path.splitext(src)[0] + ".npy"
        np.save(dst, d)
    return dst


# ----------------------------------------------------------------------------------------------
# InterFaceGAN and GANSpace


def _as_wplus(w_plus: Any) -> jax.Array:
    w = jnp.asarray(w_plus, jnp.float32)
    if w.ndim != 3:
        raise ValueError(f"W+ codes must be (N, n_latent, style_dim), got shape {tuple(w.shape)}.")
    return w


def _broadcast_direction(direction: Any, w: jax.Array) -> jax.Array:
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
    w = _as_wplus(w_plus)
    d = _broadcast_direction(direction, w)
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
    w = _as_wplus(w_plus)
    p = _pca_dict(pca, "pca")
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


# ----------------------------------------------------------------------------------------------
# SeFa


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

    Layer i is the style convolution fed by W+ row i: 0 = conv1, i >= 1 = convs.{i-1}.
    """
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


def sefa_rows(layers: Any, n_latent: int, official_rows: bool = False) -> list[int]:
    """W+ rows a SeFa edit of `layers` changes.

    Style convolution i is fed by W+ row i, so by default the rows are the layer indices ('all'
    = rows 0..n_latent-2, every style convolution). The official `sefa.edit` instead reuses the
    list factorize_weight returns, which is shifted by one and drops conv1: explicit layers l
    edit rows l-1 (l != 0) and 'all' rows 0..n_latent-3; `official_rows=True` reproduces that.
    """
    count = n_latent - 1
    if isinstance(layers, str):
        _sefa_layers(layers, count)
        return list(range(count - 1)) if official_rows else list(range(count))
    chosen = _sefa_layers(layers, count)
    return [i - 1 for i in chosen if i != 0] if official_rows else chosen


def sefa_edit(w_plus: Any, eigenvectors: Any, semantic: int | Sequence[int] = 0,
              layers: Any = "all", start_distance: float = -15.0, end_distance: float = 15.0,
              steps: int = 11, distances: Sequence[float] | None = None,
              official_rows: bool = False) -> jax.Array:
    """Moves W+ codes along SeFa eigenvectors by a range of distances on the chosen layers
    (official `editings/sefa.py` edit, defaults -15..15 in 11 steps).

    eigenvectors: (k, S) rows (as `sefa` returns them, sorted) or one (S,) direction;
    `semantic` picks rows (an int or a list). Output (n_semantics * N * n_distances, n_latent,
    S), ordered semantic, code, distance as the official loops; see `sefa_rows` for which rows
    move and `official_rows`.
    """
    w = _as_wplus(w_plus)
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
    mask[sefa_rows(layers, k, official_rows)] = 1.0
    boundary = vecs[jnp.asarray([int(i) for i in sems])]                       # (E, S)
    delta = (dist[None, :, None] * boundary[:, None, :])                        # (E, D, S)
    edited = (w[None, :, None] + jnp.asarray(mask)[None, None, None, :, None]
              * delta[:, None, :, None, :])                                    # (E, N, D, K, S)
    return edited.reshape(-1, k, s)


# ----------------------------------------------------------------------------------------------
# Interpolation and invertible edits


def interpolate(w_a: Any, w_b: Any, alpha: float | Sequence[float]) -> jax.Array:
    """(1 - alpha) w_a + alpha w_b: e.g. between the pSp (alpha 0) and e4e (alpha 1) inversions
    of the same image, the distortion / editability control of the paper's Figure 10.

    A scalar alpha keeps the input shape; a sequence of T values gives (T, *w_a.shape).
    """
    a = jnp.asarray(w_a, jnp.float32)
    b = jnp.asarray(w_b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"interpolated codes must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    t = jnp.asarray(alpha, jnp.float32)
    if t.ndim == 0:
        return (1.0 - t) * a + t * b
    t = t.reshape((-1,) + (1,) * a.ndim)
    return (1.0 - t) * a[None] + t * b[None]


@dataclasses.dataclass(frozen=True)
class LinearEdit:
    """An invertible edit w -> w + delta (delta (1, 512) for every row or (1, n_latent, 512)),
    for the Latent Editing Consistency: `edit(w_plus)` and `edit.inverse(w_plus)`."""
    delta: Any

    def __call__(self, w_plus: Any) -> jax.Array:
        w = _as_wplus(w_plus)
        return w + _broadcast_direction(self.delta, w)

    def inverse(self, w_plus: Any) -> jax.Array:
        w = _as_wplus(w_plus)
        return w - _broadcast_direction(self.delta, w)

    @classmethod
    def interfacegan(cls, direction: Any, factor: float) -> "LinearEdit":
        """The official InterFaceGAN edit (the LEC script's example: age, factor 3)."""
        return cls(np.asarray(direction, np.float32) * np.float32(factor))

    @classmethod
    def ganspace(cls, pca: Mapping[str, Any], pca_idx: int, start: int, end: int,
                 strength: float, n_latent: int) -> "LinearEdit":
        """A shift by `strength` standard deviations along comp[pca_idx] on rows start..end-1.

        The official GANSpace edit sets the coordinate to `strength` (a projection, not
        invertible); for LEC it is taken as this shift, which has an exact inverse.
        """
        p = _pca_dict(pca, "pca")
        if not 0 <= start < end <= n_latent:
            raise ValueError(f"GANSpace rows {start}..{end} do not fit {n_latent} W+ rows.")
        delta = np.zeros((1, n_latent, p["mean"].shape[1]), np.float32)
        delta[0, start:end] = strength * p["std"][pca_idx] * p["comp"][pca_idx, 0]
        return cls(delta)

    @classmethod
    def sefa(cls, eigenvector: Any, distance: float, layers: Any, n_latent: int,
             official_rows: bool = False) -> "LinearEdit":
        """distance * eigenvector on the W+ rows of `layers` (see `sefa_rows`)."""
        v = np.asarray(eigenvector, np.float32).reshape(-1)
        delta = np.zeros((1, n_latent, v.shape[0]), np.float32)
        delta[0, sefa_rows(layers, n_latent, official_rows)] = distance * v
        return cls(delta)
