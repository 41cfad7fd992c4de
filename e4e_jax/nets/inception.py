"""The FID Inception-v3 of pytorch-fid bound to its converted weights.

    inception = load_inception("weights/fid_inception")      # `e4e-jax convert fid_inception`
    feats = inception.features(images)                        # (N, 2048) float32 pool3 features
    feats = inception.run("apply", images01)                  # one batch in [0, 1], compiled

Reproduces mseitzer/pytorch-fid's `InceptionV3([3])` (FID weights, resize to 299 without
antialiasing, normalisation to [-1, 1] inside): the statistics and the Frechet distance are in
e4e_jax.evaluation.metrics.fid, which re-exports these names.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.batching import as_float_images, run_batched
from e4e_jax.models.inception import expected_variables, fid_inception
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.nets.base import BoundNet

__all__ = ["INCEPTION_KIND", "LoadedInception", "load_inception", "maybe_load_inception"]

INCEPTION_KIND = "fid_inception"


class LoadedInception(BoundNet):
    """The FID Inception-v3 with its variables (a `BoundNet`).

    LoadedInception(variables, config=None, precision=None, dtype=None): config holds
    `resize_input` / `normalize_input` (default True, pytorch-fid's); precision / dtype the
    numeric policy (e4e_jax.core.precision). `apply(variables, images01)` is pure;
    `features(images)` runs it compiled over fixed-size batches (one program per batch shape).
    """

    tree_meta = ("config",)

    def __init__(self, variables: dict, config: dict | None = None, precision: Any = None,
                 dtype: Any = None):
        config = dict(config or {})
        module = fid_inception(precision, dtype,
                               resize_input=bool(config.get("resize_input", True)),
                               normalize_input=bool(config.get("normalize_input", True)))
        super().__init__(module, jax.tree_util.tree_map(jnp.asarray, dict(variables)),
                         config=config)

    def __repr__(self) -> str:
        return "LoadedInception(FID Inception-v3 of pytorch-fid, pool3 2048-d)"

    def apply(self, variables, images01: jax.Array, **kwargs: Any) -> jax.Array:
        """Pure function: images in [0, 1] (N, H, W, 3) -> (N, 2048), for a caller's jit."""
        return self.module.apply(variables, images01, **kwargs)

    def features(self, images: Any, value_range: Sequence[float] = (-1.0, 1.0),
                 batch_size: int = 50, clip: bool = True) -> np.ndarray:
        """pool3 features (N, 2048) float32 of NHWC RGB images (an array or an iterable of
        batches: e4e_jax.core.batching pads the last one, so one program serves every call).

        Float images are taken in `value_range` ((-1, 1) as generated / encoded images; (0, 1) as
        pytorch-fid's input) and mapped to [0, 1], clipped there with `clip` (the official code
        evaluates images saved as files, so clamped); uint8 images are u8 / 255 as pytorch-fid
        reads files. Any size: pytorch-fid resizes to 299 (bilinear, no antialiasing). Raises
        ValueError on a bad value_range or non-NHWC-RGB input.
        """
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")

        def one(batch):
            is_u8 = getattr(batch, "dtype", None) == np.uint8
            x = as_float_images(batch)
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"FID needs NHWC RGB images (N, H, W, 3), got shape "
                                 f"{tuple(x.shape)}.")
            if not is_u8:
                if (lo, hi) != (0.0, 1.0):
                    x = (x - lo) / (hi - lo)
                if clip:
                    x = jnp.clip(x, 0.0, 1.0)
            return self.run("apply", x)

        return run_batched(one, images, batch_size)


def load_inception(path: str, precision: Any = None, dtype: Any = None) -> LoadedInception:
    """Loads a directory written by `e4e-jax convert fid_inception SRC DST`; ModelDirError
    (a ValueError) names a wrong kind or missing / mis-shaped variables."""
    md = checkpoints.load_model_dir(os.fspath(path), INCEPTION_KIND)
    checkpoints.check_tree(expected_variables(), md.variables or {},
                           f"FID Inception variables in {md.path!r}")
    return LoadedInception(md.variables, md.config, precision=precision, dtype=dtype)


def maybe_load_inception(path: str | None) -> tuple[LoadedInception | None, str | None]:
    """(inception, None) when `path` holds converted FID weights, else (None, reason)."""
    if not path:
        return None, ("no FID Inception weights given; convert pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth with `e4e-jax convert "
                      "fid_inception` and pass the directory")
    try:
        return load_inception(path), None
    except (OSError, ValueError) as e:
        return None, f"FID Inception weights at {path!r} could not be loaded: {e}"
