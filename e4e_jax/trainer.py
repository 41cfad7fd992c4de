"""The training loop around the pure step: models, sharding, data, logging, checkpoints, export.

    summary = train_and_evaluate(config, workdir)

Side effects live here (train.py is a thin CLI over this module):
- models: the frozen generator (converted directory or a seeded random one), latent_avg, the
  encoder (ArcFace-initialised backbone like the official, random, or a converted e4e/pSp
  checkpoint to fine-tune), the latent discriminator, the frozen loss networks;
- one `Mesh` over every device of every host with a "data" axis: the batch is split over it,
  everything else is replicated; the step is jitted once with explicit shardings and the state
  donated;
- clu metric writers (TensorBoard + console) and progress reports (steps/s, ETA), image grids
  (input | reconstruction), validation at intervals;
- orbax CheckpointManagers: periodic saves (keep N) and the best-by-validation state, restored on
  start so that a killed run resumes exactly (parameters, optimizer states, discriminator, W pools,
  RNG and data position all live in the TrainState);
- a non-finite loss stops the run naming the step and the loss term; checkpoints are only ever
  written from finite steps;
- WORKDIR/export/ (an inference directory for e4e_jax.load_encoder, the encoding command and
  eval.py) and WORKDIR/summary.json.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from e4e_jax import data as data_lib
from e4e_jax import image_io
from e4e_jax import losses as L
from e4e_jax import optim
from e4e_jax import train_step as ts
from e4e_jax.generator import LoadedGenerator, init_generator, load_generator
from e4e_jax.inverter import Inverter, load_encoder, save_inverter
from e4e_jax.models.discriminator import LatentCodesDiscriminator, init_discriminator
from e4e_jax.models.encoders import encoder_config, init_encoder

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration, missing files)."""


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------

def maybe_initialize_distributed(config) -> None:
    """jax.distributed.initialize when configured (explicit addresses, or auto-detection on
    TPU pods / Slurm when only `initialize` is set)."""
    d = config.distributed
    if not d.initialize:
        return
    kwargs = {}
    if d.coordinator_address:
        kwargs = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                      process_id=d.process_id)
    if jax.config.jax_platforms in (None, "", "cpu") and os.environ.get("JAX_PLATFORMS",
                                                                        "cpu") == "cpu":
        # multi-process CPU runs need a collectives implementation
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


@dataclasses.dataclass
class Setup:
    config: Any
    mesh: Mesh
    models: ts.StepModels
    step_cfg: ts.StepConfig
    frozen: dict
    generator: LoadedGenerator
    encoder_config: dict
    latent_avg: np.ndarray | None


def _generator(config) -> LoadedGenerator:
    gi = config.generator.init
    if gi.resolution:
        return init_generator(jax.random.key(config.seed + 101), int(gi.resolution),
                              max_channels=int(gi.max_channels) or None, n_mlp=int(gi.n_mlp),
                              with_latent_avg=False)
    if not config.generator.path:
        raise TrainingError("set config.generator.path (a converted generator directory) or "
                            "config.generator.init.resolution (a seeded random generator).")
    return load_generator(config.generator.path)


def _latent_avg(config, gen: LoadedGenerator, n_latent: int) -> np.ndarray | None:
    if not config.start_from_latent_avg:
        return None
    la = gen.latent_avg
    if la is None:
        la = np.asarray(gen.mean_latent(int(config.latent_avg_samples),
                                        jax.random.key(config.seed + 7))[0])
    return np.broadcast_to(np.asarray(la, np.float32), (n_latent, gen.style_dim)).copy()


def _loss_nets(config) -> dict:
    from e4e_jax.loss_nets import load_arcface, load_lpips, load_moco
    from e4e_jax.precision import Policy
    policy = Policy.from_config(config).loader_kwargs()
    nets = {}
    if config.losses.get("lpips", 0):
        nets["lpips"] = load_lpips(config.loss_nets.lpips, **policy).net
    if config.losses.get("id", 0):
        kind = config.loss_nets.id_kind
        if kind not in ("arcface", "moco"):
            raise TrainingError(f"config.loss_nets.id_kind must be 'arcface' or 'moco', got "
                                f"{kind!r}.")
        loader = load_arcface if kind == "arcface" else load_moco
        nets["id"] = loader(config.loss_nets.id, **policy).net
    return nets


