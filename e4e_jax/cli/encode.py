"""Batch encoding of a folder of images into W+ latents.

    python -m e4e_jax.encode --checkpoint converted/e4e_ffhq_encode --input photos/ --output out/
        [--batch-size 8] [--save-images] [--align] [--overwrite]

Writes
    OUT/latents.npy          (N, n_latent, 512) float32, latent_avg added (what the generator takes)
    OUT/files.txt            one input path (relative to --input) per row of latents.npy; with
                             --align, the k-th face (k > 0) of a file is `path#face<k>`
    OUT/skipped.txt          files that could not be read (or had no face), with the reason
    OUT/reconstructions/     with --save-images: the reconstruction of every row (PNG)
    OUT/side_by_side/        with --save-images: input | reconstruction, a captioned grid
                             (small images magnified by nearest neighbour, as every command's)
    OUT/images.txt           with --save-images: the PNG name of every row (line k <-> row k)

PNG names: `<relative path without extension>.png` (`_face<k>` for the k-th face); an input
whose name is already taken in this run (a.jpg then a.png; A.png vs a.png, compared ignoring
case; two_face1.jpg beside a two-face two.jpg) keeps its extension: `a_png.png`,
`two_face1_jpg.png` (e4e_jax/output_names.py). Speeds (progress line and summary) are latents
written per wall-clock second, compile time included; summary.json also gives the rate after
the first batch. Exit codes: 0 latents written; 1 no file could be read (no latents) or
--align without its extras; 2 bad arguments, a bad model directory or input folder;
130 interrupted.

Images of any size and mode (JPEG/PNG/...; grey, palette, alpha, CMYK) are converted to RGB and
resized like the official test transform. The model is compiled once: every batch has the same
shape (the last one is padded), and the batch is split over all local devices. latents.npy and
files.txt are extended after every batch and are valid files at every moment, so an interrupted
run keeps everything encoded so far.

The pieces (model loading, outputs, batched model calls) are in e4e_jax/encoding.py; this module
holds the command and its loop over files (`encode_folder`, callable without argv).
"""
from __future__ import annotations

import os
import sys

from e4e_jax import cli
from e4e_jax.apps.encode import (  # noqa: F401
    FolderOutputs,
    LatentWriter,
    MissingExtrasError,
    Progress,
    image_name,
    import_align,
    run_summary,
    encode_batch,
    encode_folder,
    open_run,
)


def build_parser():
    """The argument parser of `python -m e4e_jax.encode`."""
    parser = cli.make_parser(
        "python -m e4e_jax.encode",
        "Encode a folder of images into W+ latents with a converted e4e/pSp model.",
        examples=["python -m e4e_jax.encode --checkpoint runs/demo/export --input photos/ "
                  "--output out/ --save-images",
                  "python -m e4e_jax.encode --checkpoint converted/e4e_ffhq_encode --input "
                  "photos/ --output out/ --align --batch-size 4"],
        epilog="Exit codes: 0 latents written, 1 no input readable (or --align extras "
               "missing), 2 bad arguments or "
               "files, 130 interrupted.")
    parser.add_argument("--checkpoint", required=True,
                        help="converted model directory (`e4e-jax convert e4e` output or a "
                             "training run's WORKDIR/export)")
    parser.add_argument("--input", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per step (rounded up to a multiple of the device count)")
    parser.add_argument("--save-images", action="store_true",
                        help="also write reconstructions and input|reconstruction PNGs")
    parser.add_argument("--align", action="store_true",
                        help="detect and align faces first (needs `pip install .[align]`); "
                             "every face becomes one row")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT/latents.npy")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding threads (default min(4, CPUs))")
    cli.add_dtype_precision(parser)
    cli.add_verbose(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    cli.quiet_third_party_logs(args.verbose)
    from e4e_jax.core.fs import RemoteError
    from e4e_jax.nets.model_dir import ModelDirError
    try:
        summary = encode_folder(args.checkpoint, args.input, args.output, args.batch_size,
                                args.save_images, args.align, args.overwrite, args.workers,
                                loader_kwargs=cli.loader_kwargs(args))
    except (ModelDirError, FileNotFoundError, FileExistsError, RemoteError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except SystemExit as e:        # open_run's "error: ..." checks: bad arguments
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        return cli.EXIT_NOTHING if isinstance(e, MissingExtrasError) else cli.EXIT_USAGE
    except KeyboardInterrupt as e:  # args: the line encode_folder printed (what it kept)
        return cli.interrupted(printed=bool(e.args))
    if summary["latents"] == 0:
        return cli.error(f"none of the {summary['files']} files could be read (see "
                         f"{os.path.join(args.output, 'skipped.txt')}); no latents written.",
                         cli.EXIT_NOTHING)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
