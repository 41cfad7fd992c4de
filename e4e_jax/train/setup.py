"""Building a training run: the static step, the frozen weights, the mesh, the jitted functions.

    setup = build(config)                 # Setup: everything static, the frozen weights, jits
    state = create_train_state(setup)     # replicated TrainState (encoder, D, optimizers, RNG)
    state, metrics = setup.train_step(state, setup.frozen, batch)

A run is described by three objects, each fact in one of them:

- `Setup` (this module): the config, the numeric `Policy`, the `Mesh` (its shardings are
  derived from it), the step's `StepSpec` (modules and options, no weights), the `frozen`
  weights (generator variables, latent_avg, loss networks) and the three jitted functions
  (train_step, eval_step, reconstruct), each jitted once with explicit shardings;
- `TrainState` (e4e_jax.train.step): what training changes;
- `Run` (e4e_jax.train.loop): the loop's bookkeeping (writers, checkpoints, metadata).

Models: the frozen generator (converted directory or a seeded random one), latent_avg, the
encoder (ArcFace-initialised backbone like the official, random, or a converted e4e/pSp
checkpoint to fine-tune), the latent discriminator, the frozen loss networks. One `Mesh` over
every device of every host with a "data" axis: the batch is split over it, everything else is
replicated, the state is donated; `to_global` / `host_to_global` / `to_host` move batches and
results across it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from e4e_jax import losses as L
from e4e_jax.core import optim
from e4e_jax.core.precision import Policy
from e4e_jax.models.discriminator import LatentCodesDiscriminator, init_discriminator
from e4e_jax.models.encoders import RESTYLE_ENCODER_TYPES, encoder_config, init_encoder
from e4e_jax.models.restyle_encoders import PROGRESSIVE_TYPES
from e4e_jax.nets.encoder import Inverter, load_encoder
from e4e_jax.nets.generator import LoadedGenerator, init_generator, load_generator
from e4e_jax.train import step as ts
from e4e_jax.train.checks import condition_generator, preflight
from e4e_jax.train.errors import ConfigError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------

def maybe_initialize_distributed(config) -> None:
    """jax.distributed.initialize when configured (explicit addresses, or auto-detection on
    TPU pods / Slurm when only `initialize` is set), after checking the settings and waiting
    for every process with a progress line (e4e_jax.train.distributed.initialize).
    Raises DistributedSettingsError (bad settings, exit 2) or TrainingError (a process that
    did not arrive within config.distributed.initialization_timeout)."""
    from e4e_jax.train import distributed
    from e4e_jax.train.console import say
    distributed.initialize(config, say=say)


@dataclasses.dataclass(eq=False)
class Setup:
    """What `build` makes for a run (see the module docstring).

    frozen: {"generator": variables, "latent_avg": (n_latent, S) float32 jax array or None,
    "nets": {name: losses.LossNet}}. train_step(state, frozen, batch) -> (state, metrics),
    eval_step(state, frozen, x, rng) -> {loss term: scalar}, reconstruct(state, frozen, x) ->
    (w_plus, images): jitted once each, batches sharded over the mesh's "data" axis."""
    config: Any
    policy: Policy
    mesh: Mesh
    spec: ts.StepSpec
    frozen: dict
    train_step: Callable = dataclasses.field(init=False)
    eval_step: Callable = dataclasses.field(init=False)
    reconstruct: Callable = dataclasses.field(init=False)

    def __post_init__(self):
        rep, batch_sh, spec = self.replicated, self.batch_sharding, self.spec

        def train(state, frozen, batch):
            if "image" in batch:
                batch = {"image": jax.lax.with_sharding_constraint(batch["image"], batch_sh)}
            return ts.train_step(state, frozen, batch, spec=spec)

        self.train_step = jax.jit(train, in_shardings=(rep, rep, batch_sh),
                                  out_shardings=(rep, rep), donate_argnums=(0,))
        self.eval_step = jax.jit(functools.partial(ts.eval_step, spec=spec),
                                 in_shardings=(rep, rep, batch_sh, rep), out_shardings=rep)
        self.reconstruct = jax.jit(functools.partial(ts.reconstruct, spec=spec),
                                   in_shardings=(rep, rep, batch_sh), out_shardings=(rep, rep))

    @property
    def batch_sharding(self) -> NamedSharding:
        """Batches: split over the mesh's "data" axis."""
        return NamedSharding(self.mesh, P("data"))

    @property
    def replicated(self) -> NamedSharding:
        """Everything else: a full copy on every device."""
        return NamedSharding(self.mesh, P())

    @property
    def inverter(self) -> Inverter:
        """The step's Inverter (modules only: its weights are in the state and `frozen`)."""
        return self.spec.inverter

    @property
    def generator(self) -> LoadedGenerator:
        """The generator with its frozen variables (its config, resolution, W+ shape)."""
        g = self.spec.inverter.generator
        if not isinstance(g, LoadedGenerator):      # StyleGAN3: w_avg is in its variables
            return g.replace(variables=self.frozen["generator"])
        return LoadedGenerator(g.module, self.frozen["generator"], g.config, g.latent_avg)


