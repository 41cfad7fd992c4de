"""The StyleGAN3 ("alias-free") generator of NVlabs/stylegan3, in Flax, NHWC: configs T and R.

Same math and parameter semantics as `training/networks_stylegan3.py` at commit c233a91
(github.com/NVlabs/stylegan3): the mapping network (with w_avg, truncation with a cutoff and
conditional labels), SynthesisInput (Fourier features turned by the learned affine and by a user
transform), SynthesisLayer (modulated convolution with demodulation, then the filtered leaky
ReLU: up-sample, bias, activation with gain and clamp, down-sample, with the official filter
design for each layer's cutoff, half-width and sampling rate, radially symmetric down-sampling
filters for config R), the magnitude EMA (a constant at inference), the ToRGB layer and the output
scale. Weights are stored raw as in the official checkpoints and the equalized-lr gains are
applied at call time, so a converted snapshot is a pure re-layout.

Config T is conv_kernel=3, use_radial_filters=False (channel_base 32768, channel_max 512); config R
is conv_kernel=1, use_radial_filters=True with channel_base and channel_max doubled (train.py's
`--cfg=stylegan3-r`). Any other combination of the official options is computed the same way.

Not in StyleGAN3: noise inputs (the official `noise_mode` argument is accepted and ignored by
every layer, so there is no noise_mode here) and the per-layer fp16 split (`use_fp16`, from
`num_fp16_res`, only on CUDA and only without `force_fp32`): this module computes in float32, the
official `force_fp32=True` path, unless `dtype` asks for another compute dtype for the synthesis
activations (the mapping, styles, demodulation, Fourier features and filter taps stay float32).
With a `dtype`, only the layers the official code would run in fp16 compute in it: those whose
sampling rate * 2 ** low_precision_res exceeds the output resolution (low_precision_res None:
the generator's own num_fp16_res, official default 4, the official split); the others and the
input stay float32. A large low_precision_res (e.g. 32) puts every layer in `dtype`.

Variables (see `Generator`):
    params/mapping/fc{i}/{kernel (in, out), bias (out,)}        official mapping.fc{i}
    params/mapping/embed/{kernel (c_dim, w_dim), bias}           official mapping.embed (c_dim > 0)
    params/synthesis/input/kernel (C, C)                         official input.weight, transposed
    params/synthesis/input/affine/{kernel (w_dim, 4), bias (4,)}
    params/synthesis/L{i}_{size}_{ch}/{kernel (k, k, Cin, Cout), bias (Cout,),
                                         affine/{kernel (w_dim, Cin), bias (Cin,)}}
    buffers/mapping/w_avg (w_dim,)
    buffers/synthesis/input/{freqs (C, 2), phases (C,), transform (3, 3)}
    buffers/synthesis/L.../{magnitude_ema (), up_filter (taps,), down_filter (taps,) or
                            (taps, taps)}   (filters absent where the official buffer is None)
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from e4e_jax.models.stylegan3_ops import (  # noqa: F401  (re-exported names)
    SQRT2,
    InputSpec,
    LayerSpec,
    design_lowpass_filter,
    filtered_lrelu,
    layer_filters,
    modulated_conv2d,
    synthesis_schedule,
)

BUFFERS = "buffers"  # the collection of the official buffers (constants at inference)


def normalize_2nd_moment(x, eps: float = 1e-8):
    """x * rsqrt(mean(x**2 over the last axis) + eps), the official mapping's input norm."""
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def torch_lerp(start, end, weight):
    """torch.lerp(start, end, weight) with its two float formulas (|weight| < 0.5 or not), so
    weight = 1 returns `end` exactly; `weight` may be traced."""
    weight = jnp.asarray(weight, jnp.float32)
    small = start + weight * (end - start)
    large = end - (end - start) * (1.0 - weight)
    return jnp.where(jnp.abs(weight) < 0.5, small, large)


class FullyConnected(nn.Module):
    """The official FullyConnectedLayer: raw (in, out) kernel and bias, scaled at call time by
    lr_multiplier / sqrt(in) and lr_multiplier; `activation` = leaky ReLU 0.2 times sqrt(2)
    (bias_act 'lrelu'). The init follows the official weight_init / bias_init (both / lr)."""
    features: int
    lr_multiplier: float = 1.0
    activation: bool = False
    weight_init: float = 1.0
    bias_init: Any = 0.0
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        in_features = x.shape[-1]
        lr = self.lr_multiplier
        kernel = self.param(
            "kernel", lambda k, s: jax.random.normal(k, s) * (self.weight_init / lr),
            (in_features, self.features))
        bias = self.param(
            "bias", lambda k, s: jnp.broadcast_to(jnp.asarray(self.bias_init, jnp.float32), s) / lr,
            (self.features,))
        out = jnp.dot(x, kernel * (lr / math.sqrt(in_features)), precision=self.precision)
        b = bias * lr if lr != 1 else bias
        if self.activation:
            return jax.nn.leaky_relu(out + b, 0.2) * SQRT2
        return out + b


