"""A loaded StyleGAN3 generator: the Flax module, its variables and jitted entry points.

    g = load_stylegan3("converted/stylegan3-t-ffhq")   # from `e4e-jax convert stylegan3`
    ws = g.mapping(z, truncation_psi=0.7)               # z (N, z_dim) -> W+ (N, n_latent, w_dim)
    images = g.synthesis(ws)                            # -> (N, R, R, 3), NHWC, about [-1, 1]
    images = g.synthesis(ws, transform=M)               # M (3, 3) or (N, 3, 3): see below

The public verbs are those of the StyleGAN2 generator (`mapping`, `synthesis`, `truncate`,
`broadcast`, `sample`, `with_policy`, and the pure `map` / `synthesize` for use inside a caller's
jit), with StyleGAN3's semantics: `mapping` returns W+ (all n_latent rows, the official
MappingNetwork output) and takes the official truncation_psi / truncation_cutoff; there is no
noise; `synthesis` takes the user transform.

`transform` is what the official `G.synthesis.input.transform` buffer means: the INVERSE of the
affine transform (rotation, translation) wanted on the output image, in the input's sampling
grid units (stylegan3-editing builds it as np.linalg.inv(make_transform(translate, angle))).
None uses the converted generator's stored buffer (the identity in official snapshots); (N, 3, 3)
gives each image its own, as stylegan3-editing sets the buffer for unaligned inversion.

`input_transform(translate, angle)` builds that buffer from the official gen_images.py options
(--translate X Y, --rotate DEG).

Where a caller written for the StyleGAN2 generator passes `noise=` / `rng=` (Inverter.decode,
the projector, PTI), they are accepted and mean nothing: StyleGAN3 has no noise inputs (the
official noise_mode has no effect either). `noise_shapes()` is the empty list, so the projector
optimises w alone; `tunable(variables)` / `with_tuned(...)` name what PTI tunes (every
synthesis parameter), `style_affines()` the per-layer affine kernels SeFa factorises.

Weights are arguments of the jitted functions (not constants), so one compilation serves every
generator of the same shape.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.precision import module_kwargs
from e4e_jax.models.stylegan3 import BUFFERS, Generator, layer_filters, torch_lerp
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.nets.base import BoundNet
from e4e_jax.nets.generator import check_labels

KIND = "stylegan3_generator"

# Config keys that become Generator fields; everything else in the config is metadata.
MODULE_FIELDS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers",
                 "mapping_lr_multiplier", "channel_base", "channel_max", "num_layers",
                 "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel",
                 "margin_size", "output_scale", "num_fp16_res", "conv_kernel", "filter_size",
                 "lrelu_upsampling", "use_radial_filters", "conv_clamp")

# train.py's two StyleGAN3 configurations (with the official defaults of everything else)
CONFIGS = {"T": dict(conv_kernel=3, use_radial_filters=False),
           "R": dict(conv_kernel=1, use_radial_filters=True)}


def make_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """The official gen_images.py make_transform: (3, 3) float64, rotation by `angle` degrees
    (counter-clockwise on the image) then translation by `translate` (x, y) in the input's
    sampling-grid units (the whole image spans about 1). It is the FORWARD transform of the
    output image; the generator's buffer holds its inverse (`input_transform`)."""
    tx, ty = (float(v) for v in translate)
    s, c = np.sin(angle / 360.0 * np.pi * 2), np.cos(angle / 360.0 * np.pi * 2)
    return np.array([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]])


