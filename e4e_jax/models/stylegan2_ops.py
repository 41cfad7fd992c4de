"""The StyleGAN2 generator's building blocks, in Flax, NHWC: equalized-lr dense layers, FIR
filtering (upfirdn2d), the fused bias + leaky ReLU, and the modulated convolution with its
transposed-conv + blur up-sampling.

Same math as `op/upfirdn2d.py`, `op/fused_act.py` and the `EqualLinear` / `ModulatedConv2d`
classes of omertov/encoder4editing's `models/stylegan2/` (rosinality's port); the generator that
assembles them is `e4e_jax/models/stylegan2.py`, which re-exports every name here.
"""
from __future__ import annotations

import contextvars
import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from e4e_jax.core.conv import conv2d

SQRT2 = math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class InitRule:
    """The official initialisation of one generator variable, stated once: N(0, 1) / `value`
    (normal=True; the mapping layers divide by lr_mul) or the constant `value`.

    Called as a Flax initialiser (key, shape, dtype) it draws with jax.random (`module.init`);
    `draw(rng, shape)` makes the same distribution on the host with a numpy Generator, in float64
    then rounded to float32 (nets/generator.py `official_init`, the fast path for random
    generators)."""
    normal: bool
    value: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        if self.normal:
            return jax.random.normal(key, shape, dtype) / self.value
        return jnp.full(shape, self.value, dtype)

    def draw(self, rng: np.random.Generator, shape) -> np.ndarray:
        if self.normal:
            return (rng.standard_normal(shape) / self.value).astype(np.float32)
        return np.full(shape, self.value).astype(np.float32)


NORMAL = InitRule(True)
ZERO = InitRule(False, 0.0)
# The rule of every variable created while `init_rules` runs, by its path (collection first);
# None otherwise, so plain `module.init` / `apply` record nothing.
_RECORDED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("stylegan2_init_rules",
                                                                        default=None)


def official_param(module: nn.Module, name: str, rule: InitRule, shape: Sequence[int]):
    """`module.param(name, rule, shape)`, recording the rule for `init_rules`."""
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded[("params",) + tuple(module.path) + (name,)] = rule
    return module.param(name, rule, tuple(shape))


def official_variable(module: nn.Module, collection: str, name: str, rule: InitRule,
                      shape: Sequence[int]):
    """`module.variable(collection, name, ...)` initialised by `rule` from the "params" rng,
    recording the rule for `init_rules`."""
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded[(collection,) + tuple(module.path) + (name,)] = rule
    return module.variable(collection, name, lambda: rule(module.make_rng("params"), tuple(shape)))


def init_rules(init: Callable[[], Any]) -> tuple[Any, dict[tuple, InitRule]]:
    """(init(), {variable path: InitRule}) for an `init` that initialises a generator module
    (e.g. `jax.eval_shape` of its `init`: nothing is computed)."""
    recorded: dict[tuple, InitRule] = {}
    token = _RECORDED.set(recorded)
    try:
        out = init()
    finally:
        _RECORDED.reset(token)
    return out, recorded


def fused_leaky_relu(x, bias, negative_slope: float = 0.2, scale: float = SQRT2):
    return jax.nn.leaky_relu(x + bias, negative_slope) * scale


def pixel_norm(x, eps: float = 1e-8):
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def fir_taps(kernel: Sequence[float], gain: float = 1.0) -> np.ndarray:
    """1-D taps whose outer product is the official `make_kernel(kernel) * gain`."""
    k = np.asarray(kernel, np.float64)
    k = k / k.sum()
    return (k * math.sqrt(gain)).astype(np.float32)


