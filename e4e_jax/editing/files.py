"""The official editing data files: InterFaceGAN directions and GANSpace PCA.

    direction = load_interfacegan_direction("editings/interfacegan_directions/age.pt")  # (1, 512)
    pca = load_ganspace_pca("editings/ganspace_pca/ffhq_pca.pt")     # mean, comp, std arrays
    convert_editing_file("age.pt")                                    # -> age.npy, torch-free

The official files (omertov/encoder4editing editings/) are PyTorch files: reading .pt needs
torch and uses weights_only=True (no pickled code runs); the same data as .npy / .npz loads
without torch.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from e4e_jax.data.codes import read_array_file

PCA_KEYS = ("mean", "comp", "std")


def _direction_array(obj: Any, what: str) -> np.ndarray:
    if isinstance(obj, Mapping):
        if "direction" in obj:
            obj = obj["direction"]
        elif len(obj) == 1:
            obj = next(iter(obj.values()))
        else:
            raise ValueError(f"{what}: expected one direction array, found entries "
                             f"{sorted(map(str, obj))}.")
    d = np.asarray(obj, np.float32)
    if d.ndim == 1:
        d = d[None]
    if not (d.ndim == 2 and d.shape[0] == 1) and not (d.ndim == 3 and d.shape[0] == 1):
        raise ValueError(f"{what}: an InterFaceGAN direction is (1, 512) in W or (1, n_latent, "
                         f"512) in W+, got shape {d.shape}.")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{what}: the direction holds non-finite values.")
    return d


def load_interfacegan_direction(path: str) -> np.ndarray:
    """An InterFaceGAN direction: (1, 512) in W or (1, n_latent, 512) in W+, float32.

    Reads the official .pt tensors (needs torch), .npy, or .npz (key 'direction' or one array).
    """
    return _direction_array(read_array_file(path), repr(os.fspath(path)))


def pca_dict(obj: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping) or any(k not in obj for k in PCA_KEYS):
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{what}: a GANSpace PCA holds 'mean' (1, 512), 'comp' (k, 1, 512) and "
                         f"'std' (k,); found {found}.")
    mean = np.asarray(obj["mean"], np.float32).reshape(1, -1)
    comp = np.asarray(obj["comp"], np.float32)
    std = np.asarray(obj["std"], np.float32).reshape(-1)
    dim = mean.shape[1]
    if comp.ndim == 2:
        comp = comp[:, None, :]
    if comp.shape != (std.shape[0], 1, dim):
        raise ValueError(f"{what}: 'comp' must be (k, 1, {dim}) with k = len(std) = "
                         f"{std.shape[0]}, got {comp.shape}.")
    return {"mean": mean, "comp": comp, "std": std}


def load_ganspace_pca(path: str) -> dict[str, np.ndarray]:
    """A GANSpace PCA {'mean' (1, 512), 'comp' (k, 1, 512), 'std' (k,)} from .pt (official,
    needs torch) or .npz."""
    return pca_dict(read_array_file(path), repr(os.fspath(path)))


def convert_editing_file(src: str, dst: str | None = None) -> str:
    """Writes an official editing file as numpy: a direction to .npy, a GANSpace PCA to .npz.

    `dst` defaults to `src` with the new extension. Returns the written path.
    """
    obj = read_array_file(src)
    if isinstance(obj, Mapping) and all(k in obj for k in PCA_KEYS):
        pca = pca_dict(obj, repr(src))
        dst = dst or os.path.splitext(src)[0] + ".npz"
        np.savez(dst, **pca)
    else:
        d = _direction_array(obj, repr(src))
        dst = dst or os.path.splitext(src)[0] + ".npy"
        np.save(dst, d)
    return dst