def _generator(config) -> LoadedGenerator:
    gi = config.generator.init
    kind = gi.get("kind", "stylegan2")
    if kind not in ("stylegan2", "stylegan3"):
        raise ConfigError(f"config.generator.init.kind must be 'stylegan2' or 'stylegan3', got "
                            f"{kind!r}.")
    if gi.resolution and kind == "stylegan3":
        return _random_stylegan3(config)
    if gi.resolution:
        return init_generator(jax.random.key(config.seed + 101), int(gi.resolution),
                              max_channels=int(gi.max_channels) or None, n_mlp=int(gi.n_mlp),
                              with_latent_avg=False)
    if not config.generator.path:
        raise ConfigError("set config.generator.path (a converted generator directory) or "
                            "config.generator.init.resolution (a seeded random generator).")
    return load_generator(config.generator.path)


def _random_stylegan3(config):
    """A seeded random StyleGAN3 generator (config T; official initialisation) of
    generator.init: resolution, max_channels (channel_max; 0 = official 512), num_layers (0 =
    official 14), n_mlp (mapping layers); w_avg set to the mean of latent_avg_samples mapped z
    (an untrained generator's w_avg is 0)."""
    from e4e_jax.nets.stylegan3 import init_stylegan3
    gi = config.generator.init
    options = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=int(gi.resolution),
                   mapping_layers=int(gi.n_mlp))
    if int(gi.max_channels or 0):
        options["channel_max"] = int(gi.max_channels)
    if int(gi.get("num_layers", 0) or 0):
        options["num_layers"] = int(gi.num_layers)
    try:
        g = init_stylegan3(jax.random.key(config.seed + 101), options)
    except ValueError as e:
        raise ConfigError(f"config.generator.init (stylegan3): {e}") from e
    return g.with_latent_avg(g.mean_latent(int(config.latent_avg_samples),
                                           jax.random.key(config.seed + 7))[0])


def _latent_avg(config, gen: LoadedGenerator, n_latent: int) -> np.ndarray | None:
    if not config.start_from_latent_avg:
        return None
    la = gen.latent_avg
    if la is None:
        la = np.asarray(gen.mean_latent(int(config.latent_avg_samples),
                                        jax.random.key(config.seed + 7))[0])
    return np.broadcast_to(np.asarray(la, np.float32), (n_latent, gen.style_dim)).copy()


def _loss_nets(config, policy: Policy) -> dict:
    from e4e_jax.nets.loss_nets import load_arcface, load_lpips, load_moco
    kw = policy.loader_kwargs()
    nets = {}
    if config.losses.get("lpips", 0):
        nets["lpips"] = load_lpips(config.loss_nets.lpips, **kw).net
    if config.losses.get("id", 0):
        kind = config.loss_nets.id_kind
        if kind not in ("arcface", "moco"):
            raise ConfigError(f"config.loss_nets.id_kind must be 'arcface' or 'moco', got "
                                f"{kind!r}.")
        loader = load_arcface if kind == "arcface" else load_moco
        nets["id"] = loader(config.loss_nets.id, **kw).net
    return nets


def _encoder_variables(config, enc_cfg: dict, rng) -> dict:
    init = config.encoder.init
    if init not in ("arcface", "random", "checkpoint"):
        raise ConfigError(f"config.encoder.init must be 'arcface', 'random' or 'checkpoint', "
                            f"got {init!r}.")
    variables = init_encoder(rng, enc_cfg)
    if init == "arcface" and enc_cfg["encoder_type"] in RESTYLE_ENCODER_TYPES:
        return _restyle_arcface(config, enc_cfg, variables, rng)
    if init == "arcface":
        # the official pSp loads model_ir_se50.pth with strict=False: input layer and body
        from e4e_jax.nets.loss_nets import load_arcface
        arc = load_arcface(config.encoder.arcface)
        for col in ("params", "batch_stats"):
            for part in ("input_layer", "body"):
                src = arc.variables[col][part]
                want = jax.tree_util.tree_map(np.shape, variables[col][part])
                got = jax.tree_util.tree_map(np.shape, src)
                if want != got:
                    raise ConfigError(f"the ArcFace {part} in {config.encoder.arcface!r} does "
                                        f"not match the encoder (num_layers / mode / widths).")
                variables[col][part] = src
    return jax.tree_util.tree_map(np.asarray, variables)


