"""IR / IR-SE residual backbones (ArcFace-style ResNets) of the official code, in Flax (NHWC).

The official PyTorch code (models/encoders/helpers.py and model_irse.py, after TreB1eN's
InsightFace_Pytorch) builds every encoder and the ArcFace identity network from the same parts:

    input_layer = Conv2d(3, 64, 3x3, stride 1, pad 1, bias=False) -> BatchNorm2d -> PReLU
    body        = 4 stages of bottleneck units (IR or IR-SE), the first unit of each stage strides 2

This module provides those parts as reusable Flax modules.

Public API
----------
official_units(num_layers) -> (u1, u2, u3, u4)
    Units per stage: 50 -> (3, 4, 14, 3), 100 -> (3, 13, 30, 3), 152 -> (3, 8, 36, 3).

BatchNorm(momentum=0.1, epsilon=1e-5, use_scale=True, use_bias=True)
    PyTorch BatchNorm semantics over the last axis (works for (N, C) and (N, H, W, C)).
    __call__(x, train: bool). train=True normalises with the biased batch variance and updates
    the running averages like torch (running = 0.9 * running + 0.1 * batch, with the *unbiased*
    batch variance for running var); train=False uses the running averages. Running statistics are
    not updated while the module is being initialised. Under jit with a batch sharded over a
    mesh the statistics are those of the global batch (XLA inserts the reduction), as with one
    device; there is no per-device (pmap-style) variant.
    Variables: params/{scale, bias} (torch weight, bias; absent when use_scale/use_bias is False,
    e.g. BatchNorm1d(affine=False)), batch_stats/{mean, var} (torch running_mean, running_var).
    torch's num_batches_tracked is not kept (it only matters when momentum is None).

PReLU: params/alpha (C,), torch PReLU(C).weight.

IRInputLayer(width=64): x (N, H, W, 3) -> (N, H, W, width).
    Submodules: conv (params/conv/kernel (3, 3, 3, width)), bn (BatchNorm), prelu (PReLU).

Bottleneck(in_channels, depth, stride, se: bool, se_reduction=16)
    One `bottleneck_IR` (se=False) or `bottleneck_IR_SE` (se=True) unit.
    shortcut: in_channels == depth -> MaxPool2d(1, stride), i.e. x[:, ::stride, ::stride]
              otherwise           -> shortcut_conv (1x1, stride, no bias) -> shortcut_bn
    residual: bn1 -> conv1 (3x3, stride 1, pad 1) -> prelu -> conv2 (3x3, stride, pad 1) -> bn2
              [-> se: global average pool -> fc1 (C -> C // 16, no bias) -> ReLU
                      -> fc2 (C // 16 -> C, no bias) -> sigmoid -> scale the residual]
    Official key -> Flax path (inside a unit):
        shortcut_layer.0 -> shortcut_conv      shortcut_layer.1 -> shortcut_bn
        res_layer.0 -> bn1   res_layer.1 -> conv1   res_layer.2 -> prelu
        res_layer.3 -> conv2 res_layer.4 -> bn2     res_layer.5.fc1 / fc2 -> se/fc1 / se/fc2
    The SE 1x1 convs are Dense layers: se/fc1/kernel (C, C // r), se/fc2/kernel (C // r, C).

IRBody(num_layers=50, mode='ir_se', widths=(64, 128, 256, 512), units=None, in_channels=None,
       se_reduction=16)
    The official `body` Sequential: units `block_{i}` (official `body.{i}`), i = 0 .. sum(units)-1.
    `units` overrides official_units(num_layers) and `widths` the stage widths, for tiny test
    models (e.g. widths=(8, 16, 16, 32), units=(1, 1, 1, 1)); `in_channels` defaults to widths[0]
    (the input layer's width). With widths below 16 the SE bottleneck keeps one channel
    (max(1, C // 16)); the official sizes are unaffected.
    __call__(x, train=False, capture=()) -> y, or (y, [features after each block index in
    capture]) when `capture` is non-empty. `stage_ends` gives the index of the last unit of each
    stage: (2, 6, 20, 23) for 50 layers. The encoders use the features after blocks 6, 20 and 23
    (the ends of stages 2, 3 and 4: 1/4, 1/8 and 1/16 of the input size).

Training vs inference
---------------------
    variables = model.init(rng, x)                               # {'params', 'batch_stats'}
    y = model.apply(variables, x)                                # inference (running stats)
    y, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    variables = {**variables, 'batch_stats': updates['batch_stats']}

Building the official ArcFace `Backbone` on top (done in the identity-loss module):
    input_layer = IRInputLayer(64); body = IRBody(50, 'ir_se');
    output_layer: BatchNorm (BatchNorm2d(512)) -> Dropout -> Flatten -> Dense(512*7*7 -> 512)
    -> BatchNorm (BatchNorm1d(512, affine=False)) -> l2 normalisation.
    PyTorch flattens NCHW, so to reuse the official Linear(512*7*7, 512) weight transpose the
    NHWC map to NCHW before flattening (x.transpose(0, 3, 1, 2).reshape(N, -1)), or permute
    the Linear weight's input axis once in the converter.

The modules with convolutions or dense layers take `precision` (None = JAX's default,
which on GPUs may be TF32: use jax.lax.Precision.HIGHEST or jax.default_matmul_precision("float32")
for bit-level comparisons with PyTorch there).

Convolutions use explicit symmetric padding (PyTorch `padding=1`), not 'SAME' (which pads
asymmetrically for stride 2).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_OFFICIAL_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
OFFICIAL_WIDTHS = (64, 128, 256, 512)
MODES = ("ir", "ir_se")


def official_units(num_layers: int) -> tuple[int, int, int, int]:
    if num_layers not in _OFFICIAL_UNITS:
        raise ValueError(f"Invalid number of layers: {num_layers}. Must be one of [50, 100, 152].")
    return _OFFICIAL_UNITS[num_layers]


def torch_conv_init(fan_in_axes=(0, 1, 2)):
    """torch.nn.Conv2d / Linear default weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    def init(key, shape, dtype=jnp.float32):
        fan_in = 1
        for a in fan_in_axes:
            fan_in *= shape[a]
        bound = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def torch_bias_init(fan_in: int):
    def init(key, shape, dtype=jnp.float32):
        bound = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def conv2d(features: int, kernel: int, stride: int = 1, padding: int = 0, use_bias: bool = False,
           name: str | None = None, in_channels: int | None = None, precision: Any = None,
           dtype: Any = None) -> nn.Conv:
    """A PyTorch-style Conv2d: symmetric zero padding, HWIO kernel, torch default init.
    dtype: the compute dtype (None: the input's; parameters stay float32)."""
    bias_init = (torch_bias_init(in_channels * kernel * kernel) if (use_bias and in_channels)
                 else nn.initializers.zeros)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                   kernel_init=torch_conv_init(), bias_init=bias_init, precision=precision,
                   dtype=dtype, name=name)


