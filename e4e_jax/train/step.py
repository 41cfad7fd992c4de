"""The e4e training step: one pure function of (state, frozen, batch), jitted once.

One iteration, in the official order (training/coach.py):

1. Latent discriminator step (when the "adv" loss is on): real w = mapping(fresh z), fake w = the
   encoder's W+ rows of the current progressive stage (encoder BatchNorm in training mode, as the
   official forward under no_grad, which also moves the running statistics), through the W pools
   (50 % swap, functional state), non-saturating loss, Adam; every `d_reg_every` steps a second
   Adam step on the R1 penalty scaled by r1 / 2 * d_reg_every.
2. Encoder step: encode (BatchNorm in training mode), + latent_avg, synthesize with a fresh noise
   draw per layer and sample, face_pool to 256 (crop rows for cars), then the weighted sum of the
   named loss terms of e4e_jax.losses (L2, LPIPS, identity / similarity, d-reg, adversarial, or
   any registered term), Ranger (or Adam) on the encoder only.

ReStyle encoders (spec.n_iters_per_batch > 0): step 2 runs n_iters_per_batch passes, each on
the image beside the previous reconstruction, and sums their gradients (e4e_jax.train.restyle);
Dw's fake codes come from the first pass's input.

The progressive stage is computed from the traced step counter, so stage changes never
recompile. Frozen networks (generator, LPIPS, ArcFace / MoCo) arrive in `frozen` as arguments
and are never differentiated; only the encoder and the discriminator have optimizer states.

Three things travel into the step, each holding its facts once:

    state   TrainState (pytree, donated): encoder and Dw parameters, optimizer states, W pools,
            RNG and the step counter (= the data position);
    frozen  {"generator": variables, "latent_avg": (n_latent, S) float32 or None,
             "nets": {name: losses.LossNet}} (pytree): every frozen weight;
    spec    StepSpec (static, bound with functools.partial before jax.jit): the modules and
            optimizers (no weights) and the loss options.

`train_step(state, frozen, batch, spec=spec)`, `eval_step` and `reconstruct` are pure;
e4e_jax.train.setup jits each once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from e4e_jax import losses as L
from e4e_jax.data.synthetic import synthetic_images
from e4e_jax.models.encoders import INFERENCE_STAGE
from e4e_jax.train import restyle

# --------------------------------------------------------------------------------------------
# W pool (models/latent_codes_pool.py), as functional state
# --------------------------------------------------------------------------------------------

@struct.dataclass
class WPool:
    ws: jax.Array     # (pool_size, dim)
    num: jax.Array    # int32 (), codes stored so far


def pool_init(size: int, dim: int = 512) -> WPool:
    return WPool(jnp.zeros((max(size, 1), dim), jnp.float32), jnp.zeros((), jnp.int32))


def pool_query(pool: WPool, ws: jax.Array, rng: jax.Array) -> tuple[WPool, jax.Array]:
    """LatentCodesPool.query: sample by sample, fill the pool first; once full, with probability
    1/2 return a stored code (chosen uniformly) and store the new one in its place."""
    size = pool.ws.shape[0]
    keys = jax.random.split(rng, ws.shape[0])

    def one(carry, inp):
        buf, num = carry
        w, key = inp
        k_p, k_i = jax.random.split(key)
        filling = num < size
        swap = jax.random.uniform(k_p) > 0.5
        idx = jnp.where(filling, num, jax.random.randint(k_i, (), 0, size))
        out = jnp.where(~filling & swap, buf[idx], w)
        buf = jnp.where(filling | swap, buf.at[idx].set(w), buf)
        return (buf, num + filling.astype(jnp.int32)), out

    (buf, num), out = jax.lax.scan(one, (pool.ws, pool.num), (ws, keys))
    return WPool(buf, num), out


# --------------------------------------------------------------------------------------------
# State and static step configuration
# --------------------------------------------------------------------------------------------

@struct.dataclass
class TrainState:
    step: jax.Array                # int32 (); also the data position
    params: Any                    # encoder params
    batch_stats: Any               # encoder BatchNorm running statistics
    opt_state: Any
    disc_params: Any               # {} when the discriminator is off
    disc_opt_state: Any
    real_pool: WPool
    fake_pool: WPool
    rng: jax.Array                 # raw uint32 key data (checkpoint friendly)


@dataclasses.dataclass(frozen=True, eq=False)
class StepSpec:
    """Everything static about the step: the modules, the optimizers and the options.

    inverter: an e4e_jax.nets.encoder.Inverter built without weights (its encoder module, its
    generator module, face_pool / crop and the numeric policy); latent_avg is not in it but in
    `frozen`. Hashed by identity: jax.jit sees one spec per run."""
    inverter: Any                      # e4e_jax.nets.encoder.Inverter
    discriminator: Any                 # LatentCodesDiscriminator module
    optimizer: Any                     # optax.GradientTransformation for the encoder
    disc_optimizer: Any                # optax.GradientTransformation for the discriminator
    weights: tuple                     # ((name, weight), ...)
    options: tuple                     # ((name, ((key, value), ...)), ...)
    progressive_steps: tuple | None    # (0, start, start + every, ...) or None
    use_disc: bool
    r1: float
    d_reg_every: int
    use_w_pool: bool
    batch_size: int
    synthetic: bool
    synthetic_noise: str
    # ReStyle (e4e_jax.train.restyle): encoder passes per batch; 0 = one plain e4e / pSp pass
    n_iters_per_batch: int = 0

    @property
    def is_restyle(self) -> bool:
        return self.n_iters_per_batch > 0

    @property
    def n_latent(self) -> int:
        return self.inverter.n_latent

    @property
    def input_size(self) -> tuple:
        return self.inverter.input_size

    @property
    def is_e4e(self) -> bool:
        return self.inverter.is_e4e

    @property
    def weights_dict(self) -> dict:
        return dict(self.weights)

    @property
    def options_dict(self) -> dict:
        return {k: dict(v) for k, v in self.options}


def progressive_steps(n_latent: int, start: int | None, every: int) -> tuple | None:
    """The official setup_progressive_steps: stage 0 at step 0, stage k at start + (k-1) every."""
    if start is None:
        return None
    return (0,) + tuple(int(start) + i * int(every) for i in range(n_latent - 1))


def stage_at(step, steps: tuple | None):
    """The progressive stage of a (traced) step; INFERENCE_STAGE when not progressive."""
    if steps is None:
        return jnp.asarray(INFERENCE_STAGE, jnp.int32)
    return jnp.sum(jnp.asarray(step) >= jnp.asarray(steps, jnp.int32)).astype(jnp.int32) - 1


def num_discriminated_rows(stage, n_latent: int, progressive: bool):
    if not progressive:
        return jnp.asarray(n_latent, jnp.int32)
    return jnp.minimum(stage + 1, n_latent)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------

def _encode(spec: StepSpec, params, batch_stats, x, stage, latent_avg):
    variables = {"params": params, "batch_stats": batch_stats}
    return spec.inverter.apply_encode(variables, x, stage if spec.is_e4e else None, train=True,
                                      latent_avg=latent_avg)


def _step_inputs(spec: StepSpec, gen_vars, batch: Mapping, k_data):
    """(x, extras): the batch's input images and, for the synthetic domain, its true w (the
    synthetic set of the step's data key: e4e_jax.data.synthetic)."""
    if not spec.synthetic:
        return batch["image"], {}
    inv = spec.inverter
    x, w_true = synthetic_images(inv.generator, gen_vars, k_data, spec.batch_size,
                                 spec.synthetic_noise, spec.input_size, inv.precision)
    return x, {"w_true": w_true}


