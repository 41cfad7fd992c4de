"""Batch encoding of a folder of images into W+ latents.

    python -m e4e_jax.encode --checkpoint converted/e4e_ffhq_encode --input photos/ --output out/
        [--batch-size 8] [--save-images] [--align] [--overwrite]

Writes
    OUT/latents.npy          (N, n_latent, 512) float32, latent_avg added (what the generator takes)
    OUT/files.txt            one input path (relative to --input) per row of latents.npy; with
                             --align, the k-th face (k > 0) of a file is `path#face<k>`
    OUT/skipped.txt          files that could not be read (or had no face), with the reason
    OUT/reconstructions/     with --save-images: the reconstruction of every row (PNG)
    OUT/side_by_side/        with --save-images: input | reconstruction (PNG)
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

import collections
import concurrent.futures as cf
import json
import os
import sys
import time
from typing import Iterator

import numpy as np

from e4e_jax import cli, image_io
from e4e_jax.encoding import (FolderOutputs, LatentWriter, MissingExtrasError,  # noqa: F401
                              Progress, _image_name, _import_align, _summary, encode_batch,
                              open_run)


def _load_rows(path: str, rel: str, size: tuple[int, int], align_faces) -> list[tuple[str, np.ndarray]]:
    """The model inputs of one file: one row, or one per face with --align."""
    img = image_io.read_rgb(path)
    if align_faces is None:
        return [(rel, image_io.load_image(img, size))]
    try:
        faces = align_faces(img, max(size))
    except ImportError as e:
        raise MissingExtrasError(f"error: --align needs the face-alignment extras ({e}); "
                         f"`pip install .[align]`.")
    if not faces:
        raise image_io.ImageReadError("no face found")
    return [(rel if k == 0 else f"{rel}#face{k}", image_io.load_image(face, size))
            for k, face in enumerate(faces)]


def _iter_loaded(folder: str, files: list[str], size, align_faces, workers: int, prefetch: int
                 ) -> Iterator[tuple[str, list | None, str | None]]:
    """(relative path, rows or None, error or None) in file order, decoded in threads."""
    def job(rel):
        try:
            return rel, _load_rows(os.path.join(folder, rel), rel, size, align_faces), None
        except image_io.ImageReadError as e:
            # the line already names the file: drop PIL's repeat of its full path
            return rel, None, " ".join(
                str(e).replace(f"{os.path.join(folder, rel)!r}", "").split())
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        it = iter(files)
        for rel in it:
            pending.append(pool.submit(job, rel))
            if len(pending) >= prefetch:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(job, nxt))


def encode_folder(checkpoint: str, input_dir: str, output_dir: str, batch_size: int = 8,
                  save_images: bool = False, align: bool = False, overwrite: bool = False,
                  workers: int | None = None, log=sys.stderr,
                  loader_kwargs: dict | None = None) -> dict:
    """Runs the command; returns the summary (also written to OUT/summary.json).

    `open_run` (checks, model) -> files decoded in threads (`_iter_loaded`) -> batches of
    `batch_size` rows through `encode_batch` -> `FolderOutputs`. An interrupt keeps every row
    written so far (and re-raises KeyboardInterrupt after the summary).
    """
    import jax
    files, inv, batch_size, align_faces = open_run(checkpoint, input_dir, output_dir,
                                                   batch_size, align, overwrite,
                                                   loader_kwargs)
    n_dev = jax.local_device_count()
    print(f"encoding {len(files)} files from {input_dir} with {inv} on {n_dev} "
          f"{jax.devices()[0].platform} device(s), batch {batch_size}", file=log)
    out = FolderOutputs(output_dir, (inv.n_latent, inv.generator.style_dim), save_images)
    progress = Progress(len(files), log)
    t0 = time.perf_counter()
    first_batch_s, files_done, interrupted = None, 0, False
    batch_names: list[str] = []
    batch_inputs: list[np.ndarray] = []

    def flush_batch():
        nonlocal first_batch_s
        if batch_names:
            w, rec, dt = encode_batch(inv, batch_inputs, batch_size, save_images)
            first_batch_s = dt if first_batch_s is None else first_batch_s
            out.add(batch_names, batch_inputs, w, rec)
            batch_names.clear()
            batch_inputs.clear()

    try:
        for rel, rows, err in _iter_loaded(input_dir, files, inv.input_size, align_faces,
                                           workers or min(4, os.cpu_count() or 1),
                                           prefetch=2 * batch_size):
            files_done += 1
            if err is not None:
                out.skip(rel, err)
                print(("\n" if progress.tty else "") + f"skipping {rel}: {err}", file=log)
            else:
                for name, x in rows:
                    batch_names.append(name)
                    batch_inputs.append(x)
                    if len(batch_names) == batch_size:
                        flush_batch()
            # latents written so far: rows still waiting for their batch are not counted, so
            # the rate is the summary's (written latents per wall second, compile included)
            progress.update(files_done, out.writer.rows)
        flush_batch()
        progress.update(files_done, out.writer.rows, final=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        out.close()
    seconds = time.perf_counter() - t0
    summary = _summary(files, files_done, out, seconds, first_batch_s, batch_size, n_dev,
                       interrupted, inv, save_images)
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{'interrupted: ' if interrupted else ''}encoded {out.writer.rows} latents from "
          f"{files_done - len(out.skipped)} of {len(files)} files in {seconds:.1f} s "
          f"({summary['images_per_s']} images/s incl. compile; first batch "
          f"{summary['first_batch_seconds_incl_compile']} s); skipped {len(out.skipped)}"
          f"{' (see skipped.txt)' if out.skipped else ''}; wrote {out.latents_path} "
          f"{tuple(summary['latents_shape'])} and files.txt", file=log)
    if interrupted:
        raise KeyboardInterrupt
    return summary


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
                        help="converted model directory (convert_weights/e4e.py output or a "
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
    from e4e_jax.checkpoints import ModelDirError
    try:
        summary = encode_folder(args.checkpoint, args.input, args.output, args.batch_size,
                                args.save_images, args.align, args.overwrite, args.workers,
                                loader_kwargs=cli.loader_kwargs(args))
    except (ModelDirError, FileNotFoundError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except SystemExit as e:        # open_run's "error: ..." checks: bad arguments
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        return cli.EXIT_NOTHING if isinstance(e, MissingExtrasError) else cli.EXIT_USAGE
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED
    if summary["latents"] == 0:
        return cli.error(f"none of the {summary['files']} files could be read (see "
                         f"{os.path.join(args.output, 'skipped.txt')}); no latents written.",
                         cli.EXIT_NOTHING)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
