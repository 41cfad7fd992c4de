"""Evaluation (eval.py): every metric of the paper for one or more encoder checkpoints, and the report.

    python eval.py --checkpoint runs/demo/export --data synthetic --out eval/
    python eval.py --checkpoint e4e_ffhq --checkpoint psp_ffhq --data celeba_test/ --out eval/ \\
        --lpips weights/lpips_alex --arcface weights/arcface --inception weights/fid_inception \\
        --edits interfacegan:age.pt:3 --lec_edit interfacegan:age.pt:3

Writes OUT/metrics.json ({checkpoint name: entry}), OUT/report.md, and per checkpoint
OUT/<name>/inversions.png and OUT/<name>/edits.png (linked from the report).

An entry maps every metric key of METRICS to a number, or to null with a `<key>_reason` string
saying why it is unavailable (e.g. "no --lpips directory given"), plus the metadata keys of
METADATA (checkpoint path, image_size, num_images, ...). Checkpoints are keyed by the basename of
their directory; a repeated basename gets a suffix: export, export-2, export-3.

Comparisons: inputs at the model's input size (image_io, like the official test transform) in
[-1, 1]; reconstructions are the Inverter's (face_pool, cars crop) clipped to [-1, 1] (what a
saved image holds) and not rounded to uint8. The comparison size is the model's own output size
(256x256 for the official models, 32x32 for the demo; recorded as image_size); nothing is
resampled. On the synthetic domain the encoder sees the generated images as in training and
both sides are clipped for every image comparison.

Everything runs in fixed-size batches (e4e_jax.data.loader's rule: the last one padded with zero
rows, which are dropped), so each jitted function compiles once; `recompilations` in an entry counts compilations after the second
batch of each loop (0: every later batch, the padded last one included, reused the programs).

Modules: `metrics/` (FID, SWD, LEC, proximity to W as functions), `evaluators/` (`base`: the
metric table, options, context, entries; one evaluator per metric family: `distortion`,
`distribution`, `editability`, `proximity`), `networks` (the optional metric networks),
`monitoring` (compile counting, progress), `cost` (the plan and ETA), `report` (report.md,
metrics.json entries, grids). The training loop runs the distortion evaluator on its held-out
images (config.evals, e4e_jax.train.validation), so its `mse` is this `mse`. The loop over checkpoints is the eval command's library,
e4e_jax/apps/evaluate.py (evaluate_checkpoint, run); its flags are e4e_jax/cli/eval.py.
"""
from __future__ import annotations

from e4e_jax.data.loader import Batch, SourceImages, pad_batch
from e4e_jax.data.synthetic import SyntheticImages
from e4e_jax.evaluation.evaluators.base import (
                                     LEC_GROUP_SIZE,
                                     METADATA,
                                     METRIC_KEYS,
                                     METRICS,
                                     SYNTHETIC,
                                     Context,
                                     EvalError,
                                     EvalOptions,
)
from e4e_jax.evaluation.evaluators.distortion import DistortionEvaluator
from e4e_jax.evaluation.evaluators.distribution import DistributionEvaluator
from e4e_jax.evaluation.evaluators.editability import EditabilityEvaluator
from e4e_jax.evaluation.evaluators.proximity import ProximityEvaluator
from e4e_jax.evaluation.monitoring import CompileCounter, ProgressPrinter
from e4e_jax.evaluation.networks import Networks, load_networks
from e4e_jax.evaluation.report import write_report

__all__ = ["Batch", "CompileCounter", "Context", "DistortionEvaluator", "DistributionEvaluator",
           "EditabilityEvaluator", "EvalError", "EvalOptions", "LEC_GROUP_SIZE", "METADATA",
           "METRICS", "METRIC_KEYS", "Networks", "ProgressPrinter", "ProximityEvaluator",
           "SYNTHETIC", "SourceImages", "SyntheticImages", "load_networks", "pad_batch",
           "write_report"]
