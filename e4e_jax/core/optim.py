"""The encoder optimizer of the official training: Ranger (RAdam + Lookahead + gradient
centralization, `training/ranger.py` of the official code), or torch.optim.Adam's defaults.

Ranger is an `optax.GradientTransformation` over plain parameter pytrees: `params` stay the fast
weights that the model uses, and Lookahead's slow weights live in the optimizer state, as the
official optimizer keeps them in its per-parameter state. Every step therefore needs `params`:

    opt = e4e_jax.ranger(1e-4)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)

The numbers follow the official implementation rather than optax's RAdam, which differs in two
places that change the trajectory: the official eps is added to sqrt(v) before bias correction
(optax adds it to the bias-corrected sqrt(v_hat)), and the rectified branch starts when the
length of the approximated SMA is strictly above the threshold. The official step sizes are
computed in float64; the early ones, where float32 would lose most digits, come from a float64
table (see `_official_step_sizes`), so the fixture's 20 steps agree to float32 rounding.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class RAdamState(NamedTuple):
    """Adam-style moments (also the state of the Adam option)."""
    count: jax.Array  # number of updates done so far, int32 scalar
    mu: Any           # exp_avg
    nu: Any           # exp_avg_sq


class LookaheadState(NamedTuple):
    count: jax.Array
    slow: Any         # slow weights, same structure as params


def centralize_gradients(gc_conv_only: bool = False) -> optax.GradientTransformation:
    """Gradient centralization for Flax layouts.

    A Flax kernel keeps its output features on the last axis (conv HWIO, Dense (in, out)), so the
    official "mean over every dimension but the first" of a PyTorch (out, ...) weight becomes the
    mean over every axis but the last. Like the official optimizer it applies to every gradient
    with more than one axis, or, with `gc_conv_only`, to gradients with more than three axes.
    """
    min_ndim = 3 if gc_conv_only else 1

    def center(g):
        if g.ndim <= min_ndim:
            return g
        return g - jnp.mean(g, axis=tuple(range(g.ndim - 1)), keepdims=True)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(center, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _one_minus_pow(beta: float, t: jax.Array) -> jax.Array:
    """1 - beta**t in float32 without the cancellation of `1 - beta**t` (beta close to 1)."""
    return -jnp.expm1(t * jnp.float32(math.log(beta)))


def _official_step_sizes(b1: float, b2: float, n_sma_threshold: float, steps: int):
    """RAdam's per-step size and branch for t = 1..steps, in float64 as the official code.

    N_sma is a difference of two numbers near 2 / (1 - b2) while it is small, so float32 loses
    most of its digits there (a 1e-4 relative error in the step at t = 6 for b2 = 0.999); these
    early steps come from this table, later ones from the float32 formula, which is accurate once
    N_sma is large.
    """
    t = np.arange(steps + 1, dtype=np.float64)
    t[0] = 1.0  # row 0 is never used (the first update is t = 1)
    beta2_t = b2 ** t
    n_sma_max = 2.0 / (1.0 - b2) - 1.0
    n_sma = n_sma_max - 2.0 * t * beta2_t / (1.0 - beta2_t)
    rectified = n_sma > n_sma_threshold
    bias1 = 1.0 - b1 ** t
    with np.errstate(invalid="ignore"):
        rect = np.sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0)
                       / n_sma * n_sma_max / (n_sma_max - 2.0)) / bias1
    size = np.where(rectified, rect, 1.0 / bias1)
    return size.astype(np.float32), rectified


def _moments_init(params) -> RAdamState:
    zeros = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)
    return RAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=jax.tree.map(jnp.copy, zeros))


def _moments(state: RAdamState, updates, b1: float, b2: float):
    """Adam's first and second moment updates (shared by RAdam and torch Adam)."""
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
    return state.count + 1, mu, nu


def scale_by_official_radam(b1: float = 0.95, b2: float = 0.999, eps: float = 1e-5,
                            n_sma_threshold: float = 5.0,
                            table_steps: int = 4096) -> optax.GradientTransformation:
    """RAdam's direction as the official Ranger computes it (before the learning rate).

    With t the step, N_sma_max = 2 / (1 - b2) - 1 and N_sma = N_sma_max - 2 t b2^t / (1 - b2^t):
    while N_sma <= threshold the step is m / (1 - b1^t) (momentum SGD with bias correction);
    afterwards it is r_t sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), with the variance
    rectification r_t = sqrt((N_sma - 4)(N_sma - 2) N_sma_max / ((N_sma_max - 4) N_sma (N_sma_max - 2))).
    """
    n_sma_max = 2.0 / (1.0 - b2) - 1.0
    table_size, table_rect = _official_step_sizes(b1, b2, n_sma_threshold, table_steps)
    if not table_rect[-1]:
        raise ValueError(f"RAdam never leaves its SGD phase within {table_steps} steps for "
                         f"betas=({b1}, {b2}) and threshold {n_sma_threshold}.")
    table_size = jnp.asarray(table_size)
    table_rect = jnp.asarray(table_rect)

    def update_fn(updates, state, params=None):
        del params
        count, mu, nu = _moments(state, updates, b1, b2)
        # Past the table N_sma is large: the float32 formula is accurate and always rectified.
        t = count.astype(jnp.float32)
        one_minus_b2t = _one_minus_pow(b2, t)
        n_sma = n_sma_max - 2.0 * t * (1.0 - one_minus_b2t) / one_minus_b2t
        late_size = jnp.sqrt(one_minus_b2t * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0)
                             / n_sma * n_sma_max / (n_sma_max - 2.0)) / _one_minus_pow(b1, t)
        in_table = count <= table_steps
        index = jnp.minimum(count, table_steps)
        step_size = jnp.where(in_table, table_size[index], late_size)
        rectified = jnp.where(in_table, table_rect[index], True)

        def direction(m, v):
            return jnp.where(rectified, step_size * (m / (jnp.sqrt(v) + eps)), step_size * m)

        new_updates = jax.tree.map(direction, mu, nu)
        return new_updates, RAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(_moments_init, update_fn)


