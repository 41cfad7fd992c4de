"""The training package's error (its own module: setup, checks and the loop all raise it)."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration, missing files); train.py
    prints it as one `error:` line and exits 1."""
