"""Reading, resizing and saving images the way the official code does.

    x = load_image("face.jpg", (256, 256))        # (256, 256, 3) float32 in [-1, 1]
    x = load_images(paths, (192, 256))            # (N, 192, 256, 3)
    save_png(to_uint8(recon[0]), "recon.png")

Official test transform (configs/transforms_config.py): PIL image -> RGB
(`Image.open(p).convert('RGB')`) -> `transforms.Resize((H, W))`, which on a PIL image is
`img.resize((W, H), Image.BILINEAR)` (PIL's bilinear, antialiased when shrinking) -> ToTensor
(u8 / 255) -> Normalize(0.5, 0.5). The float32 arithmetic here matches torch's bit for bit.
Images going out use the official `tensor2im`: ((x + 1) / 2) clipped to [0, 1], times 255,
truncated to uint8. Grids of images live in e4e_jax.outputs.grids.
"""
from __future__ import annotations

import io
import os
import re
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from e4e_jax.core import fs

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file could not be read as an image. `name` is the file as the message names it and
    `reason` the decoder's account (None for errors built from a plain message); `named(rel)`
    is the same message naming the file as `rel` (a command's path relative to its input)."""

    def __init__(self, message: str, name: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.name, self.reason = name, reason

    def named(self, name: str) -> str:
        if self.reason is None:
            return str(self)
        return read_error_message(name, self.reason)


def read_error_message(name: str, reason: str) -> str:
    """The one wording of an unreadable file, used by every command (screen and skipped.txt)."""
    return f"cannot read {name!r} as an image: {reason}"


# a Python object's default repr (`<_io.BytesIO object at 0x7f...>`): PIL names a file object
# by it; it says nothing to the user and differs between runs
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(e: Exception, *names) -> str:
    """`Type: message` of a decoder's exception without object reprs or the file's own name
    (the message names the file once, as the user gave it)."""
    text = _OBJECT_REPR.sub("", str(e))
    for n in names:
        if n:       # a short bare name could be a word of the reason: only its quoted form
            text = text.replace(repr(str(n)), "")
            text = text.replace(str(n), "") if len(str(n)) > 3 else text
    text = " ".join(text.split()).rstrip(" :")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def list_images(folder: str, recursive: bool = True) -> list[str]:
    """Image files under `folder` (by extension, case-insensitive), sorted, relative paths
    ('/'-separated). `folder` may be local or a bucket (`gs://...`, e4e_jax.core.fs).
    FileNotFoundError when it is not a folder; fs.RemoteError when a bucket cannot be read."""
    try:
        names = fs.list_files(folder)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder!r} is not a directory.") from None
    return [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)
            and (recursive or "/" not in n)]


# PIL modes whose values are not 0..255: convert("RGB") clips them at 255 (a 16-bit grey PNG
# became almost white), so they are rescaled from their own range instead
_WIDE_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB picture of any PIL image, the one conversion every command uses.

    8-bit modes convert as PIL does (CMYK, YCbCr, palette, grey replicated); 16-bit grey
    ("I;16*") is scaled from 0..65535, 32-bit integer grey ("I") from 0..65535 when it exceeds
    255 (else 0..255), float grey ("F") from 0..1 when it stays within it (else 0..255), each
    rounded to 8 bits; 16-bit colour and grey + alpha PNGs arrive from PIL already as 8-bit.
    Transparency (RGBA, LA, PA, a palette with a transparent index) is dropped as the official
    test transform's `convert('RGB')` drops it: every pixel keeps its stored colour, so the
    encoder sees what the official code feeds its encoder (the same picture wherever the image
    is opaque).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_GREY:
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB")
    return image.convert("RGB")


def read_rgb(src, upright: bool = False, name: str | None = None) -> Image.Image:
    """Opens any PIL-readable image as RGB (`to_rgb`): `src` is a local path, a bucket path
    (`gs://...`, read through e4e_jax.core.fs) or a binary file object. `upright` applies the
    EXIF orientation (phone photos; the alignment does, the official test transform does not).
    `name`: how the message names the file (a command passes the path relative to its input
    folder; default: the path, or the file object's name).
    Raises ImageReadError naming the file and the decoder's reason (a missing file included);
    fs.RemoteError when a bucket cannot be reached (a failure of the store, not of the image)."""
    given = (getattr(src, "name", None) or "<file object>") if hasattr(src, "read") else src
    given = os.fspath(given) if isinstance(given, os.PathLike) else given
    name = given if name is None else name
    try:
        if isinstance(src, (str, os.PathLike)) and fs.is_remote(os.fspath(src)):
            src = io.BytesIO(fs.read_bytes(os.fspath(src)))
        with Image.open(src) as im:
            im.load()
            if upright:
                from PIL import ImageOps
                im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except fs.RemoteError:
        raise               # the bucket failed, not the image: never skipped as unreadable
    except Exception as e:  # PIL raises many types for broken files (OSError, SyntaxError, ...)
        reason = _reason(e, given, name)
        raise ImageReadError(read_error_message(name, reason), name, reason) from e


def resize(img: Image.Image, size: Sequence[int]) -> Image.Image:
    """torchvision Resize((H, W)) on a PIL image: PIL bilinear to (W, H)."""
    h, w = int(size[0]), int(size[1])
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR)


def to_model_input(u8: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> float32 in [-1, 1]: ToTensor then Normalize(0.5, 0.5), in float32."""
    x = np.asarray(u8).astype(np.float32) / np.float32(255)
    return (x - np.float32(0.5)) / np.float32(0.5)


def load_image(src, size: Sequence[int]) -> np.ndarray:
    """A file path (local or bucket), binary file object or PIL image -> (H, W, 3) float32 in
    [-1, 1], like the official transform."""
    img = to_rgb(src) if isinstance(src, Image.Image) else read_rgb(src)
    return to_model_input(np.asarray(resize(img, size)))


def load_images(paths: Iterable[str], size: Sequence[int]) -> np.ndarray:
    return np.stack([load_image(p, size) for p in paths])


def to_uint8(x) -> np.ndarray:
    """Model-range image(s) (values around [-1, 1]) -> uint8, the official tensor2im."""
    x = (np.asarray(x, np.float32) + 1) / 2
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def save_png(u8: np.ndarray, path: str) -> str:
    """Writes a uint8 (H, W, 3) array as PNG, creating the folder; returns the path (local or a
    bucket path, e4e_jax.core.fs)."""
    if fs.is_remote(path):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(u8, np.uint8)).save(buf, format="PNG")
        fs.write_bytes(path, buf.getvalue())
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.asarray(u8, np.uint8)).save(path)
    return path
