"""Trains an e4e (or pSp) encoder.

    python train.py --config configs/demo.py --workdir runs/demo
    python train.py --config configs/ffhq_encode.py --workdir runs/ffhq --config.batch_size=16
    python train.py --config configs/cars_encode.py:A --workdir runs/cars_A    # Table 2 variant

The run resumes from WORKDIR/checkpoints when it exists. See e4e_jax/train/loop.py.
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the export")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.Filter):
    """Drops the INFO chatter of orbax / TensorFlow; keeps clu's metric lines and warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        path = record.pathname.replace(os.sep, "/")
        return not any(f"/{lib}/" in path for lib in ("orbax", "tensorflow", "jax", "etils"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_QuietLibraries())
    from e4e_jax.train import TrainingError, train_and_evaluate
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main)
