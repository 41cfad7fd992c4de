"""LPIPS v0.1 (Zhang et al. 2018) with AlexNet or VGG16 features, as `criteria/lpips` computes it.

    images in [-1, 1] -> (x - shift) / scale -> backbone -> 5 ReLU feature maps
    -> unit-normalise over channels: f / (sqrt(sum_c f^2) + 1e-10)
    -> (f_x - f_y)^2 -> 1x1 non-negative linear layer (C -> 1) -> spatial mean -> sum over layers

The official criterion returns the sum over the batch divided by the batch size, i.e. the mean of
the per-pair distances this module returns.

Variables (flax `params`; names follow torchvision's `features.{i}` indices):
    features_{i}/{kernel (kh, kw, in, out), bias (out,)}   the backbone convolutions
    lin_{k}/kernel (1, 1, C_k, 1)                          the linear layers, k = 0..4
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.core.conv import conv_general_dilated

# The shift and scale of the official BaseNet (ImageNet statistics expressed for [-1, 1] inputs).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


# (torchvision features index, out channels, kernel, stride, padding) of every convolution, the
# positions of the max-pools, and the 0-based features index of each of the five tapped ReLUs.
ARCHS = {
    "alex": {
        "convs": ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1),
                  (10, 256, 3, 1, 1)),
        "pools": {2: (3, 2), 5: (3, 2), 12: (3, 2)},
        "taps": (1, 4, 7, 9, 11),
        "channels": (64, 192, 384, 256, 256),
    },
    "vgg": {
        "convs": ((0, 64, 3, 1, 1), (2, 64, 3, 1, 1), (5, 128, 3, 1, 1), (7, 128, 3, 1, 1),
                  (10, 256, 3, 1, 1), (12, 256, 3, 1, 1), (14, 256, 3, 1, 1),
                  (17, 512, 3, 1, 1), (19, 512, 3, 1, 1), (21, 512, 3, 1, 1),
                  (24, 512, 3, 1, 1), (26, 512, 3, 1, 1), (28, 512, 3, 1, 1)),
        "pools": {4: (2, 2), 9: (2, 2), 16: (2, 2), 23: (2, 2), 30: (2, 2)},
        "taps": (3, 8, 15, 22, 29),
        "channels": (64, 128, 256, 512, 512),
    },
}
NETS = tuple(ARCHS)


def check_net(net: str) -> str:
    if net not in ARCHS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}.")
    return net


def unit_normalize(f: jax.Array) -> jax.Array:
    """f / (sqrt(sum_c f^2) + 1e-10), with a finite gradient where a ReLU map is all zeros."""
    f = f.astype(jnp.float32)  # sums of squares over up to 512 channels: float32
    s = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    positive = s > 0
    # sqrt has an infinite derivative at 0; route those pixels through a dummy value (their
    # forward value is 0 either way) so 0 * inf never reaches the backward pass.
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)
    return f / (norm + EPS)


class LPIPSFeatures(nn.Module):
    """The backbone: five unit-normalised ReLU feature maps (NHWC) of images in [-1, 1]
    (float32 maps whatever the compute dtype `dtype` of the convolutions)."""
    net: str = "alex"
    precision: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        arch = ARCHS[check_net(self.net)]
        x = (x - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)
        convs = {c[0]: c for c in arch["convs"]}
        last = max(arch["taps"])
        out = []
        i = 0
        while i <= last:
            if i in convs:
                _, features, k, s, p = convs[i]
                x = nn.Conv(features, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                            precision=self.precision, dtype=self.dtype,
                            conv_general_dilated=conv_general_dilated,
                            name=f"features_{i}")(x)
            elif i in arch["pools"]:
                k, s = arch["pools"][i]
                x = nn.max_pool(x, (k, k), strides=(s, s), padding="VALID")
            else:
                x = nn.relu(x)
            if i in arch["taps"]:
                out.append(unit_normalize(x))
            i += 1
        return out


class LPIPS(nn.Module):
    """Per-pair LPIPS distance: __call__(x, y) -> (N,); `features(x)` -> the five maps."""
    net: str = "alex"
    precision: Any = None
    dtype: Any = None

    def setup(self):
        self.backbone = LPIPSFeatures(self.net, self.precision, self.dtype)
        # the linear layers weight float32 squared differences (a loss reduction): float32
        self.lins = [nn.Conv(1, (1, 1), use_bias=False, precision=self.precision,
                             name=f"lin_{k}")
                     for k in range(len(ARCHS[check_net(self.net)]["taps"]))]

    def features(self, x: jax.Array) -> list[jax.Array]:
        return self.backbone(x)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of equal shape, got {x.shape} and {y.shape}.")
        # two passes rather than one over the concatenated batch: when only x needs a gradient
        # (a reconstruction against a fixed target) the backward pass then skips y's half
        per_layer = []
        for fx, fy, lin in zip(self.backbone(x), self.backbone(y), self.lins):
            d = jnp.square(fx - fy)
            per_layer.append(jnp.mean(lin(d), axis=(1, 2, 3)))
        return sum(per_layer[1:], per_layer[0])


def lpips_channels(net: str) -> Sequence[int]:
    return ARCHS[check_net(net)]["channels"]


def _side_after(net: str, side: int) -> int:
    """The smallest feature-map side, up to the last tapped layer, for an input side."""
    arch = ARCHS[net]
    layers = {i: (k, s, p) for i, _, k, s, p in arch["convs"]}
    layers.update({i: (k, s, 0) for i, (k, s) in arch["pools"].items()})
    smallest = side
    for i in sorted(layers):
        if i > max(arch["taps"]):
            break
        k, s, p = layers[i]
        side = (side + 2 * p - k) // s + 1 if side + 2 * p >= k else 0
        smallest = min(smallest, side)
    return smallest


def min_input_size(net: str) -> int:
    """Smallest input side (pixels) LPIPS with backbone `net` ("alex" / "vgg") accepts: below it
    a tapped feature map has no pixels and its spatial mean is NaN. 31 for alex (conv 11/4 and
    two 3/2 max-pools before its last taps), 16 for vgg (ARCHS, torchvision's layer indices)."""
    check_net(net)
    side = 1
    while _side_after(net, side) < 1:
        side += 1
    return side


def check_input_size(net: str, shape: Sequence[int], what: str = "the images",
                     hint: str = "Use larger images.") -> None:
    """Raises ValueError when (H, W) `shape` is below min_input_size(net); `what` names the
    option (or the argument) that set the size, `hint` the way out."""
    h, w = (int(s) for s in shape[:2])
    need = min_input_size(net)
    if min(h, w) < need:
        raise ValueError(f"LPIPS ({net}) needs images of at least {need}x{need} pixels; "
                         f"{what} gives {h}x{w}. {hint}")
