"""train.py config for the subprocess training tests: tests/support/train_utils.tiny_config.

    python train.py --config tests/support/tiny_train_config.py:slow --workdir W

`slow` adds a loss term of weight 0 that sleeps 0.15 s per step on the host, so that a test can
send a signal while the run is between two known checkpoints (the term changes no number).
"""
from tests.support.train_utils import tiny_config  # noqa: E402


def _register_slow_term():
    import time

    import jax
    import jax.numpy as jnp

    from e4e_jax import losses as L
    if "sleep" in L.registered_losses():
        return

    @L.register_loss("sleep")
    def sleep(inputs):
        jax.debug.callback(lambda: time.sleep(0.15))
        return jnp.zeros((), jnp.float32)


def get_config(arg=None):
    c = tiny_config(max_steps=24)
    c.log_every = 1
    if arg == "slow":
        _register_slow_term()
        c.losses.sleep = 1.0      # a zero-valued term: adds exactly 0
    return c
