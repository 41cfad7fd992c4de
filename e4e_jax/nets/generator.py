"""A loaded StyleGAN2 generator: the Flax module, its variables and jitted entry points.

    g = e4e_jax.load_generator("converted/stylegan2-ffhq")
    w = g.mapping(z)                                   # (N, 512) -> (N, 512)
    images = g.synthesis(g.broadcast(w))               # W+ (N, n_latent, 512) -> (N, R, R, 3)
    images = g.synthesis(w_plus, noise="random", rng=jax.random.key(0))

The same class holds StyleGAN2-ADA generators (`e4e-jax convert stylegan2_ada`; config
variant "ada"), whose mapping may take z of another width (`z_dim`) and class labels `c`.

A LoadedGenerator is the package's one shape of a network bound to its weights
(e4e_jax.nets.base.BoundNet): pure `map` / `synthesize` take the variables for use inside a
caller's jit; `mapping` / `synthesis` run them compiled on the own variables, which are
arguments of the program (not baked-in constants), so one compilation serves every generator of
the same shape (a PTI-tuned copy included) and compile time does not grow with the weights.
`with_policy(dtype, precision, remat)` and `with_latent_avg(w)` return changed copies.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.precision import check_low_precision_res, module_kwargs
from e4e_jax.models.stylegan2 import Generator, init_rules, official_channels
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.nets.base import BoundNet

KIND = "stylegan2_generator"
NoiseSpec = Any  # "const" | "random" | "none" | list of (1 or N, r, r, 1) arrays

# Config keys that become Generator fields; everything else in the config is metadata.
_MODULE_FIELDS = ("resolution", "channels", "style_dim", "n_mlp", "lr_mlp", "blur_kernel",
                  "variant", "conv_clamp", "z_dim", "c_dim", "layer_features", "embed_features",
                  "img_channels")


def module_from_config(config: dict, precision=None, dtype=None) -> Generator:
    """The Generator module of a generator config; `dtype` / `precision` as in load_generator."""
    kwargs = {k: config[k] for k in _MODULE_FIELDS if k in config}
    kwargs["channels"] = tuple(kwargs["channels"])
    if "blur_kernel" in kwargs:
        kwargs["blur_kernel"] = tuple(kwargs["blur_kernel"])
    return Generator(**module_kwargs(dtype, precision), **kwargs)


def _init_all(module: Generator, w_plus):
    n = w_plus.shape[0]
    c = jnp.zeros((n, module.c_dim), jnp.float32) if module.c_dim else None
    module.mapping(jnp.zeros((n, module.latent_dim), jnp.float32), c)
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


def torch_lerp(start, end, weight: float):
    """torch.lerp's float32 formula (ADA's truncation): the form depends on |weight| < 0.5."""
    if abs(weight) < 0.5:
        return start + np.float32(weight) * (end - start)
    return end - (end - start) * (np.float32(1.0) - np.float32(weight))



def check_labels(c, n: int, c_dim: int):
    """Class labels for n samples of a generator with c_dim classes: None for an unconditional
    generator, else (n, c_dim) float32 (a (c_dim,) row is broadcast to every sample).
    ValueError naming the expected shape (StyleGAN2-ADA and StyleGAN3 generators alike)."""
    if c_dim == 0:
        if c is not None:
            raise ValueError("this generator is unconditional (c_dim=0): c must be None.")
        return None
    if c is None:
        raise ValueError(f"this generator is conditional: pass labels c of shape "
                         f"(N, {c_dim}) (or ({c_dim},) for all samples).")
    c = jnp.asarray(c, jnp.float32)
    if c.ndim == 1:
        c = jnp.broadcast_to(c, (n, c.shape[0]))
    if c.shape != (n, c_dim):
        raise ValueError(f"c must have shape ({n}, {c_dim}), got {tuple(c.shape)}.")
    return c

class LoadedGenerator(BoundNet):
    """A StyleGAN2 generator with its variables (a `BoundNet`). Inputs may be numpy or jax arrays.

    LoadedGenerator(module, variables, config, latent_avg=None): module a
    `e4e_jax.models.stylegan2.Generator` (its dtype / precision / remat fields are the numeric
    policy), variables {"params", "noises"}, config the generator config (metadata, saved by
    save_generator), latent_avg (style_dim,) float32 or None. Leaves: variables, latent_avg.

    Pure (variables passed in, for a caller's jit): `map(variables, z, c=None)`,
    `synthesize(variables, w_plus, noise, rng)`. Compiled on the own variables: `mapping`,
    `synthesis`, `__call__` / `sample` (z -> images), `mean_latent`.
    """

    tree_leaves = ("variables", "latent_avg")
    tree_meta = ("config",)

    def __init__(self, module: Generator, variables: dict, config: dict,
                 latent_avg: np.ndarray | None = None):
        super().__init__(module, jax.tree_util.tree_map(jnp.asarray, dict(variables)),
                         config=dict(config),
                         latent_avg=None if latent_avg is None
                         else np.asarray(latent_avg, np.float32))

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

    @property
    def z_dim(self) -> int:
        """Width of z for `mapping` (= style_dim except for some ADA generators)."""
        return self.module.latent_dim

    @property
    def c_dim(self) -> int:
        """Label width of a conditional ADA generator (0: unconditional)."""
        return self.module.c_dim

    @property
    def variant(self) -> str:
        return self.module.variant

    def __repr__(self) -> str:
        extra = "" if self.variant == "rosinality" else f", variant={self.variant!r}"
        return (f"LoadedGenerator(resolution={self.resolution}, n_latent={self.n_latent}, "
                f"channels={tuple(self.module.channels)}, n_mlp={self.module.n_mlp}{extra})")

    def with_latent_avg(self, latent_avg) -> "LoadedGenerator":
        """The same generator with latent_avg (style_dim,) (e.g. mean_latent(10000)[0])."""
        return self.replace(latent_avg=None if latent_avg is None
                            else np.asarray(latent_avg, np.float32).reshape(-1))

    def with_low_precision_res(self, low_precision_res: int | None) -> "LoadedGenerator":
        """The same generator whose reduced `dtype` (with_policy / load_generator's dtype)
        applies to the layers of the top `low_precision_res` resolutions, as StyleGAN2-ADA's
        num_fp16_res (None: the official default 4; 0: none; a large value such as 32: every
        layer but the 4x4 ones, which the official code keeps in float32;
        e4e_jax.core.precision). Without a reduced dtype it changes nothing; with_policy
        keeps it. ValueError unless None or an integer >= 0."""
        k = check_low_precision_res(low_precision_res)
        return self.replace(module=self.module.clone(low_precision_res=k))

    # What the generic inversion code (projector, PTI) asks of a generator; LoadedStyleGAN3
    # answers the same questions.
    @property
    def has_noise(self) -> bool:
        return True

    def noise_shapes(self) -> list:
        """(1, r, r, 1) per noise layer, in the order synthesis(noise=[...]) takes them."""
        return list(self.module.noise_shapes())

    def tunable(self, variables) -> tuple[dict, dict]:
        """(tuned, frozen) for PTI: the synthesis parameters are tuned; the mapping and the
        noise buffers (not parameters officially) are frozen."""
        params = dict(variables["params"])
        mapping = params.pop("mapping")
        return params, {"mapping": mapping, "noises": variables.get("noises", {})}

    def with_tuned(self, tuned: dict, frozen: dict) -> dict:
        """The variables of `tunable`'s (tuned, frozen) pair."""
        return {"params": {**tuned, "mapping": frozen["mapping"]}, "noises": frozen["noises"]}

    # Pure functions for use inside a caller's jit (variables passed in).
    def synthesize(self, variables, w_plus, noise: NoiseSpec = "random", rng=None):
        """W+ (N, n_latent, style_dim) -> images (N, R, R, 3) float32, raw scale (no clamp).
        noise: "const" (the stored buffers), "random" (needs rng), "none", or a list of arrays
        (1 or N, r, r, 1) in noise-layer order. Official Generator.forward / ADA's synthesis."""
        mode, noises = _noise_mode(noise)
        if mode == "random" and rng is None:
            raise ValueError('noise="random" needs an rng (a jax.random key).')
        rngs = {"noise": rng} if mode == "random" else None
        return self.module.apply(variables, w_plus, mode, noises, rngs=rngs)

    def map(self, variables, z, c=None):
        """z (N, z_dim) [, labels c (N, c_dim)] -> w (N, style_dim): the mapping network."""
        return self.module.apply(variables, z, c, method="mapping")

    def _labels(self, c, n: int):
        return check_labels(c, n, self.c_dim)

    # Jitted conveniences on the generator's own variables.
    def mapping(self, z, c=None) -> jax.Array:
        """z (N, z_dim) [, labels c (N, c_dim) for a conditional ADA generator] -> w."""
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}.")
        return self.run("map", z, c=self._labels(c, z.shape[0]))

    def synthesis(self, w_plus, noise: NoiseSpec = "const", rng=None) -> jax.Array:
        """W+ (N, n_latent, style_dim) -> images (N, R, R, 3), raw scale (no clamp)."""
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.n_latent}, {self.style_dim}) "
                             f"for this {self.resolution}px generator, got {tuple(w_plus.shape)}.")
        mode, noises = _noise_mode(noise)
        if mode == "random" and rng is None:
            raise ValueError('noise="random" needs an rng (a jax.random key).')
        return self.run("synthesize", w_plus, noise=mode if noises is None else noises,
                        rng=rng if mode == "random" else None)

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

    def mean_latent(self, n: int = 10000, rng=None, batch_size: int = 10000,
                    c=None) -> jax.Array:
        """Mean of the mapping of n standard-normal z, (1, style_dim), as the official mean_latent
        (for a conditional generator: under the label vector `c`, shape (c_dim,))."""
        rng = jax.random.key(0) if rng is None else rng
        total = jnp.zeros((self.style_dim,), jnp.float32)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            rng, k = jax.random.split(rng)
            total = total + self.mapping(jax.random.normal(k, (m, self.z_dim)), c).sum(0)
            done += m
        return (total / n)[None]

    def truncate_wplus(self, w_plus, psi: float, truncation_latent=None,
                       cutoff: int | None = None) -> jax.Array:
        """Truncation on W+ codes; with `cutoff`, only rows < cutoff move (ADA's
        truncation_cutoff). ADA generators use torch.lerp's rounding and also extrapolate
        (psi > 1)."""
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if self.variant == "ada":
            if truncation_latent is None:
                if self.latent_avg is None:
                    raise ValueError("this generator has no latent_avg (w_avg); pass "
                                     "truncation_latent.")
                truncation_latent = self.latent_avg
            t = jnp.asarray(truncation_latent, jnp.float32).reshape(1, 1, -1)
            moved = torch_lerp(t, w_plus, float(psi))
        else:
            moved = self.truncate(w_plus, psi, truncation_latent)
        if cutoff is None:
            return moved
        rows = jnp.arange(w_plus.shape[1])[None, :, None] < cutoff
        return jnp.where(rows, moved, w_plus)

    def __call__(self, z, truncation: float = 1.0, truncation_latent=None,
                 noise: NoiseSpec = "const", rng=None, c=None,
                 truncation_cutoff: int | None = None) -> jax.Array:
        """z (N, z_dim) -> images, through mapping, optional truncation and synthesis.

        The official rosinality generator truncates only for psi < 1; ADA's for any psi != 1,
        and `truncation_cutoff` limits it to the first W+ rows."""
        w = self.mapping(z, c)
        if self.variant != "ada" and truncation_cutoff is None:
            if truncation < 1:
                w = self.truncate(w, truncation, truncation_latent)
            return self.synthesis(self.broadcast(w), noise=noise, rng=rng)
        w_plus = self.broadcast(w)
        if (truncation != 1) if self.variant == "ada" else (truncation < 1):
            w_plus = self.truncate_wplus(w_plus, truncation, truncation_latent,
                                         truncation_cutoff)
        return self.synthesis(w_plus, noise=noise, rng=rng)

    def sample(self, rng, n: int, truncation: float = 1.0, noise: NoiseSpec = "const", c=None,
               truncation_cutoff: int | None = None):
        kz, kn = jax.random.split(rng)
        return self(jax.random.normal(kz, (n, self.z_dim)), truncation=truncation,
                    noise=noise, rng=kn, c=c, truncation_cutoff=truncation_cutoff)


