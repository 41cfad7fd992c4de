"""`invert --method restyle`: ReStyle's iterative refinement per image, for the invert command.

    python -m e4e_jax.invert --checkpoint converted/restyle_e4e_ffhq_encode --input photos/ \\
        --output out/ --method restyle --iterations 5

Per image: `e4e_jax.inversion.restyle.invert(model, x[None], iterations)` (the official
run_on_batch: every iteration encodes the image beside the current reconstruction and adds the
residual to the current W+). The command's usual outputs hold the LAST iteration (latents.npy,
latents/<name>.npy, reconstructions/<name>.png); side_by_side/<name>.png shows
input | iteration 1 | ... | iteration N (the official inference script's "results" grid), and
OUT/iterations/<name>.npy holds every iteration's W+ codes, (N, n_latent, 512) float32.
summary.json records each image's per-iteration MSE to its input (`mse_per_iteration`, images
in [-1, 1], the reconstruction at the encoder's input size).

Over StyleGAN3, `--transforms FILE.npy` renders the last iteration's code with the image's input
transform into OUT/unaligned/<name>.png, as stylegan3-editing's run_on_batch does with
`landmarks_transform` (the iterations themselves see the identity-transform reconstructions,
as there).

The command's dispatch lives in e4e_jax/apps/invert.py (`Pipeline` is chosen by --method).
"""
from __future__ import annotations

import os
import time

import numpy as np

from e4e_jax.apps.invert import ImageResult, InvertError, Pipeline
from e4e_jax.data import image_io
from e4e_jax.inversion import restyle

ITERATIONS_DIR = "iterations"


def check_model(inv, method: str) -> None:
    """Refuses a model the method cannot run: --method restyle needs a ReStyle encoder (6
    input channels, converted with `e4e-jax convert restyle`), every other method an e4e / pSp
    one. Raises InvertError with the fix."""
    holds_restyle = restyle.is_restyle(inv)
    if method == "restyle" and not holds_restyle:
        raise InvertError(
            f"--method restyle needs a ReStyle checkpoint (`e4e-jax convert restyle`); this one "
            f"holds the {inv.encoder_config.get('encoder_type')} encoder: drop --method restyle "
            f"or pass a ReStyle --checkpoint.")
    if method != "restyle" and holds_restyle:
        raise InvertError(
            f"this checkpoint holds a ReStyle encoder ({inv.encoder_config['encoder_type']}), "
            f"which encodes iteratively: use --method restyle [--iterations N].")
    if method == "restyle" and inv.latent_avg is None:
        raise InvertError("the ReStyle checkpoint has no latent_avg (every iteration starts "
                          "from it): convert it again with `e4e-jax convert restyle`.")


class RestylePipeline(Pipeline):
    """`Pipeline` for --method restyle: `run(path, k)` returns an ImageResult whose `columns`
    are input | iteration 1..N and whose `iterations_w` holds every iteration's W+."""

    def run(self, path: str, k: int = 0) -> ImageResult:
        t = time.perf_counter()
        x = image_io.load_image(image_io.read_rgb(path), self.inv.input_size)
        ws, recs = restyle.invert(self.inv, x[None], iterations=self.req.num_iterations)
        ws, recs = np.asarray(ws)[:, 0], np.asarray(recs)[:, 0]
        info = {"restyle_seconds": round(time.perf_counter() - t, 3),
                "iterations": int(ws.shape[0])}
        if recs.shape[1:] == x.shape:
            info["mse_per_iteration"] = [round(float(np.mean((r - x) ** 2)), 6) for r in recs]
        cells8 = [image_io.to_uint8(r) for r in recs]
        in8 = image_io.to_uint8(x)
        columns = [(in8, "input")] + [(c, f"iteration {i + 1}") for i, c in enumerate(cells8)]
        result = ImageResult(ws[-1], in8, cells8[-1], None, cells8[-1], info=info,
                             columns=columns, iterations_w=ws)
        return self._unaligned(result, k)


def save_iterations(output_dir: str, name: str, iterations_w) -> None:
    """OUT/iterations/<name>.npy: every iteration's W+ of one image, (N, n_latent, S) float32."""
    os.makedirs(os.path.join(output_dir, ITERATIONS_DIR), exist_ok=True)
    np.save(os.path.join(output_dir, ITERATIONS_DIR, name + ".npy"),
            np.asarray(iterations_w, np.float32))