class BatchNorm(nn.Module):
    """BatchNorm over the last axis with PyTorch's training / eval semantics (see module doc)."""
    momentum: float = 0.1
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 out_dtype: Any = None) -> jax.Array:
        """out_dtype: the output's dtype (None: the input's)."""
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        out_dtype = x.dtype if out_dtype is None else out_dtype
        # statistics and rsqrt in float32 whatever the compute dtype (precision.FLOAT32_PARTS)
        x32 = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axes)
            n = x.size // c
            if n < 2:
                raise ValueError(f"BatchNorm in training mode needs more than one value per "
                                 f"channel, got input of shape {x.shape}.")
            var = jnp.mean(jnp.square(x32 - mean), axes)
            if not self.is_initializing():
                m = self.momentum
                # torch keeps the unbiased variance in its running average
                unbiased = var * (n / (n - 1))
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        # x * alpha + beta, the order torch's CPU kernel evaluates
        alpha = lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            alpha = alpha * self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        beta = -mean * alpha
        if self.use_bias:
            beta = beta + self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return x * alpha.astype(out_dtype) + beta.astype(out_dtype)


class PReLU(nn.Module):
    """torch.nn.PReLU(C): one slope per channel, initialised to 0.25."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
        return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class IRInputLayer(nn.Module):
    """Conv 3x3 (3 -> width, no bias) -> BatchNorm -> PReLU."""
    width: int = 64
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = conv2d(self.width, 3, 1, 1, name="conv", precision=self.precision,
                   dtype=self.dtype)(x)
        x = BatchNorm(name="bn")(x, train)
        return PReLU(name="prelu")(x)


class SqueezeExcite(nn.Module):
    channels: int
    reduction: int = 16
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = max(1, self.channels // self.reduction)
        s = jnp.mean(x, axis=(1, 2))
        s = nn.Dense(hidden, use_bias=False, kernel_init=torch_conv_init((0,)),
                     precision=self.precision, dtype=self.dtype, name="fc1")(s)
        s = nn.relu(s)
        s = nn.Dense(self.channels, use_bias=False, kernel_init=torch_conv_init((0,)),
                     precision=self.precision, dtype=self.dtype, name="fc2")(s)
        return x * nn.sigmoid(s)[:, None, None, :]


class Bottleneck(nn.Module):
    """bottleneck_IR (se=False) / bottleneck_IR_SE (se=True) of the official helpers."""
    in_channels: int
    depth: int
    stride: int
    se: bool = True
    se_reduction: int = 16
    precision: Any = None
    dtype: Any = None
    # True: only the convolutions compute in `dtype`; the BatchNorm outputs, the SE gate and the
    # residual sum stay float32 (the encoders' bfloat16 policy, models/encoders.py)
    float32_stream: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        p, d = self.precision, self.dtype
        bn_out = jnp.float32 if self.float32_stream else None
        if self.in_channels == self.depth:
            shortcut = x[:, ::self.stride, ::self.stride, :]
        else:
            shortcut = conv2d(self.depth, 1, self.stride, 0, name="shortcut_conv", precision=p,
                              dtype=d)(x)
            shortcut = BatchNorm(name="shortcut_bn")(shortcut, train, bn_out)
        r = BatchNorm(name="bn1")(x, train, bn_out)
        r = conv2d(self.depth, 3, 1, 1, name="conv1", precision=p, dtype=d)(r)
        r = PReLU(name="prelu")(r)
        r = conv2d(self.depth, 3, self.stride, 1, name="conv2", precision=p, dtype=d)(r)
        r = BatchNorm(name="bn2")(r, train, bn_out)
        if self.se:
            r = SqueezeExcite(self.depth, self.se_reduction, precision=p,
                              dtype=None if self.float32_stream else d, name="se")(r)
        if self.float32_stream:
            return r.astype(jnp.float32) + shortcut.astype(jnp.float32)
        return r + shortcut


def block_specs(units: Sequence[int], widths: Sequence[int], in_channels: int
                ) -> list[tuple[int, int, int]]:
    """(in_channels, depth, stride) of every unit, as the official get_blocks lists them."""
    specs = []
    c = in_channels
    for n, d in zip(units, widths):
        specs.append((c, d, 2))
        specs.extend((d, d, 1) for _ in range(n - 1))
        c = d
    return specs


class IRBody(nn.Module):
    """The official `body`: IR / IR-SE units `block_{i}` (see module doc)."""
    num_layers: int = 50
    mode: str = "ir_se"
    widths: tuple[int, ...] = OFFICIAL_WIDTHS
    units: tuple[int, ...] | None = None
    in_channels: int | None = None
    se_reduction: int = 16
    precision: Any = None
    dtype: Any = None
    remat: bool = False    # recompute each unit in the backward pass (only its input is kept)
    # the encoders' bfloat16 policy (models/encoders.py): stages (0-based) whose units compute
    # in float32 whatever `dtype`, and Bottleneck.float32_stream for the others
    float32_stages: tuple[int, ...] = ()
    float32_stream: bool = False

    @property
    def stage_units(self) -> tuple[int, ...]:
        units = tuple(self.units) if self.units is not None else official_units(self.num_layers)
        if len(units) != len(self.widths) or min(units) < 1:
            raise ValueError(f"units {units} and widths {tuple(self.widths)} must have the same "
                             f"length and at least one unit per stage.")
        return units

    @property
    def stage_ends(self) -> tuple[int, ...]:
        ends, total = [], 0
        for n in self.stage_units:
            total += n
            ends.append(total - 1)
        return tuple(ends)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, capture: Sequence[int] = ()):
        if self.mode not in MODES:
            raise ValueError(f"mode should be one of {MODES}, got {self.mode!r}.")
        in_c = self.in_channels if self.in_channels is not None else self.widths[0]
        specs = block_specs(self.stage_units, self.widths, in_c)
        capture = tuple(capture)
        bad = [i for i in capture if not 0 <= i < len(specs)]
        if bad:
            raise ValueError(f"capture indices {bad} out of range for a body of {len(specs)} "
                             f"units.")
        feats = {}
        # `train` (argument 2, counting the module) selects the BatchNorm mode: static
        unit = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        stage_of = [s for s, n in enumerate(self.stage_units) for _ in range(n)]
        if self.float32_stream:
            x = x.astype(jnp.float32)
        for i, (c_in, depth, stride) in enumerate(specs):
            dtype = None if stage_of[i] in self.float32_stages else self.dtype
            x = unit(c_in, depth, stride, se=self.mode == "ir_se",
                     se_reduction=self.se_reduction, precision=self.precision, dtype=dtype,
                     float32_stream=self.float32_stream, name=f"block_{i}")(x, train)
            if i in capture:
                feats[i] = x
        if capture:
            return x, [feats[i] for i in capture]
        return x
