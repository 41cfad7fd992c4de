"""Pivotal Tuning Inversion (PTI, Roich et al. 2021): fine-tune the generator around a pivot.

    import e4e_jax, e4e_jax.inversion.pti
    g = e4e_jax.load_generator("converted/ffhq")            # rosinality or StyleGAN2-ADA
    lp = e4e_jax.load_lpips("weights/lpips_alex")
    res = e4e_jax.inversion.pti.tune(g, w_pivot, target, lpips=lp)    # w_pivot (1, n_latent, 512)
    res.generator                                            # tuned LoadedGenerator
    res.history["lpips"], res.num_updates

Reproduces danielroich/PTI (commit da94d59): `training/coaches/single_id_coach.py` (the tuning
loop), `base_coach.py` (calc_loss, Adam over every generator parameter), `criteria/l2_loss.py`,
`criteria/localitly_regulizer.py` (Space_Regulizer) and `training/coaches/multi_id_coach.py`
(several pivots, one generator), with the defaults of `configs/hyperparameters.py`.

Per loss evaluation (image from the pivot with the stored 'const' noise, no clamp):
    loss = l2_lambda * MSE(G(w_pivot), target) + lpips_lambda * LPIPS(G(w_pivot), target)
           [+ locality regulariser]
with the terms of e4e_jax.losses (l2_loss, lpips_distance: the training's own), on targets in the
inversions' one convention (NHWC float in [-1, 1], e4e_jax.inversion.common.check_target).
then, for one image, `if LPIPS <= lpips_threshold: stop` BEFORE the update, else one torch-Adam
step (lr 3e-4, betas (0.9, 0.999), eps 1e-8) on every synthesis parameter (modulation layers,
convolution weights and biases, noise strengths, the constant input). The mapping network never
gets a gradient officially and stays as it is here; the noise buffers are not parameters.

The generator enters the compiled loop as its verbs (`synthesize`, `map`) with the tuned and
frozen weights as arguments, LPIPS as `lpips.net` (the projector reads it the same way).
The whole loop is one compiled `lax.while_loop` (weights and images are arguments, so one
compilation serves every image and generator of the same shapes; the state is donated and
updated in place); the early stop ends the loop. The convolutions differentiate through
`e4e_jax.core.conv`, which keeps XLA:CPU's fast convolution inside the loop body and computes
the weight gradients (PTI tunes every weight) as matmuls on CPU, 4x faster per step there.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax import losses as L
from e4e_jax.core.optim import scale_by_torch_adam
from e4e_jax.inversion.common import check_lpips_resolution, check_target
from e4e_jax.nets.generator import LoadedGenerator, torch_lerp

__all__ = ["tune", "PTIResult", "morph", "morphed_codes", "REGULIZER"]

# configs/hyperparameters.py: the locality regulariser's settings
REGULIZER = dict(truncation_psi=0.5, alpha=30.0, l2_lambda=0.1, lpips_lambda=0.1)


@dataclasses.dataclass
class PTIResult:
    """generator: the tuned LoadedGenerator (same module, tuned synthesis parameters).
    history: {name: float32 array} per loss evaluation; one image: shape (E,) with E = steps, or
      k + 1 when the early stop fired at step k. Several images: shape (steps, N).
      Keys: loss (the total), l2, lpips, and with locality reg_loss, reg_l2, reg_lpips.
    num_updates: Adam steps taken (k after an early stop at step k; steps * N for N images)."""
    generator: LoadedGenerator
    history: dict
    num_updates: int


# ----------------------------------------------------------------------------- pure functions

def _split_params(generator) -> tuple[dict, dict]:
    """(tuned synthesis params, frozen rest: the mapping and the buffers), as the generator
    names them (StyleGAN2: noise buffers; StyleGAN3: filters, magnitude EMAs, w_avg)."""
    return generator.tunable(generator.variables)


def _synth(generator, tuned, frozen, w_plus, noise_mode):
    return generator.synthesize(generator.with_tuned(tuned, frozen), w_plus, noise_mode)


def morph(w_samples, w_pivot, alpha: float = REGULIZER["alpha"]):
    """Space_Regulizer.get_morphed_w_code: w_pivot + alpha * d / ||d||, d = w - w_pivot, the
    norm over every element of one (1, n_latent, w_dim) code. w_samples (n, n_latent, w_dim),
    w_pivot (1, n_latent, w_dim) -> (n, n_latent, w_dim)."""
    d = w_samples - w_pivot
    norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=(1, 2), keepdims=True))
    return w_pivot + (alpha * d) / norm


def _sample_w(generator, frozen, latent_avg, z, psi: float):
    """original_G.mapping(z, None, truncation_psi=psi) broadcast to W+ (n, n_latent, w_dim)."""
    w = generator.map(generator.with_tuned({}, frozen), jnp.asarray(z, jnp.float32))
    if w.ndim == 3:  # StyleGAN3's mapping returns W+ itself (equal rows without truncation)
        w = w[:, 0]
    w_plus = jnp.broadcast_to(w[:, None, :], (w.shape[0], generator.n_latent, w.shape[-1]))
    avg = latent_avg.reshape(1, 1, -1)
    if generator.variant in ("ada", "stylegan3"):  # w_avg.lerp(w, psi), torch.lerp's rounding
        return torch_lerp(avg, w_plus, psi)
    return avg + psi * (w_plus - avg)


def _locality(generator, lpips_net, tuned, original, frozen, latent_avg, z, w_pivot):
    """Space_Regulizer.ball_holder_loss_lazy: (reg, mean l2, mean lpips) over the n samples,
    each sample's l2 (l2_loss.l2_loss) and LPIPS terms as the coach's (e4e_jax.losses)."""
    w_m = morph(_sample_w(generator, frozen, latent_avg, z, REGULIZER["truncation_psi"]),
                w_pivot)
    new = _synth(generator, tuned, frozen, w_m, "none")
    old = jax.lax.stop_gradient(_synth(generator, original, frozen, w_m, "none"))
    l2 = jax.vmap(L.l2_loss)(old, new)                      # one image at a time, officially
    lp = L.lpips_distance(lpips_net, old, new)
    reg = REGULIZER["l2_lambda"] * l2 + REGULIZER["lpips_lambda"] * lp
    n = z.shape[0]
    return jnp.sum(reg) / n, jnp.mean(l2), jnp.mean(lp)


def _loss(tuned, nets, original, frozen, latent_avg, w_pivot, target, z, lambdas,
          locality: bool):
    """base_coach.calc_loss for one pivot (1, n_latent, w_dim) and target (1, H, W, 3):
    l2_lambda * MSE + lpips_lambda * LPIPS (e4e_jax.losses.l2_loss / lpips_distance)."""
    generator, lpips_net = nets
    img = _synth(generator, tuned, frozen, w_pivot, "const")
    l2 = L.l2_loss(img, target)
    lp = L.lpips_distance(lpips_net, img, target)[0]
    loss = lambdas[0] * l2 + lambdas[1] * lp
    terms = {"loss": loss, "l2": l2, "lpips": lp}
    if locality:
        reg, reg_l2, reg_lp = _locality(generator, lpips_net, tuned, original, frozen,
                                        latent_avg, z, w_pivot)
        loss = loss + reg
        terms.update(loss=loss, reg_loss=reg, reg_l2=reg_l2, reg_lpips=reg_lp)
    return loss, terms


def _loss_names(locality: bool) -> list[str]:
    return ["loss", "l2", "lpips"] + (["reg_loss", "reg_l2", "reg_lpips"] if locality else [])


def _evaluate(state, nets, original, frozen, latent_avg, w_pivots, targets, zs, lambdas,
              learning_rate, threshold, *, locality: bool):
    """One evaluation of the official loop (evaluation e uses image e % N):
    state = (e, params, opt_state, history {name: (E,)}, stopped) -> (state, stopped).
    nets = (generator without weights: its module's verbs, the LPIPS LossNet).

    Once stopped (or after the last evaluation) a call changes nothing; the stop test comes
    before the update, as officially."""
    e, params, opt_state, hist, stopped = state
    total = zs.shape[0]
    active = (~stopped) & (e < total)
    e_safe = jnp.minimum(e, total - 1)
    j = e_safe % w_pivots.shape[0]
    w = jax.lax.dynamic_slice_in_dim(w_pivots, j, 1)
    t = jax.lax.dynamic_slice_in_dim(targets, j, 1)
    z = zs[e_safe] if locality else None
    (_, terms), grads = jax.value_and_grad(_loss, has_aux=True)(
        params, nets, original, frozen, latent_avg, w, t, z, lambdas, locality)
    hist = {k: v.at[e_safe].set(jnp.where(active, terms[k], v[e_safe])) for k, v in hist.items()}
    stop = active & (terms["lpips"] <= threshold)
    skip = stop | ~active
    opt = scale_by_torch_adam(0.9, 0.999, 1e-8)
    updates, new_state = opt.update(grads, opt_state)
    new_params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(skip, b, a), new, old)  # noqa
    stopped = stopped | stop
    state = (e + active.astype(e.dtype), keep(new_params, params), keep(new_state, opt_state),
             hist, stopped)
    return state, stopped


_tune_step = jax.jit(_evaluate, static_argnames=("locality",), donate_argnums=(0,))


@functools.partial(jax.jit, static_argnames=("locality",), donate_argnums=(0,))
def _tune_while(state, nets, original, frozen, latent_avg, w_pivots, targets, zs, lambdas,
                learning_rate, threshold, *, locality: bool):
    """Every evaluation of `_evaluate` in one lax.while_loop, until the last one or the stop."""
    total = zs.shape[0]  # one entry per evaluation
    args = (nets, original, frozen, latent_avg, w_pivots, targets, zs, lambdas, learning_rate,
            threshold)

    def body(s):
        return _evaluate(s, *args, locality=locality)[0]

    return jax.lax.while_loop(lambda s: (s[0] < total) & ~s[4], body, state)


def _tune_loop(tuned, frozen, nets, latent_avg, w_pivots, targets, zs, lambdas, learning_rate,
               threshold, *, steps: int, locality: bool, stepwise: bool = False):
    """The official loop over E = steps * N loss evaluations, one compiled `_tune_while`.
    stepwise=True dispatches the compiled `_tune_step` E times from Python instead (the host
    reads the stop flag one step behind; tune(..., loop="step")).

    Returns (tuned params, history {name: (E,)}, evaluations done, updates done)."""
    total = steps * w_pivots.shape[0]
    # device arrays once, not a host-to-device copy of every weight per dispatch
    tuned, frozen, nets = jax.tree.map(jnp.asarray, (tuned, frozen, nets))
    hist = {k: jnp.zeros((total,), jnp.float32) for k in _loss_names(locality)}
    opt_state = jax.jit(scale_by_torch_adam(0.9, 0.999, 1e-8).init)(tuned)
    # the step donates its state: work on copies so the caller's generator stays intact
    params = jax.tree.map(jnp.copy, tuned)
    state = (jnp.int32(0), params, opt_state, hist, jnp.bool_(False))
    args = (nets, tuned, frozen, latent_avg, w_pivots, targets, zs, lambdas, learning_rate,
            threshold)
    if not stepwise:
        state = _tune_while(state, *args, locality=locality)
    can_stop = bool(np.isfinite(threshold)) and total > 0
    previous = None
    for _ in range(total if stepwise else 0):
        state, stopped = _tune_step(state, *args, locality=locality)
        if can_stop and previous is not None and bool(previous):
            break
        previous = stopped
    e, params, _, hist, stopped = state
    return params, hist, e, e - stopped.astype(jnp.int32)


def _check_inputs(generator, w_pivot, target, lpips):
    """(w_pivot (N, n_latent, w_dim), target (N, H, W, 3)) float32 jax arrays; a single HWC
    target may come with a (n_latent, w_dim) pivot."""
    if not callable(getattr(generator, "tunable", None)):
        raise TypeError(f"generator must be a loaded generator (e4e_jax.load_generator: "
                        f"StyleGAN2 or StyleGAN3), got {type(generator).__name__}.")
    if not hasattr(lpips, "net"):
        raise TypeError("lpips must be a loaded LPIPS network (e4e_jax.load_lpips(dir)); PTI "
                        "uses LPIPS-alex officially.")
    check_lpips_resolution(lpips, generator.resolution)
    w = np.asarray(w_pivot)
    want_w = (generator.n_latent, generator.style_dim)
    if np.ndim(target) == 3 and w.shape == want_w:
        w = w[None]
    if w.ndim != 3 or w.shape[1:] != want_w:
        raise ValueError(f"w_pivot must have shape (N, {want_w[0]}, {want_w[1]}) (W+ pivots for "
                         f"this {generator.resolution}px generator; broadcast a W code with "
                         f"generator.broadcast(w)), got {w.shape}.")
    x = check_target(target, generator.resolution, allow_uint8=False)
    if x.shape[0] != w.shape[0] or w.shape[0] < 1:
        raise ValueError(f"w_pivot and target must hold the same number (>= 1) of images, got "
                         f"{w.shape[0]} and {x.shape[0]}.")
    return jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32)


def _locality_inputs(generator, locality_z, rng, steps: int, n_img: int):
    if generator.c_dim:
        raise ValueError("locality regularisation maps z without labels (official "
                         "mapping(z, None)); it needs an unconditional generator.")
    if generator.latent_avg is None:
        raise ValueError("locality regularisation truncates toward the generator's latent_avg "
                         "(w_avg), which this generator lacks; use generator = "
                         "generator.with_latent_avg(generator.mean_latent(10000)[0]).")
    zd = generator.z_dim
    if locality_z is None:
        rng = jax.random.key(0) if rng is None else rng
        return jax.random.normal(rng, (steps * n_img, 1, zd), jnp.float32)
    z = np.asarray(locality_z)
    want = f"(steps, n, {zd})" if n_img == 1 else f"(steps, {n_img}, n, {zd})"
    ok = (z.ndim == 3 and n_img == 1) or (z.ndim == 4 and z.shape[1] == n_img)
    if not ok or z.shape[0] != steps or z.shape[-1] != zd or z.shape[-2] < 1:
        raise ValueError(f"locality_z must have shape {want} with steps={steps}, got {z.shape}.")
    # numpy float64 draws: the official mapping casts z to float32 first
    return jnp.asarray(z.reshape(steps * n_img, z.shape[-2], zd).astype(np.float32))


def tune(generator: LoadedGenerator, w_pivot, target, *, lpips, steps: int = 350,
         learning_rate: float = 3e-4, l2_lambda: float = 1.0, lpips_lambda: float = 1.0,
         lpips_threshold: float = 0.06, locality: bool = False, locality_z=None,
         rng=None, loop: str = "scan") -> PTIResult:
    """Pivotal tuning of `generator` so that G(w_pivot) reproduces `target` (PTI).

    Args:
      generator: any loaded generator (rosinality or StyleGAN2-ADA); it is not modified.
      w_pivot: (N, n_latent, w_dim) float32 pivots (an e4e code, or a projected W code
        broadcast to every row); fixed during tuning. (n_latent, w_dim) with one HWC target.
      target: (N, H, W, 3) (or (H, W, 3) for one image) float images in [-1, 1] at the
        generator's resolution: the inversions' one convention (check_target), as
        Inverter.encode and e4e_jax.project take them.
      lpips: a loaded LPIPS network (e4e_jax.load_lpips; PTI's default is 'alex').
      steps: max_pti_steps (350). learning_rate: pti_learning_rate (3e-4).
      l2_lambda, lpips_lambda: pt_l2_lambda, pt_lpips_lambda (1, 1).
      lpips_threshold: LPIPS_value_threshold (0.06): with one image the loop stops, before the
        update, at the first evaluation whose LPIPS is <= it. Not applied to N > 1 images (the
        official multi-ID coach has no early stop).
      locality: PTI's Space_Regulizer (use_locality_regularization), one sample per evaluation.
      locality_z: its standard-normal z draws, (steps, n, z_dim) for one image or
        (steps, N, n, z_dim) for N, replacing sampling from `rng` (default key 0).
      loop: "scan" (every evaluation inside one compiled while_loop) or "step" (one donated
        compiled evaluation per dispatch; the same numbers, for benchmarks/invert.py).

    With N > 1 (multi-ID coach): every step visits the images in order, each with its own loss
    evaluation and Adam update, so one generator is tuned on all pivots (steps * N updates).

    Returns a PTIResult (generator, history, num_updates). Raises TypeError / ValueError for
    wrong arguments, naming the expected shapes, and InversionError (a ValueError) for an LPIPS
    net that sees nothing at the generator's resolution (alex below 31 px, vgg below 16).
    """
    w, x = _check_inputs(generator, w_pivot, target, lpips)
    if loop not in ("scan", "step"):
        raise ValueError(f"loop must be 'scan' or 'step', got {loop!r}.")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    n_img = w.shape[0]
    tuned, frozen = _split_params(generator)
    if locality:
        zs = _locality_inputs(generator, locality_z, rng, steps, n_img)
        latent_avg = jnp.asarray(generator.latent_avg, jnp.float32)
    else:
        zs, latent_avg = jnp.zeros((steps * n_img, 1, 1), jnp.float32), jnp.zeros((1,))
    threshold = np.float32(lpips_threshold) if n_img == 1 else np.float32(-np.inf)
    lambdas = jnp.asarray([l2_lambda, lpips_lambda], jnp.float32)
    # the generator's verbs without its weights (they travel as `tuned` / `frozen`)
    weightless = {"variables": None}
    if "latent_avg" in type(generator).tree_leaves:
        weightless["latent_avg"] = None
    nets = (generator.replace(**weightless), lpips.net)
    params, hist, evals, updates = _tune_loop(
        tuned, frozen, nets, latent_avg, w, x, zs, lambdas, jnp.float32(learning_rate),
        jnp.float32(threshold), steps=steps, locality=bool(locality), stepwise=loop == "step")
    evals, updates = int(evals), int(updates)
    history = {k: np.asarray(v)[:evals] for k, v in hist.items()}
    if n_img > 1:
        history = {k: v.reshape(steps, n_img) for k, v in history.items()}
    config = dict(generator.config)
    config["pti"] = dict(steps=steps, num_updates=updates, images=n_img,
                         learning_rate=float(learning_rate), locality=bool(locality),
                         final_lpips=[float(v) for v in np.ravel(history["lpips"])[-n_img:]]
                         if evals else [])
    tuned_g = generator.replace(variables=generator.with_tuned(params, frozen), config=config)
    return PTIResult(generator=tuned_g, history=history, num_updates=updates)


def morphed_codes(generator: LoadedGenerator, w_pivot, z) -> tuple[jax.Array, jax.Array]:
    """The regulariser's codes for draws z (n, z_dim): (w_samples, w_morphed), both
    (n, n_latent, w_dim): the truncated (psi 0.5) mappings and their points at distance 30 from
    the pivot (1, n_latent, w_dim) along the direction toward them."""
    if generator.latent_avg is None:
        raise ValueError("the regulariser needs the generator's latent_avg (w_avg).")
    _, frozen = _split_params(generator)
    w_s = _sample_w(generator, frozen, jnp.asarray(generator.latent_avg),
                    jnp.asarray(np.asarray(z, np.float32)), REGULIZER["truncation_psi"])
    return w_s, morph(w_s, jnp.asarray(w_pivot, jnp.float32))