def input_transform(translate=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """What gen_images.py copies into G.synthesis.input.transform for --translate / --rotate:
    np.linalg.inv(make_transform(translate, angle)), (3, 3) float32 (pass as
    `synthesis(..., transform=...)`)."""
    return np.linalg.inv(make_transform(translate, angle)).astype(np.float32)


def check_noise(noise) -> None:
    """StyleGAN3 has no noise inputs: "const" / "random" / "none" / None / [] are accepted (and
    change nothing, as the official noise_mode); explicit noise maps raise ValueError."""
    if noise is None or (isinstance(noise, str) and noise in ("const", "random", "none")):
        return
    if isinstance(noise, (list, tuple)) and len(noise) == 0:
        return
    raise ValueError("a StyleGAN3 generator has no noise inputs: pass no noise maps "
                     "(noise='const', 'random', 'none' or None).")


def config_name(config: dict) -> str:
    """"T", "R" or "custom" (another combination of conv_kernel and use_radial_filters)."""
    for name, options in CONFIGS.items():
        if all(config.get(k) == v for k, v in options.items()):
            return name
    return "custom"


def module_from_config(config: dict, dtype: Any = None, precision: Any = None,
                       remat: bool = False) -> Generator:
    """The Generator module of a stylegan3_generator config; dtype / precision as in
    load_stylegan3. KeyError names a missing size."""
    kwargs = {k: config[k] for k in MODULE_FIELDS if k in config}
    return Generator(**module_kwargs(dtype, precision), remat=bool(remat), **kwargs)


def _init_all(module: Generator, z, c, ws):
    module.mapping(z, c)
    return module.synthesis(ws)


def expected_variables(module: Generator) -> Any:
    """Shapes of every variable of `module` (params and buffers), for checking loaded files."""
    z = jax.ShapeDtypeStruct((1, module.z_dim), jnp.float32)
    c = jax.ShapeDtypeStruct((1, module.c_dim), jnp.float32) if module.c_dim else None
    ws = jax.ShapeDtypeStruct((1, module.num_ws, module.w_dim), jnp.float32)
    return jax.eval_shape(lambda z, c, ws: module.init(jax.random.key(0), z, c, ws,
                                                       method=_init_all), z, c, ws)


class LoadedStyleGAN3(BoundNet):
    """A StyleGAN3 generator with its variables (a `BoundNet`: a pytree whose leaves are the
    variables, the module -- with its dtype / precision / remat policy -- static, the config
    metadata). Inputs may be numpy or jax arrays; outputs are float32 jax arrays.

    LoadedStyleGAN3(module, variables, config): module a `e4e_jax.models.stylegan3.Generator`,
    variables {"params", "buffers"}, config the stylegan3_generator config (saved by
    save_stylegan3). Pure (variables passed in, for a caller's jit): `map`, `synthesize`.
    Compiled on the own variables: `mapping`, `synthesis`, `__call__` / `sample`,
    `mean_latent`; `truncate` and `broadcast` are plain array functions.
    """

    tree_meta = ("config",)

    def __init__(self, module: Generator, variables: dict, config: dict):
        super().__init__(module, jax.tree_util.tree_map(jnp.asarray, dict(variables)),
                         config=dict(config))

    # Attributes users look for.
    @property
    def resolution(self) -> int:
        return self.module.img_resolution

    @property
    def n_latent(self) -> int:
        """W+ rows (the official num_ws = num_layers + 2)."""
        return self.module.num_ws

    @property
    def z_dim(self) -> int:
        return self.module.z_dim

    @property
    def c_dim(self) -> int:
        """Label width of a conditional generator (0: unconditional)."""
        return self.module.c_dim

    @property
    def w_dim(self) -> int:
        return self.module.w_dim

    @property
    def style_dim(self) -> int:
        """The StyleGAN2 generator's name for w_dim."""
        return self.module.w_dim

    @property
    def latent_avg(self) -> np.ndarray:
        """The mapping's w_avg (w_dim,), float32: the truncation centre."""
        return np.asarray(self.variables[BUFFERS]["mapping"]["w_avg"], np.float32)

    @property
    def transform(self) -> np.ndarray:
        """The stored synthesis.input.transform buffer (3, 3)."""
        return np.asarray(self.variables[BUFFERS]["synthesis"]["input"]["transform"])

    @property
    def config_name(self) -> str:
        return config_name({k: getattr(self.module, k) for k in ("conv_kernel",
                                                                 "use_radial_filters")})

    def __repr__(self) -> str:
        return (f"LoadedStyleGAN3(config={self.config_name!r}, resolution={self.resolution}, "
                f"n_latent={self.n_latent}, z_dim={self.z_dim}, w_dim={self.w_dim}, "
                f"c_dim={self.c_dim})")

    # Pure functions for use inside a caller's jit (variables passed in).
    def map(self, variables, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        """z (N, z_dim) [, c (N, c_dim)] -> W+ (N, n_latent, w_dim): the official mapping with
        truncation (psi and cutoff may be traced)."""
        return self.module.apply(variables, z, c, truncation_psi, truncation_cutoff,
                                 method="mapping")

    def synthesize(self, variables, w_plus, noise=None, rng=None, transform=None):
        """W+ (N, n_latent, w_dim) -> images (N, R, R, C) float32; transform None (the stored
        buffer), (3, 3) or (N, 3, 3). noise / rng: the StyleGAN2 generator's arguments, without
        effect here (`check_noise`)."""
        check_noise(noise)
        return self.module.apply(variables, w_plus, transform, method="synthesis")

    # What the generic inversion code asks of a generator.
    @property
    def variant(self) -> str:
        """"stylegan3" (the StyleGAN2 generator's are "rosinality" / "ada"). Truncation is
        torch.lerp's, as ADA's."""
        return "stylegan3"

    @property
    def has_noise(self) -> bool:
        return False

    @property
    def first_style_row(self) -> int:
        """W+ row 0 drives the input's affine; synthesis layer i takes row i + 1 (SeFa rows)."""
        return 1

    def noise_shapes(self) -> list:
        """No noise layers: the projector optimises w alone."""
        return []

    def tunable(self, variables) -> tuple[dict, dict]:
        """(tuned, frozen) for PTI: every synthesis parameter is tuned (stylegan3-editing's
        PTI optimises G.synthesis); the mapping and the buffers (filters, magnitude EMAs,
        Fourier features, w_avg, transform) stay as they are."""
        params = dict(variables["params"])
        mapping = params.pop("mapping")
        return params, {"mapping": mapping, BUFFERS: variables[BUFFERS]}

    def with_tuned(self, tuned: dict, frozen: dict) -> dict:
        """The variables of `tunable`'s (tuned, frozen) pair."""
        return {"params": {**tuned, "mapping": frozen["mapping"]}, BUFFERS: frozen[BUFFERS]}

    def style_affines(self, layers: Any = "all") -> tuple[list[str], np.ndarray]:
        """(layer names, (w_dim, sum of in-channels) float32): the kernels of each synthesis
        layer's `affine` FullyConnected side by side (`G.synthesis.<layer>.affine.weight`
        transposed: the (in, out) layout), the StyleGAN3 counterpart of the modulation weights
        genforce/sefa's factorize_weight takes from StyleGAN2 (neither genforce/sefa nor
        stylegan3-editing ships a StyleGAN3 SeFa). Layer i is fed by W+ row i + 1; row 0 drives
        the input's 4-number affine (rotation / translation), which is left out. layers: 'all'
        or a list of indices 0..n_latent-2. ValueError otherwise."""
        _, specs = self.module.schedule()
        names = [spec.name for spec in specs]
        if isinstance(layers, str):
            if layers != "all":
                raise ValueError(f"layers must be 'all' or a list of layer indices, got "
                                 f"{layers!r}.")
            chosen = list(range(len(names)))
        else:
            chosen = [int(i) for i in layers]
            bad = [i for i in chosen if not 0 <= i < len(names)]
            if bad or not chosen:
                raise ValueError(f"SeFa layer indices must lie in 0..{len(names) - 1} (layer i: "
                                 f"{names[0]}..{names[-1]}, fed by W+ row i + 1), got "
                                 f"{list(layers)}.")
        params = self.variables["params"]["synthesis"]
        picked = [names[i] for i in chosen]
        return picked, np.concatenate(
            [np.asarray(params[n]["affine"]["kernel"], np.float32) for n in picked], axis=1)

    def with_latent_avg(self, latent_avg) -> "LoadedStyleGAN3":
        """The same generator with the mapping's w_avg buffer set to `latent_avg` (w_dim,)."""
        w_avg = jnp.asarray(np.asarray(latent_avg, np.float32).reshape(-1))
        if w_avg.shape != (self.w_dim,):
            raise ValueError(f"latent_avg must have {self.w_dim} values, got {w_avg.shape}.")
        buffers = dict(self.variables[BUFFERS])
        buffers["mapping"] = {**buffers["mapping"], "w_avg": w_avg}
        return self.replace(variables={**self.variables, BUFFERS: buffers})

    def with_low_precision_res(self, low_precision_res: int | None) -> "LoadedStyleGAN3":
        """The same generator whose `dtype` (with_policy / load_stylegan3's dtype) applies to
        the layers of the top `low_precision_res` resolutions, as the official num_fp16_res
        split (None: the generator's own num_fp16_res, official default 4; a large value such
        as 32: every layer). Without a reduced dtype it changes nothing."""
        k = None if low_precision_res is None else int(low_precision_res)
        if k is not None and k < 0:
            raise ValueError(f"low_precision_res must be >= 0 or None, got {k}.")
        return self.replace(module=self.module.clone(low_precision_res=k))

    def save(self, path: str, source: str | None = None) -> str:
        """save_stylegan3(self, path, source)."""
        return save_stylegan3(self, path, source=source)

    # Checks shared by the jitted conveniences.
    def _labels(self, c, n: int):
        return check_labels(c, n, self.c_dim)

    def _transform(self, transform, n: int):
        """(n, 3, 3): one compiled synthesis serves the stored buffer, one transform and a
        batch of them (the same numbers as the official broadcast of a (3, 3) buffer)."""
        t = jnp.asarray(self.transform if transform is None else transform, jnp.float32)
        if t.shape not in ((3, 3), (n, 3, 3), (1, 3, 3)):
            raise ValueError(f"transform must have shape (3, 3) or ({n}, 3, 3), got "
                             f"{tuple(t.shape)}.")
        if not isinstance(t, jax.core.Tracer) and not bool(jnp.isfinite(t).all()):
            raise ValueError("transform holds NaN or Inf values; pass finite (3, 3) matrices "
                             "(e4e_jax.nets.stylegan3.input_transform builds one).")
        return jnp.broadcast_to(t.reshape((-1, 3, 3)), (n, 3, 3))

    # Jitted conveniences on the generator's own variables.
    def mapping(self, z, c=None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> jax.Array:
        """z (N, z_dim) [, labels c (N, c_dim)] -> W+ (N, n_latent, w_dim), the official
        MappingNetwork: rows < truncation_cutoff (all when None) truncated toward w_avg with
        torch.lerp's arithmetic (psi = 1: unchanged; psi may be > 1)."""
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}.")
        cutoff = self.n_latent if truncation_cutoff is None else int(truncation_cutoff)
        # psi and the cutoff as arrays: traced, so every value shares one program
        return self.run("map", z, c=self._labels(c, z.shape[0]),
                        truncation_psi=jnp.float32(truncation_psi),
                        truncation_cutoff=jnp.int32(cutoff))

    def synthesis(self, w_plus, transform=None, noise=None, rng=None) -> jax.Array:
        """W+ (N, n_latent, w_dim) -> images (N, R, R, img_channels), NHWC float32, the
        official raw output (about [-1, 1], not clamped). `transform`: see the module docstring.
        noise / rng: accepted for StyleGAN2 callers, without effect (`check_noise`).
        """
        check_noise(noise)
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.w_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.n_latent}, {self.w_dim}) for "
                             f"this {self.resolution}px StyleGAN3 generator, got "
                             f"{tuple(w_plus.shape)}.")
        return self.run("synthesize", w_plus,
                        transform=self._transform(transform, w_plus.shape[0]))

    def broadcast(self, w) -> jax.Array:
        """w (N, w_dim) -> W+ (N, n_latent, w_dim), the same code at every layer."""
        w = jnp.asarray(w, jnp.float32)
        return jnp.broadcast_to(w[:, None, :], (w.shape[0], self.n_latent, w.shape[-1]))

    def truncate(self, w, psi: float, truncation_latent=None,
                 cutoff: int | None = None) -> jax.Array:
        """The official truncation on W (N, w_dim) or W+ (N, n_latent, w_dim):
        latent.lerp(w, psi) (torch.lerp's arithmetic), latent = w_avg by default; on W+ only
        rows < cutoff move when a cutoff is given."""
        w = jnp.asarray(w, jnp.float32)
        latent = self.latent_avg if truncation_latent is None else truncation_latent
        latent = jnp.asarray(latent, jnp.float32).reshape(-1)
        moved = torch_lerp(latent, w, psi)
        if cutoff is None or w.ndim == 2:
            return moved
        rows = (jnp.arange(w.shape[1]) < cutoff)[None, :, None]
        return jnp.where(rows, moved, w)

    def mean_latent(self, n: int = 10000, rng=None, batch_size: int = 10000, c=None) -> jax.Array:
        """Mean w of n standard-normal z, (1, w_dim) (for a conditional generator under the
        labels `c`, shape (c_dim,)); the stored w_avg is the official estimate of the same."""
        rng = jax.random.key(0) if rng is None else rng
        total = jnp.zeros((self.w_dim,), jnp.float32)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            rng, k = jax.random.split(rng)
            total = total + self.mapping(jax.random.normal(k, (m, self.z_dim)), c)[:, 0].sum(0)
            done += m
        return (total / n)[None]

    def __call__(self, z, c=None, truncation_psi: float = 1.0,
                 truncation_cutoff: int | None = None, transform=None) -> jax.Array:
        """z -> images: the official G(z, c, truncation_psi, truncation_cutoff)."""
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), transform)

    def sample(self, rng, n: int, truncation_psi: float | None = None, c=None,
               truncation_cutoff: int | None = None, transform=None, *,
               truncation: float | None = None, noise=None) -> jax.Array:
        """n images from z ~ N(0, 1) drawn with `rng`. `truncation` is the StyleGAN2
        generator's name for truncation_psi (give one of them); noise is accepted without
        effect (`check_noise`)."""
        if truncation is not None and truncation_psi is not None:
            raise ValueError("give truncation_psi or truncation, not both.")
        psi = truncation if truncation_psi is None else truncation_psi
        check_noise(noise)
        z = jax.random.normal(rng, (n, self.z_dim))
        return self(z, c, 1.0 if psi is None else psi, truncation_cutoff, transform)