def _restyle_arcface(config, enc_cfg: dict, variables: dict, rng) -> dict:
    """ReStyle's IR-SE init (official models/psp.py / e4e.py `__get_encoder_checkpoint`): the
    ArcFace input layer and body, the ArcFace RGB kernel in the first 3 of the 6 input channels
    and N(0, 1) in the others (torch.randn; the draw itself is not the official one)."""
    if enc_cfg["mode"] == "resnet34":
        raise ConfigError(f"encoder.init='arcface' loads IR-SE weights; {enc_cfg['encoder_type']} "
                            f"has a ResNet-34 backbone: set encoder.init='random' (the official "
                            f"code starts it from torchvision's ImageNet resnet34).")
    from e4e_jax.nets.loss_nets import load_arcface
    arc = load_arcface(config.encoder.arcface)
    for col in ("params", "batch_stats"):
        for part in ("input_layer", "body"):
            src = jax.tree_util.tree_map(np.asarray, arc.variables[col][part])
            if col == "params" and part == "input_layer":
                k = src["conv"]["kernel"]                       # (3, 3, 3, 64) HWIO
                extra = jax.random.normal(rng, k.shape[:2] + (enc_cfg["input_nc"] - 3,
                                                              k.shape[3]), jnp.float32)
                src = dict(src, conv={"kernel": np.concatenate([k, np.asarray(extra)], 2)})
            if jax.tree_util.tree_map(np.shape, variables[col][part]) != \
                    jax.tree_util.tree_map(np.shape, src):
                raise ConfigError(f"the ArcFace {part} in {config.encoder.arcface!r} does "
                                    f"not match the encoder (num_layers / mode / widths).")
            variables[col][part] = src
    return jax.tree_util.tree_map(np.asarray, variables)


def _n_iters_per_batch(config, encoder_type: str) -> int:
    """config.encoder.n_iters_per_batch for a ReStyle encoder (None: the official 5); 0 (one
    plain pass) for the others, which refuse the option."""
    n = config.encoder.get("n_iters_per_batch")
    if encoder_type not in RESTYLE_ENCODER_TYPES:
        if n is not None:
            raise ConfigError(f"config.encoder.n_iters_per_batch={n} applies to the ReStyle "
                                f"encoders ({', '.join(RESTYLE_ENCODER_TYPES)}), not "
                                f"{encoder_type}: unset it or change config.encoder.type.")
        return 0
    n = 5 if n is None else n
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ConfigError(f"config.encoder.n_iters_per_batch must be >= 1, got {n}.")
    if not config.start_from_latent_avg:
        raise ConfigError("ReStyle training starts every image from latent_avg: set "
                            "config.start_from_latent_avg=True.")
    return int(n)


def _weightless(config, gen: LoadedGenerator) -> LoadedGenerator:
    """`gen`'s module, config and class label without its variables (they live in `frozen`)."""
    if not isinstance(gen, LoadedGenerator):    # StyleGAN3 (unconditional: checked at build)
        return gen.replace(variables={})
    return condition_generator(config, LoadedGenerator(gen.module, {}, gen.config,
                                                       gen.latent_avg))


