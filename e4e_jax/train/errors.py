"""The training package's error (its own module: setup, checks and the loop all raise it)."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration, missing files); train.py
    prints it as one `error:` line and exits 1."""
    exit_code = 1


class DistributedSettingsError(TrainingError):
    """config.distributed is inconsistent (e4e_jax.train.distributed.check_settings): a bad
    argument, found before any process waits for another; train.py exits 2."""
    exit_code = 2
