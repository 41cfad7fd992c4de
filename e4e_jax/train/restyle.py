"""ReStyle training's iterations inside the one training step (Alaluf et al. 2021).

Reproduces yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975,
training/coach_restyle_e4e.py and coach_restyle_psp.py (`perform_train_iteration_on_batch`,
`perform_val_iteration_on_batch`, `compute_discriminator_loss`):

    avg   = face_pool(G(latent_avg)) with the stored noise        (Coach.__init__'s avg_image)
    w_0 = latent_avg, y_0 = avg
    for t in 1..n_iters_per_batch:
        w_t   = w_{t-1} + E(concat([x, y_{t-1}], channels))     (BatchNorm in training mode)
        y_t   = face_pool(G(w_t)) with a fresh noise draw             [rows 32:224 for cars]
        loss_t = calc_loss(x, y, y_t, w_t);  loss_t.backward()
        (w_t, y_t are detached before the next iteration: `clone().detach()`)
    one optimizer step on the summed gradients

so the gradient is d/dparams sum_t loss_t with w_{t-1}, y_{t-1} held constant
(`jax.lax.stop_gradient`), which is what `iterations_loss` returns for `jax.value_and_grad`. The
terms (L2, LPIPS, ID / MoCo, and for ReStyle-e4e the adversarial term and the delta
regularisation on w_t at the current progressive stage) are e4e_jax.losses' registry, as for
e4e. The latent discriminator's step (ReStyle-e4e) is e4e's, on the first iteration's input
concat([x, avg]) (`compute_discriminator_loss`). The official logs report the last iteration's
loss dict; the metrics here are those, plus `loss_iteration_<t>` (t = 1..N) for every one.

Everything is a pure function of (spec, weights, batch), called from e4e_jax.train.step when
`spec.n_iters_per_batch > 0`; the iterations are one `lax.scan` (compiled once).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from e4e_jax import losses as L
from e4e_jax.inversion.restyle import (
    apply_average_image,
    apply_restyle,
    render_transform,
    to_input_size,
)


def average_image(spec, generator_variables, latent_avg) -> jax.Array:
    """(1, H, W, 3) float32 at the encoder's input size: the official avg_image."""
    if latent_avg is None:
        raise ValueError("ReStyle training starts every image from latent_avg: set "
                         "config.start_from_latent_avg=True.")
    return apply_average_image(spec.inverter, generator_variables, latent_avg)


def first_input(spec, generator_variables, latent_avg, x: jax.Array) -> jax.Array:
    """The first iteration's 6-channel input concat([x, avg]) (N, H, W, 6): what the latent
    discriminator's fake codes are encoded from (official compute_discriminator_loss)."""
    avg = average_image(spec, generator_variables, latent_avg).astype(x.dtype)
    return jnp.concatenate([x, jnp.broadcast_to(avg, x.shape)], axis=-1)


def _stage_kwargs(spec, stage) -> dict:
    return {"progressive_stage": stage} if spec.inverter.is_e4e else {}