def _r1_step(spec: StepSpec, step, disc_params, disc_opt_state, real_w):
    """The lazy R1 update of Dw, every `d_reg_every` steps (official `train_discriminator`'s
    `d_regularize` branch); returns (params, opt_state, r1 loss or 0)."""
    d_module = spec.discriminator

    def r1_update(args):
        p, o = args

        def r1_fn(q):
            r1 = L.discriminator_r1_loss(L.LossNet(d_module, {"params": q}), real_w)
            return spec.r1 / 2 * r1 * spec.d_reg_every

        r1_value, g = jax.value_and_grad(r1_fn)(p)
        u, o = spec.disc_optimizer.update(g, o, p)
        return optax.apply_updates(p, u), o, r1_value

    def no_r1(args):
        p, o = args
        return p, o, jnp.zeros((), jnp.float32)

    return jax.lax.cond(step % spec.d_reg_every == 0, r1_update, no_r1,
                        (disc_params, disc_opt_state))


def _discriminator_step(spec: StepSpec, state: TrainState, x, stage, latent_avg, gen_vars,
                        keys):
    """Dw's update on this batch, before the encoder's as officially (`train_discriminator`):
    real w from the mapping network, fake w from the encoder (one random discriminated row per
    sample through the W pools), the non-saturating loss, then lazy R1.

    Returns (disc_params, disc_opt_state, real_pool, fake_pool, batch_stats, metrics)."""
    k_z, k_rows, k_pr, k_pf = keys
    gen = spec.inverter.generator
    real_pool, fake_pool = state.real_pool, state.fake_pool
    real_w = gen.map(gen_vars, jax.random.normal(k_z, (spec.batch_size, gen.z_dim)))
    if real_w.ndim == 3:  # StyleGAN3's mapping returns W+ (equal rows): its w is one row
        real_w = real_w[:, 0]
    fake_all, batch_stats = _encode(spec, state.params, state.batch_stats, x, stage,
                                    latent_avg)
    fake_all = jax.lax.stop_gradient(fake_all)
    real_w = jax.lax.stop_gradient(real_w)
    if spec.use_w_pool:
        # the official pool picks one random discriminated row per sample
        n_rows = num_discriminated_rows(stage, spec.n_latent,
                                        spec.progressive_steps is not None)
        rows = jax.random.randint(k_rows, (spec.batch_size,), 0, n_rows)
        fake_w = jnp.take_along_axis(fake_all, rows[:, None, None], axis=1)[:, 0]
        real_pool, real_w = pool_query(real_pool, real_w, k_pr)
        fake_pool, fake_w = pool_query(fake_pool, fake_w, k_pf)
    else:
        fake_w = fake_all[:, 0]

    def d_loss_fn(p):
        return L.discriminator_loss(L.LossNet(spec.discriminator, {"params": p}), real_w, fake_w)

    (d_loss, d_terms), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.disc_params)
    updates, disc_opt_state = spec.disc_optimizer.update(d_grads, state.disc_opt_state,
                                                         state.disc_params)
    disc_params = optax.apply_updates(state.disc_params, updates)
    metrics = dict(d_terms)
    metrics["discriminator_loss"] = d_loss
    metrics["grad_norm_discriminator"] = optax.tree.norm(d_grads)
    disc_params, disc_opt_state, metrics["discriminator_r1_loss"] = _r1_step(
        spec, state.step, disc_params, disc_opt_state, real_w)
    return disc_params, disc_opt_state, real_pool, fake_pool, batch_stats, metrics


