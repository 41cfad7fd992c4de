"""Encoder + generator + latent_avg: the official pSp wrapper (models/psp.py) at inference.

    inv = e4e_jax.load_encoder("converted/e4e_ffhq_encode")
    w_plus = inv.encode(images)                 # (N, n_latent, 512), latent_avg added
    w_plus, recon = inv.invert(images)          # recon: (N, 256, 256, 3) after face_pool

`images` are NHWC float32 in [-1, 1] at `inv.input_size` ((256, 256) for faces, (192, 256) for
cars); e4e_jax.data.image_io.load_image makes them from files like the official test transform.
Reconstructions use the generator's stored noise buffers (official randomize_noise=False), go
through the official face_pool (AdaptiveAvgPool2d((256, 256))) and, for cars, are cropped to rows
32:224 (192x256) as the official training and metrics code does.

An Inverter is the package's one shape of a network bound to its weights (e4e_jax.nets.base):
module = the encoder, variables = its weights, plus the generator (a LoadedGenerator) and
latent_avg as pytree leaves. Both entry points are compiled once per batch shape with the weights
as arguments by the model's inference `Runtime` (e4e_jax.nets.base): the batch is split over all
local devices (mesh axis "data", padded to a multiple of their count) when there is more than
one; on a single CPU device it is scanned one image at a time inside the program (`scan_batch`),
which XLA's CPU convolutions run 20-40% faster per image than a batched call.

Pure functions for a training step (variables are arguments, nothing is closed over):
    inv.apply_encode(encoder_variables, images, progressive_stage=None, train=False)
        -> w_plus, or (w_plus, new_batch_stats) when train=True (BatchNorm batch statistics).
    inv.apply_decode(generator_variables, w_plus, noise="const", rng=None, resize=True)
        -> images (face_pool + crop when resize=True).
    inv.apply_invert(encoder_variables, images, resize=True) -> (w_plus, images)
    add_latent_avg(codes, latent_avg), face_pool(images, size, crop_rows)
`inv.with_generator(g)` (e.g. a PTI-tuned generator) and `inv.with_policy(dtype, precision)`
return new Inverters; the generator always computes under the Inverter's policy.
`save_inverter` writes a directory `load_encoder` reads (converter and training export).
"""
from __future__ import annotations

import collections
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.ops import adaptive_avg_pool2d
from e4e_jax.core.precision import module_kwargs
from e4e_jax.models.encoders import INFERENCE_STAGE, build_encoder, encoder_shapes
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.nets.base import BoundNet, Runtime
from e4e_jax.nets.generator import LoadedGenerator, load_generator, save_generator

KIND = "e4e_inverter"
GENERATOR_SUBDIR = "generator"


def add_latent_avg(codes: jax.Array, latent_avg: jax.Array | None) -> jax.Array:
    """codes (N, n, S) + latent_avg row by row ((n, S), or (S,) broadcast), as pSp.forward."""
    if latent_avg is None:
        return codes
    return codes + jnp.asarray(latent_avg, codes.dtype)


def face_pool(images: jax.Array, size: int | None = 256,
              crop_rows: Sequence[int] | None = None, precision: Any = None) -> jax.Array:
    """pSp's face_pool (AdaptiveAvgPool2d((size, size))) then the cars row crop, NHWC."""
    if size:
        images = adaptive_avg_pool2d(images, (size, size), precision)
    if crop_rows is not None:
        images = images[:, int(crop_rows[0]):int(crop_rows[1])]
    return images


