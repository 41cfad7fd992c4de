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

Everything here is a pure function usable inside `jax.jit`.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

FEATURE_RESOLUTION = 256  # official: images above this are area-downsampled to it


class InversionError(ValueError):
    """A bad input to an inversion routine (the message names the fix)."""


def check_target(target: Any, resolution: int, what: str = "target") -> np.ndarray:
    """Validates pixels in [0, 255] and returns float32 (N, H, W, 3) (N = 1 for one image).

    Accepts (H, W, 3) or (N, H, W, 3), uint8 or float, with H = W = `resolution`.
    Raises InversionError on a wrong shape, a CHW layout or values outside [0, 255].
    """
    arr = np.asarray(target)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        hint = " (CHW? transpose to HWC)" if arr.ndim == 4 and arr.shape[1] == 3 else ""
        raise InversionError(f"{what} must be (H, W, 3) or (N, H, W, 3) RGB pixels in [0, 255], "
                             f"got shape {np.asarray(target).shape}{hint}.")
    if arr.shape[1:3] != (resolution, resolution):
        raise InversionError(f"{what} must be {resolution}x{resolution} (the generator's "
                             f"resolution), got {arr.shape[1]}x{arr.shape[2]}; resize or align "
                             f"the image first.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InversionError(f"{what} must be uint8 or float pixels, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InversionError(f"{what} pixels must lie in [0, 255], got [{arr.min():.3g}, "
                             f"{arr.max():.3g}] (convert [-1, 1] images with (x + 1) * 127.5).")
    return arr


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
