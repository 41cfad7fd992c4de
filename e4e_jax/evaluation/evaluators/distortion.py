"""Distortion: how close the inversions are to the inputs (paper section 6.1, Table 1).

- mse: mean over images of the per-image mean squared error of clipped inputs vs clipped
  reconstructions (the L2 column);
- lpips: LPIPS (alex) between them (richzhang/PerceptualSimilarity, as the official
  criteria/lpips);
- identity: cosine similarity of ArcFace features (faces, the official `id_loss` network) or
  MoCo features (other domains, `moco_loss`).

Each needs inputs and reconstructions of one size; LPIPS and the similarity networks must also
trace on that size (ArcFace takes 256x256 aligned faces only).
"""
from __future__ import annotations

import numpy as np

from e4e_jax.evaluation.evaluators.base import BatchOutputs, Context, runs_on, set_metric


class DistortionEvaluator:
    """mse, lpips and identity, summed per batch and averaged over the valid images."""

    keys = ("mse", "lpips", "identity")

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.sums = {k: 0.0 for k in self.keys}
        self.lp_reason = self._lpips_reason(ctx)
        self.sim_reason = self._similarity_reason(ctx)
        nets = ctx.nets
        self.sim_fn = (nets.similarity_fn() if nets.similarity is not None
                       and self.sim_reason is None else None)

    @staticmethod
    def _lpips_reason(ctx: Context) -> str | None:
        nets = ctx.nets
        if nets.lpips is None:
            return nets.lpips_reason
        if not ctx.same_size:
            return ctx.size_reason
        out_h, out_w = ctx.out_hw
        err = runs_on(lambda a, b: nets.lpips.module.apply(nets.lpips.variables, a, b),
                       (1, out_h, out_w, 3), (1, out_h, out_w, 3))
        return err and (f"LPIPS-{nets.lpips.net_type} cannot run on {out_h}x{out_w} "
                        f"images: {err}")

    @staticmethod
    def _similarity_reason(ctx: Context) -> str | None:
        nets = ctx.nets
        if nets.similarity is None:
            return nets.similarity_reason
        if not ctx.same_size:
            return ctx.size_reason
        out_h, out_w = ctx.out_hw
        if nets.similarity_kind == "arcface" and (out_h, out_w) != (256, 256):
            return (f"ArcFace identity takes 256x256 aligned faces (it crops rows 35:223, "
                    f"columns 32:220); these images are {out_h}x{out_w}")
        err = runs_on(lambda a: nets.similarity.module.apply(nets.similarity.variables, a),
                       (1, out_h, out_w, 3))
        return err and (f"{nets.similarity_kind} cannot run on {out_h}x{out_w} "
                        f"images: {err}")

    def update(self, out: BatchOutputs) -> None:
        """Adds the batch's per-image values of the valid rows."""
        nets, m = self.ctx.nets, out.m
        if out.mse is not None:
            self.sums["mse"] += float(np.sum(np.asarray(out.mse)[:m]))
        if nets.lpips is not None and self.lp_reason is None:
            self.sums["lpips"] += float(np.sum(np.asarray(nets.lpips(out.xc, out.rc))[:m]))
        if self.sim_fn is not None:
            sims = self.sim_fn(nets.similarity.variables, out.xc, out.rc)
            self.sums["identity"] += float(np.sum(np.asarray(sims)[:m]))

    def finish(self, entry: dict, n: int) -> None:
        """Writes the means over the `n` images (or the reasons)."""
        ctx = self.ctx
        set_metric(entry, "mse", self.sums["mse"] / n if ctx.same_size else None,
                   ctx.size_reason)
        set_metric(entry, "lpips", self.sums["lpips"] / n if self.lp_reason is None else None,
                   self.lp_reason)
        set_metric(entry, "identity",
                   self.sums["identity"] / n if self.sim_reason is None else None,
                   self.sim_reason)
