"""Writes a PNG grid of generator samples.

    python -m e4e_jax.sample --out samples.png                       # seeded tiny generator
    python -m e4e_jax.sample --generator converted/ffhq --n 8 --truncation 0.7 --out ffhq.png
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from e4e_jax.grids import make_grid
from e4e_jax.image_io import save_png, to_uint8


def sample_grid(generator: str | None = None, n: int = 16, seed: int = 0,
                truncation: float = 1.0, noise: str = "const", resolution: int = 64):
    """(uint8 grid (rows * H, min(n, 8) * W, 3), generator) of `n` samples G(mapping(z)).

    generator: a converted generator directory, or None for a seeded tiny random generator
    (max_channels 64, n_mlp 4, `resolution` px; its images are normalised per sample for
    display). truncation < 1 moves w toward latent_avg (estimated from 10000 samples when the
    generator has none). noise: "const" | "random" | "none".
    """
    import e4e_jax
    if generator:
        g = e4e_jax.load_generator(generator)
    else:
        g = e4e_jax.init_generator(jax.random.key(seed), resolution, max_channels=64, n_mlp=4)
    if truncation < 1 and g.latent_avg is None:
        g.latent_avg = np.asarray(g.mean_latent(10000)[0])
    images = np.asarray(g.sample(jax.random.key(seed + 1), n, truncation=truncation,
                                 noise=noise))
    # Generator outputs live in about [-1, 1]; a random generator is normalised for display.
    if not generator:
        images = images / (np.abs(images).max(axis=(1, 2, 3), keepdims=True) + 1e-8)
    return make_grid(list(to_uint8(images)), ncols=min(n, 8)), g


def main(argv=None) -> int:
    """`python -m e4e_jax.sample`: parses `argv`, writes the grid, returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", help="converted generator directory (default: a seeded tiny "
                                       "random generator, no download needed)")
    p.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0, help="psi toward latent_avg")
    p.add_argument("--noise", default="const", choices=["const", "random", "none"])
    p.add_argument("--resolution", type=int, default=64, help="tiny generator only")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")

    t0 = time.time()
    grid, g = sample_grid(args.generator, args.n, args.seed, args.truncation, args.noise,
                          args.resolution)
    save_png(grid, args.out)
    print(f"wrote {args.out}: {args.n} samples of {g!r} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
