"""Training: building a run (`setup`), the loop (`loop`), evaluations, checkpoints and export.

    from e4e_jax.train import train_and_evaluate
    summary = train_and_evaluate(config, workdir)      # train.py is a thin CLI over this

Modules, in the order a run uses them: `setup` (`build`: the Setup with the mesh, the step's
StepSpec, the frozen weights and the jitted functions; `create_train_state`), `step` (the pure
step, TrainState), `e4e_jax.data.train_sets` (what the loop reads), `loop` (train_and_evaluate
as named steps), `validation` (config.evals: eval.py's evaluators on the held-out set, the
validation losses), `checkpointing` (orbax managers, the export).
"""
from __future__ import annotations

from e4e_jax.data.train_sets import TrainData
from e4e_jax.train.checkpointing import export
from e4e_jax.train.interrupts import Interrupted
from e4e_jax.train.loop import Run, train_and_evaluate
from e4e_jax.train.errors import ConfigError, TrainingError
from e4e_jax.train.setup import (
                                 Setup,
                                 build,
                                 create_train_state,
                                 host_to_global,
                                 maybe_initialize_distributed,
                                 to_global,
                                 to_host,
)
from e4e_jax.train.step import StepSpec, TrainState
from e4e_jax.train.validation import make_evaluations

__all__ = ["ConfigError", "Interrupted", "Run", "Setup", "StepSpec", "TrainData", "TrainState",
           "TrainingError", "build", "create_train_state", "export", "host_to_global",
           "make_evaluations", "maybe_initialize_distributed", "to_global", "to_host",
           "train_and_evaluate"]