def scale_by_torch_adam(b1: float = 0.9, b2: float = 0.999,
                        eps: float = 1e-8) -> optax.GradientTransformation:
    """torch.optim.Adam's direction: m_hat / (sqrt(v_hat) + eps).

    Same formula as optax.scale_by_adam, with the bias corrections computed without the float32
    cancellation of 1 - b2^t (optax's relative error there is ~1e-4 in the first steps, torch
    computes it in float64).
    """

    def update_fn(updates, state, params=None):
        del params
        count, mu, nu = _moments(state, updates, b1, b2)
        t = count.astype(jnp.float32)
        bias1 = _one_minus_pow(b1, t)
        sqrt_bias2 = jnp.sqrt(_one_minus_pow(b2, t))
        new_updates = jax.tree.map(lambda m, v: (m / bias1) / (jnp.sqrt(v) / sqrt_bias2 + eps),
                                   mu, nu)
        return new_updates, RAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(_moments_init, update_fn)


def lookahead(sync_period: int = 6, alpha: float = 0.5) -> optax.GradientTransformation:
    """Lookahead on plain parameters, slow weights in the state.

    Must come last in a chain (its input is the final update of the fast weights). Every
    `sync_period` steps the slow weights move `alpha` of the way to the new fast weights and the
    fast weights are reset to them, i.e. the returned update is `slow_new - params`.
    """
    if sync_period < 1:
        raise ValueError(f"lookahead sync_period (k) must be >= 1, got {sync_period}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"lookahead alpha must lie in [0, 1], got {alpha}")

    def init_fn(params):
        return LookaheadState(count=jnp.zeros([], jnp.int32),
                              slow=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("ranger/lookahead needs the current params: "
                             "call opt.update(grads, state, params).")
        count = state.count + 1
        sync = count % sync_period == 0

        new_slow = jax.tree.map(
            lambda u, slow, p: jnp.where(sync, slow + alpha * ((p + u) - slow), slow),
            updates, state.slow, params)
        new_updates = jax.tree.map(lambda u, slow, p: jnp.where(sync, slow - p, u),
                                   updates, new_slow, params)
        return new_updates, LookaheadState(count=count, slow=new_slow)

    return optax.GradientTransformation(init_fn, update_fn)


def ranger(learning_rate: optax.ScalarOrSchedule = 1e-3, alpha: float = 0.5, k: int = 6,
           n_sma_threshold: float = 5.0, betas: tuple[float, float] = (0.95, 0.999),
           eps: float = 1e-5, weight_decay: float = 0.0, use_gc: bool = True,
           gc_conv_only: bool = False) -> optax.GradientTransformation:
    """The official Ranger optimizer (defaults of `training/ranger.py`) as an optax transformation.

    Order per step as in the official code: gradient centralization, RAdam moments and step,
    weight decay (`p -= weight_decay * lr * p`, on the parameters before the step), the
    learning-rate step, then Lookahead every `k` steps. `update` needs `params`.
    """
    if not callable(learning_rate) and not learning_rate > 0:
        raise ValueError(f"Invalid learning rate: {learning_rate}")
    if not eps > 0:
        raise ValueError(f"Invalid eps: {eps}")
    b1, b2 = betas
    parts = []
    if use_gc:
        parts.append(centralize_gradients(gc_conv_only))
    parts.append(scale_by_official_radam(b1, b2, eps, n_sma_threshold))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    parts.append(lookahead(k, alpha))
    return optax.chain(*parts)


def adam(learning_rate: optax.ScalarOrSchedule = 1e-3, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """torch.optim.Adam with its defaults (betas (0.9, 0.999), eps 1e-8 added to sqrt(v_hat))."""
    return optax.chain(scale_by_torch_adam(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))


# plain SGD is not an official option; it is there for ablations and for tests whose numbers must
# stay comparable across device counts (Adam's normalised step amplifies rounding differences in
# near-zero gradients into +-lr updates)
OPTIMIZERS = {"ranger": ranger, "adam": adam, "sgd": optax.sgd}


def make_optimizer(name: str, learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """The optimizer of the official `--optim_name` option ('ranger', the default, or 'adam'),
    or 'sgd'."""
    try:
        factory = OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return factory(learning_rate)