def _encoder_variables(config, enc_cfg: dict, rng) -> dict:
    init = config.encoder.init
    if init not in ("arcface", "random", "checkpoint"):
        raise TrainingError(f"config.encoder.init must be 'arcface', 'random' or 'checkpoint', "
                            f"got {init!r}.")
    variables = init_encoder(rng, enc_cfg)
    if init == "arcface":
        # the official pSp loads model_ir_se50.pth with strict=False: input layer and body
        from e4e_jax.loss_nets import load_arcface
        arc = load_arcface(config.encoder.arcface)
        for col in ("params", "batch_stats"):
            for part in ("input_layer", "body"):
                src = arc.variables[col][part]
                want = jax.tree_util.tree_map(np.shape, variables[col][part])
                got = jax.tree_util.tree_map(np.shape, src)
                if want != got:
                    raise TrainingError(f"the ArcFace {part} in {config.encoder.arcface!r} does "
                                        f"not match the encoder (num_layers / mode / widths).")
                variables[col][part] = src
    return jax.tree_util.tree_map(np.asarray, variables)


def build(config, nets: dict | None = None) -> Setup:
    """Everything static plus the frozen weights, from the config.

    `nets` (name -> LossNet) replaces loading config.loss_nets from disk (benchmarks, tests).
    """
    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("data",))
    from e4e_jax.precision import Policy
    try:
        policy = Policy.from_config(config)
    except ValueError as e:
        raise TrainingError(f"config: {e}") from e
    if config.batch_size % len(devices):
        raise TrainingError(f"batch_size {config.batch_size} must be divisible by the number of "
                            f"devices ({len(devices)}).")
    if config.encoder.init == "checkpoint":
        if not config.encoder.checkpoint:
            raise TrainingError("encoder.init='checkpoint' needs config.encoder.checkpoint.")
        ckpt = load_encoder(config.encoder.checkpoint)
        gen, enc_cfg = ckpt.generator, dict(ckpt.encoder_config)
        latent_avg = ckpt.latent_avg if config.start_from_latent_avg else None
        if config.start_from_latent_avg and latent_avg is None:
            latent_avg = _latent_avg(config, gen, ckpt.n_latent)
    else:
        gen = _generator(config)
        e = config.encoder
        enc_cfg = encoder_config(e.type, gen.n_latent, tuple(config.data.input_size),
                                 e.num_layers, e.mode,
                                 **({"widths": tuple(e.widths)} if e.widths else {}),
                                 units=tuple(e.units) if e.units else None,
                                 style_dim=gen.style_dim, head_width=e.head_width)
        latent_avg = _latent_avg(config, gen, gen.n_latent)
    synthetic = config.data.kind == "synthetic"
    if config.data.kind not in ("images", "synthetic"):
        raise TrainingError(f"config.data.kind must be 'images' or 'synthetic', got "
                            f"{config.data.kind!r}.")
    weights = {k: float(v) for k, v in config.losses.items()}
    unknown = [k for k in weights if k not in L.registered_losses()]
    if unknown:
        raise TrainingError(f"unknown loss term(s) {unknown} in config.losses; registered: "
                            f"{', '.join(L.registered_losses())}.")
    use_disc = weights.get("adv", 0) > 0
    is_e4e = enc_cfg["encoder_type"] == "Encoder4Editing"
    prog = config.progressive.start
    if prog is not None and not is_e4e:
        raise TrainingError("progressive training needs the Encoder4Editing encoder; set "
                            "config.progressive.start=None for other encoders.")
    step_cfg = ts.StepConfig(
        weights=tuple(sorted(weights.items())),
        options=tuple(sorted((k, tuple(sorted(dict(v).items())))
                             for k, v in config.loss_options.items())),
        n_latent=gen.n_latent,
        progressive_steps=ts.progressive_steps(gen.n_latent, prog, config.progressive.every),
        use_disc=use_disc, r1=float(config.discriminator.r1),
        d_reg_every=int(config.discriminator.d_reg_every),
        use_w_pool=bool(config.discriminator.use_w_pool and config.discriminator.w_pool_size > 0),
        face_pool=int(config.output.face_pool) if config.output.face_pool else None,
        crop_rows=tuple(config.output.crop_rows) if config.output.crop_rows else None,
        batch_size=int(config.batch_size), synthetic=synthetic,
        synthetic_noise=config.data.synthetic_noise,
        input_size=tuple(int(s) for s in config.data.input_size), is_e4e=is_e4e)
    inverter = Inverter(enc_cfg, {}, gen, latent_avg,
                        start_from_latent_avg=config.start_from_latent_avg,
                        crop_rows=step_cfg.crop_rows, face_pool_size=step_cfg.face_pool,
                        dtype=policy.dtype, precision=policy.precision,
                        remat=policy.remat == "blocks")
    models = ts.StepModels(
        inverter=inverter,
        discriminator=LatentCodesDiscriminator(gen.style_dim, precision=policy.lax_precision),
        optimizer=optim.make_optimizer(config.optimizer.name, config.optimizer.lr),
        disc_optimizer=optim.adam(config.discriminator.lr))
    frozen = {"generator": gen.variables,
              "latent_avg": None if latent_avg is None else jnp.asarray(latent_avg),
              "nets": _loss_nets(config) if nets is None else dict(nets)}
    return Setup(config, mesh, models, step_cfg, frozen, gen, enc_cfg, latent_avg)


