"""Start-up checks of a training config, before any weight is loaded or anything compiled.

    preflight(config)                  # raises ConfigError naming the option and the fix
    gen = condition_generator(config, gen)   # a conditional generator gets its class label

They read only the config.json files of the model directories (no weights), so a wrong setting
fails in a second with one line instead of a traceback minutes into the run:

- the generator's channels: the encoder, the image loader (folders and TFDS are read as RGB,
  like the official `convert('RGB')`) and the loss networks (LPIPS, ArcFace, MoCo) all take 3
  channels; a grayscale (img_channels=1) generator is refused, naming both counts;
- class-conditional StyleGAN2-ADA generators (c_dim > 0) need a label wherever a z is mapped
  (the synthetic domain, the latent discriminator's real w, latent_avg): config.generator_class
  is the fixed class index used for all of them (None: refused for a conditional generator);
- fine-tuning an encoder (encoder.init='checkpoint') keeps its input size: config.data.input_size
  must equal the checkpoint's;
- the reconstructions (output.face_pool, crop_rows) have the training images' size
  (data.input_size): the losses compare them pixel by pixel;
- LPIPS needs images of at least lpips_min_size(net) pixels (31 alex, 16 vgg);
- no setting is silently overridden by another (check_conflicts): generator.path with a seeded
  random generator (generator.init.resolution > 0), encoder.checkpoint unread by encoder.init.
"""
from __future__ import annotations

import os

import jax.numpy as jnp

from e4e_jax.core import fs
from e4e_jax.losses.checks import check_lpips_size
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.nets.base import BoundNet
from e4e_jax.nets.generator import LoadedGenerator
from e4e_jax.train.errors import ConfigError

RGB = 3


def _meta(path: str, option: str) -> dict:
    try:
        return checkpoints.read_meta(os.fspath(path))
    except checkpoints.ModelDirError as e:
        raise ConfigError(f"{option}: {e}") from None


def _generator_meta(config) -> tuple[dict, str]:
    """(generator config.json, the option that names it); {} for a seeded random generator."""
    if config.encoder.init == "checkpoint":
        if not config.encoder.checkpoint:
            raise ConfigError("encoder.init='checkpoint' needs config.encoder.checkpoint.")
        path = os.path.join(config.encoder.checkpoint, "generator")
        return _meta(path, "config.encoder.checkpoint").get("config", {}), \
            "config.encoder.checkpoint"
    if config.generator.init.resolution or not config.generator.path:
        return {}, "config.generator.init"
    meta = _meta(config.generator.path, "config.generator.path")
    if meta.get("kind") != "stylegan2_generator" and "generator" in meta.get("subdirs", []):
        meta = _meta(os.path.join(config.generator.path, "generator"), "config.generator.path")
    return meta.get("config", {}), "config.generator.path"


def check_channels(meta: dict, option: str) -> None:
    channels = int(meta.get("img_channels", RGB))
    if channels != RGB:
        raise ConfigError(
            f"the generator of {option} makes {channels}-channel images (img_channels="
            f"{channels}), but the encoder's input, the training images (read as RGB: "
            f"{RGB} channels) and the loss networks (LPIPS, ArcFace / MoCo) take {RGB}. "
            f"Training over a {'grayscale' if channels == 1 else f'{channels}-channel'} "
            f"generator is not supported; use an RGB generator.")


def check_class(config, meta: dict, option: str) -> None:
    c_dim = int(meta.get("c_dim", 0))
    k = config.get("generator_class", None)
    if c_dim == 0:
        if k is not None:
            raise ConfigError(f"config.generator_class={k} but the generator of {option} is "
                                f"unconditional (c_dim=0); leave config.generator_class=None.")
        return
    if k is None:
        raise ConfigError(
            f"the generator of {option} is class-conditional (c_dim={c_dim}): every mapped z "
            f"(synthetic images, the latent discriminator's real w, latent_avg) needs a label. "
            f"Set --config.generator_class=K with K in 0..{c_dim - 1}.")
    if not 0 <= int(k) < c_dim:
        raise ConfigError(f"config.generator_class={k} is out of range for the generator of "
                            f"{option} (c_dim={c_dim}): use 0..{c_dim - 1}.")


