"""Image sources: random access to the uint8 RGB images of a folder or a TFDS split.

    source = make_source("photos/")               # FolderSource
    source = make_source("tfds:NAME:SPLIT", data_dir)
    len(source), source.name(i)                    # image count, a printable name of image i
    u8 = source.load(i, (256, 256))                # (256, 256, 3) uint8, resized

Every source reads through e4e_jax.data.image_io (PIL, RGB, the official bilinear resize), and
raises image_io.ImageReadError for an image it cannot decode; the loaders (e4e_jax.data.loader)
decide what to do with it. The synthetic domain has no files: e4e_jax.data.synthetic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from e4e_jax.core import fs
from e4e_jax.data import image_io


class DataError(ValueError):
    """A data source is missing, empty, or unreadable."""


class FolderSource:
    """JPEG/PNG (and other PIL formats) files under a folder, recursively, sorted by path.

    The folder may be local or in a bucket (`gs://BUCKET/PATH`, any protocol of
    e4e_jax.core.fs): the listing is made once, here, and each `load` reads one file.
    Raises DataError when the folder does not exist, cannot be listed or holds no image file."""

    def __init__(self, root: str):
        try:
            if not fs.isdir(root):
                raise DataError(f"image folder {root!r} does not exist.")
            self.files = image_io.list_images(root, recursive=True)
        except fs.RemoteError as e:
            raise DataError(str(e)) from e
        self.root = root
        if not self.files:
            raise DataError(f"no images (JPEG/PNG/...) found under {root!r}.")

    def __len__(self) -> int:
        return len(self.files)

    def name(self, i: int) -> str:
        """The path of image i relative to the folder."""
        return self.files[i]

    def load(self, i: int, size: Sequence[int]) -> np.ndarray:
        """Image i as (H, W, 3) uint8 at `size` (H, W); ImageReadError when undecodable."""
        img = image_io.read_rgb(fs.join(self.root, self.files[i]), name=self.files[i])
        return np.asarray(image_io.resize(img, size))

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, {len(self)} images)"


class TFDSSource:
    """A TFDS dataset prepared under `data_dir` (random access, ArrayRecord format).

    Raises DataError when the dataset cannot be opened (it is never downloaded) or is empty."""

    def __init__(self, name: str, split: str, data_dir: str | None = None,
                 image_key: str = "image"):
        import tensorflow_datasets as tfds
        self.name_, self.split, self.image_key = name, split, image_key
        try:
            self.ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:  # tfds raises several types for missing / non-random-access data
            raise DataError(
                f"cannot open TFDS dataset {name!r} split {split!r} in data_dir {data_dir!r}: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Prepare it "
                f"first (e.g. `tfds build {name} --data_dir DIR --file_format array_record`); "
                f"this machine will not download it.") from e
        if len(self.ds) == 0:
            raise DataError(f"TFDS dataset {name!r} split {split!r} is empty.")

    def __len__(self) -> int:
        return len(self.ds)

    def name(self, i: int) -> str:
        return f"{self.name_}/{self.split}[{i}]"

    def load(self, i: int, size: Sequence[int]) -> np.ndarray:
        """Record i's image as (H, W, 3) uint8 at `size`; ImageReadError when undecodable."""
        from PIL import Image
        try:
            image = np.asarray(self.ds[i][self.image_key])
            img = Image.fromarray(image.astype(np.uint8)).convert("RGB")
        except Exception as e:
            raise image_io.ImageReadError(f"cannot read {self.name(i)}: {e}") from e
        return np.asarray(image_io.resize(img, size))

    def __repr__(self) -> str:
        return f"TFDSSource({self.name_!r}, {self.split!r}, {len(self)} images)"


def make_source(spec: str, data_dir: str | None = None):
    """'tfds:NAME:SPLIT' -> TFDSSource; a folder with a manifest.json from `e4e-jax prepare`
    -> PreparedSource (e4e_jax.data.prepared); anything else is an image folder (FolderSource).
    Raises DataError for a malformed TFDS spec or a missing / empty source."""
    if spec.startswith("tfds:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise DataError(f"TFDS sources are written 'tfds:NAME:SPLIT', got {spec!r}.")
        return TFDSSource(parts[1], parts[2], data_dir)
    from e4e_jax.data import prepared     # it imports this module
    if prepared.is_prepared(spec):        # a folder made by `e4e-jax prepare` (its manifest)
        return prepared.PreparedSource(spec)
    return FolderSource(spec)


def hide_accelerators_from_tensorflow() -> None:
    """TFDS and the TensorBoard writers run TensorFlow on the host: keep it off the GPUs / TPUs
    JAX uses."""
    import tensorflow as tf
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type
        pass
