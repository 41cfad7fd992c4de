"""The three encoders of the official code (models/encoders/psp_encoders.py), in Flax (NHWC).

    Encoder4Editing         e4e: head 0 predicts w, heads 1..n-1 predict deltas added to the
                            repeated w, gated by the progressive stage.
    GradualStyleEncoder     pSp (the paper's configuration A): n independent heads, one per W+ row.
    SingleStyleCodeEncoder  official BackboneEncoderUsingLastLayerIntoW: backbone, global average
                            pool, one equalized linear layer, the single code repeated n times.

The four ReStyle encoders (6 input channels, heads on the last feature map) live in
models/restyle_encoders.py; encoder_config / build_encoder / encoder_shapes / init_encoder here
serve them too (RESTYLE_ENCODER_TYPES), so every model directory is built through this module.

All three share the IR-SE-50 backbone of models/irse.py (`input_layer`, `body`). The two
pyramid encoders read the body's features after blocks 6, 20 and 23 (c1 at 1/4, c2 at 1/8, c3 at
1/16 of the input size, 128 / 256 / 512 channels) and build the FPN levels

    p2 = upsample_bilinear(c3, size(c2), align_corners=True) + latlayer1(c2)
    p1 = upsample_bilinear(p2, size(c1), align_corners=True) + latlayer2(c1)

Heads 0..2 (coarse) read c3, heads 3..6 (middle) p2, heads 7.. (fine) p1. Every head is a
GradualStyleBlock: stride-2 3x3 convs + LeakyReLU(0.01) down to 1x1, then an EqualLinear.

Calling convention (all encoders):
    codes = enc.apply(variables, x)                               # inference, BN running stats
    codes, upd = enc.apply(variables, x, train=True, mutable=['batch_stats'])
    x: (N, H, W, 3) float32 in [-1, 1], (H, W) = enc.input_size (checked at trace time).
    codes: (N, n_styles, style_dim), *before* latent_avg (the pSp wrapper adds it).
Encoder4Editing also takes `progressive_stage`: None (all deltas, = ProgressiveStage.Inference)
or an int / int32 array; stage k applies deltas 1..min(k, n_styles - 1). The stage is data, not a
static argument: every head is evaluated and the deltas of later stages are masked out, so a jitted
training step compiled once serves all 19 stages (the masked heads get exactly zero gradient, as in
the official code where they are not evaluated).

Variables (official key `encoder.X` -> Flax path):
    input_layer.{0,1,2}             -> input_layer/{conv, bn, prelu}
    body.{i}.*                      -> body/block_{i}/*      (see models/irse.py)
    styles.{i}.convs.{2k}           -> styles_{i}/convs_{k}/{kernel (3, 3, C, C), bias}
    styles.{i}.linear.{weight,bias} -> styles_{i}/linear/{kernel (C, C) raw, bias}
    latlayer1 / latlayer2           -> latlayer1 / latlayer2 /{kernel (1, 1, Cin, C), bias}
    linear (single-code encoder)    -> linear/{kernel raw, bias}
"raw" EqualLinear weights are stored like the official checkpoint and scaled by 1/sqrt(fan_in)
at call time; `init` draws them from N(0, 1) like the official EqualLinear.

Sizes: defaults are the official ones (IR-SE-50, widths 64/128/256/512, style_dim 512). For tests
and the CPU demo, `widths`, `units`, `style_dim` and `head_width` (the width of the style heads'
convs; official = style_dim, the heads still output style_dim) can be made small; the head depth
follows the input size (log2 of the pyramid level's longer side: 4, 5, 6 convs for 256x256 and
for the cars' 192x256 input, as the official heads built for spatial 16, 32, 64).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.ops import upsample_bilinear
from e4e_jax.models.irse import OFFICIAL_WIDTHS, IRBody, IRInputLayer, conv2d
from e4e_jax.models.stylegan2 import EqualDense as EqualLinear  # same layer as StyleGAN2's

ENCODER_TYPES = ("Encoder4Editing", "GradualStyleEncoder", "SingleStyleCodeEncoder")
# The ReStyle encoders of models/restyle_encoders.py. That module builds on this one, so it is
# imported on first use (encoder_config / build_encoder) rather than at the top: a model directory
# names its encoder type and e4e_jax.load_encoder builds any of them through this module.
RESTYLE_ENCODER_TYPES = ("BackboneEncoder", "ResNetBackboneEncoder", "ProgressiveBackboneEncoder",
                         "ResNetProgressiveBackboneEncoder")
ALL_ENCODER_TYPES = ENCODER_TYPES + RESTYLE_ENCODER_TYPES
COARSE_IND = 3
MIDDLE_IND = 7
INFERENCE_STAGE = 18
# The encoders' reduced-precision split (used only when `dtype` is bfloat16): the IR-SE body's
# third stage (14 of IR-SE-50's 24 units, 1/8 of the input size) computes in float32, as do the
# input layer and, in the other units, the BatchNorm outputs, the SE gate and the residual sum;
# the other stages' convolutions, the FPN lateral layers and the style heads' convolutions
# compute in bfloat16. On the official e4e fixture the longest chain of units in bfloat16 cost
# the most: e4e inversion's bfloat16-vs-float32 PSNR is 22.9 dB with everything in bfloat16,
# 28.4 with every stage in bfloat16 but the float32 parts above, 32.1 with this split (62 % of
# the fixture encoder's FLOPs in bfloat16, 76 % of the official 18-row e4e's; RESULTS.md).
DEFAULT_FLOAT32_STAGES = (2,)


def is_reduced(dtype: Any) -> bool:
    """True for a compute dtype other than float32 (None means float32)."""
    return dtype is not None and jnp.dtype(dtype) != jnp.float32


def body_float32_policy(dtype: Any, float32_stages: Sequence[int] | None) -> dict:
    """IRBody's float32 fields for an encoder computing in `dtype`: none in float32 (the
    unchanged path); under a reduced dtype, `float32_stages` (None: DEFAULT_FLOAT32_STAGES; ():
    every stage in `dtype`) and the float32 residual stream. Shared by the e4e / pSp encoders
    and ReStyle's IR-SE encoders."""
    if not is_reduced(dtype):
        return {}
    stages = DEFAULT_FLOAT32_STAGES if float32_stages is None else float32_stages
    return {"float32_stages": tuple(int(s) for s in stages), "float32_stream": True}


