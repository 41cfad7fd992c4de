"""Latent editing in W / W+: InterFaceGAN, GANSpace, SeFa and interpolation (paper section 7).

    direction = e4e_jax.load_interfacegan_direction("editings/interfacegan_directions/age.pt")
    edited = e4e_jax.interfacegan_edit(w_plus, direction, factor=-3)
    pca = e4e_jax.load_ganspace_pca("editings/ganspace_pca/ffhq_pca.pt")
    edited = e4e_jax.ganspace_edit(w_plus, pca, [(54, 7, 8, 5)])
    eigenvalues, eigenvectors = e4e_jax.sefa(generator)          # sorted, row i <-> value i
    edited = e4e_jax.sefa_edit(w_plus, eigenvectors, semantic=0, layers=[2, 3, 4, 5])
    mixed = e4e_jax.interpolate(w_psp, w_e4e, [0.0, 0.5, 1.0])

W+ codes are (N, n_latent, 512) arrays (numpy or jax); results are jax arrays. Outputs that
stack several edits keep the official order (see each function). The official data files are
PyTorch files: reading them needs torch (only for .pt; read with weights_only=True); the same
data as .npy / .npz loads without torch, and `convert_editing_file` writes those.

For the Latent Editing Consistency metric, `LinearEdit` bundles an invertible edit with its
inverse (InterFaceGAN, a GANSpace shift, a SeFa step).

Modules: `files` (the official data files), `directions` (InterFaceGAN, GANSpace),
`factorization` (SeFa), `linear` (interpolation, LinearEdit), `spec` (the edit-spec language of
the edit command and eval.py), `prepared` (specs bound to a model), `run` (the edit command's
library: inputs, batches, grids, outputs). This file re-exports the math lazily.
"""
from __future__ import annotations

import importlib

# public name -> submodule; imported on first use so that the edit-spec parser stays jax-free
_PUBLIC = {
    "PCA_KEYS": "files", "convert_editing_file": "files", "load_ganspace_pca": "files",
    "load_interfacegan_direction": "files",
    "compute_ganspace_pca": "directions", "ganspace_edit": "directions",
    "interfacegan_edit": "directions",
    "modulation_weights": "factorization", "sefa": "factorization", "sefa_edit": "factorization",
    "sefa_rows": "factorization", "first_style_row": "factorization",
    "LinearEdit": "linear", "interpolate": "linear",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'e4e_jax.editing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"e4e_jax.editing.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
