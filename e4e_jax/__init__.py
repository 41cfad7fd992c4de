"""e4e_jax: Encoder for Editing (e4e, Tov et al. 2021) in JAX/Flax.

The public API is imported lazily so that `import e4e_jax` stays cheap (no TensorFlow, no model
code) until a name is used.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "align_faces": "e4e_jax.align",  # FFHQ face alignment (pip install .[align])
    # generator (models/stylegan2.py behind a loaded wrapper)
    "load_generator": "e4e_jax.generator",
    "init_generator": "e4e_jax.generator",
    "save_generator": "e4e_jax.generator",
    "LoadedGenerator": "e4e_jax.generator",
    # encoders / inversion
    "load_encoder": "e4e_jax.inverter",
    "Inverter": "e4e_jax.inverter",
    "save_inverter": "e4e_jax.inverter",
    # frozen loss networks
    "load_lpips": "e4e_jax.loss_nets",
    "load_arcface": "e4e_jax.loss_nets",
    "load_moco": "e4e_jax.loss_nets",
    # latent optimisation (StyleGAN2-ADA W projector)
    "project": "e4e_jax.projector",
    # optimisation
    "ranger": "e4e_jax.optim",
    "make_optimizer": "e4e_jax.optim",
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
    "load_inception": "e4e_jax.metrics.fid_metric",
    "maybe_load_inception": "e4e_jax.metrics.fid_metric",
    "fid": "e4e_jax.metrics.fid_metric",
    "fid_statistics": "e4e_jax.metrics.fid_metric",
    "frechet_distance": "e4e_jax.metrics.fid_metric",
    "swd": "e4e_jax.metrics.swd_metric",
    "latent_editing_consistency": "e4e_jax.metrics.latent_metrics",
    "latent_variation": "e4e_jax.metrics.latent_metrics",
    "latent_deviation": "e4e_jax.metrics.latent_metrics",
}

# submodules reachable as attributes without an explicit import (`e4e_jax.pti.tune(...)`)
_SUBMODULES = ("pti",)


__all__ = sorted(_PUBLIC) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f"e4e_jax.{name}")
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
