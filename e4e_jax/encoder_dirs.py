"""Encoder (inverter) directories as the commands take them: checks with hints, names, decoding.

    check_checkpoint("runs/demo")          # ModelDirError: "... pass 'runs/demo/export'"
    names = checkpoint_names(["a/export", "b/export"])     # ['export', 'export-2']
    decode = make_decoder(inv)             # jit (generator_variables, w_plus) -> images

Shared by eval.py and the edit command (neither imports the other).
"""
from __future__ import annotations

import collections
import os
from typing import Callable, Sequence


def check_checkpoint(path: str) -> None:
    """Raises ModelDirError with a hint when `path` is not an inverter directory."""
    from e4e_jax import checkpoints
    from e4e_jax.inverter import KIND
    path = os.fspath(path)
    meta = checkpoints.read_meta(path)          # the workdir hint comes from read_meta
    if meta.get("kind") != KIND:
        raise checkpoints.ModelDirError(
            f"{path!r} holds a {meta.get('kind')!r} model, not an encoder checkpoint "
            f"({KIND!r}): pass the output of convert_weights/e4e.py or a training run's "
            f"WORKDIR/export.")


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """Directory basenames, duplicates suffixed -2, -3, ... in command-line order."""
    names, seen = [], collections.Counter()
    for p in paths:
        base = os.path.basename(os.path.normpath(os.path.abspath(p))) or "checkpoint"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        while name in names:
            seen[base] += 1
            name = f"{base}-{seen[base]}"
        names.append(name)
    return names


def make_decoder(inv) -> Callable:
    """jit (generator_variables, w_plus) -> images as the Inverter's reconstructions (stored
    noise, face_pool, cars crop), unclipped: the official LEC `_generate`."""
    import jax
    return jax.jit(lambda gv, w: inv.apply_decode(gv, w, noise="const"))
