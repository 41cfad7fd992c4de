"""The StyleGAN2-ADA W projector (latent optimisation of one w plus the noise maps), jit-compiled.

    g = e4e_jax.load_generator("converted/ffhq")          # rosinality or StyleGAN2-ADA
    lp = e4e_jax.load_lpips("weights/lpips_vgg")          # the official recipe: LPIPS-VGG
    res = e4e_jax.project(g, target, lpips=lp, num_steps=1000)   # (H, W, 3) in [-1, 1]
    images = g.synthesis(res.w_plus[None], noise=res.synthesis_noise())

Targets follow the inversions' one convention (e4e_jax.inversion.common.check_target): NHWC
(or HWC) float images in [-1, 1], as Inverter.encode and pti.tune take them; uint8 pixels in
[0, 255] are still accepted (the earlier convention). The official projector compares [0, 255]
pixels: a [-1, 1] target becomes (x + 1) / 2 * 255, as PTI's coach converts its targets.

Official source reproduced: NVlabs/stylegan2-ada-pytorch `projector.py::project` (d72cc7d) and
PTI's copy `training/projectors/w_projector.py::project` (da94d59; its defaults differ only in
initial_learning_rate=0.01 and an optional `initial_w` start point, both arguments here).

Per step s (t = s / num_steps): lr = initial_learning_rate * cosine ramp-down * linear ramp-up;
ws = w_opt + w_noise[s] * w_std * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2,
repeated to every W+ row; dist = LPIPS((synth + 1) * 127.5, target pixels) on [0, 255] (area-
downsampled to 256 above 256 px); noise regularisation over each map's pyramid; one torch-style
Adam step (betas 0.9 / 0.999, eps 1e-8) on w_opt and the noise maps; every map renormalised to
zero mean and unit variance. At step 0 lr is 0: nothing moves but Adam's moments advance.

The whole optimisation of all images is one compiled function, a `lax.scan` over the steps
(generator and LPIPS weights are arguments, so one compilation serves every generator and target
of the same shapes; nothing returns to the host until the end). Several targets (N, H, W, 3) are
projected independently and in parallel: the per-image loop is `jax.vmap`ed over the target, the
start w, the noise maps and the w-noise draws (a batch of N through every convolution per step).
The generator and LPIPS convolutions differentiate through `e4e_jax.core.conv`, whose input
gradient keeps XLA:CPU's fast convolution inside the loop body (autodiff's own falls back to a
generic loop there, 3-4x slower per step). `_project_batch_stepwise` runs the same step as one
donated jitted call per step instead (`project(..., loop="step")`; `benchmarks/invert.py --loop
step` compares the two).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from e4e_jax.inversion.common import (
    TARGET_CONVENTION,
    InversionError,
    check_lpips_resolution,
    check_target,
    lpips_feature_distance,
    lpips_features,
    target_pixels,
    to_pixels,
)

__all__ = ["project", "ProjectionResult", "w_statistics", "projector_schedule",
           "noise_regularization", "renormalize_noise", "ProjectorError", "TARGET_CONVENTION",
           "LOOPS"]

ProjectorError = InversionError
LOOPS = ("scan", "step")
_MAPPING_BATCH = 2048


@dataclasses.dataclass
class ProjectionResult:
    """Output of `project` (numpy float32). With N targets every array gains a leading N axis.

    w_per_step: (num_steps, w_dim), w after each step's update (ADA's w_out).
    w_plus: (n_latent, w_dim), the final w on every row (feed to `generator.synthesis`).
    noises: list of (r, r) float32 maps, one per noise layer in the generator's order (4x4
        first; ((N, r, r) with N targets), after the last renormalisation: the shape of the
        official projector's noise buffers squeezed of their (1, 1) batch and channel axes.
        The generator takes them as (1 or N, r, r, 1): `synthesis_noise()`.
    history: (num_steps,) arrays: loss = dist + regularize_noise_weight * reg_loss, dist,
        reg_loss (all before step s's update), lr, w_noise_scale.
    w_avg: (w_dim,) and w_std: () the w statistics of the start point and w-noise scale.
    """
    w_per_step: np.ndarray
    w_plus: np.ndarray
    noises: list
    history: dict
    w_avg: np.ndarray
    w_std: np.ndarray

    def synthesis_noise(self) -> list[np.ndarray]:
        """The noise maps as `LoadedGenerator.synthesis(noise=...)` takes them: (1, r, r, 1) each
        for one target, (N, r, r, 1) for N."""
        single = self.w_plus.ndim == 2
        return [(n[None] if single else n)[..., None] for n in self.noises]


def w_statistics(generator, w_avg_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(w_avg (w_dim,), w_std ()) float32 as officially: z = RandomState(123).randn(n, z_dim),
    w = mapping(z); w_avg = mean over samples, w_std = sqrt(sum((w - w_avg)^2) / n)."""
    if w_avg_samples < 1:
        raise ProjectorError(f"w_avg_samples must be >= 1, got {w_avg_samples}.")
    z = np.random.RandomState(123).randn(w_avg_samples, generator.z_dim).astype(np.float32)
    ws = [np.asarray(generator.mapping(z[i:i + _MAPPING_BATCH]))
          for i in range(0, w_avg_samples, _MAPPING_BATCH)]
    w = np.concatenate(ws).astype(np.float32)
    if w.ndim == 3:  # StyleGAN3's mapping returns W+ (num_ws equal rows, as its projectors use)
        w = w[:, 0]
    w = w[:, None, :]
    w_avg = np.mean(w, axis=0, keepdims=True)
    w_std = np.float32((np.sum((w - w_avg) ** 2) / w_avg_samples) ** 0.5)
    return w_avg.reshape(-1), w_std


def projector_schedule(num_steps: int, initial_learning_rate: float, w_std: float,
                       initial_noise_factor: float, lr_rampdown_length: float,
                       lr_rampup_length: float, noise_ramp_length: float):
    """(lr, w_noise_scale), each (num_steps,) float32, computed in float64 as the official Python
    loop does."""
    lr = np.zeros(num_steps)
    scale = np.zeros(num_steps)
    for step in range(num_steps):
        t = step / num_steps
        ramp_w = max(0.0, 1.0 - t / noise_ramp_length) ** 2
        scale[step] = float(w_std) * initial_noise_factor * ramp_w
        ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
        ramp = ramp * min(1.0, t / lr_rampup_length)
        lr[step] = initial_learning_rate * ramp
    return lr.astype(np.float32), scale.astype(np.float32)


def noise_regularization(noises) -> jax.Array:
    """Sum over maps and pyramid levels of the squared mean products with the map rolled by one
    pixel along W and along H; a level is halved (2x2 average) while its side exceeds 8."""
    reg = 0.0
    for n in noises:
        while True:
            reg = reg + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=1)))
            reg = reg + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=0)))
            if n.shape[0] <= 8:
                break
            r = n.shape[0] // 2
            n = jnp.mean(n.reshape(r, 2, r, 2), axis=(1, 3))
    return reg


