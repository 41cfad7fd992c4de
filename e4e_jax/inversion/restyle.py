"""ReStyle iterative inversion (Alaluf et al. 2021): encode, decode, encode the residual again.

    import e4e_jax
    model = e4e_jax.load_encoder("converted/restyle_e4e_ffhq_encode")   # `e4e-jax convert restyle`
    w_plus, recs = e4e_jax.restyle.invert(model, images, iterations=5)
    w_plus[-1], recs[-1]                 # the last iteration's W+ codes and reconstructions

Reproduces yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975:
utils/inference_utils.py `get_average_image` and `run_on_batch` with the forward pass of
models/psp.py / models/e4e.py (identical for ReStyle-pSp and ReStyle-e4e):

    avg   = face_pool(G(latent_avg))         [rows 32:224 for cars]        (get_average_image)
    w_0   = latent_avg;  y_0 = avg
    for t in 1..iterations:
        w_t = w_{t-1} + E(concat([x, y_{t-1}], channels))   (iteration 1: E(..) + latent_avg)
        r_t = face_pool(G(w_t))              [rows 32:224 for cars]        (returned)
        y_t = AdaptiveAvgPool(r_t, encoder input size)   (the identity at the official sizes)

G runs with its stored noise buffers (official randomize_noise=False); face_pool is the
official AdaptiveAvgPool2d((256, 256)).

Over StyleGAN3 (yuval-alaluf/stylegan3-editing at commit 36ce2b4, inversion/models/e4e3.py /
psp3.py and utils/inference_utils.py): the same loop with 16 W+ rows, latent_avg the mapping's
w_avg repeated, G rendering with the identity input transform (`render_transform`), and
run_on_batch's default resize_outputs=False there (pass resize=False for its raw images). The whole loop is one `lax.scan` inside one jit, compiled
once per (batch shape, iterations, resize) for a model; on a single CPU device the batch is
mapped one image at a time inside the jit, as Inverter.invert does (model.scan_batch).

`images` are NHWC float32 in [-1, 1] at the model's input size, as Inverter.encode takes them
(e4e_jax.data.image_io makes them from files like the official inference transform).

Pure functions (weights as arguments, for use inside a caller's jit, e.g. a training step):
    apply_restyle(model, encoder_variables, generator_variables, latent_avg, images,
                  iterations, resize=True) -> (w_plus, reconstructions)
    apply_average_image(model, generator_variables, latent_avg) -> (1, H, W, 3)
`invert` and `average_image` compile them once per model (and batch shape, iterations); the
batch runs on one device (it is not split over several).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.core.ops import adaptive_avg_pool2d
from e4e_jax.models.encoders import RESTYLE_ENCODER_TYPES
from e4e_jax.nets.encoder import face_pool
from e4e_jax.nets.stylegan3 import LoadedStyleGAN3

__all__ = ["apply_average_image", "apply_restyle", "average_image", "invert", "is_restyle",
           "render_transform", "to_input_size"]

DEFAULT_ITERATIONS = 5   # official --n_iters_per_batch default


def is_restyle(model) -> bool:
    """True when `model` (an e4e_jax Inverter) holds one of the four ReStyle encoders."""
    return getattr(model, "encoder_config", {}).get("encoder_type") in RESTYLE_ENCODER_TYPES


def _check_model(model) -> None:
    if not hasattr(model, "encoder_config") or not hasattr(model, "apply_decode"):
        raise TypeError(f"expected a model loaded with e4e_jax.load_encoder(DIR), got "
                        f"{type(model).__name__}.")
    if not is_restyle(model):
        raise ValueError(
            f"the model holds a {model.encoder_config.get('encoder_type')!r} encoder, which "
            f"encodes in one pass (model.invert); ReStyle needs one of "
            f"{', '.join(RESTYLE_ENCODER_TYPES)}, converted with `e4e-jax convert restyle`.")
    if model.latent_avg is None:
        raise ValueError("the model has no latent_avg; ReStyle starts every image from it (the "
                         "official forward adds it at the first iteration). Convert the "
                         "checkpoint again with its latent_avg.")


def _check_iterations(iterations) -> int:
    if isinstance(iterations, bool) or int(iterations) != iterations or int(iterations) < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}.")
    return int(iterations)


def _raw_crop(model, raw: jax.Array) -> jax.Array:
    """The cars row crop at the generator's resolution (official run_on_batch with
    resize_outputs=False: rows 64:448 of a 512x512 image, i.e. crop_rows scaled)."""
    if model.crop_rows is None:
        return raw
    scale = raw.shape[1] / float(model.face_pool_size or 256)
    r0, r1 = (round(r * scale) for r in model.crop_rows)
    return raw[:, r0:r1]


def to_input_size(model, images: jax.Array) -> jax.Array:
    """Official run_on_batch's resize before the next iteration (net.face_pool, or
    AdaptiveAvgPool2d((192, 256)) for cars): NHWC images to the encoder's input size (the
    identity at the official sizes). Training's iterations (e4e_jax.train.restyle) use it too."""
    return adaptive_avg_pool2d(images, model.input_size, model.precision)


