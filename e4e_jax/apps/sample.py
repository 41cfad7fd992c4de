"""Writes a PNG grid of generator samples.

    python -m e4e_jax.sample --out samples.png                       # seeded tiny generator
    python -m e4e_jax.sample --generator converted/ffhq --n 8 --truncation 0.7 --out ffhq.png
    python -m e4e_jax.sample --generator converted/cifar10_ada --class 3 --out cls3.png

A StyleGAN3 generator (`e4e-jax convert stylegan3`) also takes the input transform of the official
gen_images.py: `--translate X Y` (sampling-grid units) and `--rotate DEG`; the generator renders
with the inverse of make_transform(translate, rotate) in its synthesis.input.transform. A
StyleGAN2 generator has no input transform and refuses both.

A class-conditional StyleGAN2-ADA (or StyleGAN3) generator (c_dim > 0) needs `--class K`
(0 <= K < c_dim; the label is the one-hot vector of K, as the official generate.py); an
unconditional one refuses --class. Exit codes: 0 grid written, 2 bad arguments or generator
directory, 130 interrupted. The grid is one PNG written exactly where --out says (replacing a
file of that name, as before).
"""
from __future__ import annotations

import numpy as np

from e4e_jax.data.image_io import to_uint8
from e4e_jax.outputs.grids import make_grid


class SampleError(ValueError):
    """A request the generator cannot serve (a missing or out-of-range --class)."""


def class_labels(g, class_index: int | None):
    """The label vector (c_dim,) float32 of `class_index` for a conditional generator, None
    for an unconditional one. Raises SampleError naming --class when it is missing, out of
    range, or given to an unconditional generator."""
    if not g.c_dim:
        if class_index is not None:
            raise SampleError(f"--class {class_index} given, but this generator is "
                              f"unconditional (c_dim=0): drop --class.")
        return None
    if class_index is None:
        raise SampleError(f"this generator is class-conditional (c_dim={g.c_dim}): pass "
                          f"--class K with 0 <= K < {g.c_dim}.")
    if not 0 <= class_index < g.c_dim:
        raise SampleError(f"--class {class_index} is out of range: this generator has "
                          f"{g.c_dim} classes (0 <= K < {g.c_dim}).")
    c = np.zeros((g.c_dim,), np.float32)
    c[class_index] = 1.0
    return c


def input_transform(g, translate=None, rotate=None):
    """The (3, 3) synthesis transform of --translate (x, y) / --rotate DEG for a StyleGAN3
    generator (None when neither is given). Raises SampleError for a generator without an
    input transform (StyleGAN2)."""
    if translate is None and rotate is None:
        return None
    if not hasattr(g, "transform"):
        flags = " and ".join(f for f, v in (("--translate", translate), ("--rotate", rotate))
                             if v is not None)
        raise SampleError(f"{flags}: only a StyleGAN3 generator has an input transform; this "
                          f"one is StyleGAN2: drop {flags} (or pass a generator converted "
                          f"with `e4e-jax convert stylegan3`).")
    given = [*(translate or ()), *(() if rotate is None else (rotate,))]
    if not np.isfinite(np.asarray(given, np.float64)).all():
        raise SampleError(f"--translate / --rotate must be finite numbers, got translate "
                          f"{translate}, rotate {rotate}.")
    from e4e_jax.nets.stylegan3 import input_transform as official
    return official(translate or (0.0, 0.0), 0.0 if rotate is None else rotate)


def sample_grid(generator: str | None = None, n: int = 16, seed: int = 0,
                truncation: float = 1.0, noise: str | None = None, resolution: int = 64,
                class_index: int | None = None, loader_kwargs: dict | None = None,
                translate=None, rotate: float | None = None):
    """(uint8 grid (rows * H, min(n, 8) * W, 3), generator) of `n` samples G(mapping(z[, c])).

    generator: a converted generator directory, or None for a seeded tiny random generator
    (max_channels 64, n_mlp 4, `resolution` px; its images are normalised per sample for
    display). truncation < 1 moves w toward latent_avg (estimated from 10000 samples when the
    generator has none; under the class label for a conditional one). noise: "const" |
    "random" | "none" (None: "const"; a generator without noise inputs, StyleGAN3, refuses
    any other value than None). class_index: the class of a conditional generator (see
    class_labels).
    loader_kwargs (dtype / precision) go to load_generator. translate (x, y) / rotate (degrees):
    a StyleGAN3 generator's input transform (`input_transform`). Raises SampleError,
    ModelDirError.
    """
    import jax

    import e4e_jax
    if generator:
        g = e4e_jax.load_generator(generator, **(loader_kwargs or {}))
    else:
        g = e4e_jax.init_generator(jax.random.key(seed), resolution, max_channels=64, n_mlp=4)
    if noise is not None and not g.has_noise:
        raise SampleError(f"--noise {noise}: this generator (StyleGAN3) has no noise inputs, so "
                          f"the setting would change nothing: drop --noise.")
    noise = "const" if noise is None else noise
    transform = input_transform(g, translate, rotate)
    c = class_labels(g, class_index)
    if truncation < 1 and (g.latent_avg is None or c is not None):
        g = g.with_latent_avg(g.mean_latent(10000, c=c)[0])
    extra = {} if transform is None else {"transform": transform}
    images = np.asarray(g.sample(jax.random.key(seed + 1), n, truncation=truncation,
                                 noise=noise, c=c, **extra))
    if images.shape[-1] == 1:                       # grayscale generators: show as grey RGB
        images = np.repeat(images, 3, axis=-1)
    # Generator outputs live in about [-1, 1]; a random generator is normalised for display.
    if not generator:
        images = images / (np.abs(images).max(axis=(1, 2, 3), keepdims=True) + 1e-8)
    return make_grid(list(to_uint8(images)), ncols=min(n, 8)), g
