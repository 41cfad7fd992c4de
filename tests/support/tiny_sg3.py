"""Tiny StyleGAN3 models for the command and library tests: a 32 px config-T generator (6 W+ rows of
32, 8 channels) with non-trivial w_avg and magnitude EMAs, its model directory, and an e4e
inverter directory over it.

    from tests.support.tiny_sg3 import tiny_sg3, save_tiny_sg3_inverter
"""
import os

import jax
import numpy as np

TINY_SG3 = dict(z_dim=8, c_dim=0, w_dim=32, img_resolution=32, channel_base=64, channel_max=8,
                num_layers=4)


def tiny_sg3(seed: int = 1, **overrides):
    """A seeded random LoadedStyleGAN3 (TINY_SG3 with `overrides`): the official
    initialisation, then w_avg and every magnitude EMA set to seeded non-trivial values (an
    untrained generator's all-ones EMAs and zero w_avg would hide mistakes)."""
    from e4e_jax.models.stylegan3 import BUFFERS
    from e4e_jax.nets.stylegan3 import init_stylegan3
    g = init_stylegan3(jax.random.key(seed), {**TINY_SG3, **overrides})
    draw = np.random.default_rng(seed)
    buffers = jax.tree_util.tree_map(np.asarray, g.variables[BUFFERS])
    for layer in buffers["synthesis"].values():
        if "magnitude_ema" in layer:
            layer["magnitude_ema"] = np.float32(draw.uniform(0.5, 2.0))
    buffers["mapping"]["w_avg"] = (0.3 * draw.standard_normal(g.w_dim)).astype(np.float32)
    return g.replace(variables={**g.variables, BUFFERS: buffers})


def save_tiny_sg3(path: str, seed: int = 1) -> str:
    """The model directory of tiny_sg3(seed) (`e4e-jax convert stylegan3`'s kind)."""
    from e4e_jax.nets.stylegan3 import save_stylegan3
    return save_stylegan3(tiny_sg3(seed), path)


def save_tiny_sg3_inverter(path: str, seed: int = 1) -> str:
    """An e4e inverter directory (the tiny encoder of tests.parity.test_encoders, 32 px input)
    over tiny_sg3(seed), latent_avg = its w_avg, reconstructions pooled to 32 px (the input
    size, so every metric of eval applies). Returns the directory."""
    from e4e_jax.models import encoders as E
    from e4e_jax.nets.encoder import save_inverter
    from tests.parity.test_encoders import tiny_config
    g = tiny_sg3(seed)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(32, 32))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return save_inverter(path, cfg, v, g, g.latent_avg, face_pool=g.resolution)
