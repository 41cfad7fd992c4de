"""Evaluation metrics of the paper (sections 7 and 8): FID, SWD, LEC and proximity to W.

Perception / editability
    load_inception(dir) -> LoadedInception           FID Inception-v3 of pytorch-fid (converted
                                                     with convert_weights/fid_inception.py)
    inception.features(images) -> (N, 2048)          pool3 features, batched, jitted once
    fid_statistics(features) -> (mu, sigma)          np.mean / np.cov(rowvar=False), float64
    frechet_distance(mu1, sigma1, mu2, sigma2)       pytorch-fid's calculate_frechet_distance
    fid(inception, images_a, images_b)               features + statistics + distance
    maybe_load_inception(dir) -> (inception | None, reason)   FID is optional in an evaluation
    swd(images_a, images_b, seed=0) -> dict          sliced Wasserstein distance over Laplacian
                                                     pyramid patches (Karras et al. 2018), x1e3
Latent editing consistency (eq. 8)
    latent_editing_consistency(images, encode, generate, edit, inverse_edit)
Proximity to W (section 8.2)
    latent_variation(w_plus)                          mean ||w - w_mu||_2 over images
    latent_deviation(encode, generate, mapping, n_latent, n_samples=5000)
                                                     E_w ||E(G(w)) - w||_2

Every metric streams its input in fixed-size batches: the last, partial batch is padded (by
repeating its last image) and the padded rows are dropped, so each jitted function compiles once
for a whole evaluation. Inputs are numpy / jax arrays (N, ...) or iterables of such batches
(tuples `(images, ...)` from a data loader are accepted; the first item is used).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
INCEPTION_KIND = "fid_inception"


# ----------------------------------------------------------------------------------------------
# Batching


def _first(item):
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
        batches = (_first(b) for b in data)
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


def _as_float_images(x: Any) -> jax.Array:
    """uint8 images become u8 / 255 (as torchvision's ToTensor); anything else float32."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def images_to_uint8(images: Any) -> np.ndarray:
    """The official tensor2im for NHWC images in [-1, 1]: clamp, (x + 1) / 2 * 255, truncate.

    Feeding these to FID/SWD reproduces evaluating the images the official code saves as files.
    """
    x = np.asarray(images, np.float32)
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return x.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# FID


class LoadedInception:
    """The FID Inception-v3 with its variables; `features` is jitted with the weights as
    arguments (one compilation per batch shape)."""

    def __init__(self, variables: dict, config: dict | None = None, precision: Any = None,
                 dtype: Any = None):
        from e4e_jax.models.inception import fid_inception
        config = dict(config or {})
        self.config = config
        self.module = fid_inception(precision, dtype,
                                    resize_input=bool(config.get("resize_input", True)),
                                    normalize_input=bool(config.get("normalize_input", True)))
        self.variables = variables
        self._apply = jax.jit(lambda v, x: self.module.apply(v, x))

    def __repr__(self) -> str:
        return "LoadedInception(FID Inception-v3 of pytorch-fid, pool3 2048-d)"

    def apply(self, variables, images01: jax.Array) -> jax.Array:
        """Pure function: images in [0, 1] (N, H, W, 3) -> (N, 2048), for a caller's jit."""
        return self.module.apply(variables, images01)

    def features(self, images: Any, value_range: Sequence[float] = (-1.0, 1.0),
                 batch_size: int = 50, clip: bool = True) -> np.ndarray:
        """pool3 features (N, 2048) float32 of NHWC RGB images.

        Float images are taken in `value_range` ((-1, 1) as generated / encoded images; (0, 1) as
        pytorch-fid's input) and mapped to [0, 1], clipped there with `clip` (the official code
        evaluates images saved as files, so clamped); uint8 images are u8 / 255 as pytorch-fid
        reads files. Any size: pytorch-fid resizes to 299 (bilinear, no antialiasing).
        """
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")

        def one(batch):
            is_u8 = getattr(batch, "dtype", None) == np.uint8
            x = _as_float_images(batch)
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"FID needs NHWC RGB images (N, H, W, 3), got shape "
                                 f"{tuple(x.shape)}.")
            if not is_u8:
                if (lo, hi) != (0.0, 1.0):
                    x = (x - lo) / (hi - lo)
                if clip:
                    x = jnp.clip(x, 0.0, 1.0)
            return self._apply(self.variables, x)

        return run_batched(one, images, batch_size)


