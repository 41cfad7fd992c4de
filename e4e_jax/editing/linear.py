"""Interpolation between codes and invertible (linear) edits for Latent Editing Consistency.

    mixed = interpolate(w_psp, w_e4e, [0.0, 0.5, 1.0])          # (3, N, n_latent, 512)
    edit = LinearEdit.interfacegan(direction, 3.0)              # edit(w), edit.inverse(w)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e4e_jax.editing.directions import as_wplus, broadcast_direction
from e4e_jax.editing.factorization import sefa_rows
from e4e_jax.editing.files import pca_dict


def interpolate(w_a: Any, w_b: Any, alpha: float | Sequence[float]) -> jax.Array:
    """(1 - alpha) w_a + alpha w_b: e.g. between the pSp (alpha 0) and e4e (alpha 1) inversions
    of the same image, the distortion / editability control of the paper's Figure 10.

    A scalar alpha keeps the input shape; a sequence of T values gives (T, *w_a.shape).
    """
    a = jnp.asarray(w_a, jnp.float32)
    b = jnp.asarray(w_b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"interpolated codes must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    t = jnp.asarray(alpha, jnp.float32)
    if t.ndim == 0:
        return (1.0 - t) * a + t * b
    t = t.reshape((-1,) + (1,) * a.ndim)
    return (1.0 - t) * a[None] + t * b[None]


@dataclasses.dataclass(frozen=True)
class LinearEdit:
    """An invertible edit w -> w + delta (delta (1, 512) for every row or (1, n_latent, 512)),
    for the Latent Editing Consistency: `edit(w_plus)` and `edit.inverse(w_plus)`."""
    delta: Any

    def __call__(self, w_plus: Any) -> jax.Array:
        """w_plus (N, n_latent, S) + delta."""
        w = as_wplus(w_plus)
        return w + broadcast_direction(self.delta, w)

    def inverse(self, w_plus: Any) -> jax.Array:
        """w_plus - delta: undoes `__call__` exactly."""
        w = as_wplus(w_plus)
        return w - broadcast_direction(self.delta, w)

    @classmethod
    def interfacegan(cls, direction: Any, factor: float) -> "LinearEdit":
        """The official InterFaceGAN edit (the LEC script's example: age, factor 3)."""
        return cls(np.asarray(direction, np.float32) * np.float32(factor))

    @classmethod
    def ganspace(cls, pca: Mapping[str, Any], pca_idx: int, start: int, end: int,
                 strength: float, n_latent: int) -> "LinearEdit":
        """A shift by `strength` standard deviations along comp[pca_idx] on rows start..end-1.

        The official GANSpace edit sets the coordinate to `strength` (a projection, not
        invertible); for LEC it is taken as this shift, which has an exact inverse.
        """
        p = pca_dict(pca, "pca")
        if not 0 <= start < end <= n_latent:
            raise ValueError(f"GANSpace rows {start}..{end} do not fit {n_latent} W+ rows.")
        delta = np.zeros((1, n_latent, p["mean"].shape[1]), np.float32)
        delta[0, start:end] = strength * p["std"][pca_idx] * p["comp"][pca_idx, 0]
        return cls(delta)

    @classmethod
    def sefa(cls, eigenvector: Any, distance: float, layers: Any, n_latent: int,
             official_rows: bool = False, first_row: int = 0) -> "LinearEdit":
        """distance * eigenvector on the W+ rows of `layers` (see `sefa_rows`; first_row 1
        for StyleGAN3)."""
        v = np.asarray(eigenvector, np.float32).reshape(-1)
        delta = np.zeros((1, n_latent, v.shape[0]), np.float32)
        delta[0, sefa_rows(layers, n_latent, official_rows, first_row)] = distance * v
        return cls(delta)