def train_step(state: TrainState, frozen: Mapping, batch: Mapping, *,
               spec: StepSpec) -> tuple[TrainState, dict]:
    """One training step (official `Coach.train`'s loop body): Dw first when the adversarial
    loss is on, then the encoder on the weighted loss terms. Pure; bind `spec` and jit it.

    batch: {"image": (B, H, W, 3) float32 in [-1, 1]} ({} for the synthetic domain, whose
    batch is generated here from the state's RNG). Returns (new state, metrics: scalar
    arrays, including `all_finite`)."""
    gen_vars = frozen["generator"]
    latent_avg = frozen["latent_avg"]
    rng = jax.random.wrap_key_data(state.rng)
    rng, k_data, k_z, k_rows, k_pr, k_pf, k_noise, k_loss = jax.random.split(rng, 8)
    stage = stage_at(state.step, spec.progressive_steps)
    loss_stage = stage if spec.progressive_steps is not None else None
    metrics: dict[str, jax.Array] = {}

    x, extras = _step_inputs(spec, gen_vars, batch, k_data)
    y = x  # the official source transform is None: input and target are the same image

    batch_stats = state.batch_stats
    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    real_pool, fake_pool = state.real_pool, state.fake_pool
    nets = dict(frozen.get("nets", {}))
    if spec.use_disc:
        # ReStyle's fake codes come from the first iteration's input, concat([x, avg image]),
        # and are the encoder's residuals without latent_avg: restyle-encoder's
        # sample_real_and_fake_latents takes `self.net.encoder(x)` as is, where e4e's coach
        # adds latent_avg (the generator-side adversarial loss sees full codes in both)
        x_d = restyle.first_input(spec, gen_vars, latent_avg, x) if spec.is_restyle else x
        (disc_params, disc_opt_state, real_pool, fake_pool, batch_stats,
         d_metrics) = _discriminator_step(spec, state, x_d, stage,
                                          jnp.zeros_like(latent_avg) if spec.is_restyle
                                          else latent_avg, gen_vars,
                                          (k_z, k_rows, k_pr, k_pf))
        metrics.update(d_metrics)
        nets["discriminator"] = L.LossNet(spec.discriminator, {"params": disc_params})

    def loss_fn(params):
        if spec.is_restyle:   # n_iters_per_batch passes, each one's gradient summed
            return restyle.iterations_loss(spec, params, batch_stats, x, y, stage, loss_stage,
                                           latent_avg, gen_vars, nets, k_noise, k_loss, extras)
        w_plus, new_stats = _encode(spec, params, batch_stats, x, stage, latent_avg)
        y_hat = spec.inverter.apply_decode(gen_vars, w_plus, noise="random", rng=k_noise)
        inputs = L.LossInputs(x=x, y=y, y_hat=y_hat, w_plus=w_plus, latent_avg=latent_avg,
                              progressive_stage=loss_stage, nets=nets, rng=k_loss, extras=extras)
        total, terms = L.combine(spec.weights_dict, inputs, spec.options_dict)
        return total, (terms, new_stats)

    (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = spec.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(terms)
    metrics["grad_norm_encoder"] = optax.tree.norm(grads)
    metrics["progressive_stage"] = stage
    metrics["all_finite"] = jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(metrics)]))
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=new_stats,
                           opt_state=opt_state, disc_params=disc_params,
                           disc_opt_state=disc_opt_state, real_pool=real_pool,
                           fake_pool=fake_pool, rng=jax.random.key_data(rng))
    return new_state, metrics


