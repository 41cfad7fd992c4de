"""The optional metric networks (LPIPS, ArcFace / MoCo, FID Inception), loaded once per run.

Each absent network carries the reason its metric is unavailable ("no --lpips directory
given"), which the evaluators copy into `<metric>_reason`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from e4e_jax.evaluation.evaluators.base import EvalError


@dataclasses.dataclass
class Networks:
    """The optional networks, loaded once for every checkpoint; reasons say why one is absent."""
    lpips: Any = None
    lpips_reason: str | None = "no --lpips directory given"
    similarity: Any = None
    similarity_kind: str | None = None
    similarity_reason: str | None = "no --arcface (faces) or --moco (other domains) directory given"
    inception: Any = None
    inception_reason: str | None = None

    def __post_init__(self):
        if self.inception is None and self.inception_reason is None:
            from e4e_jax.nets.inception import maybe_load_inception
            self.inception_reason = maybe_load_inception(None)[1]

    def similarity_fn(self):
        """(variables, a, b) -> (N,) cosine similarity of the unit feature vectors of image pairs,
        compiled once per network and shape (LoadedSimilarityNet.similarity)."""
        net = self.similarity
        return lambda variables, a, b: net.replace(variables=variables).similarity(a, b)


def load_networks(lpips: str | None = None, arcface: str | None = None, moco: str | None = None,
                  inception: str | None = None, loader_kwargs: dict | None = None) -> Networks:
    """Loads the given directories (an explicitly given directory that fails is an error).
    `loader_kwargs` (dtype / precision, only those the user gave) go to every loader."""
    kw = dict(loader_kwargs or {})
    from e4e_jax.nets import loss_nets
    from e4e_jax.nets.inception import load_inception
    if arcface and moco:
        raise EvalError("give --arcface (faces) or --moco (other domains), not both: they fill "
                        "the same 'identity' metric.")
    nets = Networks()
    if lpips:
        nets.lpips, nets.lpips_reason = loss_nets.load_lpips(lpips, **kw), None
    if arcface or moco:
        loader = loss_nets.load_arcface if arcface else loss_nets.load_moco
        nets.similarity = loader(arcface or moco, **kw)
        nets.similarity_kind = "arcface" if arcface else "moco"
        nets.similarity_reason = None
    if inception:
        nets.inception, nets.inception_reason = load_inception(inception, **kw), None
    return nets
