"""eval.py's argument parsing and exit codes over `evaluation.loop.run` (see eval.py).

Exit codes: 0 metrics written; 1 no image could be read (nothing evaluated); 2 bad arguments,
model directories or data; 130 interrupted.
"""
from __future__ import annotations

import sys
from typing import Sequence

from e4e_jax import cli
from e4e_jax.apps.evaluate import run
from e4e_jax.core.fs import RemoteError
from e4e_jax.data.sources import DataError
from e4e_jax.editing.spec import SPEC_HELP, EditSpecError, parse_edit_spec
from e4e_jax.evaluation.evaluators.base import (
    DEFAULT_DEVIATION_SAMPLES,
    PAPER_DEVIATION_SAMPLES,
    EvalError,
    EvalOptions,
    NothingEvaluatedError,
)
from e4e_jax.evaluation.networks import load_networks
from e4e_jax.nets.encoder import check_checkpoint


def build_parser():
    """The argument parser of `python eval.py` (flags documented in --help)."""
    p = cli.make_parser(
        "python eval.py",
        "Distortion, perception, editability and proximity-to-W metrics of e4e/pSp encoder "
        "checkpoints; writes OUT/metrics.json and OUT/report.md.",
        examples=["python eval.py --checkpoint runs/demo/export --input synthetic "
                  "--num-images 64 --output eval/",
                  "python eval.py --checkpoint A --checkpoint B --input test_images/ --output "
                  "eval/ --lpips weights/lpips_alex --arcface weights/arcface --inception "
                  "weights/fid_inception --paper"],
        epilog=f"Edit specs: {SPEC_HELP}. Unavailable metrics are null with a "
               f"'<metric>_reason' in metrics.json. The cost of every metric (network passes) "
               f"is printed before the work starts, an ETA once a batch after compilation is "
               f"timed. --input and --output were --data and --out; the old spellings stay "
               f"as aliases.\n"
               f"Exit codes: 0 metrics written, 1 no image readable, 2 bad arguments or "
               f"files, 130 interrupted.")
    p.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                   help="inverter directory (`e4e-jax convert e4e` output or WORKDIR/export); "
                        "repeat to compare several (keyed by directory name)")
    p.add_argument("--input", "--data", dest="input", required=True, metavar="DATA",
                   help="an image folder, 'tfds:NAME:SPLIT' (with --data-dir), or 'synthetic' "
                        "(each checkpoint generator's own images G(mapping(z)); unconditional "
                        "generators only); --data is an alias")
    p.add_argument("--data-dir", default=None, help="TFDS data directory")
    p.add_argument("--output", "--out", dest="output", required=True, metavar="OUT",
                   help="output folder (metrics.json, report.md, grids); --out is an alias")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the metrics.json and report.md of an earlier eval in OUT")
    p.add_argument("--num-images", type=int, default=None,
                   help="evaluate at most this many images (synthetic: how many; default 1000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0,
                   help="synthetic images, SWD patches and projections, sampled w")
    p.add_argument("--lpips", help="converted LPIPS directory (`e4e-jax convert lpips`; alex)")
    p.add_argument("--arcface", help="converted ArcFace directory: identity similarity (faces)")
    p.add_argument("--moco", help="converted MoCo directory: feature similarity (other domains)")
    p.add_argument("--inception", help="converted FID Inception directory "
                                       "(`e4e-jax convert fid_inception`)")
    p.add_argument("--fid-method", default="sqrtm", choices=("sqrtm", "eigen"),
                   help="sqrtm: pytorch-fid's computation; eigen: same value, much faster")
    p.add_argument("--edits", nargs="+", action="extend", metavar="SPEC",
                   help="edits for the editability FID/SWD at each spec's strength (default: "
                        "the --lec-edit; 'none' for no edits)")
    p.add_argument("--lec-edit", default="sefa:0", metavar="SPEC",
                   help="the edit of the Latent Editing Consistency (default sefa:0, strength "
                        "5, needs no files; 'none' to skip)")
    p.add_argument("--deviation-samples", type=int, default=None,
                   help=f"sampled w for E||E(G(w)) - w||, each generated and inverted (default "
                        f"{DEFAULT_DEVIATION_SAMPLES}, minutes on a CPU; --paper: "
                        f"{PAPER_DEVIATION_SAMPLES}; 0 to skip)")
    p.add_argument("--paper", action="store_true",
                   help=f"the paper's setting: --deviation-samples {PAPER_DEVIATION_SAMPLES} "
                        f"(unless given); slow on a CPU")
    p.add_argument("--num-grid", type=int, default=4, help="images in the report's grids")
    cli.add_dtype_precision(p)
    cli.add_verbose(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """eval.py: parses `argv`, evaluates, returns the exit code (module docstring); errors
    are printed as one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.quiet_third_party_logs(args.verbose)
    unused = cli.unused_flag(parser.given(argv), [
        ("data_dir", "--data-dir", args.input.startswith("tfds:"), "--input tfds:NAME:SPLIT"),
        ("fid_method", "--fid-method", args.inception is not None, "FID (--inception DIR)")])
    if unused:
        return cli.error(unused, cli.EXIT_USAGE)
    from e4e_jax.nets.model_dir import ModelDirError
    edits = args.edits
    if edits is not None and [e.lower() for e in edits] == ["none"]:
        edits = []
    lec = None if args.lec_edit.lower() == "none" else args.lec_edit
    deviation = args.deviation_samples
    if deviation is None:
        deviation = PAPER_DEVIATION_SAMPLES if args.paper else DEFAULT_DEVIATION_SAMPLES
    options = EvalOptions(batch_size=args.batch_size, seed=args.seed, edits=edits, lec_edit=lec,
                          deviation_samples=deviation, fid_method=args.fid_method,
                          num_grid=args.num_grid)
    kw = cli.loader_kwargs(args)
    try:
        for c in args.checkpoint:                 # cheap checks before loading any network
            check_checkpoint(c)
        for spec in list(edits or []) + ([lec] if lec else []):
            parse_edit_spec(spec)
        nets = load_networks(args.lpips, args.arcface, args.moco, args.inception,
                             loader_kwargs=kw)
        run(args.checkpoint, args.input, args.output, data_dir=args.data_dir,
            num_images=args.num_images, nets=nets, options=options, argv=argv,
            loader_kwargs=kw, overwrite=args.overwrite, command=parser.prog)
    except NothingEvaluatedError as e:
        return cli.error(str(e), cli.EXIT_NOTHING)
    except (ModelDirError, EditSpecError, EvalError, DataError, FileNotFoundError,
            FileExistsError, RemoteError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        return cli.interrupted()       # 130 / 143; run_main prints the one line
    return cli.EXIT_OK
