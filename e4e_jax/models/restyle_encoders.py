"""The four ReStyle encoders (Alaluf et al. 2021), in Flax (NHWC).

Official source: yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975,
models/encoders/restyle_psp_encoders.py and restyle_e4e_encoders.py:

    BackboneEncoder                   ReStyle-pSp, IR-SE-50 backbone (faces)
    ResNetBackboneEncoder             ReStyle-pSp, ResNet-34 backbone (cars, churches, horses,
                                      AFHQ, toonify)
    ProgressiveBackboneEncoder        ReStyle-e4e, IR-SE-50 backbone, e4e's progressive deltas
    ResNetProgressiveBackboneEncoder  ReStyle-e4e, ResNet-34 backbone

All four read only the backbone's last feature map (1/16 of the input: 16x16 for 256x256 inputs,
12x16 for the cars' 192x256) and put every style head on it. A head is the GradualStyleBlock of
models/encoders.py built as the official `GradualStyleBlock(512, 512, spatial=16)`: log2(16) = 4
stride-2 3x3 convs with LeakyReLU(0.01), then an EqualLinear. spatial=16 is the size of that map
at the official 256-pixel input (the official transforms always resize to it); at a smaller input
(tests, the 32 px CPU demo's 2x2 map) a head has the convs that bring its map to 1x1
(models/encoders.head_num_pools, the rule Encoder4Editing's heads follow): 3x3 stride-2 convs
past 1x1 see one tap of nine, and three of them leave the codes almost independent of the input
at initialisation (output spread across a batch ~300x under e4e's at the demo's size). The
input has 6 channels: the target image and the current reconstruction, concatenated on the
channel axis (official `torch.cat([x, y_hat], dim=1)`; e4e_jax.inversion.restyle builds it).

    pSp variants:  codes[:, i] = styles_i(features)
    e4e variants:  codes[:, i] = styles_0(features) + (styles_i(features) if i <= stage else 0)

Backbones:
    IR-SE-50   input_layer = conv 3x3 (6 -> 64, no bias) -> BatchNorm -> PReLU, then the IR-SE
               body of models/irse.py (same units as e4e's encoder).
    ResNet-34  conv1 7x7 stride 2 pad 3 (6 -> 64, no bias) -> bn1 -> PReLU (official attribute
               `relu`, a PReLU(64)); NO max pool; then torchvision resnet34's layer1..layer4
               flattened into one `body` Sequential of 16 BasicBlocks (3, 4, 6, 3 units of width
               64, 128, 256, 512; the first unit of layers 2-4 strides 2 and has a downsample
               branch conv 1x1 + BatchNorm).

Calling convention (as models/encoders.py):
    codes = enc.apply(variables, x)                                   # BN running statistics
    codes, upd = enc.apply(variables, x, train=True, mutable=['batch_stats'])
    x: (N, H, W, input_nc) float32, (H, W) = enc.input_size, input_nc = 6 (checked at trace
    time; ValueError naming the expected shape otherwise).
    codes: (N, n_styles, style_dim) float32, *before* the previous iteration's W+ (or latent_avg)
    is added. The e4e variants also take `progressive_stage`: None (all deltas, official
    ProgressiveStage.Inference) or an int / traced int32 (stage k applies deltas 1..k; every head
    is evaluated and later deltas are masked, so the stage is data, not structure).

Variables (official key `encoder.X` -> Flax path):
    IR-SE-50: input_layer.{0,1,2}, body.{i}.*   -> as models/encoders.py / models/irse.py
    ResNet-34: conv1.weight                     -> conv1/kernel (7, 7, input_nc, 64)
               bn1.{weight,bias,running_*}      -> bn1/{scale,bias}, batch_stats bn1/{mean,var}
               relu.weight                      -> prelu/alpha
               body.{i}.conv{1,2} / bn{1,2}     -> body/block_{i}/conv{1,2} / bn{1,2}
               body.{i}.downsample.{0,1}        -> body/block_{i}/downsample_conv / downsample_bn
    heads:     styles.{i}.convs.{2k}            -> styles_{i}/convs_{k}/{kernel, bias}
               styles.{i}.linear.{weight,bias}  -> styles_{i}/linear/{kernel (raw), bias}

Sizes: the defaults are the official ones. `widths`, `units`, `style_dim` and `head_width` can be
made small for tests, as for the e4e encoders. Configs are built and validated by
e4e_jax.models.encoders.encoder_config (which hands the ReStyle types to `restyle_config` here)
and modules by its build_encoder, so an e4e model directory can hold any of these encoders.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.models.encoders import (
    RESTYLE_ENCODER_TYPES,
    GradualStyleBlock,
    add_deltas,
    body_float32_policy,
    head_num_pools,
    is_reduced,
)
from e4e_jax.models.irse import (
    MODES,
    OFFICIAL_WIDTHS,
    BatchNorm,
    IRBody,
    IRInputLayer,
    PReLU,
    conv2d,
    official_units,
)

INPUT_NC = 6            # official opts.input_nc: the image and the current reconstruction
HEAD_POOLS = 4          # official GradualStyleBlock(512, 512, spatial=16): int(log2(16)) convs
HEAD_STRIDE = 16        # the heads read the backbone's 1/16 map
RESNET34_UNITS = (3, 4, 6, 3)
RESNET_MODE = "resnet34"
PROGRESSIVE_TYPES = ("ProgressiveBackboneEncoder", "ResNetProgressiveBackboneEncoder")


def is_resnet(encoder_type: str) -> bool:
    """True for the ResNet-34 backbones (the official class names start with 'ResNet')."""
    return encoder_type.startswith("ResNet")


class ResNetBasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3(stride) -> bn1 -> ReLU -> conv3x3 -> bn2, plus the
    identity (or downsample = conv 1x1(stride) -> BatchNorm), then ReLU."""
    width: int
    stride: int = 1
    downsample: bool = False
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kw = dict(precision=self.precision, dtype=self.dtype)
        out = conv2d(self.width, 3, self.stride, 1, name="conv1", **kw)(x)
        out = nn.relu(BatchNorm(name="bn1")(out, train))
        out = conv2d(self.width, 3, 1, 1, name="conv2", **kw)(out)
        out = BatchNorm(name="bn2")(out, train)
        identity = x
        if self.downsample:
            identity = conv2d(self.width, 1, self.stride, 0, name="downsample_conv", **kw)(x)
            identity = BatchNorm(name="downsample_bn")(identity, train)
        return nn.relu(out + identity)


