"""Training an e4e encoder over a StyleGAN3 generator: the synthetic domain of a seeded random
config-T generator (configs/demo_sg3.py shrunk), n_styles = the generator's num_ws, the held-out
error falls, and the export is an Inverter over a LoadedStyleGAN3 that reproduces the run's
held-out reconstructions."""
import os
import sys

import numpy as np
import pytest

from e4e_jax import train as trainer
from e4e_jax.nets.encoder import load_encoder
from tests.support.paths import REPO


def tiny_sg3_config(**overrides):
    """configs/demo_sg3.py at 16 px: 3 synthesis layers (5 W+ rows), 8 channels, 1-unit
    encoder."""
    sys.path.insert(0, REPO)
    import importlib.util
    spec = importlib.util.spec_from_file_location("_demo_sg3",
                                                  os.path.join(REPO, "configs", "demo_sg3.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.input_size = (16, 16)
    c.generator.init.resolution = 16
    c.generator.init.max_channels = 8
    c.generator.init.num_layers = 3
    c.output.face_pool = 16
    c.encoder.widths = (4, 8, 8, 16)
    c.encoder.head_width = 16
    c.latent_avg_samples = 256
    c.batch_size = 4
    c.test_batch_size = 4
    c.holdout = 8
    c.progressive.start = 10
    c.progressive.every = 5
    c.log_every = 10
    c.max_val_batches = 1
    c.num_grid_images = 2
    c.optimizer.name = "adam"      # as tests.support.train_utils.tiny_config: moves in few steps
    c.optimizer.lr = 3e-3
    for k in ("image_every", "val_every", "save_every"):
        c[k] = 10 ** 6
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def test_the_demo_config_is_stylegan3_and_unknown_kinds_are_refused():
    c = tiny_sg3_config()
    assert c.generator.init.kind == "stylegan3" and c.generator.init.num_layers == 3
    from e4e_jax.train.errors import TrainingError
    from e4e_jax.train.setup import build
    with pytest.raises(TrainingError, match="generator.init.kind must be 'stylegan2' or "
                                            "'stylegan3', got 'stylegan4'"):
        build(tiny_sg3_config(**{"generator.init.kind": "stylegan4"}))


@pytest.mark.slow
def test_e4e_training_over_stylegan3(tmp_path):
    workdir = str(tmp_path / "run")
    summary = trainer.train_and_evaluate(tiny_sg3_config(max_steps=40), workdir)
    assert summary["steps"] == 40
    assert summary["mse_after"] < 0.95 * summary["mse_before"], summary
    model = load_encoder(os.path.join(workdir, "export"))
    g = model.generator
    assert type(g).__name__ == "LoadedStyleGAN3" and g.n_latent == 5 == model.n_latent
    assert g.resolution == 16 and g.config_name == "T"
    # w_avg of the random generator is the mean mapped w, not the untrained zero
    assert np.abs(g.latent_avg).max() > 0
    np.testing.assert_allclose(model.latent_avg, np.broadcast_to(g.latent_avg, (5, 512)),
                               atol=1e-6)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    w, rec = model.invert(x)
    assert w.shape == (2, 5, 512) and rec.shape == (2, 16, 16, 3)
    assert np.isfinite(np.asarray(rec)).all()


@pytest.mark.slow
def test_psp_training_over_stylegan3(tmp_path):
    """The paper's variant A (pSp's GradualStyleEncoder, no d-reg, no discriminator) over the
    StyleGAN3 demo generator: it trains, and its export is a pSp Inverter over that generator."""
    from e4e_jax.train.config import apply_variant
    config = apply_variant(tiny_sg3_config(max_steps=6), "A")
    workdir = str(tmp_path / "run")
    summary = trainer.train_and_evaluate(config, workdir)
    assert summary["steps"] == 6 and np.isfinite(summary["mse_after"])
    model = load_encoder(os.path.join(workdir, "export"))
    assert model.encoder_config["encoder_type"] == "GradualStyleEncoder", model.encoder_config
    assert type(model.generator).__name__ == "LoadedStyleGAN3" and model.n_latent == 5
    w, rec = model.invert(np.zeros((1, 16, 16, 3), np.float32))
    assert w.shape == (1, 5, 512) and np.isfinite(np.asarray(rec)).all()
