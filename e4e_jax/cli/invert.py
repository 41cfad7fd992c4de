"""Invert command: e4e, the StyleGAN2-ADA W projector, PTI or ReStyle over a folder of images.

    python -m e4e_jax.invert --checkpoint converted/e4e_ffhq_encode --input photos/ \\
        --output out/ --method pti --lpips weights/lpips_alex [--pivot e4e|projector] [--steps N]
    python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode \\
        --generator out/generators/face --latents out/latents/face.npy --edit sefa:0 --output e/

Writes (see docs: README, "Inversion beyond the encoder")
    OUT/latents.npy, files.txt  (N, n_latent, 512) codes (PTI: the pivots) and their input files,
                                as `python -m e4e_jax.encode`; names.txt: each row's output name
    OUT/reconstructions/<name>.png, OUT/side_by_side/<name>.png (input | e4e | projector/PTI)
    OUT/latents/<name>.npy      that image's code alone (1, n_latent, 512), for edit --latents
    OUT/generators/<name>/      pti: the tuned generator (load_generator / edit --generator)
    OUT/noises/<name>.npz       projector: the optimized noise maps
    OUT/iterations/<name>.npy   restyle: every iteration's W+ (N, n_latent, 512); the
                                outputs above hold the last iteration
    OUT/unaligned/<name>.png    --transforms (StyleGAN3): the code rendered with its transform
    OUT/skipped.txt, summary.json

Exit codes: 0 done, 1 nothing usable produced (every file unreadable or failed), 2 bad
arguments or model directories, 130 / 143 interrupted by Ctrl-C / SIGTERM (finished images
are kept; rerunning the same command resumes, skipping them).
The work is done by e4e_jax.apps.invert.invert_folder (importable, no argv).
"""
from __future__ import annotations

import os
import sys

from e4e_jax.apps.invert import EXAMPLES, OUTPUTS


def build_parser():
    """The command's parser (e4e_jax.cli: dash-style flags, underscore aliases accepted)."""
    from e4e_jax import cli
    from e4e_jax.apps.invert import METHODS, PIVOTS, PTI_PIVOT_STEPS
    p = cli.make_parser(
        "python -m e4e_jax.invert",
        "Invert a folder of images with e4e, the StyleGAN2-ADA W projector, or PTI (pivotal "
        "tuning of the generator per image).", examples=EXAMPLES, epilog=OUTPUTS)
    p.add_argument("--checkpoint", required=True, metavar="E4E_DIR",
                   help="converted e4e directory (`e4e-jax convert e4e` or WORKDIR/export)")
    p.add_argument("--input", required=True, metavar="FOLDER",
                   help="folder of images (searched recursively)")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--method", choices=METHODS, default="e4e",
                   help="e4e: encoder only; projector: W projection (ADA defaults); pti: tune "
                        "the generator around a pivot; restyle: ReStyle's iterative refinement "
                        "(a `convert restyle` checkpoint) (default e4e)")
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="restyle: encoder passes per image (official default 5); the outputs "
                        "hold the last one, side_by_side/ shows every one")
    p.add_argument("--pivot", choices=PIVOTS, default="e4e",
                   help="PTI's pivot: the e4e code (default) or a W projection")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="optimisation steps (projector default 1000, pti tuning default 350)")
    p.add_argument("--pivot-steps", type=int, default=PTI_PIVOT_STEPS, metavar="N",
                   help=f"projector pivot steps for --pivot projector (PTI's {PTI_PIVOT_STEPS})")
    p.add_argument("--lpips", metavar="DIR",
                   help="converted LPIPS directory (`e4e-jax convert lpips`), required by "
                        "projector and pti (official recipe: LPIPS-VGG)")
    p.add_argument("--lpips-threshold", type=float, default=0.06, metavar="T",
                   help="pti: stop tuning once LPIPS <= T (PTI's LPIPS_value_threshold, 0.06); "
                        "a negative T runs every step")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the projector's noise draws (image k uses seed + k)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs in OUT (an interrupted run of the same "
                        "command resumes without it)")
    p.add_argument("--transforms", metavar="FILE.npy", default=None,
                   help="StyleGAN3 only: (N, 3, 3) input transforms, row k for the k-th input "
                        "file (sorted): each code is also rendered with its transform into "
                        "OUT/unaligned/ (stylegan3-editing's unaligned inversion)")
    cli.add_dtype_precision(p)
    cli.add_verbose(p)
    return p


def main(argv=None) -> int:
    """Parses argv, runs `invert_folder`, maps errors to exit codes (no tracebacks)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    from e4e_jax import cli
    from e4e_jax.apps.invert import InvertError, InvertRequest, invert_folder
    from e4e_jax.core.fs import RemoteError
    from e4e_jax.nets.model_dir import ModelDirError
    from e4e_jax.train.interrupts import Interrupted
    req = InvertRequest(args.checkpoint, args.input, args.output, method=args.method,
                        pivot=args.pivot, steps=args.steps, pivot_steps=args.pivot_steps,
                        lpips=args.lpips, lpips_threshold=args.lpips_threshold,
                        overwrite=args.overwrite, seed=args.seed, iterations=args.iterations,
                        transforms=args.transforms, given=tuple(sorted(parser.given(argv))),
                        **cli.loader_kwargs(args))
    cli.quiet_third_party_logs(args.verbose)
    try:
        summary = invert_folder(req)
    except (InvertError, ModelDirError, FileNotFoundError, FileExistsError, RemoteError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except Interrupted as e:      # one line: how far it got, how to resume
        return cli.interrupted(str(e), e.exit_code)
    except KeyboardInterrupt:
        return cli.interrupted()
    if summary["inverted"] == 0:
        return cli.error(f"none of the {summary['files']} image files could be inverted (see "
                         f"{os.path.join(args.output, 'skipped.txt')}).", cli.EXIT_NOTHING)
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
