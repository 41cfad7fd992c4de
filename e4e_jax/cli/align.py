"""`e4e-jax align` (also `python -m e4e_jax.align`): FFHQ-align every face of a folder of photos.

    e4e-jax align --input photos/ --output aligned/ [--size 256] [--tile-levels 2]

Landmarks come from MediaPipe (`pip install .[align]`) and the crop is the FFHQ script's
(e4e_jax/align/). Each image's line says how many faces were found, the smallest one's size and
the smallest size the search finds at that image size; `--tile-levels` and `--min-confidence`
are the detector's settings that find smaller or less certain faces. The work is
e4e_jax.apps.align.align_folder.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from e4e_jax import cli
from e4e_jax.align.detect import INSTALL_HINT
from e4e_jax.apps.align import AlignError, align_folder, missed_faces_hint
from e4e_jax.outputs.names import NAMING_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(
        "python -m e4e_jax.align",
        "FFHQ-align every face in a folder of photos (one PNG per face, largest first) for "
        "the e4e face encoders. Needs: " + INSTALL_HINT,
        examples=["python -m e4e_jax.align --input photos/ --output aligned/",
                  "python -m e4e_jax.align --input group.jpg --output aligned/ --max-faces 3",
                  "python -m e4e_jax.align --input group.jpg --output aligned/ --tile-levels 2"],
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
    parser.add_argument("--tile-levels", type=int, default=1,
                        help="how finely large photos are searched: 0 the whole image only, 1 "
                             "(default) also half-size tiles, finding faces down to ~1/22 of the "
                             "longer side; each level more halves that (~2.5x slower)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the faces and manifest.tsv of an earlier run in --output")
    cli.add_verbose(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MediaPipe imports TensorFlow (for optional docs helpers); keep its start-up banner quiet
    cli.quiet_third_party_logs(args.verbose)
    try:
        summary = align_folder(args.input, args.output, size=args.size,
                               transform_size=args.transform_size, max_faces=args.max_faces,
                               min_confidence=args.min_confidence, tile_levels=args.tile_levels,
                               overwrite=args.overwrite, log=lambda line: print(line, flush=True))
    except AlignError as err:
        return cli.error(str(err), cli.EXIT_USAGE)
    except ImportError as err:
        return cli.error(str(err), cli.EXIT_NOTHING)
    except KeyboardInterrupt:
        return cli.interrupted(f"interrupted: the faces written so far and their manifest in "
                               f"{args.output} are kept")
    print(f"Done: {summary['images']} image(s), {summary['faces']} aligned face(s) written to "
          f"{args.output}, {len(summary['skipped'])} image(s) skipped.")
    for path, reason in summary["skipped"]:
        print(f"  skipped {path}: {reason}")
    hint = missed_faces_hint(summary["missed_below"], args.tile_levels, args.min_confidence)
    if hint:
        print(hint)
    return cli.EXIT_OK if summary["faces"] else cli.EXIT_NOTHING


if __name__ == "__main__":
    sys.exit(main())