def init_stylegan3(rng, config: dict) -> LoadedStyleGAN3:
    """A randomly initialised generator with the official initialisation (tests, benchmarks).

    config: the Generator fields (z_dim, c_dim, w_dim, img_resolution and any official option),
    e.g. dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, **CONFIGS["R"],
    channel_base=65536, channel_max=1024)."""
    config = dict(config)
    module = module_from_config(config)
    return LoadedStyleGAN3(module, _official_init(module, rng), config)


def _official_init(module: Generator, rng) -> dict:
    """The official constructors' initial values, drawn on the host with numpy (the shapes from
    eval_shape): no forward pass is traced through XLA, which on CPU takes longer to compile than
    the initialisers take to run. Kernels N(0, 1) (mapping: / lr_multiplier), the input's affine
    kernel 0 and bias [1, 0, 0, 0], style affine biases 1, other biases 0, magnitude EMAs 1,
    w_avg 0, the identity transform, the designed filters, Fourier frequencies in a disc of
    radius ~bandwidth and phases in [-0.5, 0.5)."""
    shapes = expected_variables(module)
    seed = [int(v) for v in np.asarray(jax.random.key_data(rng)).ravel()]
    draw = np.random.default_rng(seed)
    input_spec, layers = module.schedule()
    specs = {spec.name: spec for spec in layers}

    def param(path, shape):
        name, owner = path[-1], path[-2]
        if name == "kernel" and path[:2] == ("synthesis", "input") and owner == "affine":
            return np.zeros(shape)
        if name == "kernel":
            scale = 1 / module.mapping_lr_multiplier if path[0] == "mapping" else 1.0
            return draw.standard_normal(shape) * scale
        if owner == "affine":  # bias_init 1, the input's [1, 0, 0, 0]
            return (np.eye(1, 4)[0] if path[1] == "input" else np.ones(shape))
        return np.zeros(shape)

    def buffer(path, shape):
        name = path[-1]
        if name == "magnitude_ema":
            return np.ones(shape)
        if name == "transform":
            return np.eye(3)
        if name in ("up_filter", "down_filter"):
            return layer_filters(specs[path[-2]])[name == "down_filter"]
        if name == "freqs":
            freqs = draw.standard_normal(shape)
            radii = np.sqrt(np.sum(np.square(freqs), axis=1, keepdims=True))
            return freqs / (radii * np.exp(np.square(radii)) ** 0.25) * input_spec.bandwidth
        if name == "phases":
            return draw.random(shape) - 0.5
        return np.zeros(shape)  # w_avg

    def fill(node, path, make):
        return {k: (fill(v, path + (k,), make) if isinstance(v, dict)
                    else np.asarray(make(path + (k,), tuple(v.shape)), np.float32))
                for k, v in node.items()}

    return {"params": fill(shapes["params"], (), param),
            BUFFERS: fill(shapes[BUFFERS], (), buffer)}


