"""FFHQ-style face alignment without dlib: MediaPipe Face Mesh landmarks + the FFHQ crop.

The official e4e face models were trained on FFHQ crops and expect the same framing at inference.
The FFHQ dataset script (NVlabs/ffhq-dataset `recreate_aligned_images`, copied with dlib into the
official e4e `utils/alignment.py`) builds an oriented square from four points of the face -- the
two eye centres and the two mouth corners -- and resamples it. dlib's 68-point predictor is a
separate large download, so landmarks come from MediaPipe's face detector and face mesh instead,
which `mediapipe==0.10.14` ships inside its wheel (later releases download models at run time).

Two layers, so the crop math is testable without MediaPipe:
  * `ffhq_quad` / `ffhq_align` (e4e_jax/face_crop.py, re-exported here): pure numpy/PIL/scipy, fed with eye and mouth points (or dlib's 68
    landmarks, or a 5-point set);
  * `detect_face_points` / `align_faces`: MediaPipe detection, imported only when called
    (`pip install .[align]`).

Command line: `python -m e4e_jax.align --input FOLDER --output FOLDER [--size 256]`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from e4e_jax import cli
from e4e_jax.align.crop import (  # noqa: F401
    pad_with_blur,
    eye_mouth_points,
    ffhq_align,
    ffhq_quad,
    ffhq_template,
    to_rgb,
)
from e4e_jax.align.detect import (
    IMAGE_EXTENSIONS,
    INSTALL_HINT,
    MANIFEST,
    FaceAligner,
    list_images,
    open_image,
)
from e4e_jax.outputs.names import (  # noqa: F401
    NAMING_HELP,
    OutputNames,
    face_filename,
    output_names,
    write_manifest,
)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "python -m e4e_jax.align",
        "FFHQ-align every face in a folder of photos (one PNG per face, largest first) for "
        "the e4e face encoders. Needs: " + INSTALL_HINT,
        examples=["python -m e4e_jax.align --input photos/ --output aligned/",
                  "python -m e4e_jax.align --input group.jpg --output aligned/ --max-faces 3"],
        epilog=NAMING_HELP + " OUT/manifest.tsv maps every PNG to its source and face.\n"
               "Exit codes: 0 faces written, 1 no face written (or the align extras "
               "missing), 2 bad arguments, 130 interrupted.")
    parser.add_argument("--input", required=True, help="folder of images (or one image file)")
    parser.add_argument("--output", required=True, help="folder for the aligned PNGs")
    parser.add_argument("--size", type=int, default=256,
                        help="output side in pixels (default 256, what the e4e face encoders take)")
    parser.add_argument("--transform-size", type=int, default=None,
                        help="resample the crop at this side before downsizing to --size "
                             "(default: --size, as the official e4e inference; FFHQ used 4x)")
    parser.add_argument("--max-faces", type=int, default=None,
                        help="keep at most this many faces per image, largest first (default all)")
    parser.add_argument("--min-confidence", type=float, default=0.5,
                        help="face detector confidence threshold (default 0.5)")
    cli.add_verbose(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MediaPipe imports TensorFlow (for optional docs helpers); keep its start-up banner quiet
    cli.quiet_third_party_logs(args.verbose)
    if args.size < 8:
        print(f"error: --size must be at least 8, got {args.size}", file=sys.stderr)
        return 2
    if args.transform_size is not None and args.transform_size < args.size:
        print(f"error: --transform-size ({args.transform_size}) must be >= --size ({args.size})",
              file=sys.stderr)
        return 2
    try:
        paths = list_images(args.input)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.input}", file=sys.stderr)
        return 2
    try:
        aligner = FaceAligner(min_confidence=args.min_confidence, max_faces=args.max_faces)
    except (ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    os.makedirs(args.output, exist_ok=True)
    taken = OutputNames()
    written, skipped, manifest = 0, [], []
    total = len(paths)
    try:
        with aligner:
            for i, path in enumerate(paths, 1):
                label = f"[{i}/{total}] {os.path.basename(path)}"
                try:
                    image = open_image(path)
                    crops = aligner.align(image, args.size, args.transform_size)
                except ValueError as err:
                    skipped.append((path, str(err)))
                    print(f"{label}: skipped ({err})", flush=True)
                    continue
                if not crops:
                    skipped.append((path, "no face found"))
                    print(f"{label}: skipped (no face found)", flush=True)
                    continue
                files = [taken.name(os.path.basename(path), k) for k in range(len(crops))]
                manifest += [(f, os.path.basename(path), k) for k, f in enumerate(files)]
                for crop, name in zip(crops, files):
                    crop.save(os.path.join(args.output, name))
                written += len(crops)
                faces = "1 face" if len(crops) == 1 else f"{len(crops)} faces"
                print(f"{label}: {faces} -> {', '.join(files)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    finally:
        write_manifest(os.path.join(args.output, MANIFEST), manifest)
    print(f"Done: {total} image(s), {written} aligned face(s) written to {args.output}, "
          f"{len(skipped)} image(s) skipped.")
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}")
    return cli.EXIT_OK if written else cli.EXIT_NOTHING


if __name__ == "__main__":
    sys.exit(main())
