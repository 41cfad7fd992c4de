"""Editability: edited inversions vs real images, and Latent Editing Consistency (section 6.2).

- swd_edit / fid_edit: SWD and FID between the real images and the decoded edits of the
  inversions at each --edits spec's strength (per-edit entries `swd_edit/<edit>` and
  `fid_edit/<edit>`, and their means);
- lec: Latent Editing Consistency, eq. 8: E(G(f^-1(E(G(f(E(x))))))) vs E(x), averaged over
  groups of LEC_GROUP_SIZE images like the official `scripts/calc_losses_on_images.py`
  LEC script (omertov/encoder4editing metrics/LEC.py).

The edit FID/SWD reuse the real-image statistics of the distribution evaluator.
"""
from __future__ import annotations

import collections

import numpy as np

from e4e_jax.evaluation.evaluators.base import (
    LEC_GROUP_SIZE,
    BatchOutputs,
    Context,
    edit_id,
    reason_for_all,
    set_metric,
)
from e4e_jax.evaluation.monitoring import BatchMarks


class EditabilityEvaluator:
    """swd_edit / fid_edit over --edits (per edit and mean) and lec of --lec_edit."""

    keys = ("swd_edit", "fid_edit", "lec")

    def __init__(self, ctx: Context, real):
        from e4e_jax.evaluation import metrics
        self.ctx = ctx
        self.real = real            # the DistributionEvaluator (real-image statistics)
        self.swd_edits = ([metrics.SWDDescriptors(**real.swd_kw) for _ in ctx.edits]
                          if real.swd_reason is None else [])
        self.feats: dict[str, list] = collections.defaultdict(list)

    def update(self, out: BatchOutputs) -> None:
        """Adds the valid rows of each decoded edit to its SWD descriptors / features."""
        m, inception = out.m, self.ctx.nets.inception
        for e, img in enumerate(out.edited):
            if self.swd_edits:
                self.swd_edits[e].add(img[:m])
            if inception is not None:
                self.feats[f"edit{e}"].append(inception.features(img[:m], batch_size=self.ctx.bs))

    def finish(self, entry: dict, n: int) -> None:
        """Writes the edit FID/SWD entries, then runs the LEC loop (its own pass over data)."""
        self._edit_distribution(entry)
        self._lec(entry, n)

    def _edit_distribution(self, entry: dict) -> None:
        from e4e_jax.evaluation import metrics
        ctx, real = self.ctx, self.real
        options, edits = ctx.options, ctx.edits
        if not edits:
            why = "no --edits given" if options.edits is not None else "no edit (--lec_edit none)"
            reason_for_all(entry, ("swd_edit", "fid_edit"), why)
            return
        swd_values, fid_values = [], []
        for e, p in enumerate(edits):
            eid = edit_id(p.spec, p.spec.default_strength)
            if real.swd_reason is None:
                v = metrics.swd_between(real.swd_real, self.swd_edits[e],
                                        seed=options.seed)["swd"]
                set_metric(entry, f"swd_edit/{eid}", v)
                swd_values.append(v)
            if real.fid_reason is None:
                v = metrics.fid_from_features(real.fid_real, np.concatenate(self.feats[f"edit{e}"]),
                                              method=options.fid_method)
                set_metric(entry, f"fid_edit/{eid}", v)
                fid_values.append(v)
        set_metric(entry, "swd_edit", np.mean(swd_values) if swd_values else None,
                   real.swd_reason)
        set_metric(entry, "fid_edit", np.mean(fid_values) if fid_values else None,
                   real.fid_reason)

    def lec_reason(self, n: int) -> str | None:
        """Why LEC cannot run (disabled, sizes, fewer images than one group), or None."""
        if self.ctx.lec_edit is None:
            return "disabled with --lec_edit none"
        if self.ctx.generation_reason:
            return self.ctx.generation_reason
        if n < LEC_GROUP_SIZE:
            return (f"LEC averages groups of {LEC_GROUP_SIZE} images (the "
                    f"official batch) and needs at least {LEC_GROUP_SIZE}, "
                    f"got {n}")
        return None

    def _lec(self, entry: dict, n: int) -> None:
        from e4e_jax.evaluation import metrics
        ctx = self.ctx
        reason = self.lec_reason(n)
        if reason:
            set_metric(entry, "lec", None, reason)
            return
        bs, inv, name, progress = ctx.bs, ctx.inv, ctx.name, ctx.progress
        lec_marks = BatchMarks(ctx.counter)
        linear = ctx.lec_edit.linear()

        def lec_forward(codes):
            lec_marks.mark()        # called once per batch, after its first encode
            return linear(codes)

        lec_done = [0]

        def lec_inverse(codes):
            lec_done[0] += 1
            progress(name, "LEC", min(lec_done[0] * bs, n), n)
            return linear.inverse(codes)

        batches = (b.images[:b.valid] for b in ctx.data.batches(inv, bs))
        progress(name, "LEC", 0, n)
        lec = metrics.latent_editing_consistency(
            batches, inv.encode, lambda w: ctx.decode(ctx.gv, w), lec_forward, lec_inverse,
            batch_size=bs, group_size=LEC_GROUP_SIZE)
        set_metric(entry, "lec", lec)
        ctx.marks["lec"] = lec_marks.after_second_batch()
