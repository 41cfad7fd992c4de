"""The latent-code discriminator of the official e4e training (models/discriminator.py).

LatentCodesDiscriminator(style_dim=512, n_mlp=4): (n_mlp - 1) x [Dense(style_dim -> style_dim),
LeakyReLU(0.2)] then Dense(style_dim -> 1). It scores single W codes (N, 512) -> (N, 1); the
training applies it to every discriminated W+ row. Initialised like torch.nn.Linear (weights and
biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))) when trained from scratch.

Variables: params/dense_{i}/{kernel (in, out), bias (out,)}, official `mlp.{2i}.weight` (out, in)
transposed and `mlp.{2i}.bias`. The losses and the R1 penalty are pure functions in
e4e_jax/adversarial.py.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from e4e_jax.models.irse import torch_bias_init, torch_conv_init


class LatentCodesDiscriminator(nn.Module):
    style_dim: int = 512
    n_mlp: int = 4
    precision: Any = None

    @nn.compact
    def __call__(self, w: jax.Array) -> jax.Array:
        if w.shape[-1] != self.style_dim:
            raise ValueError(f"LatentCodesDiscriminator expects codes (..., {self.style_dim}), "
                             f"got {tuple(w.shape)}.")
        x = w
        for i in range(self.n_mlp):
            out = self.style_dim if i < self.n_mlp - 1 else 1
            x = nn.Dense(out, kernel_init=torch_conv_init((0,)),
                         bias_init=torch_bias_init(x.shape[-1]), precision=self.precision,
                         name=f"dense_{i}")(x)
            if i < self.n_mlp - 1:
                x = nn.leaky_relu(x, 0.2)
        return x


def init_discriminator(rng: jax.Array, style_dim: int = 512, n_mlp: int = 4) -> dict:
    """Random discriminator variables ({'params'}) with torch.nn.Linear init."""
    module = LatentCodesDiscriminator(style_dim, n_mlp)
    return dict(module.init(rng, jnp.zeros((1, style_dim), jnp.float32)))
