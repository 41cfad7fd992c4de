"""A 2-D convolution (NHWC input, HWIO weight) with the forward pass of
`lax.conv_general_dilated` and a backward pass written for XLA:CPU.

Two XLA:CPU weaknesses made the latent-optimisation loops (e4e_jax.project, e4e_jax.inversion.pti) slow:

- Input gradient inside a loop. Autodiff writes it as a convolution with the reversed kernel and
  its in/out dimensions swapped by the dimension labels ("01oi"), not by a transpose. Outside a
  loop XLA:CPU copies the kernel into the layout of its fast convolution; inside a `while_loop`
  or `scan` body it does not and falls back to a generic loop, 3-4x slower per step. Here the
  kernel is swapped explicitly, so the convolution is a plain "01io" one everywhere, inside a
  loop or not. Same operation, same numbers (bit-identical in float32).
- Weight gradient. XLA:CPU's weight-gradient convolution is 3-5x slower than the forward one on
  generator-sized maps (3x3, 64 channels, 256x256: 383 ms against 43 ms on 2 cores), which made
  every PTI step (a gradient for every generator weight) slow. On CPU it is computed as one
  matmul per kernel tap (the same sum in another order: float32 differences of a few ulp); GPU
  and TPU keep the backend's own weight-gradient convolution, with no extra memory.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (flax `nn.Conv(...,
conv_general_dilated=conv_general_dilated)`); what it does not cover (dilation, feature groups,
other layouts, string padding) goes to `lax.conv_general_dilated` unchanged.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _conv(x, weight, strides, padding, precision, dimension_numbers=NHWC_HWIO):
    return jax.lax.conv_general_dilated(x, weight, window_strides=strides, padding=padding,
                                        dimension_numbers=dimension_numbers, precision=precision)


def _weight_grad_by_taps(x, g, kernel_hw, strides, padding, precision, out_dtype):
    """d(sum(g * conv(x, w)))/dw as one (positions x in)^T @ (positions x out) matmul per kernel
    tap (i, j), over the input samples that tap meets: x_padded[:, i + s*h, j + s*w, :]."""
    kh, kw = kernel_hw
    sh, sw = strides
    xp = jax.lax.pad(x, jnp.array(0, x.dtype), [(0, 0, 0), (*padding[0], 0),
                                                 (*padding[1], 0), (0, 0, 0)])
    n, ho, wo, cout = g.shape
    cin = x.shape[-1]
    g2 = g.reshape(-1, cout)
    per_tap = []
    for i in range(kh):
        for j in range(kw):
            tap = jax.lax.slice(xp, (0, i, j, 0),
                                (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                                (1, sh, sw, 1))
            per_tap.append(jax.lax.dot_general(tap.reshape(-1, cin), g2, (((0,), (0,)), ((), ())),
                                               precision=precision,
                                               preferred_element_type=jnp.float32))
    return jnp.stack(per_tap).reshape(kh, kw, cin, cout).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, weight, strides, padding, precision=None):
    """`lax.conv_general_dilated(x, weight, strides, padding, dimension_numbers=NHWC/HWIO)`.

    x: (N, H, W, C_in); weight: (kh, kw, C_in, C_out); strides: (sh, sw); padding:
    ((lo, hi), (lo, hi)), hashable tuples; precision: a `lax.Precision`-like value or None.
    Returns (N, H', W', C_out) in x's dtype. The backward pass is the module docstring's.
    """
    return _conv(x, weight, strides, padding, precision)


def _conv2d_fwd(x, weight, strides, padding, precision):
    return _conv(x, weight, strides, padding, precision), (x, weight)


def _conv2d_bwd(strides, padding, precision, residuals, g):
    x, weight = residuals
    # The transpose of a convolution over an HWOI view of the physically swapped kernel is a
    # convolution over that array read as HWIO, the fast layout (see the module docstring).
    swapped = jnp.swapaxes(weight, 2, 3)
    dx = jax.vjp(lambda a: _conv(a, swapped, strides, padding, precision,
                                 ("NHWC", "HWOI", "NHWC")), x)[1](g)[0]

    def by_taps(x, g):
        return _weight_grad_by_taps(x, g, weight.shape[:2], strides, padding, precision,
                                    weight.dtype)

    def by_backend(x, g):
        return jax.vjp(lambda b: _conv(x, b, strides, padding, precision), weight)[1](g)[0]

    dw = jax.lax.platform_dependent(x, g, cpu=by_taps, default=by_backend)
    return dx, dw


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)

_HANDLED = None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """Drop-in for `lax.conv_general_dilated`: `conv2d` for an undilated, ungrouped 2-D NHWC /
    HWIO convolution with explicit padding, `lax.conv_general_dilated` for anything else."""
    global _HANDLED
    if _HANDLED is None:
        _HANDLED = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), NHWC_HWIO)
    simple = (
        lhs.ndim == 4 and dimension_numbers is not None
        and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _HANDLED
        and all(d == 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1)))
        and feature_group_count == 1 and batch_group_count == 1
        and preferred_element_type is None and not isinstance(padding, str))
    if not simple:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)
