"""The training package's error (its own module: setup, checks and the loop all raise it)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unrestorable checkpoint, a lost peer);
    train.py prints it as one `error:` line and exits 1."""
    exit_code = 1


class ConfigError(TrainingError):
    """A setting or an input found wrong before training starts (e4e_jax.train.checks, the
    setup of e4e_jax.train.setup, config.evals): bad input, so train.py exits 2, as every other
    command does for bad input."""
    exit_code = 2


class DistributedSettingsError(TrainingError):
    """config.distributed is inconsistent (e4e_jax.train.distributed.check_settings): a bad
    argument, found before any process waits for another; train.py exits 2."""
    exit_code = 2
