"""Writes a PNG grid of generator samples.

    python -m e4e_jax.sample --out samples.png                       # seeded tiny generator
    python -m e4e_jax.sample --generator converted/ffhq --n 8 --truncation 0.7 --out ffhq.png
    python -m e4e_jax.sample --generator converted/cifar10_ada --class 3 --out cls3.png

A StyleGAN3 generator takes the official gen_images.py input transform, `--translate X Y` and
`--rotate DEG`; a StyleGAN2 generator refuses them. A class-conditional StyleGAN2-ADA generator
(c_dim > 0) needs `--class K` (0 <= K < c_dim; the label is the one-hot vector of K, as the
official generate.py); an unconditional one refuses --class. Exit codes: 0 grid written, 2 bad
arguments or generator directory, 130 interrupted.
The grid is one PNG written exactly where --out says (replacing a file of that name, as before).
"""
from __future__ import annotations

import os
import sys
import time

from e4e_jax import cli
from e4e_jax.apps.sample import SampleError, sample_grid
from e4e_jax.data.image_io import save_png


def build_parser():
    """The argument parser of `python -m e4e_jax.sample`."""
    p = cli.make_parser(
        "python -m e4e_jax.sample", "Write a PNG grid of generator samples.",
        examples=["python -m e4e_jax.sample --output samples.png",
                  "python -m e4e_jax.sample --generator converted/ffhq --n 8 --truncation 0.7 "
                  "--output ffhq.png",
                  "python -m e4e_jax.sample --generator converted/cifar10_ada --class 3 "
                  "--output cls3.png",
                  "python -m e4e_jax.sample --generator converted/stylegan3-r --translate 0.2 0 "
                  "--rotate 30 --output sg3.png"],
        epilog="Exit codes: 0 grid written, 2 bad arguments or generator directory, "
               "130 interrupted.")
    p.add_argument("--generator", help="converted generator directory (default: a seeded tiny "
                                       "random generator, no download needed)")
    p.add_argument("--output", "--out", dest="out", default="samples.png", metavar="PNG",
                   help="output PNG (default samples.png); --out is an alias")
    p.add_argument("--n", "--num-images", dest="n", type=int, default=16,
                   help="number of samples (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0, help="psi toward latent_avg")
    p.add_argument("--noise", default=None, choices=["const", "random", "none"],
                   help="StyleGAN2 noise inputs (default const); a StyleGAN3 generator has "
                        "none and refuses the flag")
    p.add_argument("--resolution", type=int, default=64, help="tiny generator only")
    p.add_argument("--class", dest="class_index", type=int, default=None, metavar="K",
                   help="class of a class-conditional (c_dim > 0) StyleGAN2-ADA generator "
                        "(required for those, refused for unconditional ones)")
    p.add_argument("--translate", type=float, nargs=2, default=None, metavar=("X", "Y"),
                   help="StyleGAN3 only: translate the image by (X, Y) in the input's sampling "
                        "grid units, as the official gen_images.py --translate X,Y")
    p.add_argument("--rotate", type=float, default=None, metavar="DEG",
                   help="StyleGAN3 only: rotate the image by DEG degrees, as the official "
                        "gen_images.py --rotate")
    cli.add_dtype_precision(p)
    cli.add_verbose(p)
    p.add_confusion("--checkpoint", "sample takes --generator DIR (an export works too)")
    return p


def main(argv=None) -> int:
    """`python -m e4e_jax.sample`: parses `argv`, writes the grid, returns the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    cli.quiet_third_party_logs(args.verbose)
    unused = cli.unused_flag(p.given(argv), [
        ("resolution", "--resolution", args.generator is None,
         "the tiny random generator (no --generator; a converted one has its own)")])
    if unused:
        return cli.error(unused, cli.EXIT_USAGE)
    if args.n < 1:
        p.error("--n must be at least 1")
    ext = os.path.splitext(args.out)[1].lower()
    if os.path.isdir(args.out) or ext not in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        p.error(f"--output {args.out}: give an image file name ending in .png (or .jpg, "
                f".bmp, .webp), e.g. --output samples.png")
    from e4e_jax.nets.model_dir import ModelDirError
    t0 = time.time()
    try:
        grid, g = sample_grid(args.generator, args.n, args.seed, args.truncation, args.noise,
                              args.resolution, args.class_index, cli.loader_kwargs(args),
                              translate=args.translate, rotate=args.rotate)
    except (SampleError, ModelDirError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        return cli.interrupted()       # 130 / 143; run_main prints the one line
    out = args.out
    save_png(grid, out)
    print(f"wrote {out}: {args.n} samples of {g!r}"
          f"{'' if args.class_index is None else f', class {args.class_index}'}"
          f"{'' if args.translate is None else f', translate {tuple(args.translate)}'}"
          f"{'' if args.rotate is None else f', rotate {args.rotate} deg'} in "
          f"{time.time() - t0:.1f}s")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
