"""The align command's library: every face of a folder of photos, FFHQ-aligned, one PNG each.

    summary = align_folder("photos/", "aligned/", size=256)      # also prints a line per image

Per image it prints how many faces were found, the smallest one's crop side, and the smallest
face the search can find at that image size; faces below that are missed silently by any
detector, so the summary says which setting (`tile_levels`, `min_confidence`) finds them.
Output names follow e4e_jax/outputs/names.py; OUT/manifest.tsv maps every PNG to its source and
face index.
"""
from __future__ import annotations

import os
from typing import Callable

from e4e_jax.align.detect import IMAGE_EXTENSIONS, MANIFEST, FaceAligner, list_images, open_image
from e4e_jax.align.crop import to_rgb
from e4e_jax.outputs.names import OutputNames, write_manifest


class AlignError(ValueError):
    """A bad request (the message names the problem and the fix); the command exits 2."""


def check_request(input_path: str, size: int, transform_size: int | None) -> list[str]:
    """The image files to align; AlignError for bad sizes or an input without images."""
    if size < 8:
        raise AlignError(f"--size must be at least 8, got {size}")
    if transform_size is not None and transform_size < size:
        raise AlignError(f"--transform-size ({transform_size}) must be >= --size ({size})")
    try:
        paths = list_images(input_path)
    except FileNotFoundError as err:
        raise AlignError(str(err)) from None
    if not paths:
        raise AlignError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {input_path}")
    return paths


def align_folder(input_path: str, output: str, *, size: int = 256,
                 transform_size: int | None = None, max_faces: int | None = None,
                 min_confidence: float = 0.5, tile_levels: int = 1, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """Aligns every face of every image under `input_path` (a folder, or one image file).

    Returns {"images", "faces", "skipped": [(path, reason)], "missed_below": the largest of the
    per-image smallest findable face sides (px), "files": [written PNG names]}. Raises
    AlignError (bad arguments; an `output` holding an earlier run's manifest.tsv, unless
    `overwrite`), ImportError (MediaPipe missing: `pip install .[align]`),
    KeyboardInterrupt (after writing the manifest of the faces written so far).
    """
    paths = check_request(input_path, size, transform_size)
    if not overwrite and os.path.exists(os.path.join(output, MANIFEST)):
        raise AlignError(f"{output!r} holds an earlier align run ({MANIFEST}); pass "
                         f"--overwrite to replace its faces, or another --output.")
    try:
        aligner = FaceAligner(min_confidence=min_confidence, max_faces=max_faces,
                              tile_levels=tile_levels)
    except ValueError as err:
        raise AlignError(str(err)) from None
    os.makedirs(output, exist_ok=True)
    taken = OutputNames()
    files, skipped, manifest = [], [], []
    missed_below = 0
    total = len(paths)
    try:
        with aligner:
            for i, path in enumerate(paths, 1):
                label = f"[{i}/{total}] {os.path.basename(path)}"
                try:
                    image = to_rgb(open_image(path))
                    faces = aligner.detect(image)
                    crops = [aligner.crop(image, f, size, transform_size) for f in faces]
                except ValueError as err:
                    skipped.append((path, str(err)))
                    log(f"{label}: skipped ({err})")
                    continue
                floor = aligner.smallest_face(*image.size)
                missed_below = max(missed_below, floor)
                if not crops:
                    skipped.append((path, "no face found"))
                    log(f"{label}: skipped (no face found; faces under ~{floor} px are not "
                        f"found in a {image.size[0]}x{image.size[1]} image)")
                    continue
                names = [taken.name(os.path.basename(path), k) for k in range(len(crops))]
                manifest += [(f, os.path.basename(path), k) for k, f in enumerate(names)]
                for crop, name in zip(crops, names):
                    crop.save(os.path.join(output, name))
                files += names
                count = "1 face" if len(crops) == 1 else f"{len(crops)} faces"
                smallest = int(round(min(f.qsize for f in faces)))
                log(f"{label}: {count} (smallest {smallest} px; finds faces down to ~{floor} "
                    f"px) -> {', '.join(names)}")
    finally:
        write_manifest(os.path.join(output, MANIFEST), manifest)
    return {"images": total, "faces": len(files), "skipped": skipped, "files": files,
            "missed_below": missed_below}


def missed_faces_hint(missed_below: int, tile_levels: int, min_confidence: float) -> str:
    """The settings that find the faces a run may have missed (for the summary)."""
    hints = []
    if tile_levels < 4:
        hints.append(f"--tile-levels {tile_levels + 1} (about half that size, ~2.5x slower)")
    if min_confidence > 0.2:
        hints.append(f"--min-confidence {max(0.2, round(min_confidence - 0.2, 2))} (less certain "
                     f"faces too)")
    if not hints:
        return ""
    return (f"Faces smaller than ~{missed_below} px are not found at these settings; to find "
            f"smaller ones: " + " or ".join(hints) + ".")