def load_inception(path: str, precision: Any = None, dtype: Any = None) -> LoadedInception:
    """Loads a directory written by `python convert_weights/fid_inception.py SRC DST`."""
    from e4e_jax import checkpoints
    from e4e_jax.models.inception import expected_variables
    md = checkpoints.load_model_dir(os.fspath(path), INCEPTION_KIND)
    checkpoints.check_tree(expected_variables(), md.variables or {},
                           f"FID Inception variables in {md.path!r}")
    variables = jax.tree.map(jnp.asarray, md.variables)
    return LoadedInception(variables, md.config, precision=precision, dtype=dtype)


def maybe_load_inception(path: str | None) -> tuple[LoadedInception | None, str | None]:
    """(inception, None) when `path` holds converted FID weights, else (None, reason)."""
    if not path:
        return None, ("no FID Inception weights given; convert pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth with convert_weights/fid_inception.py "
                      "and pass the directory")
    try:
        return load_inception(path), None
    except (OSError, ValueError) as e:
        return None, f"FID Inception weights at {path!r} could not be loaded: {e}"


def fid_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as pytorch-fid: np.mean(act, 0), np.cov(act, rowvar=False), float64."""
    act = np.asarray(features, np.float64)
    if act.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {act.shape}")
    if act.shape[0] < 2:
        raise ValueError(f"FID statistics need at least 2 samples, got {act.shape[0]}")
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


@dataclasses.dataclass
class FrechetResult:
    fid: float
    mean_term: float          # ||mu1 - mu2||^2
    trace_sigma1: float
    trace_sigma2: float
    trace_covmean: float      # tr(sqrtm(sigma1 sigma2))
    singular_fallback: bool   # pytorch-fid's eps offset was needed (method 'sqrtm' only)


FID_METHODS = ("sqrtm", "eigen")


def _sqrtm(m: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm(m, disp=False)[0] as pytorch-fid calls it (newer scipy drops disp)."""
    import warnings
    from scipy import linalg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return linalg.sqrtm(m, disp=False)[0]
        except TypeError:
            return linalg.sqrtm(m)


def _trace_sqrt_eigen(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 sigma2)) from the eigenvalues of the symmetric PSD matrix
    sigma1^1/2 sigma2 sigma1^1/2 (same spectrum as sigma1 sigma2); rounding noise below 0 is
    clipped."""
    w, v = np.linalg.eigh(sigma1)
    half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = half @ sigma2 @ half
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def _trace_sqrt_features(act1: np.ndarray, act2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 sigma2)) for sigma_i = cov(act_i): with centred A_i, sigma1 sigma2 has the
    non-zero spectrum of (A1 A2^T)(A1 A2^T)^T / ((n1-1)(n2-1)), so the trace is the sum of the
    singular values of A1 A2^T / sqrt((n1-1)(n2-1)): cheap when there are fewer samples than
    feature dimensions."""
    a1 = act1 - act1.mean(axis=0)
    a2 = act2 - act2.mean(axis=0)
    k = (a1 @ a2.T) / np.sqrt((len(a1) - 1) * (len(a2) - 1))
    return float(np.linalg.svd(k, compute_uv=False).sum())


def frechet_distance_details(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                             method: str = "sqrtm") -> FrechetResult:
    """pytorch-fid's calculate_frechet_distance, with its terms and whether the fallback fired.

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)). With the default
    method 'sqrtm' exactly as pytorch-fid: scipy's sqrtm of the product, and when that is not
    finite, eps added to both diagonals and sqrtm taken again. Method 'eigen' takes the trace
    from a symmetric eigen-decomposition instead (several times faster, no fallback needed; it
    differs from 'sqrtm' by float64 rounding, ~1e-7 on the fixture).
    """
    if method not in FID_METHODS:
        raise ValueError(f"unknown FID method {method!r}; expected one of {FID_METHODS}")
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different lengths: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances have different dimensions: {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    fallback = False
    if method == "eigen":
        tr_covmean = _trace_sqrt_eigen(sigma1, sigma2)
    else:
        covmean = _sqrtm(sigma1.dot(sigma2))
        fallback = not np.isfinite(covmean).all()
        if fallback:
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))} in sqrtm "
                                 f"of the covariance product")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    mean_term = float(diff.dot(diff))
    tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
    return FrechetResult(fid=mean_term + tr1 + tr2 - 2 * tr_covmean, mean_term=mean_term,
                         trace_sigma1=tr1, trace_sigma2=tr2, trace_covmean=tr_covmean,
                         singular_fallback=bool(fallback))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """pytorch-fid's calculate_frechet_distance (float)."""
    return frechet_distance_details(mu1, sigma1, mu2, sigma2, eps, method).fid


