"""Adversarial losses on W codes, as the official training coach computes them (pure functions).

    d_logistic_loss(real_pred, fake_pred)        Coach.discriminator_loss:
                                                 softplus(-real).mean() + softplus(fake).mean()
    d_logistic_loss_terms(real_pred, fake_pred)  its two parts (d_real_loss, d_fake_loss)
    g_nonsaturating_loss(fake_pred)              softplus(-fake).mean(): the encoder's term for one
                                                 discriminated W+ row
    r1_penalty(d_apply, params, real_w)          Coach.discriminator_r1_loss: (penalty, grad) with
                                                 grad = d sum(D(real_w)) / d real_w and
                                                 penalty = mean over the batch of sum(grad ** 2);
                                                 differentiable w.r.t. params (the training step
                                                 scales it by r1 / 2 * d_reg_every)
    latent_adversarial_loss(d_apply, params, w_plus, progressive_stage=None)
                                                 Coach.calc_loss's encoder term: the mean over the
                                                 discriminated rows (rows 0..stage while training
                                                 progressively, every row otherwise) of
                                                 g_nonsaturating_loss(D(w_plus[:, i]))

`d_apply(params, w)` is any function mapping codes (N, 512) to scores (N, 1), e.g.
`lambda p, w: LatentCodesDiscriminator().apply({'params': p}, w)`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def d_logistic_loss_terms(real_pred: jax.Array, fake_pred: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
    return jnp.mean(jax.nn.softplus(-real_pred)), jnp.mean(jax.nn.softplus(fake_pred))


def d_logistic_loss(real_pred: jax.Array, fake_pred: jax.Array) -> jax.Array:
    real_loss, fake_loss = d_logistic_loss_terms(real_pred, fake_pred)
    return real_loss + fake_loss


def g_nonsaturating_loss(fake_pred: jax.Array) -> jax.Array:
    return jnp.mean(jax.nn.softplus(-fake_pred))


def r1_penalty(d_apply: Callable[[Any, jax.Array], jax.Array], params: Any,
               real_w: jax.Array) -> tuple[jax.Array, jax.Array]:
    grad = jax.grad(lambda w: jnp.sum(d_apply(params, w)))(real_w)
    penalty = jnp.mean(jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1))
    return penalty, grad


def latent_adversarial_loss(d_apply: Callable[[Any, jax.Array], jax.Array], params: Any,
                            w_plus: jax.Array, progressive_stage: Any = None) -> jax.Array:
    """progressive_stage: None (all rows) or an int / traced int32 (rows 0..stage)."""
    n, rows, dim = w_plus.shape
    pred = d_apply(params, w_plus.reshape(n * rows, dim)).reshape(n, rows)
    per_row = jnp.mean(jax.nn.softplus(-pred), axis=0)
    if progressive_stage is None:
        return jnp.mean(per_row)
    active = jnp.arange(rows) <= jnp.asarray(progressive_stage, jnp.int32)
    return jnp.sum(jnp.where(active, per_row, 0.0)) / jnp.sum(active)
