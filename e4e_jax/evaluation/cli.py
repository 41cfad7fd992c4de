"""eval.py's argument parsing and exit codes over `evaluation.loop.run` (see eval.py)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from e4e_jax.data.pipeline import DataError
from e4e_jax.editing.spec import SPEC_HELP, EditSpecError, parse_edit_spec
from e4e_jax.encoder_dirs import check_checkpoint
from e4e_jax.evaluation.base import EvalError, EvalOptions
from e4e_jax.evaluation.loop import run
from e4e_jax.evaluation.networks import load_networks


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python eval.py` (flags documented in --help)."""
    p = argparse.ArgumentParser(
        prog="python eval.py",
        description="Distortion, perception, editability and proximity-to-W metrics of e4e/pSp "
                    "encoder checkpoints; writes OUT/metrics.json and OUT/report.md.",
        epilog=f"Edit specs: {SPEC_HELP}. Unavailable metrics are null with a "
               f"'<metric>_reason' in metrics.json.")
    p.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                   help="inverter directory (convert_weights/e4e.py output or WORKDIR/export); "
                        "repeat to compare several (keyed by directory name)")
    p.add_argument("--data", required=True,
                   help="an image folder, 'tfds:NAME:SPLIT' (with --data_dir), or 'synthetic' "
                        "(each checkpoint generator's own images G(mapping(z)))")
    p.add_argument("--data_dir", default=None, help="TFDS data directory")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num_images", type=int, default=None,
                   help="evaluate at most this many images (synthetic: how many; default 1000)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0,
                   help="synthetic images, SWD patches and projections, sampled w")
    p.add_argument("--lpips", help="converted LPIPS directory (convert_weights/lpips.py; alex)")
    p.add_argument("--arcface", help="converted ArcFace directory: identity similarity (faces)")
    p.add_argument("--moco", help="converted MoCo directory: feature similarity (other domains)")
    p.add_argument("--inception", help="converted FID Inception directory "
                                       "(convert_weights/fid_inception.py)")
    p.add_argument("--fid_method", default="sqrtm", choices=("sqrtm", "eigen"),
                   help="sqrtm: pytorch-fid's computation; eigen: same value, much faster")
    p.add_argument("--edits", nargs="+", action="extend", metavar="SPEC",
                   help="edits for the editability FID/SWD at each spec's strength (default: "
                        "the --lec_edit; 'none' for no edits)")
    p.add_argument("--lec_edit", default="sefa:0", metavar="SPEC",
                   help="the edit of the Latent Editing Consistency (default sefa:0, strength "
                        "5, needs no files; 'none' to skip)")
    p.add_argument("--deviation_samples", type=int, default=5000,
                   help="sampled w for E||E(G(w)) - w|| (0 to skip)")
    p.add_argument("--num_grid", type=int, default=4, help="images in the report's grids")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """eval.py: parses `argv`, evaluates, returns the exit code (0 ok, 2 bad arguments, 130
    interrupted); errors are printed as one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from e4e_jax.checkpoints import ModelDirError
    edits = args.edits
    if edits is not None and [e.lower() for e in edits] == ["none"]:
        edits = []
    lec = None if args.lec_edit.lower() == "none" else args.lec_edit
    options = EvalOptions(batch_size=args.batch_size, seed=args.seed, edits=edits, lec_edit=lec,
                          deviation_samples=args.deviation_samples, fid_method=args.fid_method,
                          num_grid=args.num_grid)
    try:
        for c in args.checkpoint:                 # cheap checks before loading any network
            check_checkpoint(c)
        for spec in list(edits or []) + ([lec] if lec else []):
            parse_edit_spec(spec)
        nets = load_networks(args.lpips, args.arcface, args.moco, args.inception)
        run(args.checkpoint, args.data, args.out, data_dir=args.data_dir,
            num_images=args.num_images, nets=nets, options=options, argv=argv)
    except (ModelDirError, EditSpecError, EvalError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
