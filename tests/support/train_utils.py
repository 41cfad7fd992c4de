"""Tiny training configs shared by the training tests (and the multi-process worker)."""
from __future__ import annotations

import os
import sys

from tests.support.paths import REPO as ROOT  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def subprocess_env(extra_xla_flags: str = "") -> dict:
    """The environment of a test's child training process: this checkout importable, and XLA's
    LLVM optimisation off (`--xla_backend_optimization_level=0`: the same HLO and fusions,
    compiled about 2x faster, run slower). Those tests compare child runs with each other
    (resume vs. uninterrupted, 8 devices or 2 processes vs. 1), so every run uses the same
    setting; the official-parity tests run in-process with XLA's defaults."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    flags = [env.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0", extra_xla_flags]
    env["XLA_FLAGS"] = " ".join(f for f in flags if f)
    return env


def tiny_config(**overrides):
    """The demo config shrunk further: 16px generator, 1-unit encoder, few steps."""
    sys.path.insert(0, ROOT)
    from configs import demo
    c = demo.get_config()
    c.data.input_size = (16, 16)
    c.generator.init.resolution = 16
    c.generator.init.max_channels = 16
    c.generator.init.n_mlp = 1
    c.output.face_pool = 16
    c.encoder.widths = (4, 8, 8, 16)
    c.encoder.head_width = 16
    c.latent_avg_samples = 256
    c.batch_size = 4
    c.test_batch_size = 4
    c.max_steps = 8
    c.log_every = 4
    c.image_every = 4
    c.val_every = 4
    c.save_every = 4
    c.max_val_batches = 1
    c.holdout = 4
    c.num_grid_images = 2
    c.progressive.start = 2
    c.progressive.every = 2
    # Adam moves a tiny model further in a few dozen steps than Ranger, whose Lookahead halves
    # every 6-step excursion; Ranger itself is checked against its fixture in test_ranger.py.
    c.optimizer.name = "adam"
    c.optimizer.lr = 3e-3
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c
