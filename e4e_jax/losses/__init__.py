"""Every loss term of e4e training, as pure jit-able functions, and the registry that combines them.

Frozen networks are passed in, never closed over: a `LossNet` is a pytree holding a Flax module
(static, hashable configuration) and its variables (the leaves), so a jitted training step takes
the LPIPS / ArcFace / MoCo / discriminator weights as ordinary arguments. The loaded objects of
`e4e_jax.load_lpips / load_arcface / load_moco` expose it as `.net` (and `.module`, `.variables`).

Loss terms (paper equation, official code):

    l2_loss(y_hat, y)                       F.mse_loss                         (L2 of eq. 5)
    lpips_distance(net, x, y) -> (N,)       criteria/lpips LPIPS per pair
    lpips_loss(net, y_hat, y)               its batch mean (the official value) (LPIPS of eq. 5)
    similarity_loss(net, y_hat, y, x)       IDLoss / MocoLoss.forward: (loss, sim_improvement,
                                            sims (N, 3) = [<f(y_hat), f(y)>, <f(y_hat), f(x)>,
                                            <f(y), f(x)>]) with f(y) a constant (sim of eq. 5)
    delta_regularization(w_plus, stage, p)  L_d-reg of eq. 1 (Coach.calc_loss delta loss)
    encoder_adversarial_loss(disc, w_plus, stage)
                                            L_adv of eq. 3: softplus(-D(w_i)) over the
                                            discriminated rows (e4e_jax.losses.adversarial)
    discriminator_loss(disc, real_w, fake_w) eq. 2 without R1 (Coach.discriminator_loss)
    discriminator_r1_loss(disc, real_w)     the R1 penalty of eq. 2 (Coach.discriminator_r1_loss)
    w_norm_loss(w_plus, latent_avg)         pSp's WNormLoss
    d_logistic_loss, g_nonsaturating_loss, r1_penalty, latent_adversarial_loss
                                            re-exported from e4e_jax.losses.adversarial

`progressive_stage` follows the encoders (models/encoders.py): None or INFERENCE_STAGE (18) means
"not training progressively / all deltas active"; an int or a traced int32 k means deltas 1..k are
active. The official coach adds L_d-reg only while training progressively with a stage other
than Inference, and discriminates rows 0..k while progressive, every row otherwise.

Registry (the encoder loss of the training step is a weighted sum of named terms):

    @register_loss("my_reg")
    def my_reg(inputs: LossInputs):           # -> scalar, or (scalar, {metric: scalar})
        return jnp.mean(jnp.abs(inputs.w_plus[:, 1:] - inputs.w_plus[:, :1]))

    total, metrics = combine({"l2": 1.0, "lpips": 0.8, "id": 0.1, "my_reg": 1e-3}, inputs)

Built-in names and the official options they replace: "l2" (l2_lambda), "lpips" (lpips_lambda,
net inputs.nets["lpips"]), "id" (id_lambda, inputs.nets["id"]: ArcFace for faces, MoCo otherwise),
"d_reg" (delta_norm_lambda; option p = delta_norm), "adv" (w_discriminator_lambda,
inputs.nets["discriminator"]), "w_norm" (pSp's w_norm_lambda). Metrics: "loss_<name>" per term,
the terms' own metrics ("id_improve", "delta{i}_loss", "total_delta_loss") and "loss".
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import struct

from e4e_jax.losses.adversarial import (
    d_logistic_loss,
    d_logistic_loss_terms,
    g_nonsaturating_loss,
    latent_adversarial_loss,
    r1_penalty,
)
from e4e_jax.models.encoders import INFERENCE_STAGE
from e4e_jax.nets.base import BoundNet
# IDLoss / MocoLoss.forward: the loaded identity networks' own verb (nets/ sits below losses/)
from e4e_jax.nets.loss_nets import similarity_loss

__all__ = [
    "INFERENCE_STAGE", "LossNet", "LossInputs", "register_loss", "unregister_loss",
    "registered_losses", "get_loss", "combine", "l2_loss", "lpips_distance", "lpips_loss",
    "similarity_features", "similarity_loss", "delta_regularization", "discriminated_rows",
    "encoder_adversarial_loss", "discriminator_loss", "discriminator_r1_loss", "w_norm_loss",
    "d_logistic_loss", "d_logistic_loss_terms", "g_nonsaturating_loss", "r1_penalty",
    "latent_adversarial_loss",
]


# A network and its variables as one pytree (the module static, the variables leaves):
# `LossNet(module, variables)`, called as `net(x, ...)` = module.apply(variables, x, ...) inside
# the step. It is the package's one shape of a network bound to its weights (e4e_jax.nets.base).
LossNet = BoundNet


_NET_HINTS = {
    "lpips": "e4e_jax.load_lpips(dir).net",
    "id": "e4e_jax.load_arcface(dir).net (faces) or e4e_jax.load_moco(dir).net",
    "discriminator": "LossNet(LatentCodesDiscriminator(), {'params': discriminator_params})",
}


@struct.dataclass
class LossInputs:
    """Everything a loss term may read; a pytree, so it can be built inside or passed into jit.

    x: encoder inputs, y: targets, y_hat: reconstructions, all (N, H, W, 3) in [-1, 1].
    w_plus: (N, n_latent, 512), the latents the generator received (encoder codes + latent_avg).
    latent_avg: (n_latent, 512) or (512,), or None.
    progressive_stage: None / INFERENCE_STAGE (not progressive) or an int / int32 scalar.
    nets: name -> LossNet ("lpips", "id", "discriminator", or any name a custom term reads).
    rng: a jax.random key for stochastic terms, or None.
    extras: name -> array, for custom terms that need more than the above.
    """
    x: jax.Array
    y: jax.Array
    y_hat: jax.Array
    w_plus: jax.Array | None = None
    latent_avg: jax.Array | None = None
    progressive_stage: Any = None
    nets: Mapping[str, LossNet] = struct.field(default_factory=dict)
    rng: jax.Array | None = None
    extras: Mapping[str, Any] = struct.field(default_factory=dict)

    def net(self, name: str, term: str) -> LossNet:
        if name not in self.nets:
            hint = _NET_HINTS.get(name, "a LossNet(module, variables)")
            raise KeyError(f"loss term {term!r} needs inputs.nets[{name!r}] (have: "
                           f"{sorted(self.nets) or 'none'}); pass {hint}.")
        return self.nets[name]

    def latents(self, term: str) -> jax.Array:
        if self.w_plus is None:
            raise ValueError(f"loss term {term!r} needs inputs.w_plus (N, n_latent, 512).")
        if self.w_plus.ndim != 3:
            raise ValueError(f"loss term {term!r}: w_plus must be (N, n_latent, dim), got shape "
                             f"{self.w_plus.shape}.")
        return self.w_plus


# ------------------------------------------------------------------------------------------ #
# Image terms
# ------------------------------------------------------------------------------------------ #

def _check_pair(a: jax.Array, b: jax.Array, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: images must have equal shapes, got {a.shape} and {b.shape}.")


def l2_loss(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    """F.mse_loss(y_hat, y): the mean squared error over every value."""
    _check_pair(y_hat, y, "l2_loss")
    return jnp.mean(jnp.square(y_hat - y))


def lpips_distance(net: LossNet, x: jax.Array, y: jax.Array) -> jax.Array:
    """LPIPS of each pair (N,), NHWC images in [-1, 1]."""
    _check_pair(x, y, "lpips")
    return net(x, y)


def lpips_loss(net: LossNet, y_hat: jax.Array, y: jax.Array) -> jax.Array:
    """The official LPIPS criterion: the batch sum of the per-pair distances over the batch size."""
    return jnp.mean(lpips_distance(net, y_hat, y))


def similarity_features(net: LossNet, images: jax.Array) -> jax.Array:
    """l2-normalised identity (ArcFace) / MoCo features after the official crop, pool or resize."""
    return net(images)


# ------------------------------------------------------------------------------------------ #
# Latent terms
# ------------------------------------------------------------------------------------------ #

def _pnorm(v: jax.Array, p: float) -> jax.Array:
    """torch.norm(v, p, dim=-1) with a finite gradient at v = 0 (inactive deltas are exactly 0)."""
    if p == 1:
        return jnp.sum(jnp.abs(v), axis=-1)
    s = jnp.sum(jnp.abs(v) ** p, axis=-1)
    positive = s > 0
    return jnp.where(positive, jnp.where(positive, s, 1.0) ** (1.0 / p), 0.0)


def delta_regularization(w_plus: jax.Array, progressive_stage: Any, p: float = 2
                         ) -> tuple[jax.Array, jax.Array]:
    """L_d-reg (eq. 1): sum over the active deltas i of mean_n ||w_plus[n, i] - w_plus[n, 0]||_p.

    Returns (total, per-delta losses (n_latent - 1,), zero where inactive). Deltas 1..stage are
    active; nothing is while not training progressively (stage None or INFERENCE_STAGE).
    """
    if w_plus.ndim != 3:
        raise ValueError(f"delta_regularization: w_plus must be (N, n_latent, dim), got "
                         f"{w_plus.shape}.")
    rows = w_plus.shape[1]
    per_delta = jnp.mean(_pnorm(w_plus[:, 1:] - w_plus[:, :1], p), axis=0)
    if progressive_stage is None:
        per_delta = jnp.zeros_like(per_delta)
    else:
        stage = jnp.asarray(progressive_stage, jnp.int32)
        active = (jnp.arange(1, rows) <= stage) & (stage != INFERENCE_STAGE)
        per_delta = jnp.where(active, per_delta, 0.0)
    return jnp.sum(per_delta), per_delta


def discriminated_rows(n_latent: int, progressive_stage: Any) -> jax.Array:
    """Which W+ rows the latent discriminator sees (Coach.get_dims_to_discriminate): 0..stage."""
    if progressive_stage is None:
        return jnp.ones((n_latent,), bool)
    return jnp.arange(n_latent) <= jnp.asarray(progressive_stage, jnp.int32)


def _d_apply(disc: LossNet) -> Callable[[Any, jax.Array], jax.Array]:
    return lambda variables, w: disc.module.apply(variables, w)


def encoder_adversarial_loss(disc: LossNet, w_plus: jax.Array, progressive_stage: Any = None
                             ) -> jax.Array:
    """L_adv (eq. 3): mean over discriminated rows i of mean_n softplus(-D(w_plus[n, i]))."""
    return latent_adversarial_loss(_d_apply(disc), disc.variables, w_plus, progressive_stage)


def discriminator_loss(disc: LossNet, real_w: jax.Array, fake_w: jax.Array
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Coach.discriminator_loss on D(real_w), D(fake_w): (loss, {'d_real_loss', 'd_fake_loss'})."""
    real_loss, fake_loss = d_logistic_loss_terms(disc(real_w), disc(fake_w))
    return real_loss + fake_loss, {"d_real_loss": real_loss, "d_fake_loss": fake_loss}