def create_train_state(setup: Setup) -> ts.TrainState:
    config = setup.config
    rng = jax.random.key(config.seed)
    k_enc, k_disc = jax.random.split(rng)
    if config.encoder.init == "checkpoint":
        enc_vars = load_encoder(config.encoder.checkpoint).variables
    else:
        enc_vars = _encoder_variables(config, setup.encoder_config, k_enc)
    params = enc_vars["params"]
    batch_stats = enc_vars.get("batch_stats", {})
    models = setup.models
    if setup.step_cfg.use_disc:
        disc_params = init_discriminator(k_disc, setup.generator.style_dim)["params"]
    else:
        disc_params = {}
    pool_size = int(config.discriminator.w_pool_size)
    state = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=models.optimizer.init(params),
        disc_params=disc_params, disc_opt_state=models.disc_optimizer.init(disc_params),
        real_pool=ts.pool_init(pool_size, setup.generator.style_dim),
        fake_pool=ts.pool_init(pool_size, setup.generator.style_dim),
        rng=ts.initial_rng(config.seed + 1))
    return jax.device_put(state, NamedSharding(setup.mesh, P()))


# --------------------------------------------------------------------------------------------
# Compiled functions
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Compiled:
    train_step: Any
    eval_step: Any
    reconstruct: Any
    batch_sharding: NamedSharding
    replicated: NamedSharding


def compile_functions(setup: Setup) -> Compiled:
    mesh = setup.mesh
    rep = NamedSharding(mesh, P())
    batch_sh = NamedSharding(mesh, P("data"))
    models, cfg = setup.models, setup.step_cfg

    def step(state, frozen, batch):
        if cfg.synthetic:
            return ts.train_step(models, cfg, state, frozen, batch)
        batch = {"image": jax.lax.with_sharding_constraint(batch["image"], batch_sh)}
        return ts.train_step(models, cfg, state, frozen, batch)

    train = jax.jit(step, in_shardings=(rep, rep, batch_sh), out_shardings=(rep, rep),
                    donate_argnums=(0,))
    evaluate = jax.jit(lambda s, f, x, r: ts.eval_step(models, cfg, s, f, x, r),
                       in_shardings=(rep, rep, batch_sh, rep), out_shardings=rep)
    recon = jax.jit(lambda s, f, x: ts.reconstruct(models, cfg, s, f, x),
                    in_shardings=(rep, rep, batch_sh), out_shardings=(rep, rep))
    return Compiled(train, evaluate, recon, batch_sh, rep)