def _fir_1d(x, taps: np.ndarray, axis: int, up: int, down: int, pad: tuple[int, int]):
    """upfirdn along one axis of an NHWC tensor, with the official (flipped-kernel) convolution.

    Written as shifted slices multiplied by constants instead of a depthwise convolution: XLA
    fuses them into one elementwise loop on every backend, whereas grouped convolutions with one
    group per channel are slow on CPU and GPU.
    """
    if up > 1:  # zero insertion after every sample, as upfirdn2d_native does
        shape = list(x.shape)
        x = jnp.expand_dims(x, axis + 1)
        zeros = [(0, 0)] * x.ndim
        zeros[axis + 1] = (0, up - 1)
        x = jnp.pad(x, zeros)
        shape[axis] *= up
        x = x.reshape(shape)
    pads = [(0, 0)] * x.ndim
    pads[axis] = (pad[0], pad[1])
    x = jax.lax.pad(x, jnp.array(0, x.dtype), [(lo, hi, 0) for lo, hi in pads])
    n_taps = len(taps)
    length = x.shape[axis] - n_taps + 1
    flipped = taps[::-1]
    out = None
    for t in range(n_taps):
        term = jax.lax.slice_in_dim(x, t, t + length, axis=axis) * float(flipped[t])
        out = term if out is None else out + term
    if down > 1:
        out = jax.lax.slice_in_dim(out, 0, length, stride=down, axis=axis)
    return out


