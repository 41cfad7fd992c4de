"""The StyleGAN3 generator's building blocks, in JAX, NHWC: the layer schedule (cutoffs, stopbands,
sampling rates, sizes, channels), the official low-pass filter design, the filtered leaky ReLU
and the StyleGAN3 modulated convolution.

Same math as NVlabs/stylegan3 at commit c233a91 (`training/networks_stylegan3.py`,
`torch_utils/ops/filtered_lrelu.py` through its reference path `_filtered_lrelu_ref`, which is
`bias_act` + `upfirdn2d` + `bias_act` + `upfirdn2d`). The generator that assembles them is
`e4e_jax/models/stylegan3.py`.

Layouts: activations NHWC; a filter is the official buffer, float32, `(taps,)` (separable: the
same 1-D filter along H and along W) or `(taps, taps)` (the radially symmetric down-sampling
filter of config R); `None` is the identity filter (the official `numtaps == 1`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.conv import conv2d

SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------ schedule

@dataclasses.dataclass(frozen=True)
class InputSpec:
    """SynthesisInput's hyper-parameters: Fourier features of `channels` frequencies, sampled on
    a `size` x `size` grid at `sampling_rate` samples per unit, band-limited to `bandwidth`."""
    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One SynthesisLayer (official attribute names). Sizes are square (the official layers take
    [width, height] but the network always builds square ones); `padding` is the official
    (x0, x1, y0, y1) of the up-sampling FIR, relative to the up-sampled image (negative: crop).
    """
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    tmp_sampling_rate: int
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]
    conv_clamp: float | None


def synthesis_schedule(img_resolution: int, img_channels: int = 3, channel_base: int = 32768,
                       channel_max: int = 512, num_layers: int = 14, num_critical: int = 2,
                       first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                       last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                       num_fp16_res: int = 4, conv_kernel: int = 3, filter_size: int = 6,
                       lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                       conv_clamp: float | None = 256) -> tuple[InputSpec, list[LayerSpec]]:
    """The official SynthesisNetwork / SynthesisLayer constructors' arithmetic, in float64 numpy
    exactly as they do it, so every derived integer (sizes, factors, taps, padding) is the
    official one. Returns the input's spec and the num_layers + 1 layers (the last is ToRGB).

    Raises ValueError when the options give no valid network (the official asserts).
    """
    if num_layers < 1 or num_critical < 0 or num_layers - num_critical <= 0:
        raise ValueError(f"StyleGAN3 needs num_layers > num_critical >= 0, got num_layers="
                         f"{num_layers}, num_critical={num_critical}.")
    # Geometric progression of the cutoffs and minimum stopbands (f_c[i], f_t[i]).
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels

    input_spec = InputSpec(channels=int(channels[0]), size=int(sizes[0]),
                           sampling_rate=float(sampling_rates[0]), bandwidth=float(cutoffs[0]))
    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        critical = idx >= num_layers - num_critical
        in_sr, out_sr = int(sampling_rates[prev]), int(sampling_rates[idx])
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        kernel = 1 if is_torgb else conv_kernel
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else lrelu_upsampling)
        up = int(np.rint(tmp_sr / in_sr))
        down = int(np.rint(tmp_sr / out_sr))
        if in_sr * up != tmp_sr or out_sr * down != tmp_sr:
            raise ValueError(f"layer {idx}: sampling rates {in_sr} -> {tmp_sr} -> {out_sr} are "
                             f"not integer ratios (lrelu_upsampling={lrelu_upsampling}).")
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        pad_total = (out_size - 1) * down + 1
        pad_total -= (in_size + kernel - 1) * up
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2  # the symmetric interpretation (paper, appendix C.3)
        pad_hi = pad_total - pad_lo
        out_channels = int(channels[idx])
        layers.append(LayerSpec(
            name=f"L{idx}_{out_size}_{out_channels}", is_torgb=is_torgb,
            is_critically_sampled=bool(critical),
            use_fp16=bool(sampling_rates[idx] * (2 ** num_fp16_res) > img_resolution),
            in_channels=int(channels[prev]), out_channels=out_channels, in_size=in_size,
            out_size=out_size, in_sampling_rate=in_sr, out_sampling_rate=out_sr,
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
            tmp_sampling_rate=int(tmp_sr), conv_kernel=int(kernel), up_factor=up,
            down_factor=down, up_taps=int(up_taps), down_taps=int(down_taps),
            down_radial=bool(use_radial_filters and not critical),
            padding=(int(pad_lo), int(pad_hi), int(pad_lo), int(pad_hi)),
            conv_clamp=None if conv_clamp is None else float(conv_clamp)))
    return input_spec, layers


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> np.ndarray | None:
    """The official `SynthesisLayer.design_lowpass_filter`: None for one tap (identity); else a
    Kaiser-windowed FIR low-pass (`scipy.signal.firwin`, shape (numtaps,), applied separably) or,
    radial=True, a Kaiser-windowed jinc (shape (numtaps, numtaps), normalised to sum 1).
    float32, as the official buffer. `cutoff`, `width`, `fs` in cycles per unit (the layer's
    sampling-rate units)."""
    import scipy.signal
    import scipy.special
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}.")
    if numtaps == 1:
        return None
    if not radial:
        return np.asarray(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs),
                          np.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return np.asarray(f, np.float32)


