"""Input-size limits of the frozen loss networks, computed from their layer tables.

    lpips_min_size("alex")  # 31: smaller images leave an empty feature map (mean -> NaN)
    check_lpips_size("alex", (24, 24), "config.data.input_size")   # raises ValueError

LPIPS averages each tapped feature map over space; a map with no pixels averages to NaN and a
training run then stops on a non-finite loss with no hint of the cause. The limit follows from
the backbone's convolutions and max-pools (models/lpips.ARCHS, torchvision's layer indices):
the smallest side for which every map up to the last tapped ReLU keeps at least one pixel.
"""
from __future__ import annotations

from typing import Sequence


def _side_after(net: str, side: int) -> int:
    """The smallest feature-map side, up to the last tapped layer, for an input side."""
    from e4e_jax.models.lpips import ARCHS
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


def lpips_min_size(net: str) -> int:
    """Smallest input side (pixels) LPIPS with backbone `net` ("alex" / "vgg") accepts:
    31 for alex (conv 11/4 and two 3/2 max-pools before its last taps), 16 for vgg."""
    from e4e_jax.models.lpips import check_net
    check_net(net)
    side = 1
    while _side_after(net, side) < 1:
        side += 1
    return side


def check_lpips_size(net: str, shape: Sequence[int], what: str = "the images") -> None:
    """Raises ValueError when (H, W) `shape` is below lpips_min_size(net); `what` names the
    option (or the argument) that set the size."""
    h, w = (int(s) for s in shape[:2])
    need = lpips_min_size(net)
    if min(h, w) < need:
        raise ValueError(f"LPIPS ({net}) needs images of at least {need}x{need} pixels; "
                         f"{what} gives {h}x{w}. Use larger images, or turn the LPIPS loss off "
                         f"(config.losses.lpips=0).")
