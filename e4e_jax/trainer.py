"""The name `e4e_jax.train` of the README's API table (`e4e_jax.train.train_and_evaluate`).

The training code lives in e4e_jax/train/ (setup, loop, validation, checkpointing) and the
training data in e4e_jax/data/train_sets.py; this module re-exports their public names so that
`from e4e_jax import trainer` keeps working.
"""
from __future__ import annotations

from e4e_jax.train import *  # noqa: F401,F403
from e4e_jax.train import __all__  # noqa: F401