def renormalize_noise(n: jax.Array) -> jax.Array:
    """buf -= buf.mean(); buf *= rsqrt(mean(buf^2)) (over the whole map)."""
    n = n - jnp.mean(n)
    return n * jax.lax.rsqrt(jnp.mean(jnp.square(n)))


def _make_step(generator, lpips_net, target_feats, reg_weight):
    """The per-step function step((p, opt_state), (raw, scale, lr)) -> (carry, per-step outputs)
    of one image: p = (w (1, w_dim), list of (r, r) noise maps). `generator` and `lpips_net`
    are BoundNets (traced arguments of the caller's jit)."""
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    n_latent = generator.n_latent

    def loss_fn(p, raw, scale):
        w, noises = p
        ws = jnp.broadcast_to((w + raw[None] * scale)[:, None, :], (1, n_latent, w.shape[-1]))
        img = generator.synthesize(generator.variables, ws,
                                   noise=[n[None, :, :, None] for n in noises])
        feats = lpips_features(lpips_net, to_pixels(img))
        dist = lpips_feature_distance(lpips_net, target_feats, feats)[0]
        reg = noise_regularization(noises)
        return dist + reg * reg_weight, (dist, reg)

    def step(carry, xs):
        p, opt_state = carry
        raw, scale, step_lr = xs
        (loss, (dist, reg)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, raw, scale)
        updates, opt_state = adam.update(grads, opt_state)
        p = jax.tree_util.tree_map(lambda a, u: a - step_lr * u, p, updates)
        w, noises = p
        p = (w, [renormalize_noise(n) for n in noises])
        return (p, opt_state), (loss, dist, reg, w[0])

    return adam, step


def _single_image(generator, lpips_net, target_pixels, w_start, noise_init, w_noise, lr,
                  w_noise_scale, reg_weight):
    """One image's whole optimisation. target_pixels (H, W, 3); w_start (w_dim,); noise_init list
    of (r, r); w_noise (num_steps, w_dim); lr, w_noise_scale (num_steps,)."""
    target_feats = lpips_features(lpips_net, target_pixels[None])
    adam, step = _make_step(generator, lpips_net, target_feats, reg_weight)
    params = (w_start[None], list(noise_init))
    (p, _), (loss, dist, reg, w_steps) = jax.lax.scan(
        step, (params, adam.init(params)), (w_noise, w_noise_scale, lr))
    return w_steps, p[1], loss, dist, reg


