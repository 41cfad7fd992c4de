"""The training loop around the pure step: build, restore, step, log, evaluate, save, export.

    summary = train_and_evaluate(config, workdir)

Side effects live here (train.py is a thin CLI over this module): clu metric writers
(TensorBoard and WORKDIR/metrics.jsonl; absl's log of every scalar only with `verbose`), one
console line per logging interval (step, loss, steps/s, ETA) and progress reports, image grids
(input | reconstruction), the evaluations of config.evals (train/validation.py: eval.py's
distortion evaluator on the held-out images, the validation losses), orbax checkpoints
(train/checkpointing.py) restored on start so that a killed run resumes exactly; a non-finite
loss stops the run naming the step and the loss term, and checkpoints are only ever written from
finite steps; at the end WORKDIR/export/ (an inference directory for e4e_jax.load_encoder, the
encoding command and eval.py) and WORKDIR/summary.json.

Each iteration is `train_one_step`, `log_step`, `write_images`, `evaluate_at`, `save_at` on a
`Run` (the loop's bookkeeping around the Setup and the TrainState). SIGTERM / SIGINT
(train/interrupts.py) set `Run.stop_requested`: the loop saves the current step
(`save_at(..., force=True)`), leaves, and raises interrupts.Interrupted (train.py: one line,
exit 143 / 130). Every checkpoint's metadata (best_val_loss, last_train_metrics,
unreadable_images, the held-out figures before training) is the value after its step, so a
resumed run's summary.json equals an uninterrupted run's. Rerunning a finished run trains
nothing and leaves its summary.json untouched.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Iterator

import jax
import numpy as np

from e4e_jax.data import image_io
from e4e_jax.data.loader import pad_batch
from e4e_jax.data.train_sets import TrainData
from e4e_jax.outputs.grids import labelled_reconstruction_grid
from e4e_jax.outputs.progress import AFTER_COMPILE, duration
from e4e_jax.train.checkpointing import (
    checkpoint_managers,
    export,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from e4e_jax.train.checks import check_workdir, preflight
from e4e_jax.train.console import say
from e4e_jax.train.errors import ConfigError, TrainingError
from e4e_jax.train.interrupts import StopSignals
from e4e_jax.train.setup import (
    Setup,
    build,
    create_train_state,
    host_to_global,
    maybe_initialize_distributed,
    to_global,
    to_host,
)
from e4e_jax.train.validation import Evaluation, holdout_evaluation, make_evaluations


def _check_finite(step: int, metrics: dict) -> None:
    """Raises TrainingError naming the non-finite loss terms of `step`."""
    bad = sorted(k for k, v in metrics.items() if k != "all_finite"
                 and not np.all(np.isfinite(np.asarray(v))))
    raise TrainingError(f"non-finite loss at step {step}: {', '.join(bad) or 'unknown term'} "
                        f"(values: {', '.join(f'{k}={float(np.asarray(metrics[k])):g}' for k in bad)}"
                        f"). The last good checkpoint is kept; lower the learning rate or check "
                        f"the inputs.")


def _host_metrics(pending):
    """(step, metrics) with the metrics copied to the host."""
    step, metrics = pending
    return step, to_host(metrics)


def flat_config(config, prefix: str = "") -> dict:
    """{"a.b.c": value} of a nested config (the hparams written at step 0)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if hasattr(v, "items"):
            out.update(flat_config(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.5f}"


def change_note(before: float | None, after: float | None) -> str:
    """` (x% lower)` / ` (x% higher)` / ` (unchanged)` of a figure going from `before` to
    `after` (empty when either is missing or `before` is 0)."""
    if not before or after is None:
        return ""
    change = 100 * (after - before) / before
    if f"{abs(change):.1f}" == "0.0":
        return " (unchanged)"
    return f" ({abs(change):.1f}% {'higher' if change > 0 else 'lower'})"


RUN_CONFIG = "train_config.json"
# the fields that shape the TrainState a checkpoint holds (a resumed run must keep them)
ARCHITECTURE_FIELDS = ("encoder.", "generator.", "generator_class", "data.input_size",
                       "output.", "optimizer.name", "discriminator.use_w_pool",
                       "discriminator.w_pool_size", "losses.adv")
NOT_ARCHITECTURE = ("encoder.arcface",)          # where the initial weights were read from


def _jsonable(config) -> dict:
    return json.loads(json.dumps(flat_config(config), default=str))


def check_run_config(config, workdir: str) -> None:
    """WORKDIR/train_config.json records a new run's config; a resumed run must have the same
    architecture (ARCHITECTURE_FIELDS), else ConfigError (exit 2) names the fields that differ."""
    path = os.path.join(workdir, RUN_CONFIG)
    now = _jsonable(config)
    if latest_checkpoint(workdir) is None:
        if jax.process_index() == 0:
            with open(path, "w") as f:
                json.dump(now, f, indent=2)
        return
    if not os.path.isfile(path):
        return                                   # a workdir from before the record was kept
    with open(path) as f:
        then = json.load(f)
    diff = [k for k in sorted(set(then) | set(now)) if k.startswith(ARCHITECTURE_FIELDS)
            and k not in NOT_ARCHITECTURE and then.get(k, "<unset>") != now.get(k, "<unset>")]
    if diff:
        shown = "; ".join(f"{k}={then.get(k, '<unset>')} there, {now.get(k, '<unset>')} now"
                          for k in diff)
        raise ConfigError(
            f"--workdir {workdir} was made with another configuration ({shown}); use "
            f"another --workdir, or rerun with the original settings ({path}).")


@dataclasses.dataclass
class Run:
    """The loop's bookkeeping of one run: what the named steps read and update besides the
    Setup (everything static, the frozen weights, the jitted functions) and the TrainState."""
    workdir: str
    setup: Setup
    data: TrainData
    evaluations: dict[str, Evaluation]
    state: Any
    periodic: Any                 # orbax CheckpointManager of WORKDIR/checkpoints
    best: Any                     # orbax CheckpointManager of WORKDIR/best
    meta: dict                    # saved with every checkpoint (values after its step)
    start: int
    writer: Any = None
    hooks: list = dataclasses.field(default_factory=list)
    train_iter: Iterator | None = None
    pending: tuple | None = None  # (step, metrics) checked one step late (device stays busy)
    last_log_time: float = 0.0
    last_log_step: int = 0
    last_train: dict = dataclasses.field(default_factory=dict)
    stop_requested: bool = False  # set after a step when a SIGTERM/SIGINT arrived
    verbose: bool = False         # the metric writer also logs every scalar (absl INFO)

    @property
    def config(self):
        return self.setup.config

    @property
    def max_steps(self) -> int:
        return int(self.setup.config.max_steps)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0


def start_run(config, workdir: str) -> Run:
    """Builds everything, restores the latest checkpoint (or evaluates the held-out set before
    training: summary.json's `mse_before`)."""
    maybe_initialize_distributed(config)
    check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_run_config(config, workdir)
    setup = build(config)
    evaluations = make_evaluations(config)
    data = TrainData(setup)
    state = create_train_state(setup)
    periodic, best = checkpoint_managers(workdir, int(config.keep_checkpoints))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored, meta = restore_checkpoint(periodic, abstract, say=say)
    if restored is not None:
        state = restored
        say(f"resumed from {os.path.join(workdir, 'checkpoints')} at step "
            f"{int(to_host(state.step))}")
    else:
        before = holdout_evaluation(evaluations).run(setup, state, data)
        meta = {"best_val_loss": None, "holdout_before": before, "mse_before": before["mse"],
                "holdout_mse_raw_before": before.get("mse_raw")}
    return Run(workdir, setup, data, evaluations, state, periodic, best, meta,
               int(to_host(state.step)))


METRICS_FILE = "metrics.jsonl"


def _json_writer(path: str):
    """A clu MetricWriter appending each write_scalars call to `path` as one JSON line
    ({"step": N, "train/loss": ...}); every other kind of summary is left to TensorBoard."""
    from clu.metric_writers import interface

    class JsonLinesWriter(interface.MetricWriter):
        def write_scalars(self, step, scalars):
            with open(path, "a") as f:
                f.write(json.dumps({"step": int(step),
                                    **{k: float(v) for k, v in scalars.items()}}) + "\n")

        def write_summaries(self, step, values, metadata=None):
            pass

        def write_images(self, step, images):
            pass

        def write_videos(self, step, videos):
            pass

        def write_audios(self, step, audios, *, sample_rate):
            pass

        def write_texts(self, step, texts):
            pass

        def write_histograms(self, step, arrays, num_buckets=None):
            pass

        def write_hparams(self, hparams):
            pass

        def flush(self):
            pass

        def close(self):
            pass

    return JsonLinesWriter()


def make_writer(run: Run):
    """The metric writer: TensorBoard (WORKDIR/tensorboard) and JSON lines (WORKDIR/
    metrics.jsonl) on the main process; with run.verbose also absl's log of every scalar (clu's
    default writer), which is otherwise left out of the console."""
    from clu import metric_writers
    tensorboard = os.path.join(run.workdir, "tensorboard")
    if run.verbose:
        return metric_writers.create_default_writer(tensorboard, just_logging=not run.is_main)
    if not run.is_main:
        return metric_writers.MultiWriter([])
    return metric_writers.AsyncMultiWriter([
        metric_writers.SummaryWriter(tensorboard),
        _json_writer(os.path.join(run.workdir, METRICS_FILE))])


def progress_line(done: int, max_steps: int, loss: float | None, step_time: float,
                  compiling: bool = False) -> str:
    """The console's line per logging interval: step, loss, steps/s, ETA. `compiling`: the
    interval holds the first step of this process, whose time is mostly XLA compilation, so
    the ETA waits for the next interval ("ETA after compile"; e4e_jax.outputs.progress)."""
    rate = 1.0 / step_time if step_time > 0 else 0.0
    if compiling:
        return f"step {done}/{max_steps}: loss {_fmt(loss)}, {rate:.2f} steps/s, {AFTER_COMPILE}"
    eta = duration((max_steps - done) * step_time) if step_time > 0 else "n/a"
    return (f"step {done}/{max_steps}: loss {_fmt(loss)}, {rate:.2f} steps/s, ETA {eta}")


def open_writers(run: Run) -> None:
    """clu writers (TensorBoard + JSON lines, hparams and the held-out figures at step 0) and
    the progress report."""
    from clu import periodic_actions
    config, setup = run.config, run.setup
    run.writer = make_writer(run)
    if run.start == 0:
        if run.is_main:
            run.writer.write_hparams({k: str(v) for k, v in flat_config(config).items()})
        run.writer.write_scalars(0, holdout_evaluation(run.evaluations).scalars(
            run.meta["holdout_before"]))
    run.hooks = [periodic_actions.ReportProgress(num_train_steps=run.max_steps,
                                                 writer=run.writer, every_steps=config.log_every)]
    say(f"training {setup.inverter.encoder_config['encoder_type']} over a "
        f"{setup.inverter.generator.resolution}px generator on {jax.device_count()} device(s) "
        f"({jax.process_count()} process(es)), global batch {config.batch_size}, steps "
        f"{run.start}..{run.max_steps}, mse_before {_fmt(run.meta.get('mse_before'))}")
    run.train_iter = (None if run.data.train is None
                      else run.data.train.iterate(start_step=run.start,
                                                  num_steps=run.max_steps - run.start))
    run.last_log_time, run.last_log_step = time.time(), run.start


def train_one_step(run: Run, step: int):
    """One jitted train step; checks the previous step's finiteness; returns its metrics."""
    if run.train_iter is None:
        batch = {}
    else:
        batch = {"image": to_global(next(run.train_iter), run.setup.batch_sharding)}
    run.state, metrics = run.setup.train_step(run.state, run.setup.frozen, batch)
    if run.pending is not None and not bool(to_host(run.pending[1]["all_finite"])):
        _check_finite(*_host_metrics(run.pending))
    run.pending = (step, metrics)
    for h in run.hooks:
        h(step + 1)
    return metrics


def log_step(run: Run, step: int, metrics) -> None:
    """Writes train/* scalars (and step time, images/s) every log_every steps."""
    config, done = run.config, step + 1
    if not (done % config.log_every == 0 or done == run.max_steps or step == run.start):
        return
    m = to_host(metrics)
    if not bool(m["all_finite"]):
        _check_finite(step, m)
    now = time.time()
    dt = (now - run.last_log_time) / max(1, done - run.last_log_step)
    run.last_log_time, run.last_log_step = now, done
    scalars = {f"train/{k}": float(v) for k, v in m.items() if k != "all_finite"}
    scalars["train/step_time_s"] = dt
    scalars["train/images_per_s"] = config.batch_size / dt if dt > 0 else 0.0
    run.writer.write_scalars(done, scalars)
    run.last_train = {k[len("train/"):]: v for k, v in scalars.items()}
    if run.is_main:
        say(progress_line(done, run.max_steps, scalars.get("train/loss"), dt,
                          compiling=step == run.start))


def write_images(run: Run, done: int) -> None:
    """Input | reconstruction grid of the held-out images every image_every steps (columns
    captioned, small images magnified for display: e4e_jax.outputs.grids)."""
    config, setup = run.config, run.setup
    if not (done % config.image_every == 0 or done == run.max_steps):
        return
    grid_images = run.data.holdout_images()[:config.num_grid_images]
    rows = -(-len(grid_images) // config.test_batch_size) * config.test_batch_size
    _, rec = setup.reconstruct(run.state, setup.frozen,
                               host_to_global(pad_batch(grid_images, rows),
                                              setup.batch_sharding))
    grid = labelled_reconstruction_grid(grid_images, to_host(rec), config.num_grid_images,
                                        title=f"step {done}")
    if run.is_main:
        run.writer.write_images(done, {"images/input_reconstruction": grid[None]})
        image_io.save_png(grid, os.path.join(run.workdir, "images", f"step_{done:07d}.png"))


def evaluate_at(run: Run, done: int) -> float | None:
    """The evaluations of config.evals due after step `done`: scalars `<name>/<key>` to
    TensorBoard and one line each; returns the value of config.best_metric when it was
    measured now (the best checkpoint's criterion, lower is better), else None."""
    scalars: dict[str, float] = {}
    for ev in run.evaluations.values():
        if not ev.due(done, run.max_steps):
            continue
        entry = ev.run(run.setup, run.state, run.data)
        scalars.update(ev.scalars(entry))
        if ev.type == "losses":
            what = "validation" if ev.data == "validation" else "held-out"
            say(f"step {done}: {what} loss {entry['loss']:.5f}")
        else:
            say(f"step {done}: {ev.data} mse {_fmt(entry.get('mse'))} (clamped to [-1, 1]; "
                f"mse_raw {_fmt(entry.get('mse_raw'))})")
    if scalars:
        run.writer.write_scalars(done, scalars)
    return scalars.get(run.config.get("best_metric", "test/loss"))


def _meta_after_step(run: Run, val_loss: float | None) -> bool:
    """Brings run.meta to its value after this step (before anything is saved, so every
    checkpoint holds the metadata of its own step); True when `val_loss` is a new best."""
    meta = run.meta
    improved = val_loss is not None and (meta.get("best_val_loss") is None
                                         or val_loss < meta["best_val_loss"])
    if improved:
        meta["best_val_loss"] = val_loss
    if run.last_train:
        meta["last_train_metrics"] = dict(run.last_train)
    if run.data.train is not None:
        meta["unreadable_images"] = sorted(set(meta.get("unreadable_images", []))
                                           | set(run.data.unreadable_training_images))
    return improved


def save_at(run: Run, step: int, metrics, val_loss: float | None, force: bool = False) -> None:
    """Periodic save every save_every steps (and at the end, or when `force`), and the best
    state by config.best_metric; only from finite steps. The metadata saved is this step's."""
    config, done = run.config, step + 1
    improved = _meta_after_step(run, val_loss)
    periodic_due = done % config.save_every == 0 or done == run.max_steps or force
    if not (periodic_due or improved):
        return
    m = to_host(metrics)
    if not bool(m["all_finite"]):
        _check_finite(step, m)
    run.pending = None
    meta = json.loads(json.dumps(run.meta))      # a snapshot: the save is asynchronous
    # one manager's save at a time: concurrent async saves of two managers collide on orbax's
    # multi-host barrier names
    if periodic_due:
        run.best.wait_until_finished()
        save_checkpoint(run.periodic, done, run.state, meta)
    if improved:
        run.periodic.wait_until_finished()
        save_checkpoint(run.best, done, run.state, meta, metrics={"val_loss": val_loss})


def check_last(run: Run) -> None:
    """The last step's finiteness (it was not checked one step late)."""
    if run.pending is not None:
        m = to_host(run.pending[1])
        if not bool(m["all_finite"]):
            _check_finite(run.pending[0], m)


def close_run(run: Run) -> None:
    """Waits for pending async saves and flushes the writers."""
    run.periodic.wait_until_finished()
    run.best.wait_until_finished()
    if run.writer is not None:
        run.writer.flush()


def finish_run(run: Run, t_start: float) -> dict:
    """The held-out evaluation after training, the export and WORKDIR/summary.json; returns
    the summary.

    summary.json's `mse_before` / `mse_after` are the distortion evaluator's `mse` of the
    held-out set (clamped, as eval.py's), `holdout_mse_raw_before` / `_after` its unclamped
    `mse_raw`; `holdout` is the whole entry after training (lpips / identity with reasons)."""
    meta, max_steps = run.meta, run.max_steps
    after = holdout_evaluation(run.evaluations).run(run.setup, run.state, run.data)
    export_dir = os.path.join(run.workdir, "export")
    if run.is_main:
        export(run.setup, run.state, export_dir, steps=max_steps)
    summary = {"mse_before": meta.get("mse_before"), "mse_after": after["mse"],
               "holdout_mse_raw_before": meta.get("holdout_mse_raw_before"),
               "holdout_mse_raw_after": after.get("mse_raw"), "holdout": after,
               "steps": max_steps, "trained_steps_this_run": max_steps - run.start,
               "seconds": time.time() - t_start,
               "best_val_loss": meta["best_val_loss"], "export": export_dir,
               "devices": jax.device_count(), "processes": jax.process_count(),
               "last_train_metrics": run.last_train or meta.get("last_train_metrics", {})}
    if run.data.train is not None:
        _meta_after_step(run, None)
        summary["unreadable_images"] = meta.get("unreadable_images", [])
    if run.is_main:
        with open(os.path.join(run.workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    before, raw_before, raw_after = (summary["mse_before"], summary["holdout_mse_raw_before"],
                                     summary["holdout_mse_raw_after"])
    drop = change_note(before, after["mse"])
    say(f"done: {max_steps} steps; held-out reconstruction MSE {_fmt(before)} -> "
        f"{_fmt(after['mse'])}{drop}, clamped to [-1, 1] as eval.py's mse (unclamped "
        f"{_fmt(raw_before)} -> {_fmt(raw_after)}); exported to {export_dir}")
    return summary


def run_steps(run: Run, stop: StopSignals) -> bool:
    """Steps run.start..max_steps; True when a signal stopped the run (after saving the step
    it was in: every process agrees on that step, see interrupts.StopSignals.agreed)."""
    if stop.agreed():                         # a signal during start-up: no step to finish
        return True
    for step in range(run.start, run.max_steps):
        metrics = train_one_step(run, step)
        log_step(run, step, metrics)
        t_aside = time.time()
        write_images(run, step + 1)
        val_loss = evaluate_at(run, step + 1)
        run.stop_requested = bool(stop.agreed())
        save_at(run, step, metrics, val_loss, force=run.stop_requested)
        # grids, evaluations (their first call compiles) and checkpoints are not training
        # steps: the console's steps/s and ETA measure the steps alone
        run.last_log_time += time.time() - t_aside
        if run.stop_requested:
            return True
    return False


def stop_message(run: Run) -> str:
    """The one line of an interrupted run: where it stopped, which checkpoint holds it, and
    that rerunning resumes (or, with no checkpoint yet, starts again)."""
    latest = latest_checkpoint(run.workdir)
    where = (f"stopped after step {latest} of {run.max_steps}" if latest is not None
             and latest > run.start else f"stopped before step {run.start + 1} of "
             f"{run.max_steps} ran")
    if latest is None:
        return f"{where}; nothing was saved; rerun the same command to start again."
    held = f"checkpoint {os.path.join(run.workdir, 'checkpoints', str(latest))} holds it"
    return f"{where}; {held}; rerun the same command to resume from step {latest}."


def _already_finished(config, workdir: str) -> dict | None:
    """The finished run's summary when WORKDIR holds a checkpoint at (or past) max_steps and
    a summary.json: a rerun has no step to train and keeps that record untouched."""
    latest = latest_checkpoint(workdir)
    path = os.path.join(workdir, "summary.json")
    if latest is None or latest < int(config.max_steps) or not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    say(f"nothing to train: {os.path.join(workdir, 'checkpoints')} is at step {latest} "
        f"(config.max_steps={int(config.max_steps)}); {path} and "
        f"{os.path.join(workdir, 'export')} are kept unchanged. Raise "
        f"--config.max_steps to train further, or use a new --workdir to start over.")
    return summary


def train_and_evaluate(config, workdir: str, verbose: bool = False) -> dict:
    """Trains (resuming from WORKDIR/checkpoints), evaluates, saves and exports; returns the
    summary also written to WORKDIR/summary.json. Raises TrainingError (non-finite loss, bad
    configuration, missing files) and interrupts.Interrupted (SIGTERM / SIGINT: the step it
    arrived in was finished and saved; its exit_code is 143 / 130)."""
    t_start = time.time()
    # settings first (config.json reads only, a second): a bad value is refused even for a
    # finished workdir, and before anything is written into WORKDIR
    check_workdir(workdir)
    preflight(config)
    finished = _already_finished(config, workdir)
    if finished is not None:
        return finished
    with StopSignals() as stop:
        run = start_run(config, workdir)
        run.verbose = verbose
        try:
            open_writers(run)
            stopped = run_steps(run, stop)
            check_last(run)
        finally:
            close_run(run)
        if stopped:
            raise stop.interrupted(stop_message(run))
    return finish_run(run, t_start)
