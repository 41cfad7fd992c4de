"""The StyleGAN2 generator of the official e4e code (rosinality's port), in Flax, NHWC.

Same math and parameter semantics as `models/stylegan2/model.py` of omertov/encoder4editing:
equalized-learning-rate layers store their raw weights (as the PyTorch checkpoints do) and apply
`lr_mul / sqrt(fan_in)` at call time, so a converted checkpoint is a pure re-layout.

`variant="ada"` gives the generator of NVIDIA's StyleGAN2-ADA (`training/networks.py`, the
`network-snapshot-*.pkl` format that stylegan3 also reads) with the same variables. The two
compute the same network except for where the equalized-lr gain enters the modulated convs
(ADA demodulates the raw weight, so its 1e-8 epsilon is not scaled by fan_in, and scales the
ToRGB styles instead of the ToRGB weight), the optional `conv_clamp`, and the mapping
generalisations ADA has (z_dim != w_dim, `layer_features`, a label embedding for c_dim > 0).

Variables (see `Generator`):
    params/mapping/dense_{i}/{kernel (S, S), bias (S,)}        official style.{i+1}
    params/mapping/embed/{kernel (c_dim, E), bias (E,)}        ADA label embedding (c_dim > 0)
    params/input/const (1, 4, 4, C)                            official input.input
    params/conv1, params/convs_{j}: {kernel (3, 3, Cin, Cout), modulation/{kernel (S, Cin), bias},
                                     noise_strength (), bias (Cout,)}
    params/to_rgb1, params/to_rgbs_{k}: {kernel (1, 1, C, 3), modulation/{kernel, bias}, bias (3,)}
    noises/noise_{i} (1, r, r, 1)                              official noises.noise_{i}

Reduced precision (`dtype`, e4e_jax.core.precision): as StyleGAN2-ADA's per-block `use_fp16`
(`num_fp16_res`), only the layers of the top `low_precision_res` resolutions (None: 4, the
official default; the convolution up-sampling into a resolution belongs to it; never 4x4)
compute their activations and convolutions in `dtype`; the mapping network, the styles, the
demodulation factors, the RGB skip image and the lower resolutions stay float32. The official
fp16 path also pre-normalises weights and styles and relies on conv_clamp=256 against fp16
overflow;
bfloat16 has float32's exponent range, so neither is reproduced here (conv_clamp stays what the
checkpoint says, in every dtype, as in the official code).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from e4e_jax.core.precision import low_precision_from
from e4e_jax.models.stylegan2_ops import (  # noqa: F401  (re-exported layer names)
    NORMAL,
    SQRT2,
    ZERO,
    EqualDense,
    InitRule,
    fir_taps,
    fused_leaky_relu,
    init_rules,
    modulated_conv,
    official_param,
    official_variable,
    pixel_norm,
    upfirdn2d,
)

NOISE_MODES = ("const", "random", "none", "explicit")
VARIANTS = ("rosinality", "ada")

_OFFICIAL_WIDTH = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def log2_resolution(resolution: int) -> int:
    log = int(round(math.log2(resolution))) if resolution > 0 else 0
    if resolution < 8 or 2 ** log != resolution:
        raise ValueError(f"StyleGAN2 resolution must be a power of two >= 8, got {resolution}.")
    return log


def official_channels(resolution: int, channel_multiplier: int = 2,
                      max_channels: int | None = None) -> tuple[int, ...]:
    """Widths at resolutions 4, 8, ..., `resolution` as in the official generator.

    The official table is 512 up to 32x32, then 256*cm, 128*cm, ... ; `max_channels` caps every
    width (tiny generators for tests and the CPU demo).
    """
    log = log2_resolution(resolution)
    if resolution > 1024:
        raise ValueError(f"The official channel table stops at 1024, got {resolution}; pass "
                         f"`channels` explicitly for larger generators.")
    widths = []
    for i in range(2, log + 1):
        r = 2 ** i
        c = _OFFICIAL_WIDTH[r] * (channel_multiplier if r >= 64 else 1)
        widths.append(min(c, max_channels) if max_channels else c)
    return tuple(widths)


class MappingNetwork(nn.Module):
    """Pixel norm then n_mlp EqualLinear layers with lr_mul and fused leaky ReLU.

    StyleGAN2-ADA's MappingNetwork is the same computation (its normalize_2nd_moment is the pixel
    norm) with two generalisations: hidden layers of `layer_features` units, and for c_dim > 0 a
    label embedding (a linear layer, lr 1, then its own 2nd-moment normalisation) concatenated
    after the normalised z.
    """
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    precision: Any = None
    c_dim: int = 0
    layer_features: int | None = None
    embed_features: int | None = None

    @nn.compact
    def __call__(self, z, c=None):
        x = pixel_norm(jnp.asarray(z, jnp.float32))
        if self.c_dim > 0:
            y = EqualDense(self.embed_features or self.style_dim, name="embed",
                           precision=self.precision)(jnp.asarray(c, jnp.float32))
            x = jnp.concatenate([x, pixel_norm(y)], axis=-1)
        hidden = self.layer_features or self.style_dim
        for i in range(self.n_mlp):
            width = self.style_dim if i == self.n_mlp - 1 else hidden
            x = EqualDense(width, lr_mul=self.lr_mlp, activation=True,
                           name=f"dense_{i}", precision=self.precision)(x)
        return x


class ConstantInput(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, batch: int):
        const = official_param(self, "const", NORMAL, (1, 4, 4, self.channels))
        return jnp.broadcast_to(const, (batch,) + const.shape[1:])


class StyledConv(nn.Module):
    """ModulatedConv2d + NoiseInjection + FusedLeakyReLU (official StyledConv; ADA's
    SynthesisLayer with variant="ada", clamped to +-conv_clamp after the activation)."""
    features: int
    kernel_size: int = 3
    upsample: bool = False
    blur_kernel: tuple = (1, 3, 3, 1)
    precision: Any = None
    variant: str = "rosinality"
    conv_clamp: float | None = None
    dtype: Any = None   # compute dtype of the activations (None: float32)

    @nn.compact
    def __call__(self, x, w, noise=None):
        if self.dtype is not None:
            x = x.astype(self.dtype)
        cin = x.shape[-1]
        kernel = official_param(self, "kernel", NORMAL,
                                (self.kernel_size, self.kernel_size, cin, self.features))
        style = EqualDense(cin, bias_init=1.0, name="modulation", precision=self.precision)(w)
        taps = fir_taps(self.blur_kernel, gain=4.0) if self.upsample else None
        out = modulated_conv(x, style, kernel, True, self.upsample, taps, self.precision,
                             weight_gain=self.variant != "ada")
        strength = official_param(self, "noise_strength", ZERO, ())
        if noise is not None:
            out = out + (strength * noise).astype(out.dtype)
        bias = official_param(self, "bias", ZERO, (self.features,))
        out = fused_leaky_relu(out, bias.astype(out.dtype))
        if self.conv_clamp is not None:
            out = jnp.clip(out, -self.conv_clamp, self.conv_clamp)
        return out


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, bias, plus the FIR-up-sampled running image."""
    blur_kernel: tuple = (1, 3, 3, 1)
    channels: int = 3
    precision: Any = None
    variant: str = "rosinality"
    conv_clamp: float | None = None
    dtype: Any = None   # compute dtype of the 1x1 conv's input (the skip image stays float32)

    @nn.compact
    def __call__(self, x, w, skip=None):
        if self.dtype is not None:
            x = x.astype(self.dtype)
        cin = x.shape[-1]
        kernel = official_param(self, "kernel", NORMAL, (1, 1, cin, self.channels))
        style = EqualDense(cin, bias_init=1.0, name="modulation", precision=self.precision)(w)
        gain = 1.0 / math.sqrt(cin)
        # ADA's ToRGBLayer puts the equalized-lr gain on the styles, rosinality on the weight.
        ada = self.variant == "ada"
        if ada:
            style = style * gain
        # A 1x1 conv is a matmul over channels.
        rgb_weight = kernel[0, 0] if ada else kernel[0, 0] * gain
        out = jnp.dot(x * style[:, None, None, :].astype(x.dtype), rgb_weight.astype(x.dtype),
                      precision=self.precision)
        # the RGB skip image accumulates over every resolution: float32 (3 channels, ~free)
        out = out.astype(jnp.float32)
        out = out + official_param(self, "bias", ZERO, (self.channels,))
        if self.conv_clamp is not None:
            out = jnp.clip(out, -self.conv_clamp, self.conv_clamp)
        if skip is not None:
            taps = fir_taps(self.blur_kernel, gain=4.0)
            p = len(taps) - 2
            out = out + upfirdn2d(skip, taps, up=2, pad=((p + 1) // 2 + 1, p // 2))
        return out


class Generator(nn.Module):
    """The official StyleGAN2 Generator. `__call__` is the synthesis network on W+ codes.

    noise_mode: "const" (the stored `noises` buffers, official randomize_noise=False), "random"
    (a fresh N(0, 1) map per layer and per sample from the "noise" rng, official
    randomize_noise=True), "none" (no noise), "explicit" (`noises`: one array per layer, shaped
    (1 or N, r, r, 1), in layer order).

    variant="ada" switches to StyleGAN2-ADA's arithmetic (see the module docstring); `conv_clamp`,
    `z_dim`, `c_dim`, `layer_features`, `embed_features` and `img_channels` are the ADA
    generator's options (defaults: the rosinality generator). The W+ row of every layer and the
    skip architecture are the same in both.
    """
    resolution: int
    channels: tuple[int, ...]
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    blur_kernel: tuple = (1, 3, 3, 1)
    precision: Any = None
    variant: str = "rosinality"
    conv_clamp: float | None = None
    z_dim: int | None = None          # None: style_dim
    c_dim: int = 0
    layer_features: int | None = None  # mapping hidden width; None: style_dim
    embed_features: int | None = None  # label embedding width; None: style_dim
    img_channels: int = 3
    dtype: Any = None      # compute dtype of the synthesis activations (None: float32)
    remat: bool = False    # recompute each synthesis layer in the backward pass
    # with remat: layers at this resolution and above run one image at a time (a scan over the
    # batch), so the backward pass of a 1024x1024 layer holds one image's intermediates, not
    # the batch's (0: never). 4 (the default): the whole synthesis network runs one image at a
    # time and is itself rematerialised, so the forward pass keeps only W+ and the noise; the
    # backward pass regenerates one image, then differentiates it layer by layer (the generator's
    # memory is then that of batch 1; it costs one more synthesis forward per step).
    per_image_from: int = 4
    # how many of the top resolutions compute in `dtype` (None: the official num_fp16_res, 4;
    # e4e_jax.core.precision.low_precision_from); without a `dtype` it changes nothing
    low_precision_res: int | None = None

    @property
    def log_size(self) -> int:
        return log2_resolution(self.resolution)

    @property
    def n_latent(self) -> int:
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        return 2 * self.log_size - 3

    @property
    def latent_dim(self) -> int:
        """Width of z (ADA's z_dim; style_dim unless set)."""
        return self.style_dim if self.z_dim is None else self.z_dim

    def layer_dtypes(self) -> dict[int, Any]:
        """resolution -> compute dtype of its layers (None: float32), by `low_precision_res`."""
        lowest = low_precision_from(self.resolution, self.low_precision_res)
        return {2 ** i: (self.dtype if self.dtype is not None and 2 ** i >= lowest else None)
                for i in range(2, self.log_size + 1)}

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [(1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), 1) for i in range(self.num_layers)]

    def setup(self):
        if len(self.channels) != self.log_size - 1:
            raise ValueError(f"channels must list one width per resolution 4..{self.resolution} "
                             f"({self.log_size - 1} values), got {len(self.channels)}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}.")
        if self.latent_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}.")
        self.mapping_network = MappingNetwork(
            self.style_dim, self.n_mlp, self.lr_mlp, self.precision, c_dim=self.c_dim,
            layer_features=self.layer_features, embed_features=self.embed_features,
            name="mapping")
        self.input = ConstantInput(self.channels[0])
        kw = dict(blur_kernel=self.blur_kernel, precision=self.precision, variant=self.variant,
                  conv_clamp=self.conv_clamp)
        dtypes = self.layer_dtypes()
        # remat: only each layer's input survives the forward pass; the modulated conv, noise,
        # bias and activation are recomputed in the backward pass (same parameter names)
        conv_cls = nn.remat(StyledConv) if self.remat else StyledConv
        rgb_cls = nn.remat(ToRGB) if self.remat else ToRGB
        self.conv1 = conv_cls(self.channels[0], dtype=dtypes[4], **kw)
        self.to_rgb1 = rgb_cls(channels=self.img_channels, dtype=dtypes[4], **kw)
        convs, to_rgbs = [], []
        for j, c in enumerate(self.channels[1:]):
            d = dtypes[2 ** (j + 3)]
            convs.append(conv_cls(c, upsample=True, dtype=d, **kw))
            convs.append(conv_cls(c, dtype=d, **kw))
            to_rgbs.append(rgb_cls(channels=self.img_channels, dtype=d, **kw))
        self.convs = convs
        self.to_rgbs = to_rgbs
        self.noise_buffers = [
            official_variable(self, "noises", f"noise_{i}", NORMAL, s)
            for i, s in enumerate(self.noise_shapes())]

    def mapping(self, z, c=None):
        """z (N, z_dim) -> w (N, style_dim): pixel norm then n_mlp EqualLinear + lrelu.

        c (N, c_dim): the class labels of a conditional (c_dim > 0) ADA generator."""
        if (c is None) != (self.c_dim == 0):
            raise ValueError(f"this generator has c_dim={self.c_dim}: "
                             + ("pass labels c of shape (N, c_dim)." if self.c_dim
                                else "it takes no labels (c must be None)."))
        return self.mapping_network(z, c)

    def _layer_noise(self, noise_mode: str, noises, batch: int):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        shapes = self.noise_shapes()
        if noise_mode == "none":
            return [None] * len(shapes)
        if noise_mode == "const":
            return [buf.value for buf in self.noise_buffers]
        if noise_mode == "random":
            rng = self.make_rng("noise")
            keys = jax.random.split(rng, len(shapes))
            return [jax.random.normal(k, (batch,) + s[1:]) for k, s in zip(keys, shapes)]
        if noises is None or len(noises) != len(shapes):
            raise ValueError(f"explicit noise needs a list of {len(shapes)} arrays, one per layer "
                             f"(shapes {[(b, r, r, 1) for b, r, _, _ in shapes]} with b = 1 or N), "
                             f"got {None if noises is None else len(noises)}.")
        out = []
        for i, (n, s) in enumerate(zip(noises, shapes)):
            n = jnp.asarray(n, jnp.float32)
            if n.ndim != 4 or n.shape[1:] != s[1:] or n.shape[0] not in (1, batch):
                raise ValueError(f"noise[{i}] must have shape (1 or {batch}, {s[1]}, {s[2]}, 1), "
                                 f"got {tuple(n.shape)}.")
            out.append(n)
        return out

    def __call__(self, w_plus, noise_mode: str = "const", noises=None):
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.n_latent}, {self.style_dim}) "
                             f"for a {self.resolution}x{self.resolution} generator, got "
                             f"{tuple(w_plus.shape)}.")
        batch = w_plus.shape[0]
        noise = self._layer_noise(noise_mode, noises, batch)
        if self.remat and batch > 1 and 0 < self.per_image_from <= 4:
            return self._synthesize_per_image(w_plus, noise)
        return self._synthesize(w_plus, noise)

    def _synthesize_per_image(self, w_plus, noise):
        """_synthesize as a rematerialised scan over the batch: the residuals of the forward
        pass are the per-image W+ and noise; each image is recomputed in the backward pass."""
        batch = w_plus.shape[0]
        noise = [None if n is None else jnp.broadcast_to(n, (batch,) + n.shape[1:])
                 for n in noise]

        def one_image(mdl, carry, xs):
            w, ns = xs
            img = mdl._synthesize(w[None], [None if n is None else n[None] for n in ns])
            return carry, img[0]

        # "noises": setup() declares the stored buffers inside the lifted scope too
        scan = nn.scan(nn.remat(one_image), variable_broadcast=["params", "noises"],
                       split_rngs={"params": False})
        _, images = scan(self, None, (w_plus, noise))
        return images

    def _synthesize(self, w_plus, noise):
        batch = w_plus.shape[0]
        out = self.input(batch)
        out = self.conv1(out, w_plus[:, 0], noise[0])
        skip = self.to_rgb1(out, w_plus[:, 1])
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            res = 2 ** (j + 3)
            if self.remat and self.per_image_from and res >= self.per_image_from and batch > 1:
                out = _per_image(self.convs[2 * j], out, w_plus[:, i], noise[2 * j + 1])
                out = _per_image(self.convs[2 * j + 1], out, w_plus[:, i + 1],
                                 noise[2 * j + 2])
                skip = _per_image(to_rgb, out, w_plus[:, i + 2], skip)
            else:
                out = self.convs[2 * j](out, w_plus[:, i], noise[2 * j + 1])
                out = self.convs[2 * j + 1](out, w_plus[:, i + 1], noise[2 * j + 2])
                skip = to_rgb(out, w_plus[:, i + 2], skip)
            i += 2
        return skip


def _layer_one_image(layer, carry, xs):
    x, w, extra = xs
    y = layer(x[None], w[None], None if extra is None else extra[None])
    return carry, y[0]


def _per_image(layer, x, w, extra):
    """layer(x, w, extra) as a scan over the batch (shared parameters), for memory: with the
    layer rematerialised, the backward pass recomputes and differentiates one image at a time.
    `extra` (noise or the skip image) may have batch 1; it is broadcast first."""
    if extra is not None and extra.shape[0] != x.shape[0]:
        extra = jnp.broadcast_to(extra, (x.shape[0],) + extra.shape[1:])
    scan = nn.scan(_layer_one_image, variable_broadcast="params",
                   split_rngs={"params": False})
    _, y = scan(layer, None, (x, w, extra))
    return y
