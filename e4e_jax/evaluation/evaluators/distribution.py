"""Perception: how the distribution of inversions compares with the real images (Table 1).

- swd: sliced Wasserstein distance x1e3 over a Laplacian pyramid (Karras et al. 2018, the
  progressive_growing_of_gans `sliced_wasserstein.py` the paper uses), plus its per-level
  `swd_<res>` entries;
- fid: Frechet Inception distance (mseitzer/pytorch-fid, FID Inception weights).

The real-image statistics gathered here are reused by the editability evaluator (edit FID/SWD).
"""
from __future__ import annotations

import collections

import numpy as np

from e4e_jax.evaluation.evaluators.base import BatchOutputs, Context, set_metric


def swd_reason(ctx: Context) -> str | None:
    """Why SWD cannot run on the reconstructions' size, or None."""
    from e4e_jax.evaluation import metrics
    out_h, out_w = ctx.out_hw
    levels = metrics.swd_resolutions(out_h)
    if not levels:
        return (f"SWD needs images of at least {metrics.SWD_MIN_RESOLUTION}px, these are "
                f"{out_h}x{out_w}")
    if out_h % 2 ** (len(levels) - 1) or out_w % 2 ** (len(levels) - 1):
        return (f"SWD's {len(levels)}-level pyramid needs sizes divisible by "
                f"{2 ** (len(levels) - 1)}, these are {out_h}x{out_w}")
    if not ctx.same_size:
        return ctx.size_reason
    return None


class DistributionEvaluator:
    """swd (with per-level entries) and fid of real images vs inversions."""

    keys = ("swd", "fid")

    def __init__(self, ctx: Context):
        from e4e_jax.evaluation import metrics
        self.ctx = ctx
        self.swd_reason = swd_reason(ctx)
        self.swd_kw = dict(seed=ctx.options.seed, batch_size=ctx.bs)
        ok = self.swd_reason is None
        self.swd_real = metrics.SWDDescriptors(**self.swd_kw) if ok else None
        self.swd_rec = metrics.SWDDescriptors(**self.swd_kw) if ok else None
        self.feats: dict[str, list] = collections.defaultdict(list)
        self.fid_reason: str | None = None
        self.fid_real = None        # (n, 2048) real-image Inception features after finish

    def update(self, out: BatchOutputs) -> None:
        """Adds the valid rows' SWD descriptors and Inception features."""
        m, bs, inception = out.m, self.ctx.bs, self.ctx.nets.inception
        if self.swd_real is not None:
            self.swd_real.add(out.xc_np[:m])
            self.swd_rec.add(out.rc_np[:m])
        if inception is not None:
            self.feats["real"].append(inception.features(out.xc_np[:m], batch_size=bs))
            self.feats["rec"].append(inception.features(out.rc_np[:m], batch_size=bs))

    def finish(self, entry: dict, n: int) -> None:
        """Writes swd, its levels and fid (or the reasons)."""
        from e4e_jax.evaluation import metrics
        options = self.ctx.options
        if self.swd_reason is None:
            res = metrics.swd_between(self.swd_real, self.swd_rec, seed=options.seed)
            for k, v in res.items():
                set_metric(entry, k, v)
        else:
            set_metric(entry, "swd", None, self.swd_reason)
        fid_reason = self.ctx.nets.inception_reason
        if fid_reason is None and n < 2:
            fid_reason = f"FID needs at least 2 images, got {n}"
        self.fid_reason = fid_reason
        self.fid_real = np.concatenate(self.feats["real"]) if fid_reason is None else None
        set_metric(entry, "fid", None if fid_reason else metrics.fid_from_features(
            self.fid_real, np.concatenate(self.feats["rec"]), method=options.fid_method),
            fid_reason)