def discriminator_r1_loss(disc: LossNet, real_w: jax.Array) -> jax.Array:
    """Coach.discriminator_r1_loss: mean_n sum |d sum D(real_w) / d real_w|^2 (unscaled)."""
    penalty, _ = r1_penalty(_d_apply(disc), disc.variables, real_w)
    return penalty


def w_norm_loss(w_plus: jax.Array, latent_avg: jax.Array | None = None) -> jax.Array:
    """pSp's WNormLoss: mean_n ||w_plus[n] - latent_avg||_F (without latent_avg: of w_plus)."""
    latent = w_plus if latent_avg is None else w_plus - latent_avg
    flat = latent.reshape(latent.shape[0], -1)
    return jnp.mean(_pnorm(flat, 2))


# ------------------------------------------------------------------------------------------ #
# Registry
# ------------------------------------------------------------------------------------------ #

LossTerm = Callable[..., Any]
_REGISTRY: dict[str, LossTerm] = {}


def register_loss(name: str, *, overwrite: bool = False) -> Callable[[LossTerm], LossTerm]:
    """Decorator naming a loss term `fn(inputs: LossInputs, **options) -> value | (value, metrics)`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"loss names must be identifiers, got {name!r}.")

    def deco(fn: LossTerm) -> LossTerm:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not fn:
            raise ValueError(f"a loss term named {name!r} is already registered "
                             f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}); "
                             f"pass overwrite=True to replace it.")
        _REGISTRY[name] = fn
        return fn
    return deco


def unregister_loss(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_losses() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_loss(name: str) -> LossTerm:
    if name not in _REGISTRY:
        raise KeyError(f"unknown loss term {name!r}; registered: {', '.join(registered_losses())}. "
                       f"Define new ones with @e4e_jax.losses.register_loss(name).")
    return _REGISTRY[name]


def _is_static_zero(weight: Any) -> bool:
    return isinstance(weight, (int, float)) and weight == 0


def combine(weights: Mapping[str, Any], inputs: LossInputs,
            options: Mapping[str, Mapping[str, Any]] | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """sum_name weight * term(inputs) and the metrics dict (all scalars).

    Terms with a Python weight of 0 are not evaluated (like the official `if lambda > 0`), so
    their networks need not be loaded. `options[name]` are keyword arguments of that term.
    """
    options = dict(options or {})
    unknown = [n for n in list(weights) + list(options) if n not in _REGISTRY]
    if unknown:
        raise KeyError(f"unknown loss term(s) {sorted(set(unknown))}; registered: "
                       f"{', '.join(registered_losses())}.")
    total = jnp.zeros((), jnp.float32)
    metrics: dict[str, jax.Array] = {}
    for name, weight in weights.items():
        if _is_static_zero(weight):
            continue
        out = _REGISTRY[name](inputs, **options.get(name, {}))
        value, extra = out if isinstance(out, tuple) else (out, {})
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss term {name!r} returned shape {value.shape}, expected a scalar.")
        for key, v in {f"loss_{name}": value, **extra}.items():
            if key in metrics or key == "loss":
                raise ValueError(f"loss term {name!r} reports metric {key!r} twice.")
            metrics[key] = jnp.asarray(v)
        total = total + weight * value
    metrics["loss"] = total
    return total, metrics


@register_loss("l2")
def _l2_term(inputs: LossInputs):
    return l2_loss(inputs.y_hat, inputs.y)


@register_loss("lpips")
def _lpips_term(inputs: LossInputs):
    return lpips_loss(inputs.net("lpips", "lpips"), inputs.y_hat, inputs.y)


@register_loss("id")
def _id_term(inputs: LossInputs):
    loss, improvement, _ = similarity_loss(inputs.net("id", "id"), inputs.y_hat, inputs.y, inputs.x)
    return loss, {"id_improve": improvement}


@register_loss("d_reg")
def _d_reg_term(inputs: LossInputs, p: float = 2):
    total, per_delta = delta_regularization(inputs.latents("d_reg"), inputs.progressive_stage, p)
    metrics = {f"delta{i + 1}_loss": per_delta[i] for i in range(per_delta.shape[0])}
    metrics["total_delta_loss"] = total
    return total, metrics


@register_loss("adv")
def _adv_term(inputs: LossInputs):
    return encoder_adversarial_loss(inputs.net("discriminator", "adv"), inputs.latents("adv"),
                                    inputs.progressive_stage)


@register_loss("w_norm")
def _w_norm_term(inputs: LossInputs):
    return w_norm_loss(inputs.latents("w_norm"), inputs.latent_avg)
