"""e4e_jax: Encoder for Editing (e4e, Tov et al. 2021) in JAX/Flax.

The public API is imported lazily so that `import e4e_jax` stays cheap (no TensorFlow, no model
code) until a name is used.
"""
from __future__ import annotations

import importlib

from e4e_jax import aliases
from e4e_jax.core import xla_flags

__version__ = "0.1.0"

aliases.install()
# before any computation: XLA reads XLA_FLAGS when its backend starts (core/xla_flags.py)
xla_flags.disable_ynn_fusion_if_affected()

# public name -> module that defines it
_PUBLIC = {
    "align_faces": "e4e_jax.align",  # FFHQ face alignment (pip install .[align])
    # generator (models/stylegan2.py behind a loaded wrapper)
    "load_generator": "e4e_jax.nets.generator",
    "init_generator": "e4e_jax.nets.generator",
    "save_generator": "e4e_jax.nets.generator",
    "LoadedGenerator": "e4e_jax.nets.generator",
    "LoadedStyleGAN3": "e4e_jax.nets.stylegan3",   # what load_generator gives for StyleGAN3
    # encoders / inversion
    "load_encoder": "e4e_jax.nets.encoder",
    "Inverter": "e4e_jax.nets.encoder",
    "save_inverter": "e4e_jax.nets.encoder",
    # the one shape of a network bound to its weights (every Loaded* class and Inverter)
    "BoundNet": "e4e_jax.nets.base",
    # frozen loss networks
    "load_lpips": "e4e_jax.nets.loss_nets",
    "load_arcface": "e4e_jax.nets.loss_nets",
    "load_moco": "e4e_jax.nets.loss_nets",
    # latent optimisation (StyleGAN2-ADA W projector)
    "project": "e4e_jax.inversion.projector",
    # optimisation
    "ranger": "e4e_jax.core.optim",
    "make_optimizer": "e4e_jax.core.optim",
    # editing
    "sefa": "e4e_jax.editing.factorization",
    "interfacegan_edit": "e4e_jax.editing.directions",
    "ganspace_edit": "e4e_jax.editing.directions",
    "load_interfacegan_direction": "e4e_jax.editing.files",
    "load_ganspace_pca": "e4e_jax.editing.files",
    "compute_ganspace_pca": "e4e_jax.editing.directions",
    "sefa_edit": "e4e_jax.editing.factorization",
    "interpolate": "e4e_jax.editing.linear",
    "LinearEdit": "e4e_jax.editing.linear",
    "convert_editing_file": "e4e_jax.editing.files",
    # metrics
    "load_inception": "e4e_jax.nets.inception",
    "maybe_load_inception": "e4e_jax.nets.inception",
    "fid": "e4e_jax.evaluation.metrics.fid",
    "fid_statistics": "e4e_jax.evaluation.metrics.fid",
    "frechet_distance": "e4e_jax.evaluation.metrics.fid",
    "swd": "e4e_jax.evaluation.metrics.swd",
    "latent_editing_consistency": "e4e_jax.evaluation.metrics.latent",
    "latent_variation": "e4e_jax.evaluation.metrics.latent",
    "latent_deviation": "e4e_jax.evaluation.metrics.latent",
}

# submodules reachable as attributes without an explicit import (`e4e_jax.pti.tune(...)`,
# `e4e_jax.restyle.invert(...)`): attribute -> the module that holds the code
_SUBMODULES = {"pti": "e4e_jax.inversion.pti", "restyle": "e4e_jax.inversion.restyle"}


__all__ = sorted(_PUBLIC) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
        globals()[name] = value
        return value
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'e4e_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
