"""torchvision ResNet-50 (without the fc head) and the MoCo v2 feature extractor of `MocoLoss`.

The official similarity loss for non-face domains (criteria/moco_loss.py) feeds images in [-1, 1]
(no ImageNet normalisation) through `F.interpolate(x, size=224)` (PyTorch 'nearest'), the
ResNet-50 of a MoCo v2 checkpoint truncated before its fc layer (ending with the global average
pool), and l2-normalises the pooled 2048-d features.

Variables (flax; BatchNorm in inference mode, torch semantics, from models/irse.py):
    params/conv1/kernel (7, 7, 3, 64)              params/bn1/{scale, bias}
    params/layer{l}_{b}/conv{1,2,3}/kernel         params/layer{l}_{b}/bn{1,2,3}/{scale, bias}
    params/layer{l}_{b}/downsample_conv/kernel     params/layer{l}_{b}/downsample_bn/{scale, bias}
    batch_stats/.../{mean, var}                    (torch running_mean, running_var)
The names mirror torchvision's `layer{l}.{b}.conv1` etc.; `downsample.0` / `downsample.1` become
`downsample_conv` / `downsample_bn`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.irse import BatchNorm, conv2d

RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
MOCO_SIZE = 224


class ResNetBottleneck(nn.Module):
    """torchvision Bottleneck (v1.5: the stride sits on the 3x3 convolution)."""
    width: int
    stride: int = 1
    downsample: bool = False
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(precision=self.precision, dtype=self.dtype)
        out = conv2d(self.width, 1, name="conv1", **kw)(x)
        out = nn.relu(BatchNorm(name="bn1")(out))
        out = conv2d(self.width, 3, self.stride, 1, name="conv2", **kw)(out)
        out = nn.relu(BatchNorm(name="bn2")(out))
        out = conv2d(self.width * EXPANSION, 1, name="conv3", **kw)(out)
        out = BatchNorm(name="bn3")(out)
        identity = x
        if self.downsample:
            identity = conv2d(self.width * EXPANSION, 1, self.stride, name="downsample_conv",
                              **kw)(x)
            identity = BatchNorm(name="downsample_bn")(identity)
        return nn.relu(out + identity)


class ResNet(nn.Module):
    """torchvision ResNet up to and including the global average pool: (N, H, W, 3) -> (N, C)."""
    blocks: Sequence[int] = RESNET50_BLOCKS
    widths: Sequence[int] = RESNET50_WIDTHS
    stem_width: int = 64
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = conv2d(self.stem_width, 7, 2, 3, name="conv1", precision=self.precision,
                   dtype=self.dtype)(x)
        x = nn.relu(BatchNorm(name="bn1")(x))
        # torch pads max-pooling with -inf, as flax does
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        c = self.stem_width
        for layer, (n, width) in enumerate(zip(self.blocks, self.widths), start=1):
            for b in range(n):
                stride = 2 if (b == 0 and layer > 1) else 1
                down = b == 0 and (stride != 1 or c != width * EXPANSION)
                x = ResNetBottleneck(width, stride, down, self.precision, self.dtype,
                                     name=f"layer{layer}_{b}")(x)
                c = width * EXPANSION
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # pooled features: float32


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of PyTorch's 'nearest' resize (size given, no scale_factor).

    ATen computes the scale in float32 and floors `dst * scale` in float32, which is not always
    floor(dst * in / out) in exact arithmetic; this mirrors the float32 evaluation.
    """
    if in_size == out_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def resize_nearest(x: jax.Array, out_hw: int | Sequence[int]) -> jax.Array:
    """F.interpolate(x, size=out_hw) (mode 'nearest') on an NHWC array."""
    if isinstance(out_hw, int):
        out_hw = (out_hw, out_hw)
    rows = nearest_indices(x.shape[-3], int(out_hw[0]))
    cols = nearest_indices(x.shape[-2], int(out_hw[1]))
    return jnp.take(jnp.take(x, rows, axis=-3), cols, axis=-2)


def l2_normalize(x: jax.Array, eps: float = 0.0) -> jax.Array:
    """x / max(||x||, eps) over the last axis (F.normalize for eps=1e-12, ArcFace's l2_norm for 0).

    A zero vector maps to 0 (F.normalize) rather than NaN, and its gradient stays finite.
    """
    s = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = s > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)
    if eps > 0:
        return x / jnp.maximum(norm, eps)
    return x / jnp.where(positive, norm, 1.0)


class MocoFeatures(nn.Module):
    """MocoLoss.extract_feats: nearest resize to 224, ResNet-50 pooled features, l2-normalised.

    `__call__(images)` takes NHWC images in [-1, 1] of any size; `embed(images)` skips the resize.
    """
    blocks: Sequence[int] = RESNET50_BLOCKS
    widths: Sequence[int] = RESNET50_WIDTHS
    stem_width: int = 64
    input_size: int = MOCO_SIZE
    precision: Any = None
    dtype: Any = None

    def setup(self):
        self.resnet = ResNet(tuple(self.blocks), tuple(self.widths), self.stem_width,
                             self.precision, self.dtype)

    def embed(self, images: jax.Array) -> jax.Array:
        return l2_normalize(self.resnet(images), eps=1e-12)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.embed(resize_nearest(images, self.input_size))

    @property
    def feature_dim(self) -> int:
        return self.widths[-1] * EXPANSION