def to_global(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This host's slice of a global batch -> a global array sharded over the data axis."""
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def host_to_global(full: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global batch that every host holds in full (evaluation data) -> a sharded array."""
    full = np.asarray(full)
    return jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])


def to_host(tree):
    """Replicated (possibly multi-host) arrays -> numpy, from this host's first replica."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree_util.tree_map(get, tree)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

class ImageData:
    """Training / test loaders for image folders or TFDS (per-host slices)."""

    def __init__(self, config):
        data_lib.hide_accelerators_from_tensorflow()
        size = tuple(int(s) for s in config.data.input_size)
        pi, pc = jax.process_index(), jax.process_count()
        self.train = data_lib.BatchLoader(
            data_lib.make_source(config.data.train, config.data.data_dir),
            data_lib.BatchSpec(config.batch_size, size, seed=config.seed, shuffle=True,
                               flip_prob=config.data.flip_prob, process_index=pi,
                               process_count=pc))
        test_source = data_lib.make_source(config.data.test or config.data.train,
                                           config.data.data_dir)
        # evaluation batches are small: every host decodes them in full
        self.test = data_lib.BatchLoader(
            test_source, data_lib.BatchSpec(config.test_batch_size, size, shuffle=False))
        self.holdout = data_lib.BatchLoader(
            test_source, data_lib.BatchSpec(min(config.holdout, len(test_source)), size,
                                            shuffle=False))

    def test_batches(self, max_batches: int | None) -> Iterator[np.ndarray]:
        n = max(1, len(self.test.source) // self.test.spec.global_batch)
        if max_batches:
            n = min(n, int(max_batches))
        for i in range(n):
            yield self.test.batch(i)

    def holdout_images(self) -> np.ndarray:
        return self.holdout.batch(0)


class SyntheticData:
    """Held-out / validation images of the synthetic domain: fixed draws of the generator."""

    def __init__(self, config, setup: Setup):
        self.config, self.setup = config, setup
        gen = setup.generator
        size = tuple(int(s) for s in config.data.input_size)

        @functools.partial(jax.jit, static_argnums=2)
        def make(variables, key, n):
            x, _ = data_lib.synthetic_batch(gen, variables, key, n, config.data.synthetic_noise)
            if tuple(x.shape[1:3]) != size:
                from e4e_jax.ops import adaptive_avg_pool2d
                x = adaptive_avg_pool2d(x, size)
            return x
        self._make = make
        self.train = None

    def _images(self, seed: int, n: int) -> np.ndarray:
        # drawn in one call per set so the values do not depend on batch boundaries
        key = jax.random.key(seed)
        return np.asarray(self._make(self.setup.frozen["generator"], key, n))

    def test_batches(self, max_batches: int | None) -> Iterator[np.ndarray]:
        n = int(max_batches or 4)
        b = self.config.test_batch_size
        images = self._images(self.config.seed + 1000, n * b)
        for i in range(n):
            yield images[i * b:(i + 1) * b]

    def holdout_images(self) -> np.ndarray:
        return self._images(self.config.seed + 2000, int(self.config.holdout))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _managers(workdir: str, keep: int):
    import orbax.checkpoint as ocp
    periodic = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             best_fn=lambda m: m["val_loss"], best_mode="min"))
    return periodic, best


def _save(manager, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    import orbax.checkpoint as ocp
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)),
                 metrics=metrics)


def _restore(manager, abstract_state):
    import orbax.checkpoint as ocp
    step = manager.latest_step()
    if step is None:
        return None, None
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def _grid(x: np.ndarray, y_hat: np.ndarray, n: int) -> np.ndarray:
    """Rows of input | reconstruction (reconstructions resized to the input when they differ)."""
    rows = []
    for i in range(min(n, len(x))):
        a = image_io.to_uint8(x[i])
        b = image_io.to_uint8(y_hat[i])
        rows.append(image_io.side_by_side([a, b], pad=2))
    return image_io.make_grid(rows, ncols=1, pad=2)


def _check_finite(step: int, metrics: dict) -> None:
    bad = sorted(k for k, v in metrics.items() if k != "all_finite"
                 and not np.all(np.isfinite(np.asarray(v))))
    raise TrainingError(f"non-finite loss at step {step}: {', '.join(bad) or 'unknown term'} "
                        f"(values: {', '.join(f'{k}={float(np.asarray(metrics[k])):g}' for k in bad)}"
                        f"). The last good checkpoint is kept; lower the learning rate or check "
                        f"the inputs.")