def fid_from_features(features_a: Any, features_b: Any, method: str = "sqrtm") -> float:
    """FID of two feature sets. 'sqrtm' is pytorch-fid's computation; 'eigen' gives the same
    value up to float64 rounding, through the samples when there are fewer than dimensions."""
    mu_a, sigma_a = fid_statistics(features_a)
    mu_b, sigma_b = fid_statistics(features_b)
    if method == "eigen":
        act_a = np.asarray(features_a, np.float64)
        act_b = np.asarray(features_b, np.float64)
        if min(len(act_a), len(act_b)) < act_a.shape[1]:
            diff = mu_a - mu_b
            return float(diff.dot(diff) + np.trace(sigma_a) + np.trace(sigma_b)
                         - 2 * _trace_sqrt_features(act_a, act_b))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b, method=method)


def fid(inception: LoadedInception, images_a: Any, images_b: Any,
        value_range: Sequence[float] = (-1.0, 1.0), batch_size: int = 50,
        method: str = "sqrtm") -> float:
    """FID between two image sets (arrays or iterables of batches)."""
    fa = inception.features(images_a, value_range=value_range, batch_size=batch_size)
    fb = inception.features(images_b, value_range=value_range, batch_size=batch_size)
    return fid_from_features(fa, fb, method=method)


# ----------------------------------------------------------------------------------------------
# SWD (Karras et al. 2018, appendix D; progressive_growing_of_gans metrics/sliced_wasserstein.py)

# The 5x5 binomial filter of cv2.pyrDown / pyrUp, separable: outer(BINOMIAL, BINOMIAL).
BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
SWD_MIN_RESOLUTION = 16


