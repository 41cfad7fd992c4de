"""ReStyle-e4e training end to end on the tiny demo domain: the held-out error falls, the export
is a ReStyle model that `e4e_jax.restyle.invert` and `invert --method restyle` take, and the
export's last iteration reproduces the run's held-out reconstructions."""
import os

import numpy as np
import pytest
from PIL import Image

from e4e_jax import train as trainer
from e4e_jax.cli import invert
from e4e_jax.inversion import restyle
from e4e_jax.nets.encoder import load_encoder
from tests.support.train_utils import tiny_config


@pytest.mark.slow
def test_restyle_training_and_its_export(tmp_path):
    config = tiny_config(max_steps=40, **{"encoder.type": "ProgressiveBackboneEncoder",
                                          "encoder.n_iters_per_batch": 2})
    workdir = str(tmp_path / "run")
    summary = trainer.train_and_evaluate(config, workdir)
    assert summary["steps"] == 40
    assert summary["mse_after"] < 0.9 * summary["mse_before"], summary

    model = load_encoder(os.path.join(workdir, "export"))
    assert restyle.is_restyle(model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    ws, recs = restyle.invert(model, x, iterations=2)
    assert ws.shape == (2, 2, model.n_latent, 512) and np.isfinite(np.asarray(recs)).all()

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(((x[i] + 1) * 127.5).astype(np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out"
    assert invert.main(["--checkpoint", os.path.join(workdir, "export"), "--input",
                        str(images), "--output", str(out), "--method", "restyle",
                        "--iterations", "2"]) == 0
    assert np.load(out / "latents.npy").shape == (2, model.n_latent, 512)
