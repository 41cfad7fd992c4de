"""Pieces shared by the latent-optimisation inversions (the W projector, PTI).

Official semantics reproduced (NVlabs/stylegan2-ada-pytorch `projector.py`, PTI's copy
`training/projectors/w_projector.py`):

- images go to the feature network as pixels in [0, 255]; anything larger than 256 px is first
  reduced to 256x256 with `F.interpolate(mode='area')` (an exact box average for the power-of-two
  generator resolutions);
- the distance is `(target_features - synth_features).square().sum()` of the `vgg16.pt`
  TorchScript feature net called with `return_lpips=True`, whose squared feature distance is
  LPIPS(VGG). Here the feature net is a loaded LPIPS network (`e4e_jax.load_lpips`), so the
  official recipe is LPIPS-VGG; any LPIPS net works (the fixture uses LPIPS-alex).

Targets follow one convention in every inversion (`check_target`): NHWC (or HWC for one image)
float images in [-1, 1], as `Inverter.encode` takes them; the projector also accepts uint8 pixels
(its earlier convention). The feature network still sees [0, 255] pixels, as officially
(`target_pixels`, `to_pixels`). The functions on arrays are pure and usable inside `jax.jit`.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.models.lpips import check_input_size

FEATURE_RESOLUTION = 256  # official: images above this are area-downsampled to it


class InversionError(ValueError):
    """A bad input to an inversion routine (the message names the fix)."""


TARGET_CONVENTION = "targets are float images in [-1, 1] (NHWC), or uint8 pixels"
# float targets may exceed [-1, 1] by this much (float32 rounding of conversions such as
# u8 / 127.5 - 1); anything further is another convention, refused rather than guessed
RANGE_TOLERANCE = 1e-5


def check_target(target: Any, resolution: int, what: str = "target",
                 allow_uint8: bool = True) -> np.ndarray:
    """Validates target images and returns them as (N, H, W, 3) (N = 1 for one HWC image).

    The convention of every inversion (like Inverter.encode): NHWC (or HWC) RGB float images in
    [-1, 1] at H = W = `resolution`, returned as float32; with `allow_uint8` (the projector's
    backward compatibility), uint8 pixels in [0, 255], returned as uint8. Raises InversionError
    (a ValueError) on a wrong shape, a CHW layout, another dtype, or float values outside
    [-1, 1] beyond rounding (RANGE_TOLERANCE), naming the convention.
    """
    arr = np.asarray(target)
    if arr.ndim == 3:
        hint = " (CHW? transpose to HWC)" if arr.shape[0] == 3 and arr.shape[-1] != 3 else ""
        arr = arr[None]
    else:
        hint = " (NCHW? transpose to NHWC)" if arr.ndim == 4 and arr.shape[1] == 3 else ""
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InversionError(f"{what} must be (N, H, W, 3) or (H, W, 3) RGB images ("
                             f"{TARGET_CONVENTION}), got shape {np.shape(target)}{hint}.")
    if arr.shape[1:3] != (resolution, resolution):
        raise InversionError(f"{what} must be {resolution}x{resolution} (the generator's "
                             f"resolution), got {arr.shape[1]}x{arr.shape[2]}; resize or align "
                             f"the image first.")
    if arr.dtype == np.uint8:
        if not allow_uint8:
            raise InversionError(f"{what} must be float images in [-1, 1] (NHWC), got dtype "
                                 f"uint8 (convert uint8 with x / 127.5 - 1).")
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise InversionError(f"{what}: {TARGET_CONVENTION}; got dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InversionError(f"{what} holds NaN or Inf values.")
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            pixels = (" (pixels in [0, 255]? pass them as uint8, or convert with "
                      "x / 127.5 - 1)" if hi > 1.5 and lo >= -RANGE_TOLERANCE else "")
            raise InversionError(f"{what}: {TARGET_CONVENTION}; got float values in "
                                 f"[{lo:.4g}, {hi:.4g}]{pixels}.")
    return arr


def target_pixels(target: np.ndarray) -> np.ndarray:
    """float32 pixels in [0, 255] of a `check_target` result: uint8 as is, [-1, 1] floats as
    PTI's base_coach converts its dataset tensors, (x + 1) / 2 * 255 in float32 (unclamped)."""
    if target.dtype == np.uint8:
        return target.astype(np.float32)
    x = np.asarray(target, np.float32)
    return (x + np.float32(1)) / np.float32(2) * np.float32(255)


def area_downsample(images: jax.Array, size: int = FEATURE_RESOLUTION) -> jax.Array:
    """NHWC images -> (N, size, size, C) box averages when larger than `size` (F.interpolate
    mode='area' for an integer factor); smaller or equal images are returned unchanged."""
    n, h, w, c = images.shape
    if h <= size:
        return images
    if h % size or w % size or h != w:
        raise InversionError(f"area downsampling to {size} needs a square image whose side is a "
                             f"multiple of {size}, got {h}x{w}.")
    f = h // size
    return jnp.mean(images.reshape(n, size, f, size, f, c), axis=(2, 4))


def check_lpips_resolution(lpips, resolution: int, what: str = "the generator") -> None:
    """Refuses an LPIPS network too small-sighted for `resolution` px images.

    LPIPS averages each tapped feature map over space; below its backbone's smallest input
    (e4e_jax.models.lpips.min_input_size: 31 px for alex, 16 for vgg) a map has no pixels and
    every loss of the inversion is NaN from the first step. Images above FEATURE_RESOLUTION reach
    the feature net area-downsampled, so the side checked is min(resolution, 256). `lpips`: a
    `LoadedLPIPS`; objects without `net_type` are not checked. Raises InversionError.
    """
    net = getattr(lpips, "net_type", None)
    if net is None:
        return
    side = min(int(resolution), FEATURE_RESOLUTION)
    try:
        check_input_size(net, (side, side), f"{what} ({resolution}px)",
                         "Use a larger generator, or an LPIPS network with a smaller minimum "
                         "(vgg: 16 px).")
    except ValueError as e:
        raise InversionError(str(e)) from None


def lpips_features(lpips_net, pixels: jax.Array) -> list[jax.Array]:
    """Unit-normalised LPIPS feature maps of NHWC pixels in [0, 255] (area-downsampled to 256
    first when larger). `lpips_net`: a `e4e_jax.losses.LossNet` (`load_lpips(dir).net`)."""
    x = area_downsample(pixels) / 127.5 - 1.0
    return lpips_net(x, method="features")


def lpips_feature_distance(lpips_net, feats_a: Sequence[jax.Array],
                           feats_b: Sequence[jax.Array]) -> jax.Array:
    """(N,) squared distance of the official `return_lpips=True` features, i.e. LPIPS:
    sum over layers k of sum_{h, w, c} lin_k[c] (a - b)^2 / (H_k W_k)."""
    params = lpips_net.variables["params"]
    total = 0.0
    for k, (a, b) in enumerate(zip(feats_a, feats_b)):
        lin = params[f"lin_{k}"]["kernel"].reshape(-1)
        hw = a.shape[1] * a.shape[2]
        total = total + jnp.sum(jnp.square(a - b) * lin, axis=(1, 2, 3)) / hw
    return total


def to_pixels(images: jax.Array) -> jax.Array:
    """Generator output in [-1, 1] -> [0, 255] as officially: (img + 1) * (255 / 2), no clamp."""
    return (images + 1.0) * (255.0 / 2.0)
