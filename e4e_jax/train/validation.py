"""The training loop's evaluations (config.evals, big_vision style), on the run's fixed sets.

    evaluations = make_evaluations(config)          # one per config.evals entry
    entry = evaluations["holdout"].run(setup, state, data)
    scalars = evaluations["holdout"].scalars(entry)  # {"holdout/mse": ..., ...}

config.evals.<name> = {type, data, every}; the scalars are named `<name>/<key>`:

    type   "distortion": eval.py's DistortionEvaluator (e4e_jax.evaluation.evaluators.distortion)
               on the encoder's inference-mode reconstructions with the generator's stored
               noise (what the export's Inverter returns): `mse` (input and reconstruction
               clamped to [-1, 1]: the same figure as eval.py's `mse`), `mse_raw` (not
               clamped), and `lpips` / `identity` when the run loaded those networks for its
               losses;
           "losses": the loss terms of the validation step (the official Coach.validate:
               inference-mode encoder, a fresh random noise draw per generator layer, the
               training weights), averaged over the set's full batches (a batch mean cannot
               drop padded rows, so a short last batch is left out); `loss` is their total
    data   "holdout" | "validation": a fixed set of e4e_jax.data.train_sets.TrainData
    every  steps between runs (None: config.val_every); each evaluation also runs after the
           last step

The distortion evaluation of the held-out set (`holdout_evaluation`) is also what summary.json
reports before and after training: `mse_before` / `mse_after` are its `mse`,
`holdout_mse_raw_before` / `holdout_mse_raw_after` its `mse_raw`.
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

from e4e_jax.data.train_sets import SETS
from e4e_jax.evaluation.evaluators.base import batch_outputs
from e4e_jax.evaluation.evaluators.distortion import DistortionEvaluator
from e4e_jax.train.errors import ConfigError
from e4e_jax.train.setup import Setup, host_to_global, to_host

TYPES = ("distortion", "losses")


def training_networks(setup: Setup):
    """The distortion evaluator's networks: the LPIPS / identity networks the run's losses
    loaded (setup.frozen["nets"]), each absent one with the reason."""
    from e4e_jax.evaluation.networks import Networks
    from e4e_jax.nets.loss_nets import ARCFACE_KIND, MOCO_KIND, LoadedLPIPS, LoadedSimilarityNet
    frozen = setup.frozen["nets"]
    kw: dict[str, Any] = dict(
        lpips_reason="config.losses.lpips is 0: the run loads no LPIPS network",
        similarity_reason="config.losses.id is 0: the run loads no identity network",
        inception_reason="FID does not run during training")
    if "lpips" in frozen:
        kw.update(lpips=LoadedLPIPS(frozen["lpips"].module, frozen["lpips"].variables),
                  lpips_reason=None)
    if "id" in frozen:
        kind = setup.config.loss_nets.id_kind
        kw.update(similarity=LoadedSimilarityNet(
            frozen["id"].module, frozen["id"].variables,
            ARCFACE_KIND if kind == "arcface" else MOCO_KIND),
            similarity_kind=kind, similarity_reason=None)
    return Networks(**kw)


class Evaluation(abc.ABC):
    """One entry of config.evals: its name, the set it reads and how often it runs."""

    type = ""

    def __init__(self, name: str, data: str, every: int):
        self.name, self.data, self.every = name, data, int(every)

    def due(self, done: int, max_steps: int) -> bool:
        """True after step `done` (1-based count of finished steps) when this one runs."""
        return done % self.every == 0 or done == max_steps

    @abc.abstractmethod
    def run(self, setup: Setup, state, data) -> dict:
        """The entry {key: float or None (+ `<key>_reason`)} of `state` on the set."""

    def scalars(self, entry: dict) -> dict[str, float]:
        """`<name>/<key>` for every number of the entry (TensorBoard)."""
        return {f"{self.name}/{k}": float(v) for k, v in entry.items()
                if not k.endswith("_reason") and v is not None}


class DistortionEvaluation(Evaluation):
    """eval.py's distortion metrics of the state's reconstructions (+ mse_raw)."""

    type = "distortion"

    def __init__(self, name: str, data: str, every: int):
        super().__init__(name, data, every)
        self._nets = None

    def run(self, setup: Setup, state, data) -> dict:
        if self._nets is None:
            self._nets = training_networks(setup)
        inv = setup.inverter
        bs = int(setup.config.test_batch_size)
        evaluator, n = None, 0
        for batch in data.batches(self.data, bs):
            w, rec = setup.reconstruct(state, setup.frozen,
                                       host_to_global(batch.images, setup.batch_sharding))
            rec = to_host(rec)
            if evaluator is None:
                evaluator = DistortionEvaluator(self._nets, inv.input_size, rec.shape[1:3],
                                                raw=True)
            evaluator.update(batch_outputs(batch.images, rec, to_host(w), batch.valid))
            n += batch.valid
        if not n:
            raise ConfigError(f"config.evals.{self.name}: the {self.data} set holds no "
                                f"readable image.")
        entry: dict[str, Any] = {}
        evaluator.finish(entry, n)
        entry["num_images"] = n
        return entry

    def scalars(self, entry: dict) -> dict[str, float]:
        return {k: v for k, v in super().scalars(entry).items()
                if not k.endswith("/num_images")}


class LossesEvaluation(Evaluation):
    """The validation step's loss terms, a fixed key per batch (fold_in(seed + 3, batch))."""

    type = "losses"

    def run(self, setup: Setup, state, data) -> dict:
        config = setup.config
        totals: dict[str, float] = {}
        n = 0
        key = jax.random.key(config.seed + 3)
        for i, batch in enumerate(data.batches(self.data, int(config.test_batch_size))):
            if batch.valid < len(batch.images):
                continue
            m = to_host(setup.eval_step(state, setup.frozen,
                                        host_to_global(batch.images, setup.batch_sharding),
                                        jax.random.fold_in(key, i)))
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            n += 1
        if not n:
            raise ConfigError(f"config.evals.{self.name}: the {self.data} set holds fewer "
                                f"readable images than config.test_batch_size "
                                f"({config.test_batch_size}); lower test_batch_size.")
        return {k: v / n for k, v in totals.items()}


_KINDS = {c.type: c for c in (DistortionEvaluation, LossesEvaluation)}


def make_evaluations(config) -> dict[str, Evaluation]:
    """The evaluations of config.evals, by name. ConfigError names a bad entry."""
    out = {}
    for name, spec in config.get("evals", {}).items():
        kind, data = spec.get("type"), spec.get("data", "holdout")
        if kind not in _KINDS:
            raise ConfigError(f"config.evals.{name}.type must be one of {TYPES}, got "
                                f"{kind!r}.")
        if data not in SETS:
            raise ConfigError(f"config.evals.{name}.data must be one of {SETS}, got "
                                f"{data!r}.")
        every = spec.get("every", None) or config.val_every
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"config.evals.{name}.every must be a whole number >= 1, got "
                                f"{every!r}.")
        out[name] = _KINDS[kind](name, data, every)
    return out


def holdout_evaluation(evaluations: dict[str, Evaluation]) -> Evaluation:
    """The distortion evaluation of the held-out set (summary.json's figures): the one in
    config.evals, else one that only runs before and after training."""
    for ev in evaluations.values():
        if ev.type == "distortion" and ev.data == "holdout":
            return ev
    return DistortionEvaluation("holdout", "holdout", np.iinfo(np.int64).max)