def build(config, nets: dict | None = None) -> Setup:
    """Everything static plus the frozen weights, from the config (nothing is compiled yet:
    the jitted functions compile on their first call).

    `nets` (name -> LossNet) replaces loading config.loss_nets from disk (benchmarks, tests).
    Raises ConfigError (exit 2) naming the option for a configuration that cannot run.
    """
    preflight(config)
    devices = np.asarray(jax.devices())
    try:
        policy = Policy.from_config(config)
    except ValueError as e:
        raise ConfigError(f"config: {e}") from e
    if config.batch_size % len(devices):
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by the number of "
                            f"devices ({len(devices)}).")
    if config.data.kind not in ("images", "synthetic"):
        raise ConfigError(f"config.data.kind must be 'images' or 'synthetic', got "
                            f"{config.data.kind!r}.")
    if config.encoder.init == "checkpoint":
        if not config.encoder.checkpoint:
            raise ConfigError("encoder.init='checkpoint' needs config.encoder.checkpoint.")
        ckpt = load_encoder(config.encoder.checkpoint)
        gen, enc_cfg = condition_generator(config, ckpt.generator), dict(ckpt.encoder_config)
        latent_avg = ckpt.latent_avg if config.start_from_latent_avg else None
        if config.start_from_latent_avg and latent_avg is None:
            latent_avg = _latent_avg(config, gen, ckpt.n_latent)
    else:
        gen = condition_generator(config, _generator(config))
        e = config.encoder
        enc_cfg = encoder_config(e.type, gen.n_latent, tuple(config.data.input_size),
                                 e.num_layers, e.mode,
                                 **({"widths": tuple(e.widths)} if e.widths else {}),
                                 units=tuple(e.units) if e.units else None,
                                 style_dim=gen.style_dim, head_width=e.head_width)
        latent_avg = _latent_avg(config, gen, gen.n_latent)
    weights = {k: float(v) for k, v in config.losses.items()}
    unknown = [k for k in weights if k not in L.registered_losses()]
    if unknown:
        raise ConfigError(f"unknown loss term(s) {unknown} in config.losses; registered: "
                            f"{', '.join(L.registered_losses())}.")
    prog = config.progressive.start
    if prog is not None and enc_cfg["encoder_type"] not in ("Encoder4Editing",) + PROGRESSIVE_TYPES:
        raise ConfigError("progressive training needs the Encoder4Editing encoder (or a "
                            "ReStyle-e4e one); set config.progressive.start=None for other "
                            "encoders.")
    n_iters = _n_iters_per_batch(config, enc_cfg["encoder_type"])
    # latent_avg is passed to every step call from `frozen`, never stored in the inverter
    inverter = Inverter(enc_cfg, {}, _weightless(config, gen), None, start_from_latent_avg=False,
                        crop_rows=tuple(config.output.crop_rows) if config.output.crop_rows
                        else None,
                        face_pool_size=int(config.output.face_pool) if config.output.face_pool
                        else None,
                        dtype=policy.dtype, precision=policy.precision,
                        remat=policy.remat == "blocks")
    spec = ts.StepSpec(
        inverter=inverter,
        discriminator=LatentCodesDiscriminator(gen.style_dim, precision=policy.lax_precision),
        optimizer=optim.make_optimizer(config.optimizer.name, config.optimizer.lr),
        disc_optimizer=optim.adam(config.discriminator.lr),
        weights=tuple(sorted(weights.items())),
        options=tuple(sorted((k, tuple(sorted(dict(v).items())))
                             for k, v in config.loss_options.items())),
        progressive_steps=ts.progressive_steps(gen.n_latent, prog, config.progressive.every),
        use_disc=weights.get("adv", 0) > 0, r1=float(config.discriminator.r1),
        d_reg_every=int(config.discriminator.d_reg_every),
        use_w_pool=bool(config.discriminator.use_w_pool and config.discriminator.w_pool_size > 0),
        batch_size=int(config.batch_size), synthetic=config.data.kind == "synthetic",
        synthetic_noise=config.data.synthetic_noise, n_iters_per_batch=n_iters)
    frozen = {"generator": gen.variables,
              "latent_avg": None if latent_avg is None else jnp.asarray(latent_avg),
              "nets": _loss_nets(config, policy) if nets is None else dict(nets)}
    return Setup(config, policy, Mesh(devices, ("data",)), spec, frozen)


def create_train_state(setup: Setup) -> ts.TrainState:
    """The initial TrainState, replicated over the mesh: the encoder's variables (config.
    encoder.init), Dw's (when the adversarial loss is on), fresh optimizer states and W pools,
    the RNG of config.seed + 1, step 0."""
    config, spec = setup.config, setup.spec
    rng = jax.random.key(config.seed)
    k_enc, k_disc = jax.random.split(rng)
    if config.encoder.init == "checkpoint":
        enc_vars = load_encoder(config.encoder.checkpoint).variables
    else:
        enc_vars = _encoder_variables(config, spec.inverter.encoder_config, k_enc)
    params = enc_vars["params"]
    batch_stats = enc_vars.get("batch_stats", {})
    style_dim = spec.inverter.generator.style_dim
    disc_params = init_discriminator(k_disc, style_dim)["params"] if spec.use_disc else {}
    pool_size = int(config.discriminator.w_pool_size)
    state = ts.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=spec.optimizer.init(params),
        disc_params=disc_params, disc_opt_state=spec.disc_optimizer.init(disc_params),
        real_pool=ts.pool_init(pool_size, style_dim),
        fake_pool=ts.pool_init(pool_size, style_dim),
        rng=ts.initial_rng(config.seed + 1))
    return jax.device_put(state, setup.replicated)


# --------------------------------------------------------------------------------------------
# Moving batches and results across the mesh
# --------------------------------------------------------------------------------------------

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
