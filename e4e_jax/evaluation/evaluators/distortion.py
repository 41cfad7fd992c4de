"""Distortion: how close the inversions are to the inputs (paper section 6.1, Table 1).

- mse: mean over images of the per-image mean squared error of inputs vs reconstructions, both
  clipped to [-1, 1] (what a saved image holds; the L2 column), in the model's [-1, 1] scale at
  its output size;
- mse_raw (only with `raw=True`, the training loop's held-out figure): the same without the
  clipping, i.e. on the values the encoder saw and the generator made;
- lpips: LPIPS (alex) between the clipped images (richzhang/PerceptualSimilarity, as the
  official criteria/lpips);
- identity: cosine similarity of ArcFace features (faces, the official `id_loss` network) or
  MoCo features (other domains, `moco_loss`) of the clipped images.

eval.py and the training loop (config.evals, e4e_jax.train.validation) run this same class, so
eval's `mse` of an export and training's `mse` of the state it exported are one figure. Each
metric needs inputs and reconstructions of one size; LPIPS and the similarity networks must
also trace on that size (ArcFace takes 256x256 aligned faces only).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from e4e_jax.evaluation.evaluators.base import (
    BatchOutputs,
    per_image_mse,
    runs_on,
    set_metric,
    size_reason,
)
from e4e_jax.models.lpips import check_input_size


class DistortionEvaluator:
    """mse (+ mse_raw), lpips and identity: per-image values of the valid rows, averaged.

    nets: an e4e_jax.evaluation.networks.Networks (absent networks carry their reasons);
    in_hw / out_hw: the encoder's input size and the reconstructions' size (H, W)."""

    keys = ("mse", "lpips", "identity")

    def __init__(self, nets, in_hw: Sequence[int], out_hw: Sequence[int], raw: bool = False):
        self.nets = nets
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)
        self.raw = bool(raw)
        self.size_reason = None if self.in_hw == self.out_hw else size_reason(in_hw, out_hw)
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in self.keys + ("mse_raw",)}
        self.lp_reason = self._lpips_reason()
        self.sim_reason = self._similarity_reason()
        self.sim_fn = (nets.similarity_fn() if nets.similarity is not None
                       and self.sim_reason is None else None)

    @classmethod
    def for_context(cls, ctx) -> "DistortionEvaluator":
        """eval.py's evaluator of one checkpoint (an evaluators.base.Context)."""
        return cls(ctx.nets, ctx.in_hw, ctx.out_hw)

    def _lpips_reason(self) -> str | None:
        nets = self.nets
        if nets.lpips is None:
            return nets.lpips_reason
        if self.size_reason:
            return self.size_reason
        out_h, out_w = self.out_hw
        try:    # below the backbone's minimum a feature map is empty: NaN, not an error
            check_input_size(nets.lpips.net_type, (out_h, out_w), "a reconstruction")
        except ValueError as e:
            return str(e)
        err = runs_on(lambda a, b: nets.lpips.module.apply(nets.lpips.variables, a, b),
                      (1, out_h, out_w, 3), (1, out_h, out_w, 3))
        return err and (f"LPIPS-{nets.lpips.net_type} cannot run on {out_h}x{out_w} "
                        f"images: {err}")

    def _similarity_reason(self) -> str | None:
        nets = self.nets
        if nets.similarity is None:
            return nets.similarity_reason
        if self.size_reason:
            return self.size_reason
        out_h, out_w = self.out_hw
        if nets.similarity_kind == "arcface" and (out_h, out_w) != (256, 256):
            return (f"ArcFace identity takes 256x256 aligned faces (it crops rows 35:223, "
                    f"columns 32:220); these images are {out_h}x{out_w}")
        err = runs_on(lambda a: nets.similarity.module.apply(nets.similarity.variables, a),
                      (1, out_h, out_w, 3))
        return err and (f"{nets.similarity_kind} cannot run on {out_h}x{out_w} "
                        f"images: {err}")

    def update(self, out: BatchOutputs) -> None:
        """Keeps the batch's per-image values of its `out.m` valid rows."""
        nets, m = self.nets, out.m
        if self.size_reason is None:
            self.values["mse"].append(per_image_mse(out.xc_np[:m], out.rc_np[:m]))
            if self.raw:
                self.values["mse_raw"].append(
                    per_image_mse(np.asarray(out.x)[:m], np.asarray(out.rec)[:m]))
        if nets.lpips is not None and self.lp_reason is None:
            self.values["lpips"].append(np.asarray(nets.lpips(out.xc, out.rc))[:m])
        if self.sim_fn is not None:
            sims = self.sim_fn(nets.similarity.variables, out.xc, out.rc)
            self.values["identity"].append(np.asarray(sims)[:m])

    def mean(self, key: str) -> float | None:
        """The float32 mean of `key`'s per-image values so far (None: none kept)."""
        values = self.values[key]
        return float(np.mean(np.concatenate(values))) if values else None

    def finish(self, entry: dict, n: int) -> None:
        """Writes the means over the `n` valid images seen by `update` (or the reasons)."""
        set_metric(entry, "mse", self.mean("mse") if self.size_reason is None else None,
                   self.size_reason)
        if self.raw:
            set_metric(entry, "mse_raw",
                       self.mean("mse_raw") if self.size_reason is None else None,
                       self.size_reason)
        set_metric(entry, "lpips", self.mean("lpips") if self.lp_reason is None else None,
                   self.lp_reason)
        set_metric(entry, "identity",
                   self.mean("identity") if self.sim_reason is None else None,
                   self.sim_reason)