def head_num_pools(input_size: Sequence[int], level_stride: int) -> int:
    """Stride-2 convs that bring a pyramid level (input / level_stride) down to 1x1."""
    side = max(-(-int(s) // level_stride) for s in input_size)
    return max(1, math.ceil(math.log2(side))) if side > 1 else 1


class GradualStyleBlock(nn.Module):
    """Stride-2 convs of width `out_c` down to 1x1, then EqualLinear to `features` (= out_c in
    the official model; smaller heads for tiny models keep the style_dim output)."""
    out_c: int
    num_pools: int
    features: int | None = None
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_c = x.shape[-1]
        for k in range(self.num_pools):
            x = conv2d(self.out_c, 3, 2, 1, use_bias=True, name=f"convs_{k}",
                       in_channels=in_c if k == 0 else self.out_c, precision=self.precision,
                       dtype=self.dtype)(x)
            x = nn.leaky_relu(x, 0.01)
        if x.shape[1:3] != (1, 1):
            raise ValueError(f"GradualStyleBlock: feature map is {x.shape[1:3]} after "
                             f"{self.num_pools} stride-2 convs, expected (1, 1); the input image "
                             f"is larger than the encoder's input size.")
        # the W+ codes are float32 whatever the compute dtype (precision.FLOAT32_PARTS)
        x = x.reshape(x.shape[0], self.out_c).astype(jnp.float32)
        return EqualLinear(self.features or self.out_c, precision=self.precision,
                           name="linear")(x)


class _Backbone(nn.Module):
    """Fields and the shared backbone of the three encoders."""
    n_styles: int = 18
    input_size: tuple[int, int] = (256, 256)
    num_layers: int = 50
    mode: str = "ir_se"
    widths: tuple[int, ...] = OFFICIAL_WIDTHS
    units: tuple[int, ...] | None = None
    style_dim: int = 512
    head_width: int | None = None      # None: style_dim, the official heads
    precision: Any = None
    dtype: Any = None      # compute dtype of the activations (None: float32)
    remat: bool = False    # recompute each IR unit in the backward pass
    # with a reduced `dtype`: the IR body stages (0-based) that compute in float32 (None:
    # DEFAULT_FLOAT32_STAGES; () puts every stage in `dtype`)
    float32_stages: tuple[int, ...] | None = None

    @property
    def reduced(self) -> bool:
        return is_reduced(self.dtype)

    def _check_input(self, x: jax.Array) -> None:
        want = tuple(int(s) for s in self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:3]) != want or x.shape[3] != 3:
            raise ValueError(f"{type(self).__name__} expects images of shape (N, {want[0]}, "
                             f"{want[1]}, 3) (NHWC in [-1, 1]), got {tuple(x.shape)}. Resize the "
                             f"images to the model's input size first (e4e_jax.data.image_io).")

    def _body(self) -> IRBody:
        return IRBody(num_layers=self.num_layers, mode=self.mode, widths=tuple(self.widths),
                      units=None if self.units is None else tuple(self.units),
                      in_channels=self.widths[0], precision=self.precision, dtype=self.dtype,
                      remat=self.remat, name="body", **self._body_policy())

    def _body_policy(self) -> dict:
        """IRBody's float32 parts: none in float32 (the unchanged path), else the split above."""
        return body_float32_policy(self.dtype, self.float32_stages)

    def _input_layer(self, x, train):
        self._check_input(x)
        # 3 -> 64 channels: almost no FLOPs, and bfloat16 here rounds the image itself
        return IRInputLayer(self.widths[0], precision=self.precision,
                            dtype=None if self.reduced else self.dtype,
                            name="input_layer")(x, train)

    def _pyramid_inputs(self, x, train):
        x = self._input_layer(x, train)
        body = self._body()
        ends = body.stage_ends
        _, (c1, c2, c3) = body(x, train, capture=(ends[1], ends[2], ends[3]))
        return c1, c2, c3

    def _head(self, i: int) -> GradualStyleBlock:
        stride = 16 if i < COARSE_IND else 8 if i < MIDDLE_IND else 4
        return GradualStyleBlock(self.head_width or self.style_dim,
                                 head_num_pools(self.input_size, stride),
                                 features=self.style_dim, precision=self.precision,
                                 dtype=self.dtype, name=f"styles_{i}")

    def _fpn(self, c1, c2, c3, levels: int):
        """[c3, p2, p1][:levels]; the lateral 1x1 convs map to c3's width."""
        feats = [c3]
        if levels > 1:
            lat = conv2d(c3.shape[-1], 1, use_bias=True, name="latlayer1",
                         in_channels=c2.shape[-1], precision=self.precision,
                         dtype=self.dtype)(c2)
            feats.append(upsample_bilinear(c3, c2.shape[1:3], precision=self.precision) + lat)
        if levels > 2:
            lat = conv2d(c3.shape[-1], 1, use_bias=True, name="latlayer2",
                         in_channels=c1.shape[-1], precision=self.precision,
                         dtype=self.dtype)(c1)
            feats.append(upsample_bilinear(feats[1], c1.shape[1:3], precision=self.precision)
                         + lat)
        return feats

    def _level(self, i: int) -> int:
        return 0 if i < COARSE_IND else 1 if i < MIDDLE_IND else 2


class GradualStyleEncoder(_Backbone):
    """pSp encoder: codes[:, i] = styles_i(pyramid level of i)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c1, c2, c3 = self._pyramid_inputs(x, train)
        # the official module always owns both lateral layers, even for n_styles <= 7
        feats = self._fpn(c1, c2, c3, 3)
        codes = [self._head(i)(feats[self._level(i)]) for i in range(self.n_styles)]
        return jnp.stack(codes, axis=1)


class Encoder4Editing(_Backbone):
    """e4e encoder: w = styles_0(c3) repeated, plus the deltas of the active progressive stage."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 progressive_stage: Any = None) -> jax.Array:
        c1, c2, c3 = self._pyramid_inputs(x, train)
        feats = self._fpn(c1, c2, c3, 3)
        w0 = self._head(0)(c3)
        deltas = [self._head(i)(feats[self._level(i)]) for i in range(1, self.n_styles)]
        return add_deltas(w0, deltas, self.n_styles, progressive_stage)


def add_deltas(w0: jax.Array, deltas: Sequence[jax.Array], n_styles: int,
               progressive_stage: Any = None) -> jax.Array:
    """e4e's codes: w0 (N, S) repeated n_styles times, row i (1 <= i <= stage) plus deltas[i - 1]
    (N, S). progressive_stage None applies every delta (official ProgressiveStage.Inference);
    an int / int32 array k applies deltas 1..k (official `range(1, min(stage + 1, n))`). Shared by
    Encoder4Editing and the ReStyle-e4e encoders (models/restyle_encoders.py)."""
    w = jnp.broadcast_to(w0[:, None, :], (w0.shape[0], n_styles, w0.shape[-1]))
    if n_styles == 1:
        return w
    deltas = jnp.stack(list(deltas), axis=1)
    if progressive_stage is None:
        return w.at[:, 1:].add(deltas)
    stage = jnp.asarray(progressive_stage, jnp.int32)
    active = jnp.arange(1, n_styles) <= stage
    # where, not a multiply: a masked head's value never reaches the output
    return w.at[:, 1:].add(jnp.where(active[None, :, None], deltas, 0.0))


class SingleStyleCodeEncoder(_Backbone):
    """Official BackboneEncoderUsingLastLayerIntoW: one code for every W+ row."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self._input_layer(x, train)
        x = self._body()(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # W output: float32
        w = EqualLinear(self.style_dim, precision=self.precision, name="linear")(x)
        return jnp.broadcast_to(w[:, None, :], (w.shape[0], self.n_styles, w.shape[-1]))


_CLASSES = {
    "Encoder4Editing": Encoder4Editing,
    "GradualStyleEncoder": GradualStyleEncoder,
    "SingleStyleCodeEncoder": SingleStyleCodeEncoder,
}

CONFIG_KEYS = ("encoder_type", "n_styles", "input_size", "num_layers", "mode", "widths", "units",
               "style_dim", "head_width", "input_nc")


def _restyle():
    # imported here, not at the top: models/restyle_encoders.py imports this module
    from e4e_jax.models import restyle_encoders
    return restyle_encoders


def encoder_config(encoder_type: str = "Encoder4Editing", n_styles: int = 18,
                   input_size: Sequence[int] = (256, 256), num_layers: int | None = None,
                   mode: str | None = None, widths: Sequence[int] = OFFICIAL_WIDTHS,
                   units: Sequence[int] | None = None, style_dim: int = 512,
                   head_width: int | None = None, input_nc: int | None = None) -> dict:
    """A JSON-able encoder config (what model directories store), validated.

    num_layers / mode default to 50 / 'ir_se'. The ReStyle types (RESTYLE_ENCODER_TYPES) are
    validated by models/restyle_encoders.restyle_config (their config also holds input_nc = 6;
    ResNet types num_layers 34, mode 'resnet34'). input_nc: the e4e / pSp encoders take 3."""
    if encoder_type in RESTYLE_ENCODER_TYPES:
        return _restyle().restyle_config(encoder_type, n_styles, input_size, num_layers, mode,
                                         widths, units, style_dim, head_width, input_nc)
    if encoder_type not in ENCODER_TYPES:
        raise ValueError(f"{encoder_type!r} is not a valid encoder type; expected one of "
                         f"{', '.join(ALL_ENCODER_TYPES)}.")
    if input_nc not in (None, 3):
        raise ValueError(f"{encoder_type} takes 3 input channels, got input_nc={input_nc}.")
    num_layers = 50 if num_layers is None else num_layers
    mode = "ir_se" if mode is None else mode
    if mode not in ("ir", "ir_se"):
        raise ValueError(f"mode should be 'ir' or 'ir_se', got {mode!r}.")
    if units is None and num_layers not in (50, 100, 152):
        raise ValueError(f"num_layers should be 50, 100 or 152, got {num_layers}.")
    input_size = [int(s) for s in input_size]
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"input_size must be (H, W) with both sides >= 16, got {input_size}.")
    widths = [int(w) for w in widths]
    if len(widths) != 4:
        raise ValueError(f"widths must list the 4 stage widths, got {widths}.")
    if units is not None:
        units = [int(u) for u in units]
        if len(units) != 4 or min(units) < 1:
            raise ValueError(f"units must give 4 stages of >= 1 unit, got {units}.")
    if head_width is not None and int(head_width) < 1:
        raise ValueError(f"head_width must be a positive width or None, got {head_width}.")
    return {"encoder_type": encoder_type, "n_styles": int(n_styles), "input_size": input_size,
            "num_layers": int(num_layers), "mode": mode, "widths": widths, "units": units,
            "style_dim": int(style_dim),
            "head_width": None if head_width is None else int(head_width)}


def build_encoder(config: Mapping[str, Any], precision: Any = None, dtype: Any = None,
                  remat: bool = False) -> nn.Module:
    """The Flax encoder module described by an encoder config.

    precision / dtype: see e4e_jax.core.precision (None: JAX's default precision, float32).
    remat: recompute each IR unit in the backward pass (training memory)."""
    from e4e_jax.core.precision import module_kwargs
    cfg = encoder_config(**{k: config[k] for k in CONFIG_KEYS if k in config})
    if cfg["encoder_type"] in RESTYLE_ENCODER_TYPES:
        return _restyle().build_restyle_encoder(cfg, remat=remat,
                                                **module_kwargs(dtype, precision))
    cls = _CLASSES[cfg["encoder_type"]]
    return cls(n_styles=cfg["n_styles"], input_size=tuple(cfg["input_size"]),
               num_layers=cfg["num_layers"], mode=cfg["mode"], widths=tuple(cfg["widths"]),
               units=None if cfg["units"] is None else tuple(cfg["units"]),
               style_dim=cfg["style_dim"], head_width=cfg["head_width"], remat=bool(remat),
               **module_kwargs(dtype, precision))


def init_encoder(rng: jax.Array, config: Mapping[str, Any]) -> dict:
    """Random encoder variables {'params', 'batch_stats'} with the official init semantics.

    torch defaults for Conv2d (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), BatchNorm
    (scale 1, bias 0, running mean 0, var 1) and PReLU (0.25); EqualLinear weights N(0, 1) and
    bias 0. The values are drawn on the host with numpy, seeded from `rng`: the same
    distributions as `module.init` without compiling a threefry graph per parameter (which takes
    tens of seconds on CPU even for tiny models).
    """
    shapes = encoder_shapes(config)
    seed = [int(s) for s in np.asarray(jax.random.key_data(rng)).ravel()]
    gen = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return gen.uniform(-bound, bound, shape).astype(np.float32)

    def fill(collection, node, path):
        out = {}
        for name, leaf in node.items():
            if isinstance(leaf, Mapping):
                out[name] = fill(collection, leaf, path + (name,))
                continue
            shape = tuple(leaf.shape)
            parent = path[-1] if path else ""
            if collection == "batch_stats":
                out[name] = (np.zeros if name == "mean" else np.ones)(shape, np.float32)
            elif name == "scale":
                out[name] = np.ones(shape, np.float32)
            elif name == "alpha":
                out[name] = np.full(shape, 0.25, np.float32)
            elif name == "kernel" and parent == "linear":
                out[name] = gen.standard_normal(shape).astype(np.float32)
            elif name == "kernel":
                out[name] = uniform(shape, int(np.prod(shape[:-1])))
            elif name == "bias" and ("scale" in node or parent == "linear"):
                out[name] = np.zeros(shape, np.float32)
            elif name == "bias":
                out[name] = uniform(shape, int(np.prod(node["kernel"].shape[:-1])))
            else:
                raise KeyError(f"no init rule for {'/'.join(path + (name,))}")
        return out

    return {c: fill(c, shapes[c], ()) for c in ("params", "batch_stats")}


def encoder_shapes(config: Mapping[str, Any]) -> dict:
    """The variable tree of an encoder as shape structs (no compute, no memory)."""
    module = build_encoder(config)
    h, w = config["input_size"]
    # ReStyle encoders take 6 channels (config "input_nc"); the e4e / pSp encoders 3
    x = jax.ShapeDtypeStruct((1, int(h), int(w), int(config.get("input_nc") or 3)), jnp.float32)
    return dict(jax.eval_shape(module.init, jax.random.PRNGKey(0), x))