def save_stylegan3(generator: LoadedStyleGAN3, path: str, source: str | None = None) -> str:
    """Writes a stylegan3_generator model directory; returns its path."""
    return checkpoints.save_model_dir(path, KIND, generator.config, generator.variables,
                                      source=source)


def stylegan3_from_model_dir(md: checkpoints.ModelDir) -> LoadedStyleGAN3:
    missing = [k for k in ("z_dim", "c_dim", "w_dim", "img_resolution") if k not in md.config]
    if missing:
        raise checkpoints.ModelDirError(f"{md.path!r}: config.json lacks {missing}; convert the "
                                        f"generator again with `e4e-jax convert stylegan3`.")
    module = module_from_config(md.config)
    checkpoints.check_tree(expected_variables(module), md.variables or {},
                           f"StyleGAN3 variables in {md.path!r}")
    return LoadedStyleGAN3(module, dict(md.variables), md.config)


def load_stylegan3(path: str, dtype: Any = None, precision: Any = None) -> LoadedStyleGAN3:
    """Loads a directory written by `e4e-jax convert stylegan3` (or save_stylegan3).

    dtype: compute dtype of the synthesis activations, None / "float32" (default) or "bfloat16"
    (in the layers the official code runs in fp16, num_fp16_res: `with_low_precision_res`).
    precision: None (JAX's default), "default", "high" or "highest" for every convolution and
    matmul. ValueError for other values; ModelDirError when the directory is not a StyleGAN3
    generator or its variables do not match its config.
    """
    module_kwargs(dtype, precision)  # validate before reading the files
    gen = stylegan3_from_model_dir(checkpoints.load_model_dir(os.fspath(path), KIND))
    if dtype is None and precision is None:
        return gen
    return gen.with_policy(dtype, precision)
