"""ArcFace IR-SE-50 (`Backbone` of models/encoders/model_irse.py) and the identity loss's features.

The network reuses the input layer and IR-SE body of models/irse.py (the same parts the encoders
are built from) and adds the official output layer:

    BatchNorm2d(512) -> Dropout (inactive: the loss network runs in eval mode) -> flatten
    -> Linear(512 * 7 * 7, 512) -> BatchNorm1d(512) -> l2 normalisation

`IDLoss.extract_feats` crops rows 35:223 and columns 32:220 of a 256x256 image (188x188) and
pools it to 112x112 with torch's AdaptiveAvgPool2d (overlapping windows); `__call__` does the
same, `embed` takes 112x112 faces directly.

Variables (flax; BatchNorm in inference mode, torch semantics):
    input_layer/{conv, bn, prelu}/...      body/block_{i}/...      (see models/irse.py)
    output_bn/{scale, bias} + batch_stats  output_layer.0
    linear/{kernel (7 * 7 * 512, 512), bias}
        output_layer.3; the kernel's rows are in NHWC flatten order (h, w, c), the converter
        permutes torch's NCHW (c, h, w) rows once
    feature_bn/{scale, bias} + batch_stats output_layer.4 (IDLoss builds the Backbone with the
                                           default affine=True, so it has a scale and bias)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.core.ops import adaptive_avg_pool2d
from e4e_jax.models.irse import OFFICIAL_WIDTHS, BatchNorm, IRBody, IRInputLayer
from e4e_jax.models.resnet import l2_normalize

FACE_SIZE = 112
IMAGE_SIZE = 256
# the official crop of the 256x256 aligned face: rows 35:223, columns 32:220
CROP_ROWS = (35, 223)
CROP_COLS = (32, 220)


class ArcFace(nn.Module):
    """IR(-SE) ArcFace backbone: `__call__(images256)` as IDLoss.extract_feats,
    `embed(faces112)`."""
    num_layers: int = 50
    mode: str = "ir_se"
    widths: Sequence[int] = OFFICIAL_WIDTHS
    units: Sequence[int] | None = None
    embedding_dim: int = 512
    affine: bool = True
    precision: Any = None
    dtype: Any = None

    def setup(self):
        self.input_layer = IRInputLayer(self.widths[0], precision=self.precision,
                                        dtype=self.dtype)
        self.body = IRBody(self.num_layers, self.mode, tuple(self.widths),
                           None if self.units is None else tuple(self.units),
                           precision=self.precision, dtype=self.dtype)
        self.output_bn = BatchNorm()
        self.linear = nn.Dense(self.embedding_dim, precision=self.precision, dtype=self.dtype)
        self.feature_bn = BatchNorm(use_scale=self.affine, use_bias=self.affine)

    def embed(self, faces: jax.Array) -> jax.Array:
        if faces.shape[-3:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"ArcFace.embed takes (N, {FACE_SIZE}, {FACE_SIZE}, 3) faces, "
                             f"got {faces.shape}.")
        x = self.body(self.input_layer(faces))
        x = self.output_bn(x)
        x = x.reshape(x.shape[0], -1)
        # the embedding and its l2 normalisation: float32 (precision.FLOAT32_PARTS)
        x = self.feature_bn(self.linear(x).astype(jnp.float32))
        return l2_normalize(x)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.embed(crop_and_pool(images, self.precision))


def crop_and_pool(images: jax.Array, precision: Any = None) -> jax.Array:
    """The identity loss's face region of 256x256 NHWC images, pooled to 112x112."""
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"The identity loss takes (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) NHWC images "
                         f"(the official crop rows 35:223, columns 32:220 assumes 256x256 aligned "
                         f"faces), got shape {images.shape}.")
    x = images[:, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1], :]
    return adaptive_avg_pool2d(x, (FACE_SIZE, FACE_SIZE), precision)