def init_generator(rng, resolution: int, channel_multiplier: int = 2,
                   max_channels: int | None = None, n_mlp: int = 8, style_dim: int = 512,
                   channels: Sequence[int] | None = None, lr_mlp: float = 0.01,
                   with_latent_avg: bool = True) -> LoadedGenerator:
    """A randomly initialised generator with the official initialisation (tests, demos):
    `official_init` of the module, latent_avg = mean_latent(4096) under fold_in(rng, 1)."""
    if channels is None:
        channels = official_channels(resolution, channel_multiplier, max_channels)
    config = dict(resolution=int(resolution), channels=[int(c) for c in channels],
                  style_dim=int(style_dim), n_mlp=int(n_mlp), lr_mlp=float(lr_mlp),
                  blur_kernel=[1, 3, 3, 1], channel_multiplier=channel_multiplier)
    module = module_from_config(config)
    g = LoadedGenerator(module, official_init(module, rng), config)
    if with_latent_avg:
        g = g.with_latent_avg(g.mean_latent(4096, jax.random.fold_in(rng, 1))[0])
    return g


def official_init(module: Generator, rng) -> dict:
    """Variables of `module` drawn on the host with numpy under the module's own initialisers
    (e4e_jax.models.stylegan2_ops.InitRule, what `module.init` draws with jax.random): N(0, 1)
    weights (mapping weights / lr_mul), modulation biases 1, other biases and noise strengths 0,
    N(0, 1) constant input and noise buffers. numpy.random.default_rng(key data of `rng`)
    fills the variables in their tree order, without compiling a threefry graph per parameter
    (which takes many seconds on CPU even for tiny generators)."""
    shapes, rules = init_rules(lambda: expected_variables(module))
    seed = [int(s) for s in np.asarray(jax.random.key_data(rng)).ravel()]
    draw = np.random.default_rng(seed)

    def fill(node, path):
        out = {}
        for name, leaf in node.items():
            if not hasattr(leaf, "shape"):
                out[name] = fill(leaf, path + (name,))
            else:
                out[name] = rules[path + (name,)].draw(draw, tuple(leaf.shape))
        return out

    return fill(shapes, ())