def layer_filters(spec: LayerSpec):
    """(up_filter, down_filter) of a layer as the official constructor designs them."""
    up = design_lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2,
                               spec.tmp_sampling_rate)
    down = design_lowpass_filter(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                 spec.tmp_sampling_rate, radial=spec.down_radial)
    return up, down


# ------------------------------------------------------------------------------ filtering

def _pad_axis(x, axis: int, lo: int, hi: int):
    """Zero padding (positive) or cropping (negative) of one axis."""
    if lo < 0:
        x = jax.lax.slice_in_dim(x, -lo, x.shape[axis], axis=axis)
        lo = 0
    if hi < 0:
        x = jax.lax.slice_in_dim(x, 0, x.shape[axis] + hi, axis=axis)
        hi = 0
    if lo or hi:
        pads = [(0, 0, 0)] * x.ndim
        pads[axis] = (lo, hi, 0)
        x = jax.lax.pad(x, jnp.array(0, x.dtype), pads)
    return x


def up_fir_1d(x, f, up: int, pad: tuple[int, int], axis: int, gain: float = 1.0):
    """Official upfirdn2d along one axis with down=1: insert up-1 zeros after every sample, pad
    (pad[0], pad[1]) zeros (negative: crop), convolve with f (a true convolution: the flipped
    taps), times `gain`.

    Computed polyphase: output n = q * up + r only meets the taps t = t_r + k * up whose input
    sample is not an inserted zero, so each phase r is a short stride-1 FIR on the input itself
    (len(f) / up taps); the zeros are never multiplied. The phases are interleaved at the end.
    """
    n = x.shape[axis]
    taps = f.shape[0]
    p0, p1 = pad
    out_len = n * up + p0 + p1 - taps + 1
    if out_len < 1:
        raise ValueError(f"up_fir_1d: output length {out_len} < 1 (input {n}, up {up}, pad "
                         f"{pad}, {taps} taps).")
    g = jnp.flip(f, 0).astype(x.dtype) * jnp.asarray(gain, x.dtype)
    phase_len = -(-out_len // up)  # ceil: phase 0 is the longest
    phases = []
    for r in range(up):
        t_r = (p0 - r) % up
        k_taps = list(range(t_r, taps, up))
        c_r = (r + t_r - p0) // up  # input index of tap k = 0 for q = 0
        lo, hi = c_r, (phase_len - 1) + (len(k_taps) - 1) + c_r
        xp = _pad_axis(x, axis, max(0, -lo), max(0, hi - (n - 1)))
        start = lo + max(0, -lo)
        acc = None
        for k, t in enumerate(k_taps):
            term = jax.lax.slice_in_dim(xp, start + k, start + k + phase_len, axis=axis) * g[t]
            acc = term if acc is None else acc + term
        if acc is None:  # a phase no tap reaches: all zeros
            shape = list(x.shape)
            shape[axis] = phase_len
            acc = jnp.zeros(shape, x.dtype)
        phases.append(acc)
    stacked = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = phase_len * up
    out = stacked.reshape(shape)
    return jax.lax.slice_in_dim(out, 0, out_len, axis=axis)


def down_fir_1d(x, f, down: int, axis: int):
    """Official upfirdn2d along one axis with up=1, no padding: a valid convolution with f, then
    every `down`-th sample. Only the kept outputs are computed (strided slices)."""
    n = x.shape[axis]
    taps = f.shape[0]
    out_len = (n - taps + down) // down
    g = jnp.flip(f, 0).astype(x.dtype)
    acc = None
    for t in range(taps):
        term = jax.lax.slice_in_dim(x, t, t + (out_len - 1) * down + 1, stride=down,
                                    axis=axis) * g[t]
        acc = term if acc is None else acc + term
    return acc


def down_fir_2d(x, f, down: int):
    """Official upfirdn2d with a non-separable (taps, taps) filter, up=1, no padding, NHWC: a
    valid 2-D convolution then every `down`-th row and column, computed at the kept outputs only.
    """
    th, tw = f.shape
    h, w = x.shape[1], x.shape[2]
    oh, ow = (h - th + down) // down, (w - tw + down) // down
    g = jnp.flip(f, (0, 1)).astype(x.dtype)
    acc = None
    for i in range(th):
        for j in range(tw):
            term = jax.lax.slice(x, (0, i, j, 0),
                                 (x.shape[0], i + (oh - 1) * down + 1, j + (ow - 1) * down + 1,
                                  x.shape[3]), (1, down, down, 1)) * g[i, j]
            acc = term if acc is None else acc + term
    return acc


def filtered_lrelu(x, fu, fd, b, up: int = 1, down: int = 1,
                   padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = SQRT2,
                   slope: float = 0.2, clamp: float | None = None):
    """The official filtered_lrelu (its reference path), NHWC:

        x + b -> up-sample by `up` (zero insertion), pad / crop by `padding` (x0, x1, y0, y1),
        FIR fu with gain up**2 -> leaky ReLU(slope) * gain, clamp to +-clamp -> FIR fd, keep every
        `down`-th sample.

    x (N, H, W, C); fu (taps,) or None; fd (taps,), (taps, taps) or None; b (C,).
    The up-sampling FIR runs along H then W, as the official separable path does.
    """
    px0, px1, py0, py1 = padding
    x = x + b.astype(x.dtype)
    if fu is None:
        if up != 1:
            raise ValueError("an identity up-sampling filter needs up=1.")
        x = _pad_axis(_pad_axis(x, 1, py0, py1), 2, px0, px1)
    else:
        if fu.ndim != 1:
            raise ValueError(f"the up-sampling filter must be 1-D (separable), got shape "
                             f"{tuple(fu.shape)}.")
        # gain up**2 on the 2-D filter is up per separable pass
        x = up_fir_1d(x, fu, up, (py0, py1), axis=1, gain=up)
        x = up_fir_1d(x, fu, up, (px0, px1), axis=2, gain=up)
    x = jnp.where(x >= 0, x, x * slope) if slope != 1 else x
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    if fd is None:
        if down != 1:
            raise ValueError("an identity down-sampling filter needs down=1.")
        return x
    if fd.ndim == 2:
        return down_fir_2d(x, fd, down)
    x = down_fir_1d(x, fd, down, axis=1)
    return down_fir_1d(x, fd, down, axis=2)


# ------------------------------------------------------------------------------ convolution

def modulated_conv2d(x, kernel, styles, demodulate: bool, padding: int, input_gain=None,
                     precision: Any = None):
    """StyleGAN3's modulated_conv2d, NHWC, computed by scaling activations instead of weights.

    x (N, H, W, Cin); kernel (kh, kw, Cin, Cout) raw (official weight (Cout, Cin, kh, kw));
    styles (N, Cin); input_gain a scalar (the layer's rsqrt(magnitude_ema)) or None; `padding`
    zeros on every side (the official layers use kernel - 1: a "full" convolution).

    Official steps with demodulation: w *= rsqrt(mean(w**2) per output channel); s *= rsqrt(
    mean(s**2)) -- over the WHOLE (N, Cin) style tensor, so a sample's weights depend on the rest
    of its batch through the 1e-8 below (reproduced); per-sample weights w * s, demodulated by
    rsqrt(sum(w**2 s**2) + 1e-8); then times input_gain. Here: x * (s * input_gain) per input
    channel, one shared convolution, the demodulation factor per output channel: the same linear
    map, without a per-sample weight.
    """
    kh, kw, cin, cout = kernel.shape
    w = kernel.astype(jnp.float32)
    s = styles.astype(jnp.float32)
    dcoefs = None
    if demodulate:
        w = w * jax.lax.rsqrt(jnp.mean(jnp.square(w), axis=(0, 1, 2), keepdims=True))
        s = s * jax.lax.rsqrt(jnp.mean(jnp.square(s)))
        w2 = jnp.sum(jnp.square(w), axis=(0, 1))                          # (Cin, Cout)
        dcoefs = jax.lax.rsqrt(jnp.dot(jnp.square(s), w2, precision=precision) + 1e-8)
    if input_gain is not None:
        s = s * input_gain
    x = x * s[:, None, None, :].astype(x.dtype)
    w = w.astype(x.dtype)
    if kh == 1 and kw == 1 and padding == 0:  # a 1x1 convolution is a matmul over channels
        out = jnp.dot(x, w[0, 0], precision=precision)
    else:
        out = conv2d(x, w, (1, 1), ((padding, padding), (padding, padding)), precision)
    if dcoefs is not None:
        out = out * dcoefs[:, None, None, :].astype(out.dtype)
    return out