class MappingNetwork(nn.Module):
    """z (N, z_dim) [, c (N, c_dim)] -> W+ (N, num_ws, w_dim), truncated toward w_avg.

    Official MappingNetwork.forward: normalize_2nd_moment(z); for c_dim > 0 the label embedding
    (a linear layer) normalised the same way and concatenated after z; num_layers lrelu layers
    at lr_multiplier; broadcast to num_ws rows; rows < truncation_cutoff (all when None) become
    w_avg.lerp(w, psi). With psi = 1 the lerp returns w exactly, so it is applied unconditionally
    (psi and the cutoff may be traced: no recompilation per value)."""
    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    num_layers: int = 2
    lr_multiplier: float = 0.01
    precision: Any = None

    @nn.compact
    def __call__(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        x = normalize_2nd_moment(jnp.asarray(z, jnp.float32))
        if self.c_dim > 0:
            y = FullyConnected(self.w_dim, name="embed", precision=self.precision)(
                jnp.asarray(c, jnp.float32))
            x = jnp.concatenate([x, normalize_2nd_moment(y)], axis=-1)
        for i in range(self.num_layers):
            x = FullyConnected(self.w_dim, lr_multiplier=self.lr_multiplier, activation=True,
                               name=f"fc{i}", precision=self.precision)(x)
        w_avg = self.variable(BUFFERS, "w_avg", lambda: jnp.zeros((self.w_dim,), jnp.float32))
        x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        rows = (jnp.arange(self.num_ws) < cutoff)[None, :, None]
        return jnp.where(rows, torch_lerp(w_avg.value, x, truncation_psi), x)


def _official_freqs(rng, channels: int, bandwidth: float):
    """The official SynthesisInput init: frequencies drawn from a disc of radius ~bandwidth,
    phases uniform in [-0.5, 0.5)."""
    kf, kp = jax.random.split(rng)
    freqs = jax.random.normal(kf, (channels, 2))
    radii = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=1, keepdims=True))
    freqs = freqs / (radii * jnp.exp(jnp.square(radii)) ** 0.25) * bandwidth
    return freqs, jax.random.uniform(kp, (channels,)) - 0.5