@jax.jit
def _project_batch(generator, lpips_net, targets, w_start, noise_init, w_noise, lr,
                   w_noise_scale, reg_weight):
    """All N images, num_steps = len(lr) steps, as one compiled lax.scan per image (vmapped over
    the N images): (w_steps (N, S, w_dim), noises [(N, r, r)], loss, dist, reg (N, S))."""
    fn = functools.partial(_single_image, generator, lpips_net)
    if targets.shape[0] == 1:
        out = fn(targets[0], w_start[0], [n[0] for n in noise_init], w_noise[0], lr,
                 w_noise_scale, reg_weight)
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None, None))(
        targets, w_start, noise_init, w_noise, lr, w_noise_scale, reg_weight)


@jax.jit
def _start(lpips_net, targets, w_start, noise_init):
    """Target features (one (N, 1, h, w, c) per LPIPS layer) and the carry (params, Adam state)
    with a leading N axis."""
    feats = [f[:, None] for f in lpips_features(lpips_net, targets)]
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    params = (w_start[:, None], list(noise_init))
    return feats, (params, jax.vmap(adam.init)(params))


@functools.partial(jax.jit, donate_argnums=(2,))
def _step_batch(generator, lpips_net, carry, target_feats, w_noise, lr, w_noise_scale,
                reg_weight, s):
    """Step s of all N images: carry (donated, updated in place) -> (carry, per-step outputs).
    N = 1 runs the single-image step directly (vmap of one would only add batching rewrites)."""
    def one(c, feats, raw):
        _, step = _make_step(generator, lpips_net, feats, reg_weight)
        return step(c, (raw, w_noise_scale[s], lr[s]))

    raw = w_noise[:, s]
    if raw.shape[0] == 1:
        out = one(jax.tree_util.tree_map(lambda a: a[0], carry), [f[0] for f in target_feats],
                  raw[0])
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(one)(carry, target_feats, raw)


def _project_batch_stepwise(generator, lpips_net, targets, w_start, noise_init, w_noise,
                            lr, w_noise_scale, reg_weight):
    """`_project_batch` with one compiled step dispatched S times from Python, its state
    donated (same outputs; project(..., loop="step"))."""
    feats, carry = _start(lpips_net, targets, w_start, noise_init)
    outs = []
    for s in range(lr.shape[0]):
        carry, out = _step_batch(generator, lpips_net, carry, feats, w_noise, lr,
                                 w_noise_scale, reg_weight, jnp.int32(s))
        outs.append(out)
    loss, dist, reg, w = (jnp.stack(v, axis=1) for v in zip(*outs))
    return w, carry[0][1], loss, dist, reg


def _noise_sides(generator) -> list[int]:
    """Sides of the generator's noise maps (none for StyleGAN3: then w alone is optimised)."""
    return [s[1] for s in generator.noise_shapes()]


def _batched(value, n: int, single: bool, shape: tuple, what: str) -> np.ndarray:
    arr = np.asarray(value, np.float32)
    want = shape if single else (n,) + shape
    if single and arr.shape != want and arr.size == int(np.prod(shape)):
        arr = arr.reshape(shape)  # e.g. w as (1, w_dim) or (1, 1, w_dim)
    if arr.shape != want:
        raise ProjectorError(f"{what} must have shape {want}, got {arr.shape}.")
    return arr if not single else arr[None]


