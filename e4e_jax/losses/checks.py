"""Input-size limits of the frozen loss networks, computed from their layer tables.

    lpips_min_size("alex")  # 31: smaller images leave an empty feature map (mean -> NaN)
    check_lpips_size("alex", (24, 24), "config.data.input_size")   # raises ValueError

LPIPS averages each tapped feature map over space; a map with no pixels averages to NaN and a
training run then stops on a non-finite loss with no hint of the cause. The limit follows from
the backbone's convolutions and max-pools (models/lpips.ARCHS, torchvision's layer indices):
the smallest side for which every map up to the last tapped ReLU keeps at least one pixel
(e4e_jax.models.lpips.min_input_size, next to the layer tables).
"""
from __future__ import annotations

from typing import Sequence

from e4e_jax.models.lpips import check_input_size, min_input_size


def lpips_min_size(net: str) -> int:
    """Smallest input side (pixels) LPIPS with backbone `net` ("alex" / "vgg") accepts:
    31 for alex, 16 for vgg (e4e_jax.models.lpips.min_input_size)."""
    return min_input_size(net)


def check_lpips_size(net: str, shape: Sequence[int], what: str = "the images") -> None:
    """Raises ValueError when (H, W) `shape` is below lpips_min_size(net); `what` names the
    option (or the argument) that set the size."""
    check_input_size(net, shape, what, "Use larger images, or turn the LPIPS loss off "
                                       "(config.losses.lpips=0).")