def render_transform(model):
    """The input transform ReStyle renders with: the identity (3, 3) for a StyleGAN3 generator,
    whatever its stored buffer (stylegan3-editing's e4e3 / psp3 forward sets the identity before
    every aligned render); None for StyleGAN2 (no transform)."""
    # a type test: reading the `transform` property inside a jit would convert a tracer
    return jnp.eye(3, dtype=jnp.float32) if isinstance(model.generator, LoadedStyleGAN3) else None


# ----------------------------------------------------------------------------- pure functions

def apply_average_image(model, generator_variables, latent_avg) -> jax.Array:
    """Official get_average_image: G(latent_avg) with the stored noise, face_pool (and the cars
    crop), pooled to the encoder's input size. latent_avg: (n_latent, style_dim).
    Returns (1, H, W, 3) float32, (H, W) = model.input_size."""
    w = jnp.asarray(latent_avg)[None]
    avg = model.apply_decode(generator_variables, w, noise="const", resize=True,
                             transform=render_transform(model))
    # float32 (the latent's dtype) whatever the generator's compute dtype
    return to_input_size(model, avg.astype(w.dtype))


def apply_restyle(model, encoder_variables, generator_variables, latent_avg, images,
                  iterations: int = DEFAULT_ITERATIONS, resize: bool = True,
                  progressive_stage=None):
    """The ReStyle loop as a pure function of the weights (for use inside a caller's jit).

    images: (N, H, W, 3) float32 at model.input_size. latent_avg: (n_latent, style_dim).
    iterations: a Python int (the scan length). resize: True returns the reconstructions after
    face_pool (and the cars crop), as the official run_on_batch with resize_outputs; False the raw
    generator images (cars: the crop scaled to the generator's resolution). The next iteration's
    input is the pooled reconstruction either way (as officially). progressive_stage: None (every
    delta, official ProgressiveStage.Inference) or an int / traced int32 for the ReStyle-e4e
    encoders (training's held-out reconstructions at the current stage).
    Returns (w_plus (iterations, N, n_latent, style_dim), reconstructions (iterations, N, h, w, 3)).
    """
    latent_avg = jnp.asarray(latent_avg)
    avg = apply_average_image(model, generator_variables, latent_avg).astype(images.dtype)
    stage_kw = {} if progressive_stage is None else {"progressive_stage": progressive_stage}

    def one_batch(x):
        n = x.shape[0]
        w0 = jnp.broadcast_to(latent_avg[None], (n,) + latent_avg.shape)
        y0 = jnp.broadcast_to(avg, (n,) + avg.shape[1:])

        def step(carry, _):
            w_prev, y_prev = carry
            # official torch.cat([inputs, y_hat], dim=1): the target first
            x6 = jnp.concatenate([x, y_prev.astype(x.dtype)], axis=-1)
            w = (model.encoder.apply(encoder_variables, x6, **stage_kw)
                 + w_prev).astype(w_prev.dtype)
            raw = model.apply_decode(generator_variables, w, noise="const", resize=False,
                                     transform=render_transform(model))
            # the images' dtype (float32) whatever the generator's compute dtype
            pooled = face_pool(raw, model.face_pool_size, model.crop_rows,
                               model.precision).astype(x.dtype)
            out = pooled if resize else _raw_crop(model, raw).astype(x.dtype)
            return (w, to_input_size(model, pooled)), (w, out)

        _, (ws, outs) = jax.lax.scan(step, (w0, y0), None, length=iterations)
        return ws, outs

    if not getattr(model, "scan_batch", False) or images.shape[0] == 1:
        return one_batch(images)
    # one image at a time (XLA's CPU convolutions are faster per image; samples are independent
    # at inference), then (N, T, ...) -> (T, N, ...)
    ws, outs = jax.lax.map(lambda x: jax.tree_util.tree_map(lambda t: t[:, 0],
                                                            one_batch(x[None])), images)
    return jnp.swapaxes(ws, 0, 1), jnp.swapaxes(outs, 0, 1)