def project(generator, target, *, lpips, num_steps: int = 1000, w_avg_samples: int = 10000,
            initial_learning_rate: float = 0.1, initial_noise_factor: float = 0.05,
            lr_rampdown_length: float = 0.25, lr_rampup_length: float = 0.05,
            noise_ramp_length: float = 0.75, regularize_noise_weight: float = 1e5,
            initial_w=None, rng=None, noise_init=None, w_noise=None,
            loop: str = "scan") -> ProjectionResult:
    """Projects target image(s) into W of `generator` (official ADA projector, see module doc).

    generator: a `LoadedGenerator` (rosinality or StyleGAN2-ADA; unconditional).
    target: (H, W, 3) float image in [-1, 1] (the inversions' convention, as Inverter.encode),
        H = W = generator.resolution, or (N, H, W, 3) for N independent projections run in
        parallel (every output gains an N axis); uint8 pixels in [0, 255] are accepted too.
    lpips: a `LoadedLPIPS` (`e4e_jax.load_lpips`); LPIPS-VGG is the official recipe.
    initial_w: start point (w_dim,) (PTI's option; (N, w_dim) for N targets); default w_avg.
    rng: jax.random key for the noise maps and w-noise draws not given (default key(0)).
    noise_init: list of (r, r) standard-normal maps in noise-layer order ((N, r, r) for N targets)
        replacing the initial draws; w_noise: (num_steps, w_dim) ((N, num_steps, w_dim)) standard
        normal draws replacing the per-step ones (how the official runs are replayed).
    loop: "scan" (every step inside one compiled lax.scan) or "step" (one donated compiled step
        per step, dispatched from Python; the same numbers, for benchmarks/invert.py).
    Returns a `ProjectionResult`. Raises ProjectorError (a ValueError) on bad inputs, e.g. a
    float target outside [-1, 1] (TARGET_CONVENTION: "targets are float images in [-1, 1]
    (NHWC), or uint8 pixels"), or an LPIPS net whose backbone sees nothing at the generator's
    resolution (alex below 31 px, vgg below 16: check_lpips_resolution).
    """
    if getattr(generator, "c_dim", 0):
        raise ProjectorError("the projector needs an unconditional generator (c_dim = 0), as the "
                             "official projector calls G.mapping(z, None).")
    if int(num_steps) < 1:
        raise ProjectorError(f"num_steps must be >= 1, got {num_steps}.")
    if not hasattr(lpips, "net"):
        raise ProjectorError("lpips must be a loaded LPIPS network: e4e_jax.load_lpips(dir).")
    check_lpips_resolution(lpips, generator.resolution)
    if loop not in LOOPS:
        raise ProjectorError(f"loop must be one of {LOOPS}, got {loop!r}.")
    num_steps = int(num_steps)
    single = np.ndim(target) == 3
    targets = target_pixels(check_target(target, generator.resolution))
    n = targets.shape[0]
    w_dim = generator.style_dim
    w_avg, w_std = w_statistics(generator, int(w_avg_samples))
    lr, scale = projector_schedule(num_steps, initial_learning_rate, w_std, initial_noise_factor,
                                   lr_rampdown_length, lr_rampup_length, noise_ramp_length)
    rng = jax.random.key(0) if rng is None else rng
    k_noise, k_w = jax.random.split(rng)
    sides = _noise_sides(generator)
    if noise_init is None:
        keys = jax.random.split(k_noise, len(sides))
        noise_init = [np.asarray(jax.random.normal(k, (n, r, r))) for k, r in zip(keys, sides)]
    else:
        if len(noise_init) != len(sides):
            raise ProjectorError(f"noise_init must list {len(sides)} maps (sides {sides}), got "
                                 f"{len(noise_init)}.")
        noise_init = [_batched(v, n, single, (r, r), f"noise_init[{i}]")
                      for i, (v, r) in enumerate(zip(noise_init, sides))]
    if w_noise is None:
        w_noise = np.asarray(jax.random.normal(k_w, (n, num_steps, w_dim)))
    else:
        w_noise = _batched(w_noise, n, single, (num_steps, w_dim), "w_noise")
    if initial_w is None:
        w_start = np.broadcast_to(w_avg, (n, w_dim))
    else:
        w_start = _batched(initial_w, n, single, (w_dim,), "initial_w")
    run = _project_batch if loop == "scan" else _project_batch_stepwise
    out = run(generator, lpips.net, jnp.asarray(targets), jnp.asarray(w_start),
              [jnp.asarray(v) for v in noise_init], jnp.asarray(w_noise), jnp.asarray(lr),
              jnp.asarray(scale), jnp.float32(regularize_noise_weight))
    w_steps, noises, loss, dist, reg = jax.device_get(out)
    n_latent = generator.n_latent
    w_plus = np.broadcast_to(w_steps[:, -1:, :], (n, n_latent, w_dim)).copy()
    history = {"loss": loss, "dist": dist, "reg_loss": reg,
               "lr": np.broadcast_to(lr, (n, num_steps)).copy(),
               "w_noise_scale": np.broadcast_to(scale, (n, num_steps)).copy()}
    if single:
        w_steps, w_plus = w_steps[0], w_plus[0]
        noises = [v[0] for v in noises]
        history = {k: v[0] for k, v in history.items()}
    return ProjectionResult(w_per_step=w_steps, w_plus=w_plus, noises=list(noises),
                            history=history, w_avg=w_avg, w_std=w_std)
