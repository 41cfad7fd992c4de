"""Data: image sources, the deterministic training pipeline, and the sets the loops read.

- `pipeline`: sources (image folders, TFDS), the resumable batch loader, the synthetic domain
  generated inside the jitted step (see its docstring for the determinism guarantees);
- `train_sets`: what the training loop reads (ImageData for folders / TFDS, SyntheticData);
- `images`: what eval.py and the edit command read (SourceImages, SyntheticImages), in
  fixed-size padded batches.

The pipeline's names are re-exported here (`from e4e_jax.data import make_source`).
"""
from __future__ import annotations

from e4e_jax.data.pipeline import (
                                   BatchLoader,
                                   BatchSpec,
                                   DataError,
                                   FolderSource,
                                   TFDSSource,
                                   hide_accelerators_from_tensorflow,
                                   make_source,
                                   synthetic_batch,
)

__all__ = ["BatchLoader", "BatchSpec", "DataError", "FolderSource", "TFDSSource",
           "hide_accelerators_from_tensorflow", "make_source", "synthetic_batch"]