# ----------------------------------------------------------------------------- jitted entry points

# The model is an argument (a BoundNet is a pytree: its modules are static, its weights leaves),
# so one program serves every model of the same architecture and shapes, and nothing is cached
# per model object.
@functools.partial(jax.jit, static_argnames=("iterations", "resize"))
def _loop(model, latent_avg, images, iterations: int, resize: bool):
    return apply_restyle(model, model.variables, model.generator.variables, latent_avg, images,
                         iterations, resize)


@jax.jit
def _average(model, latent_avg):
    return apply_average_image(model, model.generator.variables, latent_avg)


def _check_images(model, images) -> jax.Array:
    dtype = images.dtype if hasattr(images, "dtype") else np.asarray(images).dtype
    if np.issubdtype(dtype, np.integer):
        raise ValueError("images must be float32 in [-1, 1] (uint8 images: use "
                         "e4e_jax.data.image_io.to_model_input).")
    images = jnp.asarray(images, jnp.float32)
    h, w = model.input_size
    if images.ndim != 4 or tuple(images.shape[1:]) != (h, w, 3):
        raise ValueError(f"images must have shape (N, {h}, {w}, 3) (NHWC float32 in [-1, 1], "
                         f"the model's input size), got {tuple(images.shape)}.")
    return images


def invert(model, images, iterations: int = DEFAULT_ITERATIONS,
           resize: bool = True) -> tuple[jax.Array, jax.Array]:
    """ReStyle inversion of `images` with a ReStyle model (official run_on_batch).

    model: an Inverter from e4e_jax.load_encoder(DIR) holding a ReStyle encoder
      (BackboneEncoder, ResNetBackboneEncoder, ProgressiveBackboneEncoder,
      ResNetProgressiveBackboneEncoder) and its latent_avg.
    images: (N, H, W, 3) float32 in [-1, 1], (H, W) = model.input_size ((256, 256); cars
      (192, 256)).
    iterations: number of encoder passes (official n_iters_per_batch, default 5).
    resize: see apply_restyle (True: after face_pool and the cars crop, official resize_outputs).
    Returns (w_plus, reconstructions): float32 arrays of shapes (iterations, N, n_latent, 512)
    (every iteration's W+, latent_avg included) and (iterations, N, h, w, 3) in the generator's
    range (not clamped): (256, 256), cars (192, 256); resize=False: the generator's resolution.
    Raises TypeError / ValueError for another kind of model, a model without latent_avg, images
    of the wrong shape or an integer dtype, or iterations < 1.
    """
    _check_model(model)
    iterations = _check_iterations(iterations)
    images = _check_images(model, images)
    return _loop(model, jnp.asarray(model.latent_avg), images, iterations=iterations,
                 resize=bool(resize))


def average_image(model) -> jax.Array:
    """The official average image (get_average_image) of a ReStyle model: (H, W, 3) float32 at
    the encoder's input size, the input the first iteration pairs with every image."""
    _check_model(model)
    return _average(model, jnp.asarray(model.latent_avg))[0]