def _np_tree(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


class Inverter(BoundNet):
    """An e4e / pSp encoder with its generator and latent_avg (a `BoundNet`; module docstring).

    Inverter(encoder_config, encoder_variables, generator, latent_avg=None,
             start_from_latent_avg=True, crop_rows=None, face_pool_size=256, config=None,
             precision=None, scan_batch=None, dtype=None, remat=False)

    module / `encoder`: the encoder module; variables: its {'params', 'batch_stats'} (empty for
    the pure model of a training step, which passes its own); generator: a LoadedGenerator (or
    a LoadedStyleGAN3: same verbs, `decode(..., transform=M)`) run under the Inverter's policy
    (dtype, precision, remat); latent_avg (n_latent, style_dim) or
    (style_dim,). Raises ValueError on a generator whose W+ rows differ from the encoder's, a
    mis-shaped latent_avg, or start_from_latent_avg without one. scan_batch: see `Runtime`
    (default: one image at a time on a single CPU device).

    Immutable: `with_generator(g)` and `with_policy(dtype, precision, remat)` return new
    Inverters; the generator always computes under the Inverter's policy.
    """

    tree_leaves = ("variables", "generator", "latent_avg")
    tree_static = ("module", "start_from_latent_avg", "crop_rows", "face_pool_size", "dtype",
                   "precision", "remat", "runtime")
    tree_meta = ("encoder_config", "config")

    def __init__(self, encoder_config: Mapping[str, Any], encoder_variables: Mapping[str, Any],
                 generator: LoadedGenerator, latent_avg: Any = None,
                 start_from_latent_avg: bool = True, crop_rows: Sequence[int] | None = None,
                 face_pool_size: int | None = 256, config: Mapping[str, Any] | None = None,
                 precision: Any = None, scan_batch: bool | None = None, dtype: Any = None,
                 remat: bool = False):
        policy = module_kwargs(dtype, precision)
        encoder_config = dict(encoder_config)
        n_latent = int(encoder_config["n_styles"])
        if generator.n_latent != n_latent:
            raise ValueError(f"the encoder predicts {n_latent} W+ rows but the generator "
                             f"({generator.resolution}px) takes {generator.n_latent}.")
        la = None
        if latent_avg is not None:
            la = np.asarray(latent_avg, np.float32)
            if la.ndim == 1:
                la = np.broadcast_to(la, (n_latent, la.shape[0])).copy()
            if la.shape != (n_latent, generator.style_dim):
                raise ValueError(f"latent_avg must have shape ({n_latent}, "
                                 f"{generator.style_dim}), got {la.shape}.")
        if start_from_latent_avg and la is None:
            raise ValueError("start_from_latent_avg=True needs a latent_avg.")
        super().__init__(
            build_encoder(encoder_config, dtype=dtype, precision=precision, remat=remat),
            jax.tree_util.tree_map(jnp.asarray, dict(encoder_variables)),
            # decode / invert / the train step run the generator with the encoder's dtype and
            # precision: one policy for the whole inversion
            generator=generator.with_policy(dtype, precision, remat),
            latent_avg=la, start_from_latent_avg=bool(start_from_latent_avg),
            crop_rows=None if crop_rows is None else (int(crop_rows[0]), int(crop_rows[1])),
            face_pool_size=face_pool_size, dtype=policy["dtype"],
            precision=policy["precision"], remat=bool(remat),
            runtime=Runtime.local(scan_batch), encoder_config=encoder_config,
            config=dict(config or {}))

    def __repr__(self) -> str:
        return (f"Inverter({self.encoder_config['encoder_type']}, input {self.input_size}, "
                f"n_latent {self.n_latent}, generator {self.generator.resolution}px)")

    # ---- what users look for
    @property
    def encoder(self):
        """The encoder module (= `module`)."""
        return self.module

    @property
    def n_latent(self) -> int:
        return int(self.encoder_config["n_styles"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the encoder takes ((256, 256) for faces, (192, 256) for cars)."""
        return tuple(int(s) for s in self.encoder_config["input_size"])

    @property
    def is_e4e(self) -> bool:
        """True for the encoders with e4e's progressive deltas, which take a progressive_stage:
        Encoder4Editing and the ReStyle-e4e types (models/restyle_encoders.PROGRESSIVE_TYPES)."""
        from e4e_jax.models.restyle_encoders import PROGRESSIVE_TYPES
        return self.encoder_config["encoder_type"] in ("Encoder4Editing",) + PROGRESSIVE_TYPES

    @property
    def scan_batch(self) -> bool:
        """Whether encode / invert run one image at a time inside the program (`Runtime`)."""
        return self.runtime.scan_batch

    @property
    def policy(self) -> dict:
        """{"dtype": compute dtype or None (float32), "precision": lax precision or None}."""
        return {"dtype": self.dtype, "precision": self.precision}

    def with_policy(self, dtype: Any = None, precision: Any = None,
                    remat: bool = False) -> "Inverter":
        """The same encoder and generator weights computing under another policy (dtype None /
        "float32" / "bfloat16", precision None / "default" / "high" / "highest", remat);
        ValueError on unknown values."""
        policy = module_kwargs(dtype, precision)
        module = build_encoder(self.encoder_config, dtype=dtype, precision=precision, remat=remat)
        if hasattr(self.module, "float32_stages"):  # keep a with_encoder_float32_stages choice
            module = module.clone(float32_stages=self.module.float32_stages)
        return self.replace(
            module=module, generator=self.generator.with_policy(dtype, precision, remat),
            dtype=policy["dtype"], precision=policy["precision"], remat=bool(remat))

    def with_encoder_float32_stages(self, stages) -> "Inverter":
        """This Inverter whose IR-SE encoder (e4e, pSp, ReStyle's IR-SE encoders), under a
        bfloat16 dtype, keeps the body stages `stages` (indices 0-3) in float32 (None: the
        default split, models/encoders.py DEFAULT_FLOAT32_STAGES = (2,); (): every stage in
        bfloat16). No effect in float32. ValueError for the ResNet-34 ReStyle encoders (no
        split) or an index outside 0-3."""
        if not hasattr(self.module, "float32_stages") or getattr(self.module, "resnet", False):
            raise ValueError(f"{type(self.module).__name__} has no float32_stages split; only "
                             f"the IR-SE encoders (e4e, pSp, ReStyle's BackboneEncoder and "
                             f"ProgressiveBackboneEncoder) do.")
        if stages is not None:
            stages = tuple(sorted({int(s) for s in stages}))
            n = len(self.module.widths)
            if any(not 0 <= s < n for s in stages):
                raise ValueError(f"float32_stages must be stage indices in 0..{n - 1}, got "
                                 f"{stages}.")
        return self.replace(module=self.module.clone(float32_stages=stages))

    def with_low_precision_res(self, low_precision_res: int | None) -> "Inverter":
        """This Inverter whose generator computes its reduced dtype only in the top
        `low_precision_res` resolutions (generator.with_low_precision_res; None: the official
        split, 4). The encoder has its own split: with_encoder_float32_stages."""
        return self.replace(generator=self.generator.with_low_precision_res(low_precision_res))

    def with_generator(self, generator: LoadedGenerator) -> "Inverter":
        """This Inverter decoding with `generator` (e.g. a PTI-tuned one), which computes under
        this Inverter's dtype / precision / remat. ValueError when its W+ shape (n_latent,
        style_dim) differs from this model's."""
        old = self.generator
        if (generator.n_latent, generator.style_dim) != (old.n_latent, old.style_dim):
            raise ValueError(f"the generator takes W+ ({generator.n_latent}, "
                             f"{generator.style_dim}) but this model's takes ({old.n_latent}, "
                             f"{old.style_dim}).")
        return self.replace(generator=generator.with_policy(self.dtype, self.precision,
                                                            self.remat))

    # ---- pure functions (usable inside a caller's jit)
    def _latent_avg_or_none(self):
        return self.latent_avg if self.start_from_latent_avg else None

    def apply_encode(self, encoder_variables, images, progressive_stage=None, train: bool = False,
                     latent_avg=None):
        """W+ codes (N, n_latent, style_dim) of images (N, H, W, 3) in [-1, 1], latent_avg added
        (when the model starts from it): pSp.forward's codes.

        progressive_stage: None (all deltas) or an int / int32 array (traced; changing it does
        not recompile). train=True uses batch statistics and returns (w_plus, new_batch_stats).
        `latent_avg` overrides the stored one (pass it as an argument inside a jit).
        """
        if progressive_stage is not None and not self.is_e4e:
            raise ValueError(f"progressive_stage applies to Encoder4Editing only, not "
                             f"{self.encoder_config['encoder_type']}.")
        kwargs = {"progressive_stage": progressive_stage} if self.is_e4e else {}
        if latent_avg is None:
            latent_avg = self._latent_avg_or_none()
        if train:
            codes, upd = self.module.apply(encoder_variables, images, train=True,
                                           mutable=["batch_stats"], **kwargs)
            return add_latent_avg(codes, latent_avg), upd["batch_stats"]
        codes = self.module.apply(encoder_variables, images, **kwargs)
        return add_latent_avg(codes, latent_avg)

    def apply_decode(self, generator_variables, w_plus, noise: Any = "const", rng=None,
                     resize: bool = True, transform=None):
        """Generator images of W+ codes; resize=True applies face_pool and the crop.
        transform: a StyleGAN3 generator's input transform ((3, 3) or (N, 3, 3), see
        e4e_jax.nets.stylegan3); None: the generator's own."""
        extra = {} if transform is None else {"transform": transform}
        images = self.generator.synthesize(generator_variables, w_plus, noise=noise, rng=rng,
                                           **extra)
        if resize:
            images = face_pool(images, self.face_pool_size, self.crop_rows, self.precision)
        return images

    def apply_invert(self, encoder_variables, images, resize: bool = True):
        """(W+ codes, reconstructions) of images, decoded with the own generator's variables
        (stored noise): pSp.forward(x, return_latents=True)."""
        w = self.apply_encode(encoder_variables, images)
        return w, self.apply_decode(self.generator.variables, w, resize=resize)

    # ---- compiled entry points (through the inference runtime)
    def run(self, verb: str, images: Any, **kwargs: Any) -> Any:
        """The pure method `verb` (encoder variables first) over a batch of images, compiled by
        this model's `Runtime` (devices, padding, one image at a time on one CPU)."""
        return self.runtime.run(self, verb, images, **kwargs)

    def lower(self, verb: str, images: Any, **kwargs: Any) -> tuple[Any, tuple]:
        """(jax.stages.Lowered, arguments) of `run(verb, images, ...)`'s program."""
        return self.runtime.lower(self, verb, images, **kwargs)

    def _check_images(self, images) -> jax.Array:
        if np.issubdtype(np.asarray(images).dtype if not isinstance(images, jax.Array)
                         else images.dtype, np.integer):
            raise ValueError("images must be float32 in [-1, 1] (uint8 images: use "
                             "e4e_jax.data.image_io.to_model_input).")
        images = jnp.asarray(images, jnp.float32)
        want = self.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (want[0], want[1], 3):
            raise ValueError(f"images must have shape (N, {want[0]}, {want[1]}, 3) (NHWC float32 "
                             f"in [-1, 1], the model's input size), got {tuple(images.shape)}.")
        return images

    def encode(self, images, progressive_stage: int | None = None) -> jax.Array:
        """images (N, H, W, 3) in [-1, 1] -> W+ (N, n_latent, 512), latent_avg added."""
        images = self._check_images(images)
        if progressive_stage is not None and not self.is_e4e:
            raise ValueError(f"progressive_stage applies to Encoder4Editing only, not "
                             f"{self.encoder_config['encoder_type']}.")
        stage = None
        if self.is_e4e:
            # None: every delta (ProgressiveStage.Inference = 18 covers all rows up to 1024 px)
            stage = jnp.asarray(max(INFERENCE_STAGE, self.n_latent) if progressive_stage is None
                                else progressive_stage, jnp.int32)
        return self.run("apply_encode", images, progressive_stage=stage)

    def invert(self, images, resize: bool = True) -> tuple[jax.Array, jax.Array]:
        """images -> (W+, reconstructions). resize=False returns the raw generator output."""
        return self.run("apply_invert", self._check_images(images), resize=bool(resize))

    def decode(self, w_plus, resize: bool = True, transform=None) -> jax.Array:
        """W+ codes (e.g. edited) -> images, with face_pool and crop like invert. transform
        ((3, 3) or (N, 3, 3)): render through a StyleGAN3 generator's input transform
        (stylegan3-editing's unaligned images); ValueError for a StyleGAN2 generator."""
        w_plus = jnp.asarray(w_plus, jnp.float32)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.generator.style_dim):
            raise ValueError(f"W+ codes must have shape (N, {self.n_latent}, "
                             f"{self.generator.style_dim}), got {tuple(w_plus.shape)}.")
        if transform is not None and not hasattr(self.generator, "transform"):
            raise ValueError("transform: only a StyleGAN3 generator has an input transform; "
                             "this one is StyleGAN2.")
        images = self.generator.synthesis(w_plus, **({} if transform is None
                                                     else {"transform": transform}))
        if resize:
            images = face_pool(images, self.face_pool_size, self.crop_rows, self.precision)
        return images


def save_inverter(path: str, encoder_config: Mapping[str, Any],
                  encoder_variables: Mapping[str, Any], generator: LoadedGenerator,
                  latent_avg: Any = None, start_from_latent_avg: bool = True,
                  crop_rows: Sequence[int] | None = None, face_pool: int | None = 256,
                  extra_config: Mapping[str, Any] | None = None,
                  source: str | None = None) -> str:
    """Writes encoder variables ({'params', 'batch_stats'}), latent_avg ((n_latent, S) or (S,)),
    the generator (nested `generator/` directory) and the config, atomically."""
    cfg = dict(extra_config or {})
    n_latent = int(encoder_config["n_styles"])
    cfg.update(encoder=dict(encoder_config), start_from_latent_avg=bool(start_from_latent_avg),
               n_latent=n_latent, face_pool=face_pool,
               crop_rows=None if crop_rows is None else [int(crop_rows[0]), int(crop_rows[1])])
    if generator.n_latent != n_latent:
        raise ValueError(f"the encoder predicts {n_latent} W+ rows but the generator takes "
                         f"{generator.n_latent}.")
    arrays = {}
    if latent_avg is not None:
        la = np.asarray(latent_avg, np.float32)
        if la.ndim == 1:
            la = np.broadcast_to(la, (n_latent, la.shape[0])).copy()
        arrays["latent_avg"] = la
    elif start_from_latent_avg:
        raise ValueError("start_from_latent_avg=True needs a latent_avg.")
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-gen-", dir=parent)
    try:
        gen_dir = save_generator(generator, os.path.join(tmp, GENERATOR_SUBDIR), source=source)
        return checkpoints.save_model_dir(path, KIND, cfg, _np_tree(dict(encoder_variables)),
                                          arrays=arrays, source=source,
                                          subdirs={GENERATOR_SUBDIR: gen_dir})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_encoder(path: str, precision: Any = None, scan_batch: bool | None = None,
                 dtype: Any = None) -> Inverter:
    """Loads a directory written by `e4e-jax convert e4e` or save_inverter.

    precision: None (JAX's default), "default", "high", "highest" (or a jax.lax.Precision),
    passed to every convolution / matmul of the encoder AND of the generator used by decode /
    invert ("highest" on GPUs / TPUs for float32-exact results). dtype: compute dtype, None /
    "float32" or "bfloat16" (codes and images stay float32; e4e_jax.core.precision). ValueError for
    other values. scan_batch: see Inverter.
    """
    module_kwargs(dtype, precision)  # validate before reading the files
    md = checkpoints.load_model_dir(os.fspath(path), KIND)
    cfg = md.config
    enc_cfg = cfg["encoder"]
    checkpoints.check_tree(encoder_shapes(enc_cfg), md.variables or {},
                           f"encoder variables in {md.path!r}")
    gen_path = os.path.join(md.path, GENERATOR_SUBDIR)
    if not os.path.isdir(gen_path):
        raise checkpoints.ModelDirError(f"{md.path!r} is incomplete: no {GENERATOR_SUBDIR}/ "
                                        f"directory.")
    generator = load_generator(gen_path)
    return Inverter(enc_cfg, md.variables, generator, md.arrays.get("latent_avg"),
                    start_from_latent_avg=cfg.get("start_from_latent_avg", True),
                    crop_rows=cfg.get("crop_rows"), face_pool_size=cfg.get("face_pool", 256),
                    config=cfg, precision=precision, scan_batch=scan_batch, dtype=dtype)


def check_checkpoint(path: str) -> None:
    """Raises ModelDirError with a hint when `path` is not an inverter directory."""
    path = os.fspath(path)
    meta = checkpoints.read_meta(path)          # the workdir hint comes from read_meta
    if meta.get("kind") != KIND:
        raise checkpoints.ModelDirError(
            f"{path!r} holds a model of kind {meta.get('kind')!r}, not an encoder checkpoint "
            f"({KIND!r}): pass the output of `e4e-jax convert e4e` or a training run's "
            f"WORKDIR/export.")


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """Directory basenames, duplicates suffixed -2, -3, ... in command-line order."""
    names, seen = [], collections.Counter()
    for p in paths:
        base = os.path.basename(os.path.normpath(os.path.abspath(p))) or "checkpoint"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        while name in names:
            seen[base] += 1
            name = f"{base}-{seen[base]}"
        names.append(name)
    return names


def make_decoder(inv) -> Callable:
    """jit (generator_variables, w_plus) -> images as the Inverter's reconstructions (stored
    noise, face_pool, cars crop), unclipped: the official LEC `_generate`."""
    import jax
    return jax.jit(lambda gv, w: inv.apply_decode(gv, w, noise="const"))
