"""The FID Inception-v3 of pytorch-fid (`InceptionV3([3])` built by `fid_inception_v3()`), NHWC.

This is the network FID numbers are reported with: the TensorFlow inception-2015-12-05 graph as
ported by pytorch-fid, i.e. torchvision's Inception3 with the blocks pytorch-fid patches
(`FIDInceptionA` for Mixed_5b/5c/5d, `FIDInceptionC` for Mixed_6b..6e, `FIDInceptionE_1` for
Mixed_7b, `FIDInceptionE_2` for Mixed_7c). Only the path to the 2048-d pool3 features is built.

Input: images (N, H, W, 3) in [0, 1], as pytorch-fid's model expects. With `resize_input` they
are resized to 299x299 (PyTorch bilinear, align_corners=False, no antialiasing), and with
`normalize_input` mapped to [-1, 1] by 2x - 1, in that order, as the official forward does.

Every conv unit is BasicConv2d: Conv2d without bias, BatchNorm2d(eps=1e-3) in inference mode,
ReLU. The differences from torchvision's Inception3 that matter for the numbers:
- the pool branches of Mixed_5*, Mixed_6b..6e and Mixed_7b average over 3x3 windows without
  counting the zero padding (count_include_pad=False, TensorFlow's behaviour);
- the pool branch of Mixed_7c is a 3x3 *max* pool (stride 1, padding 1).

Variables (names mirror the official state-dict keys, `<unit>.conv.weight` -> `<unit>/conv/kernel`):
    params/<unit>/conv/kernel (kh, kw, in, out)     params/<unit>/bn/{scale, bias}
    batch_stats/<unit>/bn/{mean, var}
with <unit> e.g. Conv2d_1a_3x3, Mixed_5b/branch1x1, Mixed_7c/branch3x3dbl_3b.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.core.ops import upsample_bilinear
from e4e_jax.models.irse import BatchNorm

FID_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BasicConv2d(nn.Module):
    features: int
    kernel: int | Sequence[int]
    stride: int = 1
    padding: int | Sequence[int] = 0
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                    dtype=self.dtype, name="conv")(x)
        return nn.relu(BatchNorm(epsilon=BN_EPS, name="bn")(x))


def avg_pool_3x3_no_pad_count(x: jax.Array) -> jax.Array:
    """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(3, stride=2) / F.max_pool2d(x, 3, stride=2): no padding, floor mode."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """FIDInceptionA (Mixed_5b/5c/5d)."""
    pool_features: int
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, dtype=self.dtype, **k)  # noqa: E731
        b1 = conv(64, 1, name="branch1x1")(x)
        b5 = conv(48, 1, name="branch5x5_1")(x)
        b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, 1, name="branch_pool")(avg_pool_3x3_no_pad_count(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """torchvision InceptionB (Mixed_6a), unpatched."""
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, dtype=self.dtype, **k)  # noqa: E731
        b3 = conv(384, 3, stride=2, name="branch3x3")(x)
        bd = conv(64, 1, name="branch3x3dbl_1")(x)
        bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """FIDInceptionC (Mixed_6b..6e)."""
    channels_7x7: int
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, dtype=self.dtype, **k)  # noqa: E731
        c7 = self.channels_7x7
        b1 = conv(192, 1, name="branch1x1")(x)
        b7 = conv(c7, 1, name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, 1, name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, 1, name="branch_pool")(avg_pool_3x3_no_pad_count(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """torchvision InceptionD (Mixed_7a), unpatched."""
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, dtype=self.dtype, **k)  # noqa: E731
        b3 = conv(192, 1, name="branch3x3_1")(x)
        b3 = conv(320, 3, stride=2, name="branch3x3_2")(b3)
        b7 = conv(192, 1, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (Mixed_7b, average pool) / FIDInceptionE_2 (Mixed_7c, max pool)."""
    max_pool_branch: bool
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda *a, **k: BasicConv2d(*a, precision=self.precision, dtype=self.dtype, **k)  # noqa: E731
        b1 = conv(320, 1, name="branch1x1")(x)
        b3 = conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = conv(448, 1, name="branch3x3dbl_1")(x)
        bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                             axis=-1)
        if self.max_pool_branch:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = avg_pool_3x3_no_pad_count(x)
        bp = conv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3([3]): images in [0, 1] (N, H, W, 3) -> pool3 features (N, 2048)."""
    resize_input: bool = True
    normalize_input: bool = True
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FID Inception expects NHWC RGB images (N, H, W, 3), got shape "
                             f"{tuple(x.shape)}.")
        x = x.astype(jnp.float32)
        if self.resize_input:
            x = upsample_bilinear(x, (FID_SIZE, FID_SIZE), align_corners=False,
                                  precision=self.precision)
        if self.normalize_input:
            x = 2 * x - 1
        p, d = self.precision, self.dtype
        # block 0
        x = BasicConv2d(32, 3, stride=2, precision=p, dtype=d, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, precision=p, dtype=d, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, precision=p, dtype=d, name="Conv2d_2b_3x3")(x)
        x = max_pool_3x3_s2(x)
        # block 1
        x = BasicConv2d(80, 1, precision=p, dtype=d, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, precision=p, dtype=d, name="Conv2d_4a_3x3")(x)
        x = max_pool_3x3_s2(x)
        # block 2
        x = InceptionA(32, precision=p, dtype=d, name="Mixed_5b")(x)
        x = InceptionA(64, precision=p, dtype=d, name="Mixed_5c")(x)
        x = InceptionA(64, precision=p, dtype=d, name="Mixed_5d")(x)
        x = InceptionB(precision=p, dtype=d, name="Mixed_6a")(x)
        x = InceptionC(128, precision=p, dtype=d, name="Mixed_6b")(x)
        x = InceptionC(160, precision=p, dtype=d, name="Mixed_6c")(x)
        x = InceptionC(160, precision=p, dtype=d, name="Mixed_6d")(x)
        x = InceptionC(192, precision=p, dtype=d, name="Mixed_6e")(x)
        # block 3
        x = InceptionD(precision=p, dtype=d, name="Mixed_7a")(x)
        x = InceptionE(max_pool_branch=False, precision=p, dtype=d, name="Mixed_7b")(x)
        x = InceptionE(max_pool_branch=True, precision=p, dtype=d, name="Mixed_7c")(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # pool3 features: float32


def fid_inception(precision: Any = None, dtype: Any = None, **kwargs) -> "FIDInceptionV3":
    """The FID network with a numeric policy: precision None / "default" / "high" / "highest",
    dtype None / "float32" / "bfloat16" (e4e_jax.core.precision); ValueError for other values."""
    from e4e_jax.core.precision import module_kwargs
    return FIDInceptionV3(**module_kwargs(dtype, precision), **kwargs)


def expected_variables(module: FIDInceptionV3 | None = None, size: int = 75) -> Any:
    """Shapes of every variable (no computation). The network is fully convolutional, so any input
    size that survives the stem (>= 75 without resizing) gives the same shapes."""
    module = module or FIDInceptionV3()
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda v: module.init(jax.random.key(0), v), x)