def check_encoder_input(config) -> None:
    if config.encoder.init != "checkpoint":
        return
    meta = _meta(config.encoder.checkpoint, "config.encoder.checkpoint").get("config", {})
    have = tuple(int(s) for s in meta.get("encoder", {}).get("input_size", ()))
    want = tuple(int(s) for s in config.data.input_size)
    if have and have != want:
        raise ConfigError(
            f"config.data.input_size={want} differs from the input size {have} of the encoder "
            f"in config.encoder.checkpoint ({config.encoder.checkpoint}); a fine-tuned encoder "
            f"keeps its input size: set --config.data.input_size='{have}'.")


def check_output_size(config, meta: dict) -> None:
    """The reconstructions (face_pool x face_pool, or the generator's resolution without
    face_pool; rows crop_rows of it for cars) are compared with the training images
    (data.input_size) pixel by pixel, so the two sizes must agree; a mismatch used to fail
    minutes in with a traceback from the L2 loss."""
    fp = config.output.face_pool
    side = int(fp) if fp else int(config.generator.init.resolution or 0) or int(
        meta.get("resolution", meta.get("img_resolution", 0)) or 0)
    if not side:
        return
    crop = config.output.crop_rows
    out = ((int(crop[1]) - int(crop[0])) if crop else side, side)
    want = tuple(int(s) for s in config.data.input_size)
    if out != want:
        source = (f"config.output.face_pool={fp}" if fp else f"the generator's {side} px output "
                  f"(config.output.face_pool unset)")
        fix = (f"--config.output.face_pool={want[1]}" if not crop and want[0] == want[1]
               else "config.output.face_pool / crop_rows to match")
        raise ConfigError(f"the reconstructions are {out[0]}x{out[1]} ({source}"
                          f"{f', crop_rows={tuple(crop)}' if crop else ''}) but "
                          f"config.data.input_size is {want[0]}x{want[1]}; the losses compare "
                          f"them pixel by pixel: set {fix}, or "
                          f"--config.data.input_size='({out[0]}, {out[1]})'.")


def check_lpips(config) -> None:
    if not float(config.losses.get("lpips", 0) or 0):
        return
    net = "alex"
    path = config.loss_nets.lpips
    if path and os.path.isfile(os.path.join(path, checkpoints.CONFIG_FILE)):
        net = _meta(path, "config.loss_nets.lpips").get("config", {}).get("net", net) or net
    sizes = [(tuple(config.data.input_size), "config.data.input_size")]
    if config.output.face_pool:
        fp = int(config.output.face_pool)
        sizes.append(((fp, fp), "config.output.face_pool"))
    for shape, option in sizes:
        try:
            check_lpips_size(net, shape, option)
        except ValueError as e:
            raise ConfigError(str(e)) from None


_POSITIVE_FIELDS = ("batch_size", "test_batch_size", "max_steps", "log_every", "image_every",
                    "val_every", "save_every", "keep_checkpoints")


def check_counts(config) -> None:
    """Batch sizes, step counts and intervals must be whole numbers >= 1 (a batch of 0 would
    fail deep inside BatchNorm, a negative max_steps would export an untrained model)."""
    for name in _POSITIVE_FIELDS:
        value = config.get(name, 1)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.{name} must be a whole number >= 1, got {value!r}; "
                                f"set --config.{name}=N.")