def holdout_mse(compiled: Compiled, state, frozen, images: np.ndarray, batch: int) -> float:
    """Reconstruction MSE (the L2 loss) of fixed held-out images, inference mode."""
    errs = []
    n = len(images)
    for i in range(0, n, batch):
        chunk = images[i:i + batch]
        pad = (-len(chunk)) % batch
        padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        _, rec = compiled.reconstruct(state, frozen,
                                      host_to_global(padded, compiled.batch_sharding))
        rec = to_host(rec)[:len(chunk)]
        errs.append(np.mean((rec - chunk) ** 2, axis=(1, 2, 3)))
    return float(np.mean(np.concatenate(errs)))


def train_and_evaluate(config, workdir: str) -> dict:
    from clu import metric_writers, periodic_actions

    t_start = time.time()
    maybe_initialize_distributed(config)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    setup = build(config)
    data = SyntheticData(config, setup) if setup.step_cfg.synthetic else ImageData(config)
    compiled = compile_functions(setup)
    state = create_train_state(setup)
    periodic, best = _managers(workdir, int(config.keep_checkpoints))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, meta = _restore(periodic, abstract)
    holdout = data.holdout_images()
    if restored is not None:
        state = restored
        print(f"resumed from {workdir}/checkpoints at step {int(to_host(state.step))}",
              flush=True)
    else:
        meta = {"best_val_loss": None,
                "mse_before": holdout_mse(compiled, state, setup.frozen, holdout,
                                          config.test_batch_size)}
    start = int(to_host(state.step))
    max_steps = int(config.max_steps)

    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=not is_main)
    if start == 0 and is_main:
        writer.write_hparams({k: str(v) for k, v in _flat_config(config).items()})
    hooks = [periodic_actions.ReportProgress(num_train_steps=max_steps, writer=writer,
                                             every_steps=config.log_every)]
    print(f"training {setup.encoder_config['encoder_type']} over a "
          f"{setup.generator.resolution}px generator on {jax.device_count()} device(s) "
          f"({jax.process_count()} process(es)), global batch {config.batch_size}, steps "
          f"{start}..{max_steps}, mse_before {meta['mse_before']:.5f}", flush=True)

    train_iter = (None if setup.step_cfg.synthetic
                  else data.train.iterate(start_step=start, num_steps=max_steps - start))
    pending = None  # (step, metrics) of the previous step: checked one step late to keep
    # the device busy while the host looks at the numbers
    last_log_time, last_log_step = time.time(), start
    grid_images = holdout[:config.num_grid_images]
    last_train: dict = {}
    try:
        for step in range(start, max_steps):
            if train_iter is None:
                batch = {}
            else:
                batch = {"image": to_global(next(train_iter), compiled.batch_sharding)}
            state, metrics = compiled.train_step(state, setup.frozen, batch)
            if pending is not None and not bool(to_host(pending[1]["all_finite"])):
                _check_finite(*_host_metrics(pending))
            pending = (step, metrics)
            done = step + 1
            for h in hooks:
                h(done)
            is_last = done == max_steps
            if done % config.log_every == 0 or is_last or step == start:
                m = to_host(metrics)
                if not bool(m["all_finite"]):
                    _check_finite(step, m)
                now = time.time()
                dt = (now - last_log_time) / max(1, done - last_log_step)
                last_log_time, last_log_step = now, done
                scalars = {f"train/{k}": float(v) for k, v in m.items() if k != "all_finite"}
                scalars["train/step_time_s"] = dt
                scalars["train/images_per_s"] = config.batch_size / dt if dt > 0 else 0.0
                writer.write_scalars(done, scalars)
                last_train = {k[len("train/"):]: v for k, v in scalars.items()}
            if done % config.image_every == 0 or is_last:
                _, rec = compiled.reconstruct(state, setup.frozen,
                                              host_to_global(_pad_to(grid_images,
                                                                     config.test_batch_size),
                                                             compiled.batch_sharding))
                grid = _grid(grid_images, to_host(rec), config.num_grid_images)
                if is_main:
                    writer.write_images(done, {"images/input_reconstruction": grid[None]})
                    image_io.save_png(grid, os.path.join(workdir, "images",
                                                         f"step_{done:07d}.png"))
            val_loss = None
            if done % config.val_every == 0 or is_last:
                val = validate(compiled, state, setup, data, config)
                writer.write_scalars(done, {f"test/{k}": v for k, v in val.items()})
                val_loss = val["loss"]
                print(f"step {done}: validation loss {val_loss:.5f}", flush=True)
            if done % config.save_every == 0 or is_last or val_loss is not None:
                m = to_host(metrics)
                if not bool(m["all_finite"]):
                    _check_finite(step, m)
                pending = None
                # one manager's save at a time: concurrent async saves of two managers collide
                # on orbax's multi-host barrier names
                if done % config.save_every == 0 or is_last:
                    best.wait_until_finished()
                    _save(periodic, done, state, meta)
                if val_loss is not None and (meta["best_val_loss"] is None
                                             or val_loss < meta["best_val_loss"]):
                    meta["best_val_loss"] = val_loss
                    periodic.wait_until_finished()
                    _save(best, done, state, meta, metrics={"val_loss": val_loss})
        if pending is not None:
            m = to_host(pending[1])
            if not bool(m["all_finite"]):
                _check_finite(pending[0], m)
    finally:
        periodic.wait_until_finished()
        best.wait_until_finished()
        writer.flush()

    mse_after = holdout_mse(compiled, state, setup.frozen, holdout, config.test_batch_size)
    export_dir = os.path.join(workdir, "export")
    if is_main:
        export(setup, state, export_dir, steps=max_steps)
    summary = {"mse_before": meta["mse_before"], "mse_after": mse_after, "steps": max_steps,
               "trained_steps_this_run": max_steps - start, "seconds": time.time() - t_start,
               "best_val_loss": meta["best_val_loss"], "export": export_dir,
               "devices": jax.device_count(), "processes": jax.process_count(),
               "last_train_metrics": last_train}
    if isinstance(data, ImageData):
        summary["unreadable_images"] = data.train.bad_files
    if is_main:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    drop = 100 * (1 - mse_after / meta["mse_before"]) if meta["mse_before"] else 0.0
    print(f"done: {max_steps} steps; held-out reconstruction MSE {meta['mse_before']:.5f} -> "
          f"{mse_after:.5f} ({drop:.1f}% lower); exported to {export_dir}", flush=True)
    return summary