def eval_step(state: TrainState, frozen: Mapping, x: jax.Array, rng: jax.Array, *,
              spec: StepSpec) -> dict:
    """The loss terms of a validation batch (official Coach.validate): encoder in inference
    mode at the current progressive stage, a fresh random noise draw per generator layer, the
    training weights. x: (B, H, W, 3) float32; returns {term: scalar batch mean}."""
    gen_vars = frozen["generator"]
    latent_avg = frozen["latent_avg"]
    progressive = spec.progressive_steps is not None
    stage = stage_at(state.step, spec.progressive_steps)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if spec.is_restyle:
        nets = dict(frozen.get("nets", {}))
        if spec.use_disc:
            nets["discriminator"] = L.LossNet(spec.discriminator, {"params": state.disc_params})
        return restyle.eval_terms(spec, state.params, state.batch_stats, x, stage,
                                  stage if progressive else None, latent_avg, gen_vars, nets,
                                  rng)
    w_plus = spec.inverter.apply_encode(variables, x, stage if spec.is_e4e else None,
                                        latent_avg=latent_avg)
    k_noise, k_loss = jax.random.split(rng)
    y_hat = spec.inverter.apply_decode(gen_vars, w_plus, noise="random", rng=k_noise)
    nets = dict(frozen.get("nets", {}))
    if spec.use_disc:
        nets["discriminator"] = L.LossNet(spec.discriminator, {"params": state.disc_params})
    inputs = L.LossInputs(x=x, y=x, y_hat=y_hat, w_plus=w_plus, latent_avg=latent_avg,
                          progressive_stage=stage if progressive else None, nets=nets,
                          rng=k_loss)
    _, terms = L.combine(spec.weights_dict, inputs, spec.options_dict)
    return terms


def reconstruct(state: TrainState, frozen: Mapping, x: jax.Array, *,
                spec: StepSpec) -> tuple[jax.Array, jax.Array]:
    """Inference-mode inversion with the generator's stored noise, as the exported Inverter
    does: (w_plus (B, n_latent, S), reconstructions (B, H', W', 3) after face_pool / crop)."""
    stage = stage_at(state.step, spec.progressive_steps)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if spec.is_restyle:   # the last of n_iters_per_batch iterations
        return restyle.reconstruct(spec, variables, x, stage, frozen["latent_avg"],
                                   frozen["generator"])
    w_plus = spec.inverter.apply_encode(variables, x, stage if spec.is_e4e else None,
                                        latent_avg=frozen["latent_avg"])
    return w_plus, spec.inverter.apply_decode(frozen["generator"], w_plus, noise="const")


def initial_rng(seed: int) -> np.ndarray:
    return np.asarray(jax.random.key_data(jax.random.key(seed)))
