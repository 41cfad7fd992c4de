"""Proximity to W: how far the inversions are from the generator's W (paper section 8.2).

- latent_variation: mean over inversions of ||w - w_mu||_2, w_mu the mean of the code's W+
  rows (paper section 8.2; 0 for codes in W);
- w_deviation: E ||E(G(w)) - w||_2 over sampled w = mapping(z), z ~ N(0, I) (how well the
  encoder returns to W from the generator's own images).
"""
from __future__ import annotations

from e4e_jax.evaluation.evaluators.base import BatchOutputs, Context, set_metric
from e4e_jax.evaluation.monitoring import BatchMarks


class ProximityEvaluator:
    """latent_variation (per batch) and w_deviation (its own sampling loop)."""

    keys = ("latent_variation", "w_deviation")

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.variation_sum = 0.0

    def update(self, out: BatchOutputs) -> None:
        """Adds the valid rows' latent variation."""
        from e4e_jax.evaluation import metrics
        m = out.m
        self.variation_sum += metrics.latent_variation(out.w_np[:m], batch_size=self.ctx.bs) * m

    def deviation_reason(self) -> str | None:
        """Why w_deviation cannot run (disabled, sizes, a conditional generator), or None."""
        g = self.ctx.inv.generator
        if int(self.ctx.options.deviation_samples) <= 0:
            return "disabled with --deviation_samples 0"
        if self.ctx.generation_reason:
            return self.ctx.generation_reason
        if g.c_dim:
            return (f"the generator is conditional (c_dim={g.c_dim}); "
                    f"w = mapping(z) needs class labels")
        return None

    def finish(self, entry: dict, n: int) -> None:
        """Writes latent_variation, then samples w for w_deviation."""
        from e4e_jax.evaluation import metrics
        ctx = self.ctx
        set_metric(entry, "latent_variation", self.variation_sum / n)
        reason = self.deviation_reason()
        if reason:
            set_metric(entry, "w_deviation", None, reason)
            return
        g, bs, name, progress = ctx.inv.generator, ctx.bs, ctx.name, ctx.progress
        samples = int(ctx.options.deviation_samples)
        dev_marks = BatchMarks(ctx.counter)
        dev_done = [0]

        def mapping(z):
            dev_marks.mark()
            dev_done[0] += 1
            progress(name, "W deviation", min(dev_done[0] * bs, samples), samples)
            w = g.mapping(z)
            return w[:, 0] if w.ndim == 3 else w  # StyleGAN3's mapping gives W+ (equal rows)

        progress(name, "W deviation", 0, samples)
        dev = metrics.latent_deviation(ctx.inv.encode, lambda w: ctx.decode(ctx.gv, w), mapping,
                                       ctx.inv.n_latent, n_samples=samples, batch_size=bs,
                                       seed=ctx.options.seed, style_dim=g.z_dim)
        set_metric(entry, "w_deviation", dev)
        ctx.marks["deviation"] = dev_marks.after_second_batch()