def _blur_axis(x: jax.Array, axis: int, gain: float) -> jax.Array:
    """5-tap binomial filter along `axis` with mirror boundaries (scipy 'mirror' = numpy
    'reflect': d c b | a b c d | c b a)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = jnp.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    out = 0.0
    for i, w in enumerate(BINOMIAL):
        out = out + (w * gain) * jax.lax.slice_in_dim(xp, i, i + n, axis=axis)
    return out


def _blur(x: jax.Array, gain: float = 1.0) -> jax.Array:
    return _blur_axis(_blur_axis(x, 1, 1.0), 2, gain)


def pyr_down(x: jax.Array) -> jax.Array:
    """cv2.pyrDown on NHWC: binomial blur, then every other row and column."""
    return _blur(x)[:, ::2, ::2]


def pyr_up(x: jax.Array) -> jax.Array:
    """cv2.pyrUp on NHWC: zero insertion to twice the size, then the binomial blur times 4."""
    n, h, w, c = x.shape
    up = jnp.zeros((n, 2 * h, 2 * w, c), x.dtype).at[:, ::2, ::2].set(x)
    return _blur(up, gain=4.0)


def laplacian_pyramid(images: jax.Array, num_levels: int) -> list[jax.Array]:
    """[finest band-pass, ..., coarsest low-pass]: level i is 2^-i of the input size."""
    pyramid = [jnp.asarray(images, jnp.float32)]
    for _ in range(1, num_levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
    return pyramid


def swd_resolutions(height: int) -> list[int]:
    """Pyramid levels of the reference: the image height halved while it stays >= 16."""
    res, out = int(height), []
    while res >= SWD_MIN_RESOLUTION:
        out.append(res)
        res //= 2
    return out


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _swd_descriptors(images, key, first_index, num_levels, nhood_size, nhoods_per_image):
    """Random nhood_size^2 patches of every pyramid level: per level (N * nhoods, k*k*C)."""
    n = images.shape[0]
    half = nhood_size // 2
    # One key per image (by its index in the whole set): numbers do not depend on batch_size.
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first_index + jnp.arange(n))
    offsets = jnp.arange(-half, half + 1)
    out = []
    for level, img in enumerate(laplacian_pyramid(images, num_levels)):
        _, h, w, c = img.shape

        def patches(k, one):
            ky, kx = jax.random.split(jax.random.fold_in(k, level))
            y = jax.random.randint(ky, (nhoods_per_image,), half, h - half)
            x = jax.random.randint(kx, (nhoods_per_image,), half, w - half)
            rows = y[:, None, None] + offsets[None, :, None]
            cols = x[:, None, None] + offsets[None, None, :]
            return one[rows, cols]  # (nhoods, k, k, C)

        desc = jax.vmap(patches)(keys, img)
        out.append(desc.reshape(n * nhoods_per_image, nhood_size * nhood_size * c))
    return out


def _normalize_descriptors(desc: np.ndarray, channels: int) -> np.ndarray:
    """Zero mean, unit std per colour channel over all patches and pixels of the set."""
    d = desc.reshape(desc.shape[0], -1, channels).astype(np.float64)
    d = (d - d.mean(axis=(0, 1), keepdims=True)) / d.std(axis=(0, 1), keepdims=True)
    return d.reshape(desc.shape[0], -1).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _swd_directions(key, dim, dirs_per_repeat):
    """Random unit directions (dim, dirs_per_repeat) of one repeat."""
    dirs = jax.random.normal(key, (dim, dirs_per_repeat))
    return dirs / jnp.sqrt(jnp.sum(jnp.square(dirs), axis=0, keepdims=True))


@jax.jit
def _sorted_projection_distance(a, b, dirs):
    proj_a = jnp.sort(jnp.matmul(a, dirs, precision=HIGHEST), axis=0)
    proj_b = jnp.sort(jnp.matmul(b, dirs, precision=HIGHEST), axis=0)
    return jnp.mean(jnp.abs(proj_a - proj_b))


def sliced_wasserstein(desc_a: Any, desc_b: Any, key: jax.Array, dir_repeats: int = 4,
                       dirs_per_repeat: int = 128, backend: str = "auto") -> float:
    """SWD between two equally sized sets of normalised descriptors: mean over random unit
    directions of the 1-D Wasserstein-1 distance between the sorted projections.

    The projections are sorted with jax on accelerators and with numpy on CPU (XLA's CPU sort
    is ~20x slower than numpy's on the 128 x 128k arrays of a 1,000-image evaluation);
    `backend` ('auto', 'jax', 'numpy') overrides. Both use the same jax.random directions.
    """
    a, b = np.asarray(desc_a, np.float32), np.asarray(desc_b, np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"SWD compares two descriptor sets of the same shape, got {a.shape} "
                         f"and {b.shape} (evaluate the same number of images in both sets).")
    if backend == "auto":
        backend = "numpy" if jax.default_backend() == "cpu" else "jax"
    if backend not in ("jax", "numpy"):
        raise ValueError(f"backend must be 'auto', 'jax' or 'numpy', got {backend!r}")
    results = []
    for r in range(dir_repeats):
        dirs = _swd_directions(jax.random.fold_in(key, r), a.shape[1], dirs_per_repeat)
        if backend == "jax":
            results.append(float(_sorted_projection_distance(a, b, dirs)))
        else:
            dirs = np.asarray(dirs)
            proj_a = np.sort(a @ dirs, axis=0)
            proj_b = np.sort(b @ dirs, axis=0)
            results.append(float(np.mean(np.abs(proj_a - proj_b), dtype=np.float64)))
    return float(np.mean(results))


class SWDDescriptors:
    """Collects the Laplacian-pyramid patch descriptors of one image set, batch by batch."""

    def __init__(self, resolution: int | None = None, seed: int = 0, batch_size: int = 32,
                 nhood_size: int = 7, nhoods_per_image: int = 128):
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.nhood_size = int(nhood_size)
        self.nhoods_per_image = int(nhoods_per_image)
        self.resolution = resolution
        self.levels: list[int] | None = None
        self.count = 0
        self.channels: int | None = None
        self._parts: list[list[np.ndarray]] = []

    def _setup(self, shape):
        _, h, w, c = shape
        if self.resolution is not None and h != self.resolution:
            raise ValueError(f"SWD set up for {self.resolution}px images got height {h}.")
        self.levels = swd_resolutions(h)
        if not self.levels:
            raise ValueError(f"SWD needs images of at least {SWD_MIN_RESOLUTION}px, got {h}x{w}.")
        step = 2 ** (len(self.levels) - 1)
        if h % step or w % step:
            raise ValueError(f"SWD's {len(self.levels)}-level pyramid needs height and width "
                             f"divisible by {step}, got {h}x{w}.")
        self.resolution, self.channels = h, c
        self._shape = tuple(shape[1:])
        self._parts = [[] for _ in self.levels]

    def add(self, images: Any) -> "SWDDescriptors":
        """Adds images (N, H, W, C) (array or iterable of batches; uint8 or float)."""
        key = jax.random.key(self.seed)
        for batch, m in iterate_batches(images, self.batch_size):
            x = _as_float_images(batch)
            if x.ndim != 4:
                raise ValueError(f"SWD needs NHWC images, got shape {tuple(x.shape)}")
            if self.levels is None:
                self._setup(x.shape)
            elif tuple(x.shape[1:]) != self._shape:
                raise ValueError(f"image shape changed from {self._shape} to {tuple(x.shape[1:])}")
            descs = _swd_descriptors(x, key, jnp.int32(self.count), len(self.levels),
                                     self.nhood_size, self.nhoods_per_image)
            keep = m * self.nhoods_per_image
            for part, d in zip(self._parts, descs):
                # cut on the host: slicing the device array to a short last batch would
                # compile a new program for that one batch (eval.py counts recompilations)
                part.append(np.asarray(d)[:keep])
            self.count += m
        return self

    def finalize(self) -> list[np.ndarray]:
        if self.levels is None:
            raise ValueError("no images were added to the SWD descriptors.")
        return [_normalize_descriptors(np.concatenate(p, axis=0), self.channels)
                for p in self._parts]


def swd_between(desc_a: SWDDescriptors, desc_b: SWDDescriptors, seed: int = 0,
                dir_repeats: int = 4, dirs_per_repeat: int = 128) -> dict[str, float]:
    """{'swd_<res>': ..., 'swd': mean over levels}, each x1e3 as the reference reports it."""
    if desc_a.levels != desc_b.levels:
        raise ValueError(f"SWD sets have different pyramids: {desc_a.levels} vs {desc_b.levels}")
    if desc_a.count != desc_b.count:
        raise ValueError(f"SWD compares sets of equal size, got {desc_a.count} and {desc_b.count} "
                         f"images.")
    key = jax.random.fold_in(jax.random.key(seed), 1)
    out = {}
    for res, a, b in zip(desc_a.levels, desc_a.finalize(), desc_b.finalize()):
        out[f"swd_{res}"] = 1e3 * sliced_wasserstein(a, b, key, dir_repeats, dirs_per_repeat)
    out["swd"] = float(np.mean([out[f"swd_{r}"] for r in desc_a.levels]))
    return out


def swd(images_a: Any, images_b: Any, seed: int = 0, batch_size: int = 32, nhood_size: int = 7,
        nhoods_per_image: int = 128, dir_repeats: int = 4,
        dirs_per_repeat: int = 128) -> dict[str, float]:
    """Sliced Wasserstein distance between two image sets, per pyramid level and averaged.

    Following Karras et al. 2018: a Laplacian pyramid (5-tap binomial filter) down to 16px, 128
    random 7x7 patches per image and level, each set's patches normalised per colour channel,
    4 repeats of 128 random projections (512 in all), x1e3. Deterministic given `seed`, and the
    same for any `batch_size`; sets of equal size; any value range (normalisation removes it).
    """
    kw = dict(seed=seed, batch_size=batch_size, nhood_size=nhood_size,
              nhoods_per_image=nhoods_per_image)
    a = SWDDescriptors(**kw).add(images_a)
    b = SWDDescriptors(**kw).add(images_b)
    return swd_between(a, b, seed, dir_repeats, dirs_per_repeat)


# ----------------------------------------------------------------------------------------------
# Latent editing consistency and proximity to W


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