def iterations_loss(spec, params, batch_stats, x, y, stage, loss_stage, latent_avg,
                    generator_variables, nets: Mapping[str, Any], k_noise, k_loss,
                    extras: Mapping[str, Any] | None = None, train: bool = True, noise=None):
    """The summed loss of the n_iters_per_batch iterations, for jax.value_and_grad(params).

    x, y: (B, H, W, 3) float32 input and target. stage: the encoder's progressive stage
    (traced int32; ignored by the ReStyle-pSp encoders); loss_stage: the losses' (None when not
    training progressively). train=False: BatchNorm running statistics (official validation).
    Each iteration draws its own generator noise (fold_in(k_noise, t)), unless `noise` gives
    the draws: a list with one (n_iters_per_batch, B, r, r, 1) float32 array per noise layer
    (the generator's noise_shapes order), iteration t using row t of each (parity with recorded
    official draws; ValueError when a leading axis is not n_iters_per_batch).
    Returns (sum_t loss_t, (terms, new_batch_stats)): terms are the last iteration's (the
    official loss_dict) plus loss_iteration_<t> for t = 1..N; new_batch_stats the statistics
    after the N training-mode passes (unchanged when train=False).
    """
    inv = spec.inverter
    n = int(spec.n_iters_per_batch)
    avg = average_image(spec, generator_variables, latent_avg).astype(x.dtype)
    w0 = jnp.broadcast_to(jnp.asarray(latent_avg)[None], (x.shape[0],) + latent_avg.shape)
    y0 = jnp.broadcast_to(avg, x.shape)
    stage_kw = _stage_kwargs(spec, stage)

    def one(carry, xs):
        t, noise_t = xs
        w_prev, y_prev, stats = carry
        x6 = jnp.concatenate([x, y_prev], axis=-1)
        variables = {"params": params, "batch_stats": stats}
        if train:
            codes, upd = inv.module.apply(variables, x6, train=True, mutable=["batch_stats"],
                                          **stage_kw)
            stats = upd["batch_stats"]
        else:
            codes = inv.module.apply(variables, x6, **stage_kw)
        w = (codes + w_prev).astype(w_prev.dtype)
        # stylegan3-editing's coaches render with the identity transform (render_transform)
        y_hat = inv.apply_decode(generator_variables, w,
                                 noise="random" if noise_t is None else noise_t,
                                 rng=jax.random.fold_in(k_noise, t),
                                 transform=render_transform(inv)).astype(x.dtype)
        inputs = L.LossInputs(x=x, y=y, y_hat=y_hat, w_plus=w, latent_avg=latent_avg,
                              progressive_stage=loss_stage, nets=nets,
                              rng=jax.random.fold_in(k_loss, t), extras=dict(extras or {}))
        total, terms = L.combine(spec.weights_dict, inputs, spec.options_dict)
        # official clone().detach(): the next iteration's gradient stops at this output
        nxt = (jax.lax.stop_gradient(w), jax.lax.stop_gradient(to_input_size(inv, y_hat)),
               jax.lax.stop_gradient(stats))
        return nxt, (total, terms)

    if noise is not None:
        noise = [jnp.asarray(a, jnp.float32) for a in noise]
        if any(a.shape[0] != n for a in noise):
            raise ValueError(f"noise: every array needs a leading axis of n_iters_per_batch={n}, "
                             f"got shapes {[tuple(a.shape) for a in noise]}.")
    (_, _, new_stats), (totals, terms) = jax.lax.scan(one, (w0, y0, batch_stats),
                                                      (jnp.arange(n), noise))
    last = {k: v[-1] for k, v in terms.items()}
    for t in range(n):
        last[f"loss_iteration_{t + 1}"] = totals[t]
    return jnp.sum(totals), (last, new_stats)


def eval_terms(spec, params, batch_stats, x, stage, loss_stage, latent_avg,
               generator_variables, nets, rng) -> dict:
    """Official perform_val_iteration_on_batch: the iterations in inference mode with fresh
    noise; the last iteration's loss terms (plus loss_iteration_<t>)."""
    k_noise, k_loss = jax.random.split(rng)
    _, (terms, _) = iterations_loss(spec, params, batch_stats, x, x, stage, loss_stage,
                                    latent_avg, generator_variables, nets, k_noise, k_loss,
                                    train=False)
    return terms


def reconstruct(spec, variables, x, stage, latent_avg, generator_variables):
    """The last iteration's (w_plus (B, n_latent, S), reconstruction after face_pool / crop)
    with the generator's stored noise: e4e_jax.inversion.restyle's inference loop at the
    current progressive stage, n_iters_per_batch iterations."""
    ws, recs = apply_restyle(spec.inverter, variables, generator_variables, latent_avg, x,
                             int(spec.n_iters_per_batch), resize=True,
                             progressive_stage=stage if spec.inverter.is_e4e else None)
    return ws[-1], recs[-1]