def affine_grid_positions(size: int, theta: float) -> np.ndarray:
    """(size,) float32: torch.nn.functional.affine_grid's sample positions along one axis for
    align_corners=False, scaled by theta, with torch's float32 arithmetic: its linspace kernel
    fills the two halves from either end with a float32 step in one fused multiply-add (the
    float64 product here, rounded once), then times (size - 1), divided by size."""
    f = np.float32
    idx = np.arange(size)
    step = np.float64(f(2) / f(size - 1)) if size > 1 else 0.0
    lin = np.where(idx < size // 2, -1 + step * idx, 1 - step * (size - 1 - idx)).astype(f)
    return (lin * f(size - 1) / f(size) * f(theta)).astype(f)


class SynthesisInput(nn.Module):
    """Fourier features: (N, w_dim) -> (N, size, size, channels).

    Official SynthesisInput.forward: t = affine(w) normalised by |t[:2]| gives a rotation
    (r_c, r_s) and a translation (t_x, t_y); transforms = m_r @ m_t @ user_transform (the
    official `transform` buffer: the inverse of the transform wanted on the image); each
    frequency f becomes f @ T[:2, :2] and its phase gains f @ T[:2, 2]; frequencies pushed past
    the band are damped by clamp(1 - (|f| - bandwidth) / (sampling_rate / 2 - bandwidth), 0, 1);
    sin(2 pi (grid . f + phase)) on the affine_grid sample positions (align_corners=False);
    then a channel mixing by weight / sqrt(channels).

    `transform`: None (the stored buffer), (3, 3) or (N, 3, 3) -- the batched form is how
    stylegan3-editing sets the buffer for unaligned images (one transform per image)."""
    spec: InputSpec
    precision: Any = None

    @nn.compact
    def __call__(self, w, transform=None):
        c, size = self.spec.channels, self.spec.size
        kernel = self.param("kernel", nn.initializers.normal(1.0), (c, c))
        t = FullyConnected(4, weight_init=0.0, bias_init=(1.0, 0.0, 0.0, 0.0), name="affine",
                           precision=self.precision)(w)
        freqs0, phases0 = None, None
        if self.is_initializing():
            freqs0, phases0 = _official_freqs(self.make_rng("params"), c, self.spec.bandwidth)
        freqs = self.variable(BUFFERS, "freqs", lambda: freqs0).value
        phases = self.variable(BUFFERS, "phases", lambda: phases0).value
        stored = self.variable(BUFFERS, "transform", lambda: jnp.eye(3, dtype=jnp.float32)).value
        user = stored if transform is None else jnp.asarray(transform, jnp.float32)
        if user.ndim == 2:
            user = user[None]
        n = w.shape[0]
        if user.shape[1:] != (3, 3) or user.shape[0] not in (1, n):
            raise ValueError(f"transform must have shape (3, 3) or ({n}, 3, 3), got "
                             f"{tuple(user.shape)}.")

        t = t / jnp.sqrt(jnp.sum(jnp.square(t[:, :2]), axis=1, keepdims=True))
        zero, one = jnp.zeros((n,), jnp.float32), jnp.ones((n,), jnp.float32)
        m_r = jnp.stack([jnp.stack([t[:, 0], -t[:, 1], zero], -1),
                         jnp.stack([t[:, 1], t[:, 0], zero], -1),
                         jnp.stack([zero, zero, one], -1)], 1)
        m_t = jnp.stack([jnp.stack([one, zero, -t[:, 2]], -1),
                         jnp.stack([zero, one, -t[:, 3]], -1),
                         jnp.stack([zero, zero, one], -1)], 1)
        mm = lambda a, b: jnp.matmul(a, b, precision=self.precision)  # noqa: E731
        transforms = mm(mm(m_r, m_t), user)                              # (N, 3, 3)
        phases = phases[None] + mm(freqs[None], transforms[:, :2, 2:])[..., 0]   # (N, C)
        freqs = mm(freqs[None], transforms[:, :2, :2])                           # (N, C, 2)
        bw, sr = self.spec.bandwidth, self.spec.sampling_rate
        amplitudes = jnp.clip(1 - (jnp.sqrt(jnp.sum(jnp.square(freqs), -1)) - bw) / (sr / 2 - bw),
                              0, 1)
        # affine_grid(align_corners=False) sample positions of a size x size grid, scaled by
        # theta = 0.5 * size / sampling_rate: pixel centres in units of the sampling grid
        pos = jnp.asarray(affine_grid_positions(size, 0.5 * size / sr))
        x = (pos[None, None, :, None] * freqs[:, None, None, :, 0]
             + pos[None, :, None, None] * freqs[:, None, None, :, 1])   # (N, H, W, C)
        x = x + phases[:, None, None, :]
        x = jnp.sin(x * np.float32(np.pi * 2))
        x = x * amplitudes[:, None, None, :]
        return jnp.dot(x, kernel / np.float32(np.sqrt(c)), precision=self.precision)


class SynthesisLayer(nn.Module):
    """One official SynthesisLayer (or the final ToRGB, spec.is_torgb), NHWC:

        styles = affine(w) (ToRGB: times 1 / sqrt(Cin * k * k));
        x = modulated_conv2d(x, weight, styles, padding k - 1, demodulate (not ToRGB),
                             input_gain = rsqrt(magnitude_ema));
        x = filtered_lrelu(x, up_filter, down_filter, bias, up, down, padding,
                           gain sqrt(2) (ToRGB: 1), slope 0.2 (ToRGB: 1, linear), clamp).

    magnitude_ema is the official buffer, used as a constant (its EMA update is training only).
    """
    spec: LayerSpec
    precision: Any = None
    dtype: Any = None  # compute dtype of the activations (None: float32)

    @nn.compact
    def __call__(self, x, w):
        s = self.spec
        k = s.conv_kernel
        styles = FullyConnected(s.in_channels, bias_init=1.0, name="affine",
                                precision=self.precision)(w)
        kernel = self.param("kernel", nn.initializers.normal(1.0),
                            (k, k, s.in_channels, s.out_channels))
        bias = self.param("bias", nn.initializers.zeros, (s.out_channels,))
        magnitude = self.variable(BUFFERS, "magnitude_ema", lambda: jnp.ones((), jnp.float32))
        up_init, down_init = (layer_filters(s) if self.is_initializing() else (None, None))
        fu = (self.variable(BUFFERS, "up_filter", lambda: jnp.asarray(up_init)).value
              if s.up_taps > 1 else None)
        fd = (self.variable(BUFFERS, "down_filter", lambda: jnp.asarray(down_init)).value
              if s.down_taps > 1 else None)
        if s.is_torgb:
            styles = styles * (1 / np.sqrt(s.in_channels * (k ** 2)))
        if self.dtype is not None:
            # the official per-layer split: reduced precision in the high-resolution layers
            x = x.astype(self.dtype if s.use_fp16 else jnp.float32)
        x = modulated_conv2d(x, kernel, styles, demodulate=not s.is_torgb, padding=k - 1,
                             input_gain=jax.lax.rsqrt(magnitude.value), precision=self.precision)
        return filtered_lrelu(x, fu, fd, bias, up=s.up_factor, down=s.down_factor,
                              padding=s.padding, gain=1.0 if s.is_torgb else SQRT2,
                              slope=1.0 if s.is_torgb else 0.2, clamp=s.conv_clamp)


class SynthesisNetwork(nn.Module):
    """W+ (N, num_ws, w_dim) -> images (N, R, R, img_channels), float32: row 0 drives the input,
    row i + 1 layer i; the result is multiplied by output_scale (official 0.25)."""
    input_spec: InputSpec
    layers: tuple[LayerSpec, ...]
    output_scale: float = 0.25
    precision: Any = None
    dtype: Any = None
    remat: bool = False  # recompute each layer in the backward pass (memory for training)

    @nn.compact
    def __call__(self, ws, transform=None):
        layer_cls = nn.remat(SynthesisLayer) if self.remat else SynthesisLayer
        x = SynthesisInput(self.input_spec, self.precision, name="input")(ws[:, 0], transform)
        for i, spec in enumerate(self.layers):
            x = layer_cls(spec, self.precision, self.dtype, name=spec.name)(x, ws[:, i + 1])
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.astype(jnp.float32)


class Generator(nn.Module):
    """The official StyleGAN3 Generator (fields: the official constructor's arguments; mapping_*
    are its mapping_kwargs). Methods:

        mapping(z, c=None, truncation_psi=1, truncation_cutoff=None) -> W+ (N, num_ws, w_dim)
        synthesis(ws, transform=None) -> images (N, R, R, img_channels), NHWC float32, the
            official raw output (about [-1, 1]; not clamped)
        __call__(z, c=None, ...) = synthesis(mapping(z, c, ...), transform)

    `num_fp16_res` only sets the official per-layer use_fp16 flags (see the module docstring);
    `magnitude_ema_beta` / `w_avg_beta` are training-only and kept in the converted config, not
    here. ValueError for options that give no valid network.
    """
    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    num_fp16_res: int = 4
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256
    precision: Any = None
    dtype: Any = None
    remat: bool = False
    low_precision_res: int | None = None  # layers computing in `dtype` (None: num_fp16_res's)

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    def schedule(self) -> tuple[InputSpec, list[LayerSpec]]:
        return synthesis_schedule(
            self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
            self.num_layers, self.num_critical, self.first_cutoff, self.first_stopband,
            self.last_stopband_rel, self.margin_size,
            self.num_fp16_res if self.low_precision_res is None else self.low_precision_res,
            self.conv_kernel,
            self.filter_size, self.lrelu_upsampling, self.use_radial_filters, self.conv_clamp)

    def setup(self):
        input_spec, layers = self.schedule()
        self.mapping_network = MappingNetwork(
            self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.mapping_layers,
            self.mapping_lr_multiplier, self.precision, name="mapping")
        self.synthesis_network = SynthesisNetwork(
            input_spec, tuple(layers), self.output_scale, self.precision, self.dtype,
            self.remat, name="synthesis")

    def mapping(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        if (c is None) != (self.c_dim == 0):
            raise ValueError(f"this generator has c_dim={self.c_dim}: "
                             + ("pass labels c of shape (N, c_dim)." if self.c_dim
                                else "it takes no labels (c must be None)."))
        return self.mapping_network(z, c, truncation_psi, truncation_cutoff)

    def synthesis(self, ws, transform=None):
        ws = jnp.asarray(ws, jnp.float32)
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.num_ws}, {self.w_dim}) for "
                             f"this StyleGAN3 generator, got {tuple(ws.shape)}.")
        return self.synthesis_network(ws, transform)

    def __call__(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, transform=None):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), transform)