def _host_metrics(pending):
    step, metrics = pending
    return step, to_host(metrics)


def _pad_to(images: np.ndarray, multiple: int) -> np.ndarray:
    pad = (-len(images)) % multiple
    if not pad:
        return images
    return np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])


def validate(compiled: Compiled, state, setup: Setup, data, config) -> dict:
    totals: dict[str, float] = {}
    n = 0
    key = jax.random.key(config.seed + 3)
    for i, x in enumerate(data.test_batches(config.max_val_batches)):
        m = to_host(compiled.eval_step(state, setup.frozen,
                                       host_to_global(x, compiled.batch_sharding),
                                       jax.random.fold_in(key, i)))
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in totals.items()}


def export(setup: Setup, state, path: str, steps: int) -> str:
    variables = to_host({"params": state.params, "batch_stats": state.batch_stats})
    cfg = setup.config
    return save_inverter(path, setup.encoder_config, variables, setup.generator,
                         latent_avg=setup.latent_avg,
                         start_from_latent_avg=bool(cfg.start_from_latent_avg),
                         crop_rows=setup.step_cfg.crop_rows, face_pool=setup.step_cfg.face_pool,
                         extra_config={"dataset_type": cfg.dataset_type, "trained_steps": steps,
                                       "variant": cfg.get("variant", None)},
                         source="e4e_jax train.py")


def _flat_config(config, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if hasattr(v, "items"):
            out.update(_flat_config(v, key + "."))
        else:
            out[key] = v
    return out
