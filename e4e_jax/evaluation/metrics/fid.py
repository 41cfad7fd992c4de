"""FID: the pytorch-fid Inception-v3 features, statistics and Frechet distance.

    inception = load_inception("weights/fid_inception")     # `e4e-jax convert fid_inception`
    value = fid(inception, images_a, images_b)               # (N, H, W, 3) in [-1, 1]

Reproduces mseitzer/pytorch-fid (`calculate_frechet_distance`, `InceptionV3` pool3 features)
as the paper's FID; `method="eigen"` gives the same value from a symmetric eigen-decomposition.
The network bound to its weights (LoadedInception, load_inception, maybe_load_inception) is
e4e_jax.nets.inception's; its names are re-exported here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from e4e_jax.nets.inception import (  # noqa: F401  (re-exported: the network lives in nets/)
    INCEPTION_KIND,
    LoadedInception,
    load_inception,
    maybe_load_inception,
)


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
