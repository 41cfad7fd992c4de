"""Prepare an image folder for training: ArrayRecord shards of the images at the training size.

    python -m e4e_jax.prepare --input photos/ --output prepared/ --size 256 [--workers 8]
        [--shard-size 1024] [--encoding raw|png] [--overwrite]
    python train.py --config configs/ffhq.py --config.data.train=prepared/ ...

The folder (local or gs://...) is read once, every image decoded and resized as training reads
it, and written as records of raw pixels (or PNGs) with DIR/manifest.json (counts, size, shards, source names and
hashes, the skipped files and why). Every command that takes an image folder takes DIR
(training's --config.data.train / test, eval's --data, encode's and invert's --input).
An interrupted run resumes when run again; the same input gives byte-identical output for any
--workers. The work is done by e4e_jax.data.prepared.prepare.

Exit codes: 0 written; 1 nothing usable (no file is a readable image); 2 bad arguments (missing
input, an output folder that is not a prepared dataset, an existing dataset without
--overwrite, a --size outside 8..4096, a bucket that cannot be reached), or a decoding worker
that died (out of memory: rerun with fewer --workers); 130 / 143 interrupted by SIGINT /
SIGTERM (rerun the same command to resume).
"""
from __future__ import annotations

import sys
import time

from e4e_jax import cli
from e4e_jax.outputs.progress import duration


class EtaProgress:
    """'prepare: done/total files (rate/s, ETA 1m05s)' on stderr: in place on a terminal,
    otherwise a line every `every_s` seconds and at the end. Files kept by a resumed run are
    not timed."""

    def __init__(self, stream=None, every_s: float = 10.0, clock=time.perf_counter):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s, self.clock = every_s, clock
        self.t0: float | None = None
        self.first = 0
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.t0 is None:               # the first call starts the clock
            self.t0, self.first, self.last = now, done, now
            return
        rate = (done - self.first) / (now - self.t0) if now > self.t0 else 0.0
        eta = f"ETA {duration((total - done) / rate)}" if rate > 0 else "ETA ?"
        line = f"prepare: {done}/{total} files ({rate:.1f} files/s, {eta})"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total or now - self.last >= self.every_s:
            self.stream.write(line + "\n")
            self.last = now
        self.stream.flush()


def parse_size(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '192,256' -> (H, W) = (192, 256) (the cars encoder's input)."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(f"--size takes a positive integer or H,W (e.g. 256 or 192,256), "
                         f"got {text!r}")
    from e4e_jax.data.prepared import MAX_SIZE, MIN_SIZE
    if min(parts) < MIN_SIZE or max(parts) > MAX_SIZE:
        raise ValueError(f"--size {text} is outside {MIN_SIZE}..{MAX_SIZE}: give the encoder's "
                         f"input size (256, or 192,256 for cars)")
    return parts[0], parts[1]


def build_parser():
    """The argument parser of `python -m e4e_jax.prepare`."""
    p = cli.make_parser(
        "python -m e4e_jax.prepare",
        "Turn an image folder (local or gs://) into ArrayRecord shards at the training size, "
        "for faster training, evaluation and encoding.",
        examples=["python -m e4e_jax.prepare --input photos/ --output prepared/ --size 256",
                  "python -m e4e_jax.prepare --input gs://bucket/ffhq --output "
                  "gs://bucket/ffhq-256 --size 256 --workers 16"],
        epilog="Writes OUTPUT/shard-*.array_record and OUTPUT/manifest.json (count, size, "
               "shards, images with their sha256, skipped files with reasons). Pass OUTPUT "
               "wherever an image folder is taken. docs/own-domain.md walks through it.\n"
               "Exit codes: 0 written, 1 no readable image, 2 bad arguments or output folder, "
               "130 interrupted (run the same command again to resume).")
    p.add_argument("--input", required=True, metavar="FOLDER",
                   help="image folder, searched recursively (a local path or gs://...)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="the prepared dataset's folder (created; a local path or gs://...)")
    p.add_argument("--size", default="256", metavar="S|H,W",
                   help="stored image size: the encoder's input size (default 256; 192,256 "
                        "for cars)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoding processes (default: the host's CPU count); the output does "
                        "not depend on it")
    p.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="images per shard (default 1024)")
    p.add_argument("--encoding", choices=("raw", "png"), default="raw",
                   help="records: raw uint8 pixels (default; the fastest to read) or PNG "
                        "(lossless, about 0.6x the bytes, decoded ~10x slower)")
    p.add_argument("--overwrite", action="store_true",
                   help="prepare again into an OUTPUT that already holds a prepared dataset")
    return p


def main(argv=None) -> int:
    """Parses `argv`, prepares the dataset, returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        size = parse_size(args.size)
    except ValueError as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    from e4e_jax.core import fs
    from e4e_jax.data import prepared
    shard_size = prepared.SHARD_SIZE if args.shard_size is None else args.shard_size
    if shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {shard_size}")
    progress = EtaProgress()

    def log(text: str) -> None:
        print(("\n" if progress.tty else "") + text, file=sys.stderr)

    try:
        manifest = prepared.prepare(args.input, args.output, size, workers=args.workers,
                                    shard_size=shard_size, overwrite=args.overwrite,
                                    encoding=args.encoding,
                                    progress=progress, log=log)
    except prepared.NothingReadableError as e:
        return cli.error(str(e), cli.EXIT_NOTHING)
    except (prepared.PrepareError, FileNotFoundError, ImportError, fs.RemoteError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        return cli.interrupted(("\n" if progress.tty else "") + f"interrupted: the complete "
                               f"shards in {args.output} are kept; run the same command again "
                               f"to resume.")
    skipped = len(manifest["skipped"])
    print(f"prepared {manifest['count']} images at {size[0]}x{size[1]} in "
          f"{len(manifest['shards'])} shard(s) in {args.output}; skipped {skipped}"
          f"{' (listed in manifest.json)' if skipped else ''}", file=sys.stderr)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