def upfirdn2d(x, taps: np.ndarray, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Official `upfirdn2d` for a separable kernel outer(taps, taps), NHWC."""
    x = _fir_1d(x, taps, 1, up, down, pad)
    return _fir_1d(x, taps, 2, up, down, pad)


class EqualDense(nn.Module):
    """EqualLinear: raw (in, out) weight scaled by lr_mul / sqrt(in) at call time."""
    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        in_dim = x.shape[-1]
        kernel = official_param(self, "kernel", InitRule(True, self.lr_mul),
                                (in_dim, self.features))
        bias = official_param(self, "bias", InitRule(False, self.bias_init), (self.features,))
        scale = self.lr_mul / math.sqrt(in_dim)
        out = jnp.dot(x, kernel * scale, precision=self.precision)
        if self.activation:
            return fused_leaky_relu(out, bias * self.lr_mul)
        return out + bias * self.lr_mul


def _conv_transpose_phases(x, weight, precision=None):
    """The four polyphase components of PyTorch conv_transpose2d(stride=2, padding=0), NHWC.

    phases[ph][pw][:, q, r] is the transposed-conv output at (2q + ph, 2r + pw). Each is a small
    stride-1 convolution at the input resolution: output n = 2q + p receives kernel taps
    t = p + 2s from input q - s. This avoids XLA's lhs-dilated convolution, which multiplies the
    inserted zeros too (4-6x slower on CPU).
    """
    kh, kw = weight.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0 or min(kh, kw) < 3:
        raise ValueError(f"stride-2 transposed convolution needs an odd kernel >= 3, "
                         f"got {kh}x{kw}.")
    def taps(k, phase):
        idx = list(range(phase, k, 2))[::-1]  # s descending: correlation order
        return np.array(idx), (len(idx) - 1, len(idx) - 1)

    phases = []
    for ph in (0, 1):
        ih, pad_h = taps(kh, ph)
        row = []
        for pw in (0, 1):
            iw, pad_w = taps(kw, pw)
            row.append(conv2d(x, weight[ih][:, iw], (1, 1), (pad_h, pad_w), precision))
        phases.append(row)
    return phases


def _fir_phases(even, odd, taps: np.ndarray, pad0: int, out_len: int, axis: int):
    """FIR (official flipped-kernel convolution, left pad `pad0`) of a signal given as its two
    phases; returns the two phases of the result, each `out_len` long.

    Result n = 2q + r reads input i = n - pad0 + j for tap j, i.e. phase (r - pad0 + j) % 2 at
    offset q + (r - pad0 + j) // 2, so the filter runs on half-size arrays and the full-size
    signal is never materialised before the final interleave.
    """
    g = taps[::-1]
    src = (even, odd)
    results = []
    for r in (0, 1):
        terms = []
        for j, coef in enumerate(g):
            m = r - pad0 + j
            terms.append((m % 2, m // 2, float(coef)))
        out = None
        for phase, off, coef in terms:
            arr = src[phase]
            need_hi = off + out_len - arr.shape[axis]
            pads = [(0, 0)] * arr.ndim
            pads[axis] = (max(0, -off), max(0, need_hi))
            if pads[axis] != (0, 0):
                arr = jnp.pad(arr, pads)
            start = off + max(0, -off)
            term = jax.lax.slice_in_dim(arr, start, start + out_len, axis=axis) * coef
            out = term if out is None else out + term
        results.append(out)
    return results


def _interleave(even, odd, axis: int):
    """out[2q] = even[q], out[2q + 1] = odd[q] along `axis` (equal lengths)."""
    shape = list(even.shape)
    shape[axis] *= 2
    return jnp.stack([even, odd], axis=axis + 1).reshape(shape)


def upsample_conv_blur(x, weight, blur_taps: np.ndarray, demod=None, precision=None):
    """The official up-sampling ModulatedConv2d body: conv_transpose2d(stride 2), then the FIR
    blur with pad ((p + 1) // 2 + 1, p // 2 + 1), computed phase by phase (see above)."""
    kh, kw = weight.shape[:2]
    h, w = x.shape[1], x.shape[2]
    phases = _conv_transpose_phases(x, weight, precision)
    if demod is not None:
        phases = [[p * demod for p in row] for row in phases]
    p_h = (len(blur_taps) - 2) - (kh - 1)
    p_w = (len(blur_taps) - 2) - (kw - 1)
    # conv_transpose output length 2h + kh - 2; after the blur: that + pads - taps + 1
    out_h = 2 * h + kh - 2 + ((p_h + 1) // 2 + 1) + (p_h // 2 + 1) - len(blur_taps) + 1
    out_w = 2 * w + kw - 2 + ((p_w + 1) // 2 + 1) + (p_w // 2 + 1) - len(blur_taps) + 1
    if out_h % 2 or out_w % 2:
        raise ValueError("the up-sampling blur must give an even output size")
    cols = []
    for pw in (0, 1):  # blur along H for each W phase
        cols.append(_fir_phases(phases[0][pw], phases[1][pw], blur_taps, (p_h + 1) // 2 + 1,
                                out_h // 2, axis=1))
    rows = []
    for rh in (0, 1):  # then along W
        rows.append(_fir_phases(cols[0][rh], cols[1][rh], blur_taps, (p_w + 1) // 2 + 1,
                                out_w // 2, axis=2))
    return _interleave(_interleave(rows[0][0], rows[0][1], axis=2),
                       _interleave(rows[1][0], rows[1][1], axis=2), axis=1)


def modulated_conv(x, style, kernel, demodulate: bool, upsample: bool, blur_taps=None,
                   precision=None, weight_gain: bool = True):
    """The official ModulatedConv2d, computed by scaling activations instead of weights.

    The official code builds one weight per sample and runs a grouped convolution. Scaling the
    input channels by the style and the output channels by the demodulation factor is the same
    linear map (conv is linear in each input channel) and keeps one shared weight, so the batch
    runs as a single ordinary convolution: the fast path on TPU/GPU/CPU, with memory independent
    of the batch for the weights.

    weight_gain=False (StyleGAN2-ADA) convolves with the raw kernel: with demodulation the gain
    cancels, except inside the 1e-8 epsilon, which ADA adds to the unscaled sum of squares.
    """
    kh, kw, cin, cout = kernel.shape
    weight = kernel * (1.0 / math.sqrt(cin * kh * kw)) if weight_gain else kernel
    x = x * style[:, None, None, :].astype(x.dtype)
    conv_weight = weight.astype(x.dtype)  # the convolution runs in the activations' dtype
    demod = None
    if demodulate:
        # sum over (k, k, in) of (weight * style)^2 == style^2 @ sum_kk weight^2; float32
        # whatever the compute dtype (e4e_jax.core.precision.FLOAT32_PARTS)
        w2 = jnp.sum(jnp.square(weight), axis=(0, 1))                     # (cin, cout)
        demod = jax.lax.rsqrt(jnp.dot(jnp.square(style), w2, precision=precision) + 1e-8)
        demod = demod[:, None, None, :].astype(x.dtype)
    if upsample:
        return upsample_conv_blur(x, conv_weight, blur_taps, demod, precision)
    out = conv2d(x, conv_weight, (1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
                 precision)
    return out if demod is None else out * demod
