"""Data: image sources, the one loader, the one synthetic domain, and what training reads.

- `image_io`: one image: read (PIL, RGB), resize (the official bilinear), to / from [-1, 1];
- `sources`: random access to folders and TFDS splits (`make_source`), DataError;
- `loader`: the one loader: ordered thread-pool decoding (`read_in_order`), fixed-size batches
  with one padding rule (`Batch`, `pad_batch`: zero rows, `valid` real), fixed sets of source
  images (`SourceImages`: eval, edit, training's test sets) and training's resumable stream
  (`BatchLoader`);
- `synthetic`: the synthetic domain G(mapping(z)), defined once (`synthetic_images`) for
  training batches, training's test sets, eval.py and the edit command (`SyntheticImages`);
- `train_sets`: what a training run reads (`TrainData`).
"""
from __future__ import annotations

from e4e_jax.data.loader import (
                                 Batch,
                                 BatchLoader,
                                 BatchSpec,
                                 SourceImages,
                                 batches_of,
                                 fixed_batches,
                                 pad_batch,
                                 read_in_order,
)
from e4e_jax.data.sources import (
                                  DataError,
                                  FolderSource,
                                  TFDSSource,
                                  hide_accelerators_from_tensorflow,
                                  make_source,
)
from e4e_jax.data.synthetic import SyntheticImages, synthetic_images

__all__ = ["Batch", "BatchLoader", "BatchSpec", "DataError", "FolderSource", "SourceImages",
           "SyntheticImages", "TFDSSource", "batches_of", "fixed_batches",
           "hide_accelerators_from_tensorflow", "make_source", "pad_batch", "read_in_order",
           "synthetic_images"]
