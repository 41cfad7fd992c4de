"""Evaluation of checkpoints: a loop over the evaluators the options select.

    entry = evaluate_checkpoint(inv, SyntheticImages(100), Networks(), EvalOptions())
    results = run(["runs/demo/export"], "synthetic", "eval/")     # + metrics.json, report.md

Comparisons: inputs at the model's input size (image_io, like the official test transform) in
[-1, 1]; reconstructions are the Inverter's (face_pool, cars crop) clipped to [-1, 1] and not
rounded to uint8, compared at the model's own output size (recorded as image_size; nothing is
resampled). One inversion pass feeds every evaluator's `update`; then each evaluator's `finish`
writes its entries (LEC and W deviation run their own passes). Every batch has a fixed size
(padded, padding dropped) so each jitted function compiles once; `recompilations` counts
compilations after the second batch of each loop.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from e4e_jax.apps import evaluate_restyle
from e4e_jax.core import fs
from e4e_jax.data import image_io
from e4e_jax.data.sources import DataError
from e4e_jax.evaluation.cost import EtaTracker, cost_plan, describe
from e4e_jax.evaluation.evaluators.base import (
    METRIC_KEYS,
    SYNTHETIC,
    BatchOutputs,
    Context,
    EvalError,
    EvalOptions,
    NothingEvaluatedError,
    batch_outputs,
    clip_images,
    edit_id,
)
from e4e_jax.evaluation.evaluators.distortion import DistortionEvaluator
from e4e_jax.evaluation.evaluators.distribution import DistributionEvaluator
from e4e_jax.evaluation.evaluators.editability import EditabilityEvaluator
from e4e_jax.evaluation.evaluators.proximity import ProximityEvaluator
from e4e_jax.evaluation.monitoring import BatchMarks, CompileCounter, ProgressPrinter
from e4e_jax.evaluation.networks import Networks
from e4e_jax.evaluation.report import format_metric, json_entry, write_grids, write_report
from e4e_jax.inversion import restyle


def open_data(spec: str, data_dir: str | None = None, num_images: int | None = None,
              seed: int = 0):
    """'synthetic' | 'tfds:NAME:SPLIT' | an image folder -> SyntheticImages / SourceImages
    (e4e_jax.data: the synthetic set of key(seed) with stored noise, or the first num_images
    files). Raises EvalError for a bad spec or count, or a missing / empty source."""
    from e4e_jax.data.loader import SourceImages
    from e4e_jax.data.sources import make_source
    from e4e_jax.data.synthetic import SyntheticImages
    if spec == SYNTHETIC:
        try:
            return SyntheticImages(1000 if num_images is None else num_images, seed)
        except DataError as e:
            raise EvalError(str(e)) from e
    if num_images is not None and num_images < 1:
        raise EvalError(f"--num_images must be >= 1, got {num_images}.")
    if not spec.startswith("tfds:") and not fs.isdir(spec):
        raise EvalError(f"--input {spec!r} is not a folder, 'tfds:NAME:SPLIT' or 'synthetic'.")
    try:
        source = make_source(spec, data_dir)
    except DataError as e:
        raise EvalError(str(e)) from e
    return SourceImages(source, repr(source), num_images)


def make_context(inv, data, nets: Networks, options: EvalOptions, name: str,
                 progress: Callable) -> Context:
    """Loads the edits for this model and measures its reconstruction size.

    Raises EvalError for a bad batch size or an edit that does not fit the model.
    """
    import jax
    import jax.numpy as jnp

    from e4e_jax.editing.prepared import prepare_edits
    from e4e_jax.editing.spec import EditSpecError, parse_edit_spec
    from e4e_jax.nets.encoder import make_decoder
    bs = int(options.batch_size)
    if bs < 1:
        raise EvalError(f"--batch_size must be >= 1, got {bs}.")
    lec_spec = parse_edit_spec(options.lec_edit) if options.lec_edit else None
    edit_specs = ([lec_spec] if lec_spec else []) if options.edits is None else \
        [parse_edit_spec(e) for e in options.edits]
    try:
        prepared = prepare_edits(edit_specs + ([lec_spec] if lec_spec else []), inv.generator,
                                 inv.n_latent)
        edits = prepared[:len(edit_specs)]
        lec_edit = prepared[-1] if lec_spec else None
    except EditSpecError as e:
        raise EvalError(f"{name}: {e}") from e
    decode = make_decoder(inv)
    gv = inv.generator.variables
    out_shape = jax.eval_shape(decode, gv, jax.ShapeDtypeStruct(
        (1, inv.n_latent, inv.generator.style_dim), jnp.float32)).shape
    return Context(inv=inv, data=data, nets=nets, options=options, name=name,
                   progress=progress, bs=bs, decode=decode, gv=gv,
                   in_hw=tuple(inv.input_size), out_hw=(int(out_shape[1]), int(out_shape[2])),
                   edits=edits, lec_edit=lec_edit, lec_spec=lec_spec)


def metadata(ctx: Context) -> dict:
    """The METADATA part of an entry known before any batch runs."""
    nets, options, lec_spec = ctx.nets, ctx.options, ctx.lec_spec
    return {
        "checkpoint": None, "model": repr(ctx.inv), "data": ctx.data.description,
        "num_images": None, "image_size": list(ctx.out_hw), "skipped_images": [],
        "edits": [edit_id(p.spec, p.spec.default_strength) for p in ctx.edits],
        "lec_edit": None if ctx.lec_edit is None else edit_id(lec_spec,
                                                               lec_spec.default_strength),
        "deviation_samples": int(options.deviation_samples),
        "lpips_net": None if nets.lpips is None else nets.lpips.net_type,
        "identity_net": nets.similarity_kind, "fid_method": options.fid_method,
    }


def select_evaluators(ctx: Context) -> list:
    """The metric families, in report order (editability reads distribution's real images)."""
    if restyle.is_restyle(ctx.inv):   # per-iteration distortion (apps/evaluate_restyle.py)
        return evaluate_restyle.select_evaluators(ctx)
    distribution = DistributionEvaluator(ctx)
    return [DistortionEvaluator.for_context(ctx), distribution,
            EditabilityEvaluator(ctx, distribution), ProximityEvaluator(ctx)]


def invert_batch(ctx: Context, batch) -> BatchOutputs:
    """Inverts one padded batch, clips both sides and decodes every --edits edit."""
    if restyle.is_restyle(ctx.inv):
        return evaluate_restyle.invert_batch(ctx, batch)
    w, rec = ctx.inv.invert(batch.images)
    edited = []
    for p in ctx.edits:
        we = p.apply(w, (p.spec.default_strength,))
        edited.append(np.asarray(clip_images(ctx.decode(ctx.gv, we.reshape(we.shape[:1]
                                                                           + we.shape[2:])))))
    return batch_outputs(batch.images, rec, w, batch.valid, edited)


def inversion_pass(ctx: Context, evaluators: Sequence, grid_rows: list) -> int:
    """One pass over the data feeding every evaluator; returns the number of valid images.

    Appends up to options.num_grid rows of uint8 (source, inversion, edits) to `grid_rows`.
    """
    marks = BatchMarks(ctx.counter)
    n, total = 0, len(ctx.data)
    ctx.progress(ctx.name, "inversion metrics", 0, total)
    for batch in ctx.data.batches(ctx.inv, ctx.bs):
        marks.mark()
        out = invert_batch(ctx, batch)
        for ev in evaluators:
            ev.update(out)
        for i in range(min(out.m, ctx.options.num_grid - len(grid_rows))):
            grid_rows.append({"name": batch.names[i],
                              "source": image_io.to_uint8(out.xc_np[i]),
                              "inversion": image_io.to_uint8(out.rc_np[i]),
                              "edits": [image_io.to_uint8(im[i]) for im in out.edited]})
        n += out.m
        ctx.progress(ctx.name, "inversion metrics", n, total)
    ctx.marks["inversion"] = marks.after_second_batch()
    return n


def evaluate_checkpoint(inv, data, nets: Networks, options: EvalOptions, name: str = "model",
                        grid_dir: str | None = None, progress: Callable | None = None) -> dict:
    """Every metric for one loaded Inverter over `data` (SourceImages / SyntheticImages).

    Returns the metrics.json entry (METRICS keys as floats or None + `<key>_reason`, METADATA
    keys); with `grid_dir`, writes inversions.png and edits.png there (their paths are returned
    under 'grids'). Raises EvalError for bad options, unfitting edits or no readable image.
    """
    t0 = time.perf_counter()
    ctx = make_context(inv, data, nets, options, name, progress or (lambda *a: None))
    entry: dict[str, Any] = metadata(ctx)
    evaluators = select_evaluators(ctx)
    grid_rows: list[dict] = []
    with CompileCounter() as counter:
        ctx.counter = counter
        n = inversion_pass(ctx, evaluators, grid_rows)
        entry["num_images"] = n
        entry["skipped_images"] = list(data.skipped)
        if n == 0:
            raise NothingEvaluatedError(f"{name}: no readable images in {data.description}.")
        for ev in evaluators:
            ev.finish(entry, n)
    entry["recompilations"] = ctx.marks
    if grid_dir is not None and grid_rows:
        entry["grids"] = write_grids(grid_dir, grid_rows, ctx.edits)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def run(checkpoints_: Sequence[str], data: str, out: str, data_dir: str | None = None,
        num_images: int | None = None, nets: Networks | None = None,
        options: EvalOptions | None = None, argv: Sequence[str] | None = None,
        progress: Callable | None = None, log=None,
        loader_kwargs: dict | None = None, overwrite: bool = False,
        command: str = "python eval.py") -> dict[str, dict]:
    """Evaluates every checkpoint; writes OUT/metrics.json and OUT/report.md after each one.

    Prints the cost of each metric (network passes, evaluation.cost) before the first model
    runs and an ETA once the first batches are timed. `loader_kwargs` (dtype / precision) go
    to load_encoder. Returns {checkpoint name: entry}. Raises EvalError / ModelDirError /
    EditSpecError for bad arguments before any model work (an OUT that already holds a
    metrics.json is one, unless `overwrite`), NothingEvaluatedError when no image could be read.
    """
    log = log or sys.stderr
    from e4e_jax.editing.spec import parse_edit_spec
    from e4e_jax.nets.encoder import check_checkpoint, checkpoint_names, load_encoder
    options = options or EvalOptions()
    if not checkpoints_:
        raise EvalError("give at least one --checkpoint DIR.")
    for c in checkpoints_:
        check_checkpoint(c)
    for spec in list(options.edits or []) + ([options.lec_edit] if options.lec_edit else []):
        parse_edit_spec(spec)                      # syntax errors before any work
    if not overwrite and fs.exists(fs.join(out, "metrics.json")):
        raise EvalError(f"{fs.join(out, 'metrics.json')} exists (an earlier eval); pass "
                        f"--overwrite to replace it, or another --output.")
    images = open_data(data, data_dir, num_images, options.seed)
    nets = nets or Networks()
    target = out
    stage = fs.OutputFolder(target)    # a bucket --output: written locally, uploaded per model
    out = stage.local
    names = checkpoint_names(checkpoints_)
    printer = progress or ProgressPrinter(log)
    n_edits = (1 if options.lec_edit else 0) if options.edits is None else len(options.edits)
    plan = cost_plan(len(images), options, n_edits, nets.inception is not None)
    print(describe(plan, len(checkpoints_)), file=log)
    progress = EtaTracker(plan, len(checkpoints_), printer)
    loaded: dict[str, Any] = {}
    results: dict[str, dict] = {}
    for name, path in zip(names, checkpoints_):
        real = os.path.realpath(path)
        if real not in loaded:                    # the same directory twice: one compilation
            loaded[real] = load_encoder(path, **(loader_kwargs or {}))
        inv = loaded[real]
        print(f"[{name}] evaluating {inv} on {images.description} ({len(images)} images)",
              file=log)
        entry = evaluate_checkpoint(inv, images, nets, options, name=name,
                                    grid_dir=os.path.join(out, name), progress=progress)
        entry["checkpoint"] = os.path.abspath(path)
        results[name] = entry
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({k: json_entry(v, out) for k, v in results.items()}, f, indent=2)
        write_report(out, results, argv, images.description, command=command)
        stage.sync(force=True)
        summary = ", ".join(f"{k} {format_metric(entry.get(k))}" for k in METRIC_KEYS)
        print(f"[{name}] {summary} ({entry['seconds']} s)", file=log)
        for line in evaluate_restyle.per_iteration_lines(entry):
            print(f"[{name}]{line}", file=log)
    stage.close()
    print(f"wrote {fs.join(target, 'metrics.json')} and {fs.join(target, 'report.md')} "
          f"({len(results)} checkpoint(s))", file=log)
    return results
