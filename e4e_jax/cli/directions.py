"""Your own InterFaceGAN direction: a linear SVM between the highest- and lowest-scored codes.

    python -m e4e_jax.directions --synthetic 2000 --checkpoint runs/demo/export --output dirs/
        (then fill the scores of dirs/synthetic/labels.csv with any classifier)
    python -m e4e_jax.directions --latents dirs/synthetic/latents.npy \\
        --labels dirs/synthetic/labels.csv --attribute bright --output dirs/ [--chosen 0.1]
        [--condition dirs/other.npy ...] [--seed 0] [--overwrite]
    python -m e4e_jax.edit --checkpoint runs/demo/export --synthetic 4 \\
        --edit interfacegan:dirs/bright.npy:3 --output edits/

Training (InterFaceGAN's train_boundary, genforce/interfacegan utils/manipulator.py: the
`--chosen` most and least confident codes, a `--split-ratio` train / validation split shuffled
with `--seed`, sklearn's linear SVC, its unit normal) writes
    DIR/NAME.npy    (1, w_dim) float32: the direction, as `edit --edit interfacegan:...` reads it
    DIR/NAME.json   validation accuracy, counts, the chosen samples, the settings, the inputs
--condition OTHER.npy (repeatable) projects the direction off other directions (InterFaceGAN's
project_boundary), so editing NAME leaves those attributes as they are.

LATENTS: w codes (N, w_dim) or W+ codes whose rows are equal (.npy, .npz, .pt), with a
files.txt beside them naming each row (as `e4e-jax encode` writes). LABELS: a CSV with a header
line, then `name,score` rows naming those files; an empty score leaves a code out.

--synthetic N samples N codes of a generator (--generator DIR, or the generator of the encoder
--checkpoint DIR) and writes OUTPUT/synthetic/latents.npy, files.txt, images/*.png and
labels.csv (empty scores) for a classifier to fill, then tells the next command.

The work is done by e4e_jax.apps.directions (train_direction, sample_synthetic). Exit codes:
0 written; 1 nothing usable (too few scored codes, nothing to separate); 2 bad arguments or
files (unknown names, non-numeric scores, W+ codes whose rows differ, an existing NAME.npy
without --overwrite); 130 interrupted.
"""
from __future__ import annotations

import sys

from e4e_jax import cli
from e4e_jax.apps.directions import (
    DirectionsError,
    NothingUsableError,
    sample_synthetic,
    train_direction,
)


def build_parser():
    """The argument parser of `python -m e4e_jax.directions`."""
    p = cli.make_parser(
        "python -m e4e_jax.directions",
        "Train your own InterFaceGAN direction from codes and a CSV of scores (or sample codes "
        "to score with --synthetic).",
        examples=[("python -m e4e_jax.directions --synthetic 2000 --checkpoint "
                   "runs/demo/export --output runs/demo/directions"),
                  ("python -m e4e_jax.directions --latents runs/demo/directions/synthetic/"
                   "latents.npy --labels runs/demo/directions/synthetic/labels.csv --attribute "
                   "bright --output runs/demo/directions --chosen 0.1")],
        epilog="Writes OUTPUT/NAME.npy (1, w_dim), read by `edit --edit "
               "interfacegan:OUTPUT/NAME.npy:3`, and OUTPUT/NAME.json (validation accuracy, "
               "counts). docs/directions.md walks through the demo.\nExit codes: 0 written, "
               "1 nothing usable (e.g. too few scored codes), 2 bad arguments or files, "
               "130 interrupted.")
    p.add_argument("--latents", metavar="LATENTS",
                   help="w codes (N, w_dim) or W+ codes with equal rows (.npy / .npz / .pt; "
                        "FILE:KEY for one array of several), files.txt beside them")
    p.add_argument("--files", help="the names of the LATENTS rows (default: files.txt beside "
                                   "LATENTS)")
    p.add_argument("--labels", metavar="LABELS.csv",
                   help="a header line, then name,score rows naming the files of files.txt")
    p.add_argument("--attribute", metavar="NAME",
                   help="the direction's name: writes OUTPUT/NAME.npy and OUTPUT/NAME.json")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--chosen", type=float, default=0.02, metavar="R",
                   help="codes per side: a fraction in (0, 1] of the scored codes or a count "
                        "> 1 (InterFaceGAN's chosen_num_or_ratio; default 0.02, made for "
                        "hundreds of thousands of codes: raise it for a few hundred)")
    p.add_argument("--split-ratio", type=float, default=0.7,
                   help="training share of the chosen codes, the rest validates (default 0.7)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train / validation shuffle, and of --synthetic's z "
                        "(default 0)")
    p.add_argument("--invalid-value", type=float, default=None,
                   help="scores equal to this are left out (InterFaceGAN's invalid_value)")
    p.add_argument("--condition", action="append", default=[], metavar="OTHER.npy",
                   help="project the direction off this direction (repeatable; "
                        "InterFaceGAN's project_boundary)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUTPUT/NAME.npy (or OUTPUT/synthetic/ files)")
    p.add_argument("--synthetic", type=int, metavar="N",
                   help="instead of training: sample N codes of the generator and write them "
                        "with a labels template under OUTPUT/synthetic/")
    p.add_argument("--generator", metavar="DIR", help="--synthetic: a generator directory")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="--synthetic: an encoder directory (e.g. runs/demo/export), whose "
                        "generator is sampled")
    p.add_argument("--batch-size", type=int, default=16,
                   help="--synthetic: samples per generator call (default 16)")
    cli.add_dtype_precision(p)
    cli.add_verbose(p)
    return p


def main(argv=None) -> int:
    """Parses `argv`, trains (or samples), returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    cli.quiet_third_party_logs(args.verbose)
    training = {"--latents": args.latents, "--labels": args.labels,
                "--attribute": args.attribute}
    if args.synthetic is not None:
        given = [k for k, v in training.items() if v is not None] + \
            (["--condition"] if args.condition else [])
        if given:
            p.error(f"--synthetic samples codes to score; train afterwards, without "
                    f"--synthetic ({', '.join(given)} given)")
    else:
        missing = [k for k, v in training.items() if v is None]
        if missing:
            p.error(f"give {', '.join(missing)} (or --synthetic N to sample codes to score "
                    f"first)")
        if args.generator or args.checkpoint:
            p.error("--generator / --checkpoint are for --synthetic only")
    from e4e_jax.data.codes import CodesError
    from e4e_jax.nets.model_dir import ModelDirError
    try:
        if args.synthetic is not None:
            sample_synthetic(args.output, args.synthetic, generator=args.generator,
                             checkpoint=args.checkpoint, seed=args.seed,
                             batch_size=args.batch_size, overwrite=args.overwrite,
                             loader_kwargs=cli.loader_kwargs(args), command=p.prog)
        else:
            train_direction(args.latents, args.labels, args.attribute, args.output,
                            files=args.files, chosen=args.chosen, split_ratio=args.split_ratio,
                            seed=args.seed, invalid_value=args.invalid_value,
                            conditions=args.condition, overwrite=args.overwrite,
                            command=p.prog)
    except (DirectionsError, CodesError, ModelDirError, FileNotFoundError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except NothingUsableError as e:
        return cli.error(str(e), cli.EXIT_NOTHING)
    except ImportError as e:
        if "scikit-learn" not in str(e):
            raise
        return cli.error(str(e), cli.EXIT_NOTHING)       # installed without its dependencies
    except KeyboardInterrupt:
        return cli.interrupted()       # 130 / 143; run_main prints the one line
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
