"""A loaded StyleGAN2 generator: the Flax module, its variables and jitted entry points.

    g = e4e_jax.load_generator("converted/stylegan2-ffhq")
    w = g.mapping(z)                                   # (N, 512) -> (N, 512)
    images = g.synthesis(g.broadcast(w))               # W+ (N, n_latent, 512) -> (N, R, R, 3)
    images = g.synthesis(w_plus, noise="random", rng=jax.random.key(0))

Weights are passed to the jitted functions as arguments (not baked in as constants), so one
compilation serves every generator of the same shape and compile time does not grow with the
weights.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import checkpoints
from e4e_jax.models.stylegan2 import Generator, official_channels

KIND = "stylegan2_generator"
NoiseSpec = Any  # "const" | "random" | "none" | list of (1 or N, r, r, 1) arrays

# Config keys that become Generator fields; everything else in the config is metadata.
_MODULE_FIELDS = ("resolution", "channels", "style_dim", "n_mlp", "lr_mlp", "blur_kernel")


def module_from_config(config: dict, precision=None) -> Generator:
    kwargs = {k: config[k] for k in _MODULE_FIELDS if k in config}
    kwargs["channels"] = tuple(kwargs["channels"])
    if "blur_kernel" in kwargs:
        kwargs["blur_kernel"] = tuple(kwargs["blur_kernel"])
    return Generator(precision=precision, **kwargs)


def _init_all(module: Generator, w_plus):
    module.mapping(w_plus[:, 0])
    return module(w_plus)


def _noise_mode(noise: NoiseSpec) -> tuple[str, Any]:
    if isinstance(noise, str):
        if noise == "explicit":
            raise ValueError('pass the noise arrays themselves as a list, not "explicit".')
        return noise, None
    if isinstance(noise, (list, tuple)):
        return "explicit", [jnp.asarray(n, jnp.float32) for n in noise]
    raise ValueError(f'noise must be "const", "random", "none" or a list of arrays, got '
                     f'{type(noise).__name__}.')


@functools.partial(jax.jit, static_argnums=(0,))
def _mapping(module, variables, z):
    return module.apply(variables, z, method="mapping")


@functools.partial(jax.jit, static_argnums=(0, 3))
def _synthesis(module, variables, w_plus, noise_mode, noises, rng):
    rngs = {"noise": rng} if rng is not None else None
    return module.apply(variables, w_plus, noise_mode, noises, rngs=rngs)


class LoadedGenerator:
    """A StyleGAN2 generator with its variables. Inputs may be numpy or jax arrays."""

    def __init__(self, module: Generator, variables: dict, config: dict,
                 latent_avg: np.ndarray | None = None):
        self.module = module
        self.variables = variables
        self.config = dict(config)
        self.latent_avg = None if latent_avg is None else np.asarray(latent_avg, np.float32)

    # Attributes users look for.
    @property
    def resolution(self) -> int:
        return self.module.resolution

    @property
    def n_latent(self) -> int:
        return self.module.n_latent

    @property
    def num_layers(self) -> int:
        return self.module.num_layers

    @property
    def style_dim(self) -> int:
        return self.module.style_dim

    def __repr__(self) -> str:
        return (f"LoadedGenerator(resolution={self.resolution}, n_latent={self.n_latent}, "
                f"channels={tuple(self.module.channels)}, n_mlp={self.module.n_mlp})")

    # Pure functions for use inside a caller's jit (variables passed in).
    def synthesize(self, variables, w_plus, noise: NoiseSpec = "random", rng=None):
        mode, noises = _noise_mode(noise)
        if mode == "random" and rng is None:
            raise ValueError('noise="random" needs an rng (a jax.random key).')
        rngs = {"noise": rng} if mode == "random" else None
        return self.module.apply(variables, w_plus, mode, noises, rngs=rngs)

    def map(self, variables, z):
        return self.module.apply(variables, z, method="mapping")

    # Jitted conveniences on the generator's own variables.
    def mapping(self, z) -> jax.Array:
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"z must have shape (N, {self.style_dim}), got {tuple(z.shape)}.")
        return _mapping(self.module, self.variables, z)

    def synthesis(self, w_plus, noise: NoiseSpec = "const", rng=None) -> jax.Array:
        """W+ (N, n_latent, style_dim) -> images (N, R, R, 3), raw scale (no clamp)."""
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.n_latent}, {self.style_dim}) "
                             f"for this {self.resolution}px generator, got {tuple(w_plus.shape)}.")
        mode, noises = _noise_mode(noise)
        if mode == "random" and rng is None:
            raise ValueError('noise="random" needs an rng (a jax.random key).')
        return _synthesis(self.module, self.variables, w_plus, mode, noises,
                          rng if mode == "random" else None)

    def broadcast(self, w) -> jax.Array:
        """w (N, style_dim) -> W+ (N, n_latent, style_dim), the same code at every layer."""
        w = jnp.asarray(w, jnp.float32)
        return jnp.broadcast_to(w[:, None, :], (w.shape[0], self.n_latent, w.shape[-1]))

    def truncate(self, w, psi: float, truncation_latent=None) -> jax.Array:
        """The truncation trick on W: latent + psi * (w - latent), latent = latent_avg by default."""
        if truncation_latent is None:
            if self.latent_avg is None:
                raise ValueError("this generator has no latent_avg; pass truncation_latent "
                                 "(e.g. g.mean_latent(4096)).")
            truncation_latent = self.latent_avg
        t = jnp.asarray(truncation_latent, jnp.float32).reshape(1, -1)
        return t + psi * (jnp.asarray(w, jnp.float32) - t)

    def style_mix(self, w1, w2, inject_index: int) -> jax.Array:
        """Rows 0..inject_index-1 from w1, the rest from w2 (official inject_index)."""
        if not 0 < inject_index < self.n_latent:
            raise ValueError(f"inject_index must be in 1..{self.n_latent - 1}, got {inject_index}.")
        w1, w2 = self.broadcast(w1), self.broadcast(w2)
        return jnp.concatenate([w1[:, :inject_index], w2[:, inject_index:]], axis=1)

    def mean_latent(self, n: int = 10000, rng=None, batch_size: int = 10000) -> jax.Array:
        """Mean of the mapping of n standard-normal z, (1, style_dim), as the official mean_latent."""
        rng = jax.random.key(0) if rng is None else rng
        total = jnp.zeros((self.style_dim,), jnp.float32)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            rng, k = jax.random.split(rng)
            total = total + self.mapping(jax.random.normal(k, (m, self.style_dim))).sum(0)
            done += m
        return (total / n)[None]

    def __call__(self, z, truncation: float = 1.0, truncation_latent=None,
                 noise: NoiseSpec = "const", rng=None) -> jax.Array:
        """z (N, style_dim) -> images, through mapping, optional truncation and synthesis."""
        w = self.mapping(z)
        if truncation < 1:
            w = self.truncate(w, truncation, truncation_latent)
        return self.synthesis(self.broadcast(w), noise=noise, rng=rng)

    def sample(self, rng, n: int, truncation: float = 1.0, noise: NoiseSpec = "const"):
        kz, kn = jax.random.split(rng)
        return self(jax.random.normal(kz, (n, self.style_dim)), truncation=truncation,
                    noise=noise, rng=kn)


def init_generator(rng, resolution: int, channel_multiplier: int = 2,
                   max_channels: int | None = None, n_mlp: int = 8, style_dim: int = 512,
                   channels: Sequence[int] | None = None, lr_mlp: float = 0.01,
                   with_latent_avg: bool = True) -> LoadedGenerator:
    """A randomly initialised generator with the official initialisation (tests, demos)."""
    if channels is None:
        channels = official_channels(resolution, channel_multiplier, max_channels)
    config = dict(resolution=int(resolution), channels=[int(c) for c in channels],
                  style_dim=int(style_dim), n_mlp=int(n_mlp), lr_mlp=float(lr_mlp),
                  blur_kernel=[1, 3, 3, 1], channel_multiplier=channel_multiplier)
    module = module_from_config(config)
    w_plus = jnp.zeros((1, module.n_latent, style_dim), jnp.float32)
    variables = jax.jit(lambda k: module.init({"params": k}, w_plus, method=_init_all))(rng)
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    g = LoadedGenerator(module, variables, config)
    if with_latent_avg:
        g.latent_avg = np.asarray(g.mean_latent(4096, jax.random.fold_in(rng, 1))[0])
    return g


def expected_variables(module: Generator) -> Any:
    """Shapes of every variable of `module` (for checking loaded files)."""
    w_plus = jax.ShapeDtypeStruct((1, module.n_latent, module.style_dim), jnp.float32)
    return jax.eval_shape(lambda w: module.init({"params": jax.random.key(0)}, w,
                                                method=_init_all), w_plus)


def save_generator(generator: LoadedGenerator, path: str, source: str | None = None) -> str:
    arrays = {} if generator.latent_avg is None else {"latent_avg": generator.latent_avg}
    return checkpoints.save_model_dir(path, KIND, generator.config, generator.variables,
                                      arrays=arrays, source=source)


def generator_from_model_dir(md: checkpoints.ModelDir) -> LoadedGenerator:
    module = module_from_config(md.config)
    checkpoints.check_tree(expected_variables(module), md.variables or {},
                           f"generator variables in {md.path!r}")
    variables = {k: v for k, v in md.variables.items()}
    return LoadedGenerator(module, variables, md.config, md.arrays.get("latent_avg"))


def load_generator(path: str) -> LoadedGenerator:
    """Loads a generator directory written by convert_weights/stylegan2.py (or save_generator).

    An e4e/pSp directory (convert_weights/e4e.py) holds its generator in `generator/`; passing
    the e4e directory itself works too.
    """
    path = os.fspath(path)
    meta = checkpoints.read_meta(path)
    if meta["kind"] != KIND and "generator" in meta.get("subdirs", []):
        path = os.path.join(path, "generator")
    return generator_from_model_dir(checkpoints.load_model_dir(path, KIND))
