"""Fixed-size batching shared by every metric: pad the last batch, drop the padded rows.

Inputs are numpy / jax arrays (N, ...) or iterables of such batches (tuples `(images, ...)`
from a data loader are accepted; the first item is used), so each jitted function compiles once
for a whole evaluation. The batching itself is e4e_jax.core.batching's (the networks use it too).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from e4e_jax.core.batching import (  # noqa: F401  (the metrics' batching names, kept here)
    as_float_images,
    first_leaf,
    iterate_batches,
    run_batched,
)

HIGHEST = jax.lax.Precision.HIGHEST


def images_to_uint8(images: Any) -> np.ndarray:
    """The official tensor2im for NHWC images in [-1, 1]: clamp, (x + 1) / 2 * 255, truncate.

    Feeding these to FID/SWD reproduces evaluating the images the official code saves as files.
    """
    x = np.asarray(images, np.float32)
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return x.astype(np.uint8)