class ResNet34Body(nn.Module):
    """torchvision resnet34's layer1..layer4 as one flat sequence `block_{i}` (official `body`).

    Layer 1 keeps the stem's stride; layers 2-4 start with a stride-2 unit. A unit gets a
    downsample branch where torchvision builds one: stride != 1 or a width change."""
    widths: tuple[int, ...] = OFFICIAL_WIDTHS
    units: tuple[int, ...] = RESNET34_UNITS
    in_channels: int = 64
    precision: Any = None
    dtype: Any = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        # `train` (argument 2, counting the module) selects the BatchNorm mode: static
        block = nn.remat(ResNetBasicBlock, static_argnums=(2,)) if self.remat else ResNetBasicBlock
        c, i = self.in_channels, 0
        for layer, (n, width) in enumerate(zip(self.units, self.widths)):
            for b in range(n):
                stride = 2 if (b == 0 and layer > 0) else 1
                x = block(width, stride, stride != 1 or c != width, self.precision, self.dtype,
                          name=f"block_{i}")(x, train)
                c, i = width, i + 1
        return x


class _ReStyleBase(nn.Module):
    """Fields, backbone and heads shared by the four encoders."""
    n_styles: int = 18
    input_size: tuple[int, int] = (256, 256)
    num_layers: int = 50
    mode: str = "ir_se"
    widths: tuple[int, ...] = OFFICIAL_WIDTHS
    units: tuple[int, ...] | None = None
    style_dim: int = 512
    head_width: int | None = None      # None: style_dim, the official heads
    input_nc: int = INPUT_NC
    precision: Any = None
    dtype: Any = None
    remat: bool = False
    # with a reduced `dtype`: the IR-SE body stages that compute in float32, as the e4e / pSp
    # encoders' split (models/encoders.py; None: DEFAULT_FLOAT32_STAGES). The ResNet-34 backbone
    # has no split: it computes in `dtype` throughout.
    float32_stages: tuple[int, ...] | None = None

    resnet = False                     # class constant (not a field): the ResNet-34 backbone

    def _features(self, x: jax.Array, train: bool) -> jax.Array:
        """The backbone's last feature map, (N, H/16, W/16, widths[-1])."""
        want = tuple(int(s) for s in self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:3]) != want or x.shape[3] != self.input_nc:
            raise ValueError(
                f"{type(self).__name__} expects (N, {want[0]}, {want[1]}, {self.input_nc}) inputs "
                f"(NHWC in [-1, 1]: the image and the current reconstruction concatenated on the "
                f"channel axis), got {tuple(x.shape)}. e4e_jax.restyle.invert builds that input "
                f"from (N, {want[0]}, {want[1]}, 3) images.")
        kw = dict(precision=self.precision, dtype=self.dtype)
        if self.resnet:
            x = conv2d(self.widths[0], 7, 2, 3, name="conv1", **kw)(x)
            x = BatchNorm(name="bn1")(x, train)
            x = PReLU(name="prelu")(x)
            units = RESNET34_UNITS if self.units is None else tuple(self.units)
            return ResNet34Body(tuple(self.widths), units, self.widths[0], remat=self.remat,
                                name="body", **kw)(x, train)
        # 6 -> 64 channels: almost no FLOPs, and bfloat16 here rounds the images themselves
        x = IRInputLayer(self.widths[0], name="input_layer", precision=self.precision,
                         dtype=None if is_reduced(self.dtype) else self.dtype)(x, train)
        return IRBody(num_layers=self.num_layers, mode=self.mode, widths=tuple(self.widths),
                      units=None if self.units is None else tuple(self.units),
                      in_channels=self.widths[0], remat=self.remat, name="body", **kw,
                      **body_float32_policy(self.dtype, self.float32_stages))(x, train)

    def _head(self, i: int) -> GradualStyleBlock:
        # HEAD_POOLS at the official 256 and 192x256 inputs; fewer below (module docstring)
        return GradualStyleBlock(self.head_width or self.style_dim,
                                 head_num_pools(self.input_size, HEAD_STRIDE),
                                 features=self.style_dim, precision=self.precision,
                                 dtype=self.dtype, name=f"styles_{i}")


