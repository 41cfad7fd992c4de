"""Small numeric ops shared by several models, with PyTorch's exact index semantics (NHWC).

adaptive_avg_pool2d(x, out_hw)
    torch.nn.AdaptiveAvgPool2d(out_hw): output pixel i averages input rows
    floor(i * in / out) .. ceil((i + 1) * in / out) - 1 (likewise for columns). Used by pSp's
    face_pool (generator output -> 256x256) and the identity loss (188x188 crop -> 112x112).
upsample_bilinear(x, out_hw, align_corners=True)
    F.interpolate(x, size=out_hw, mode='bilinear', align_corners=...) (the FPN of the encoders).

Both are separable and evaluated per axis: a reshape-mean or a repeat where the sizes divide
(face_pool 1024 -> 256, 64 -> 256), otherwise a product with a small averaging / interpolation
matrix built once with numpy at trace time. No Python loop runs over windows inside the graph.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 matrix whose row i averages torch's adaptive window i."""
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(np.float32)


def _matrix_precision(precision):
    """The fixed resize matrices use "highest" unless a policy asks for another precision
    (None keeps them float32-exact, as the official float32 code is)."""
    from e4e_jax.core.precision import lax_precision
    p = lax_precision(precision)
    return jax.lax.Precision.HIGHEST if p is None else p


def _pool_axis(x: jax.Array, axis: int, out_size: int, precision=None) -> jax.Array:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    if in_size % out_size == 0:
        k = in_size // out_size
        shape = x.shape[:axis] + (out_size, k) + x.shape[axis + 1:]
        return jnp.mean(x.reshape(shape), axis=axis + 1)
    if out_size % in_size == 0:
        # every window is one source pixel: plain replication
        return jnp.repeat(x, out_size // in_size, axis=axis)
    m = jnp.asarray(adaptive_pool_matrix(in_size, out_size), x.dtype)
    y = jnp.tensordot(x, m, axes=((axis,), (1,)), precision=_matrix_precision(precision))
    return jnp.moveaxis(y, -1, axis)


def adaptive_avg_pool2d(x: jax.Array, out_hw: int | Sequence[int], precision=None) -> jax.Array:
    """torch AdaptiveAvgPool2d on an NHWC array (any leading batch shape, H and W at -3, -2);
    computed in x's dtype; precision: see _matrix_precision."""
    if isinstance(out_hw, int):
        out_hw = (out_hw, out_hw)
    oh, ow = (int(v) for v in out_hw)
    if oh < 1 or ow < 1:
        raise ValueError(f"adaptive_avg_pool2d output size must be positive, got {out_hw}.")
    x = _pool_axis(x, x.ndim - 3, oh, precision)
    return _pool_axis(x, x.ndim - 2, ow, precision)


def bilinear_matrix(in_size: int, out_size: int, align_corners: bool = True) -> np.ndarray:
    """(out, in) float32 interpolation matrix with torch's float32 source-index arithmetic."""
    f32 = np.float32
    m = np.zeros((out_size, in_size), np.float32)
    if align_corners:
        scale = f32(in_size - 1) / f32(out_size - 1) if out_size > 1 else f32(0)
    else:
        scale = f32(in_size) / f32(out_size)
    for i in range(out_size):
        if align_corners:
            src = f32(scale * f32(i))
        else:
            src = max(f32(scale * (f32(i) + f32(0.5)) - f32(0.5)), f32(0))
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        lam1 = f32(src - f32(i0))
        lam0 = f32(f32(1) - lam1)
        m[i, i0] += lam0
        m[i, i1] += lam1
    return m


def upsample_bilinear(x: jax.Array, out_hw: Sequence[int], align_corners: bool = True,
                      precision=None) -> jax.Array:
    """F.interpolate(mode='bilinear') on an NHWC array, in x's dtype (precision: see
    _matrix_precision)."""
    oh, ow = (int(v) for v in out_hw)
    mh = jnp.asarray(bilinear_matrix(x.shape[-3], oh, align_corners), x.dtype)
    mw = jnp.asarray(bilinear_matrix(x.shape[-2], ow, align_corners), x.dtype)
    hi = _matrix_precision(precision)
    y = jnp.einsum("...hwc,Hh->...Hwc", x, mh, precision=hi)
    return jnp.einsum("...Hwc,Ww->...HWc", y, mw, precision=hi)
