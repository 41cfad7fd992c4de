"""eval of a ReStyle model: distortion per iteration, as the ReStyle paper's figures report it.

A ReStyle checkpoint (`e4e-jax convert restyle`, or a ReStyle training run's export) is
inverted with `e4e_jax.inversion.restyle.invert` (DEFAULT_ITERATIONS = 5 passes, the official
inference default). Its metrics.json entry holds

    mse, lpips, identity, swd, fid, latent_variation   of the LAST iteration (as for e4e)
    per_iteration: {"iterations": N, "mse": [N], "lpips": [N], "identity": [N]}
                                                      (null where the network is absent; the
                                                       reason is the last iteration's)

each iteration measured by the same DistortionEvaluator eval uses for e4e (clipped images, the
model's output size). The editability metrics (edits, LEC) and the W deviation, which run the
encoder on edited or generated images in one pass, are not computed for ReStyle models
(null with that reason). The dispatch is in e4e_jax/apps/evaluate.py.
"""
from __future__ import annotations

import dataclasses

from e4e_jax.evaluation.evaluators.base import (
    BatchOutputs,
    EvalError,
    batch_outputs,
    set_metric,
)
from e4e_jax.evaluation.evaluators.distortion import DistortionEvaluator
from e4e_jax.evaluation.evaluators.distribution import DistributionEvaluator
from e4e_jax.inversion import restyle

NOT_FOR_RESTYLE = ("swd_edit", "fid_edit", "lec", "w_deviation")
REASON = ("not computed for ReStyle models (their encoder runs iteratively; eval's edit, LEC "
          "and W-deviation passes encode in one pass)")


@dataclasses.dataclass
class RestyleBatchOutputs(BatchOutputs):
    """The last iteration's BatchOutputs plus every iteration's (`iterations`, first to last)."""
    iterations: list = dataclasses.field(default_factory=list)


def invert_batch(ctx, batch, iterations: int = restyle.DEFAULT_ITERATIONS) -> BatchOutputs:
    """ReStyle inversion of one padded batch: (T, B, ...) W+ and reconstructions."""
    ws, recs = restyle.invert(ctx.inv, batch.images, iterations=iterations)
    per = [batch_outputs(batch.images, recs[t], ws[t], batch.valid) for t in range(len(ws))]
    last = per[-1]
    fields = {f.name: getattr(last, f.name) for f in dataclasses.fields(BatchOutputs)}
    return RestyleBatchOutputs(**fields, iterations=per)


class IterationsDistortionEvaluator:
    """The distortion metrics of every iteration (one DistortionEvaluator each); the last
    iteration's are the entry's mse / lpips / identity."""

    keys = DistortionEvaluator.keys

    def __init__(self, ctx):
        self.ctx = ctx
        self.evaluators: list[DistortionEvaluator] = []

    def update(self, out: RestyleBatchOutputs) -> None:
        while len(self.evaluators) < len(out.iterations):
            self.evaluators.append(DistortionEvaluator.for_context(self.ctx))
        for ev, o in zip(self.evaluators, out.iterations):
            ev.update(o)

    def finish(self, entry: dict, n: int) -> None:
        if not self.evaluators:
            return
        self.evaluators[-1].finish(entry, n)
        per = {"iterations": len(self.evaluators)}
        for key in self.keys:
            values = []
            for ev in self.evaluators:
                one: dict = {}
                ev.finish(one, n)
                values.append(one.get(key))
            per[key] = values
        entry["per_iteration"] = per


def select_evaluators(ctx) -> list:
    """Per-iteration distortion, then FID / SWD and latent variation of the last iteration.
    Raises EvalError for explicit --edits (not evaluated for ReStyle models)."""
    if ctx.options.edits:
        raise EvalError(f"{ctx.name}: --edits is not evaluated for ReStyle models ({REASON}); "
                        f"drop --edits.")
    from e4e_jax.evaluation.evaluators.proximity import ProximityEvaluator
    proximity = ProximityEvaluator(ctx)
    return [IterationsDistortionEvaluator(ctx), DistributionEvaluator(ctx),
            _LatentVariationOnly(proximity)]


class _LatentVariationOnly:
    """ProximityEvaluator's latent_variation (from the codes); w_deviation gets REASON."""

    def __init__(self, proximity):
        self.proximity = proximity

    def update(self, out) -> None:
        self.proximity.update(out)

    def finish(self, entry: dict, n: int) -> None:
        for key in NOT_FOR_RESTYLE:
            set_metric(entry, key, None, REASON)
        set_metric(entry, "latent_variation", self.proximity.variation_sum / n)


def per_iteration_lines(entry: dict) -> list[str]:
    """Human lines of entry['per_iteration'] for the command's log."""
    per = entry.get("per_iteration")
    if not per:
        return []
    lines = []
    for key in IterationsDistortionEvaluator.keys:
        vals = per.get(key) or []
        if any(v is not None for v in vals):
            lines.append(f"  {key} per iteration: " + ", ".join(
                "-" if v is None else f"{v:.5f}" for v in vals))
    return lines


__all__ = ["IterationsDistortionEvaluator", "RestyleBatchOutputs", "invert_batch",
           "per_iteration_lines", "select_evaluators"]