class BackboneEncoder(_ReStyleBase):
    """ReStyle-pSp (official restyle_psp_encoders.BackboneEncoder): one head per W+ row."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        feats = self._features(x, train)
        return jnp.stack([self._head(i)(feats) for i in range(self.n_styles)], axis=1)


class ResNetBackboneEncoder(BackboneEncoder):
    """ReStyle-pSp over ResNet-34 (official restyle_psp_encoders.ResNetBackboneEncoder)."""
    resnet = True


class ProgressiveBackboneEncoder(_ReStyleBase):
    """ReStyle-e4e (official restyle_e4e_encoders.ProgressiveBackboneEncoder): w = styles_0
    repeated, plus the deltas of heads 1.. up to the progressive stage."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 progressive_stage: Any = None) -> jax.Array:
        feats = self._features(x, train)
        w0 = self._head(0)(feats)
        deltas = [self._head(i)(feats) for i in range(1, self.n_styles)]
        return add_deltas(w0, deltas, self.n_styles, progressive_stage)


class ResNetProgressiveBackboneEncoder(ProgressiveBackboneEncoder):
    """ReStyle-e4e over ResNet-34 (official
    restyle_e4e_encoders.ResNetProgressiveBackboneEncoder)."""
    resnet = True


CLASSES = {
    "BackboneEncoder": BackboneEncoder,
    "ResNetBackboneEncoder": ResNetBackboneEncoder,
    "ProgressiveBackboneEncoder": ProgressiveBackboneEncoder,
    "ResNetProgressiveBackboneEncoder": ResNetProgressiveBackboneEncoder,
}
assert tuple(CLASSES) == tuple(RESTYLE_ENCODER_TYPES), "models/encoders.py lists other types"


