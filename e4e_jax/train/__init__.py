"""Training: building a run (`setup`), the loop (`loop`), validation, checkpoints and export.

    from e4e_jax.train import train_and_evaluate
    summary = train_and_evaluate(config, workdir)      # train.py is a thin CLI over this

Modules, in the order a run uses them: `setup` (models, frozen networks, TrainState, jitted
functions, sharding helpers), `e4e_jax.data.train_sets` (what the loop reads), `loop`
(train_and_evaluate as named steps), `validation` (loss terms on test batches, held-out MSE),
`checkpointing` (orbax managers, the export). The pure step itself is e4e_jax/train_step.py.
"""
from __future__ import annotations

from e4e_jax.data.train_sets import ImageData, SyntheticData
from e4e_jax.train.checkpointing import export
from e4e_jax.train.interrupts import Interrupted
from e4e_jax.train.loop import Run, train_and_evaluate
from e4e_jax.train.setup import (
                                 Compiled,
                                 Setup,
                                 TrainingError,
                                 build,
                                 compile_functions,
                                 create_train_state,
                                 host_to_global,
                                 maybe_initialize_distributed,
                                 to_global,
                                 to_host,
)
from e4e_jax.train.validation import holdout_mse, validate

__all__ = ["Compiled", "ImageData", "Interrupted", "Run", "Setup", "SyntheticData", "TrainingError", "build",
           "compile_functions", "create_train_state", "export", "holdout_mse",
           "host_to_global", "maybe_initialize_distributed", "to_global", "to_host",
           "train_and_evaluate", "validate"]