def expected_variables(module: Generator) -> Any:
    """Shapes of every variable of `module` (for checking loaded files); nothing is computed."""
    w_plus = jax.ShapeDtypeStruct((1, module.n_latent, module.style_dim), jnp.float32)
    return jax.eval_shape(lambda w: module.init({"params": jax.random.key(0)}, w,
                                                method=_init_all), w_plus)


def save_generator(generator: LoadedGenerator, path: str, source: str | None = None) -> str:
    """Writes the generator's model directory (a StyleGAN3 generator writes its own kind)."""
    if not isinstance(generator, LoadedGenerator):
        return generator.save(path, source=source)
    arrays = {} if generator.latent_avg is None else {"latent_avg": generator.latent_avg}
    return checkpoints.save_model_dir(path, KIND, generator.config, generator.variables,
                                      arrays=arrays, source=source)


def generator_from_model_dir(md: checkpoints.ModelDir) -> LoadedGenerator:
    module = module_from_config(md.config)
    checkpoints.check_tree(expected_variables(module), md.variables or {},
                           f"generator variables in {md.path!r}")
    variables = {k: v for k, v in md.variables.items()}
    return LoadedGenerator(module, variables, md.config, md.arrays.get("latent_avg"))


def load_generator(path: str, dtype: Any = None, precision: Any = None) -> LoadedGenerator:
    """Loads a generator directory written by `e4e-jax convert stylegan2` (or save_generator);
    a `e4e-jax convert stylegan3` directory gives a `LoadedStyleGAN3` (nets/stylegan3.py), which
    has the same verbs.

    An e4e/pSp directory (`e4e-jax convert e4e`) holds its generator in `generator/`; passing
    the e4e directory itself works too.

    dtype: compute dtype of the synthesis network, None / "float32" (default) or "bfloat16"
    (variables, W codes and the output images stay float32; see e4e_jax.core.precision).
    precision: None (JAX's default), "default", "high" or "highest", passed to every
    convolution and matmul. ValueError for other values.
    """
    module_kwargs(dtype, precision)  # validate before reading the files
    path = os.fspath(path)
    meta = checkpoints.read_meta(path)
    if meta["kind"] != KIND and "generator" in meta.get("subdirs", []):
        path = os.path.join(path, "generator")
        meta = checkpoints.read_meta(path)
    from e4e_jax.nets import stylegan3  # imports this module: loaded on demand
    if meta["kind"] == stylegan3.KIND:
        return stylegan3.load_stylegan3(path, dtype=dtype, precision=precision)
    gen = generator_from_model_dir(checkpoints.load_model_dir(path, KIND))
    if dtype is None and precision is None:
        return gen
    return gen.with_policy(dtype, precision)