def restyle_config(encoder_type: str, n_styles: int = 18, input_size: Sequence[int] = (256, 256),
                   num_layers: int | None = None, mode: str | None = None,
                   widths: Sequence[int] = OFFICIAL_WIDTHS, units: Sequence[int] | None = None,
                   style_dim: int = 512, head_width: int | None = None,
                   input_nc: int | None = None) -> dict:
    """The validated, JSON-able config of a ReStyle encoder (e4e_jax.models.encoders.
    encoder_config calls this for the ReStyle types; use that one).

    IR-SE types: num_layers 50 / 100 / 152 (default 50), mode 'ir' / 'ir_se' (default 'ir_se',
    what the official code builds). ResNet types: num_layers 34 and mode 'resnet34' (the only
    values). input_nc: 6 (default; the official input_nc). ValueError on anything else."""
    if encoder_type not in CLASSES:
        raise ValueError(f"{encoder_type!r} is not a ReStyle encoder type; expected one of "
                         f"{', '.join(CLASSES)}.")
    if is_resnet(encoder_type):
        num_layers = 34 if num_layers is None else int(num_layers)
        mode = RESNET_MODE if mode is None else mode
        if num_layers != 34 or mode != RESNET_MODE:
            raise ValueError(f"{encoder_type} has a ResNet-34 backbone: num_layers must be 34 and "
                             f"mode {RESNET_MODE!r}, got {num_layers} and {mode!r}.")
    else:
        num_layers = 50 if num_layers is None else int(num_layers)
        mode = "ir_se" if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode should be 'ir' or 'ir_se', got {mode!r}.")
        if units is None:
            official_units(num_layers)  # ValueError for other depths
    input_nc = INPUT_NC if input_nc is None else int(input_nc)
    if input_nc != INPUT_NC:
        raise ValueError(f"ReStyle encoders take {INPUT_NC} input channels (the image and the "
                         f"current reconstruction), got input_nc={input_nc}.")
    input_size = [int(s) for s in input_size]
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"input_size must be (H, W) with both sides >= 16, got {input_size}.")
    # the 4 stride-2 convs of a head bring at most 16x16 features (a 256-pixel side) to 1x1
    if math.ceil(max(input_size) / HEAD_STRIDE) > 2 ** HEAD_POOLS:
        raise ValueError(f"ReStyle heads reduce features of at most {2 ** HEAD_POOLS}x"
                         f"{2 ** HEAD_POOLS} (inputs up to 256 pixels a side), got input_size "
                         f"{input_size}.")
    widths = [int(w) for w in widths]
    if len(widths) != 4:
        raise ValueError(f"widths must list the 4 stage widths, got {widths}.")
    if units is not None:
        units = [int(u) for u in units]
        if len(units) != 4 or min(units) < 1:
            raise ValueError(f"units must give 4 stages of >= 1 unit, got {units}.")
    if head_width is not None and int(head_width) < 1:
        raise ValueError(f"head_width must be a positive width or None, got {head_width}.")
    if int(n_styles) < 1:
        raise ValueError(f"n_styles must be >= 1, got {n_styles}.")
    return {"encoder_type": encoder_type, "n_styles": int(n_styles), "input_size": input_size,
            "num_layers": num_layers, "mode": mode, "widths": widths, "units": units,
            "style_dim": int(style_dim),
            "head_width": None if head_width is None else int(head_width), "input_nc": input_nc}


def build_restyle_encoder(config: Mapping[str, Any], precision: Any = None, dtype: Any = None,
                          remat: bool = False) -> nn.Module:
    """The Flax module of a validated ReStyle config (called by encoders.build_encoder).

    precision / dtype: module fields from e4e_jax.core.precision.module_kwargs."""
    cls = CLASSES[config["encoder_type"]]
    return cls(n_styles=config["n_styles"], input_size=tuple(config["input_size"]),
               num_layers=config["num_layers"], mode=config["mode"],
               widths=tuple(config["widths"]),
               units=None if config["units"] is None else tuple(config["units"]),
               style_dim=config["style_dim"], head_width=config["head_width"],
               input_nc=config["input_nc"], remat=bool(remat), precision=precision, dtype=dtype)