def check_workdir(workdir: str) -> None:
    """Refuses a model directory (an export or a converted model: it holds config.json but no
    checkpoints/) as a training workdir, which would otherwise fill it with a new run, and a
    bucket (gs://...): checkpoints (orbax) and TensorBoard logs would go through TensorFlow's
    and etils' own bucket clients, untested here (they cannot reach a GCS emulator)."""
    if fs.is_remote(workdir):
        raise ConfigError(f"--workdir {workdir} is a bucket; training writes its checkpoints "
                            f"and logs to a local disk only: pass a local folder (e.g. --workdir "
                            f"runs/my_run) and copy it afterwards with `gcloud storage cp -r "
                            f"runs/my_run {workdir}` (the data may stay in the bucket).")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir {workdir} is a file, not a folder; pass a new folder, "
                            f"e.g. --workdir runs/my_run.")
    if (os.path.isfile(os.path.join(workdir, "config.json"))
            and not os.path.isdir(os.path.join(workdir, "checkpoints"))):
        raise ConfigError(f"--workdir {workdir} is a model directory (it holds config.json), "
                            f"not a training workdir; pass a new folder, e.g. --workdir "
                            f"runs/my_run (to fine-tune from it, set "
                            f"--config.encoder.init=checkpoint and "
                            f"--config.encoder.checkpoint={workdir}).")


def check_conflicts(config) -> None:
    """Two settings where one would silently override the other are refused: a generator
    directory (generator.path) together with a seeded random generator (generator.init.
    resolution > 0), and an encoder checkpoint (encoder.checkpoint) that encoder.init does not
    read."""
    path, res = config.generator.path, int(config.generator.init.resolution or 0)
    if path and res:
        raise ConfigError(
            f"config.generator.path={path} and config.generator.init.resolution={res} both name "
            f"the generator (a converted directory, a seeded random one); to train over {path} "
            f"add --config.generator.init.resolution=0, or drop --config.generator.path to keep "
            f"the random one.")
    if config.encoder.checkpoint and config.encoder.init != "checkpoint":
        raise ConfigError(
            f"config.encoder.checkpoint={config.encoder.checkpoint} is not read with "
            f"config.encoder.init={config.encoder.init!r}; to fine-tune it add "
            f"--config.encoder.init=checkpoint, or drop --config.encoder.checkpoint.")


def preflight(config) -> None:
    """Every start-up check above; raises ConfigError (exit 2) naming the option to change."""
    check_counts(config)
    check_conflicts(config)
    meta, option = _generator_meta(config)
    check_channels(meta, option)
    check_class(config, meta, option)
    check_encoder_input(config)
    check_output_size(config, meta)
    check_lpips(config)


class FixedClassGenerator(LoadedGenerator):
    """A conditional generator whose mapping uses class `class_index` (one-hot, as the official
    StyleGAN2-ADA labels) whenever no label is passed. The class is a static field, so
    `with_policy` / `replace` copies keep it (the train step derives the synthetic domain's
    generator that way)."""

    tree_static = LoadedGenerator.tree_static + ("class_index",)

    def __init__(self, gen: LoadedGenerator, class_index: int):
        BoundNet.__init__(self, gen.module, gen.variables, config=gen.config,
                          latent_avg=gen.latent_avg, class_index=int(class_index))

    def _one_hot(self, n: int):
        return jnp.zeros((n, self.c_dim), jnp.float32).at[:, self.class_index].set(1.0)

    def map(self, variables, z, c=None):
        return super().map(variables, z, self._one_hot(z.shape[0]) if c is None else c)

    def _labels(self, c, n: int):
        return super()._labels(self._one_hot(n) if c is None else c, n)


def condition_generator(config, gen: LoadedGenerator) -> LoadedGenerator:
    """`gen`, with config.generator_class as its label when it is conditional."""
    if gen.c_dim == 0:
        return gen
    if not isinstance(gen, LoadedGenerator):
        raise ConfigError(f"training over a class-conditional StyleGAN3 generator (c_dim="
                            f"{gen.c_dim}) is not supported: use an unconditional one.")
    check_class(config, {"c_dim": gen.c_dim}, "the config")
    return FixedClassGenerator(gen, int(config.generator_class))
