"""Training checkpoints (orbax) and the export of the trained encoder.

- WORKDIR/checkpoints: periodic saves (keep N), WORKDIR/best: the best-by-validation state;
  both hold the whole TrainState (parameters, optimizer states, discriminator, W pools, RNG and
  the data position, which is the step) and the run metadata, so a killed run resumes exactly;
- WORKDIR/export: an inverter directory (e4e_jax.nets.model_dir format) for inference.
"""
from __future__ import annotations

import os

from e4e_jax.nets.encoder import save_inverter
from e4e_jax.train.errors import TrainingError
from e4e_jax.train.setup import Setup, to_host


def checkpoint_managers(workdir: str, keep: int):
    """(periodic, best) orbax CheckpointManagers under WORKDIR/checkpoints (keep the last
    `keep`) and WORKDIR/best (the lowest val_loss)."""
    import orbax.checkpoint as ocp
    periodic = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             best_fn=lambda m: m["val_loss"], best_mode="min"))
    return periodic, best


def latest_checkpoint(workdir: str) -> int | None:
    """The latest complete periodic checkpoint's step under WORKDIR/checkpoints (None: none).
    orbax writes a step into a temporary name and renames it when complete, so a plain
    integer directory name is a finished save."""
    root = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(root) if n.isdigit()] if os.path.isdir(root) else []
    return max(steps) if steps else None


def save_checkpoint(manager, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Saves the TrainState and the JSON run metadata (`meta`) at `step` (async)."""
    import orbax.checkpoint as ocp
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)),
                 metrics=metrics)


def _restore_step(manager, step: int, abstract_state):
    import orbax.checkpoint as ocp
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]


def _first_line(e: BaseException, limit: int = 160) -> str:
    """The exception's type and the start of its first line (tensorstore's specs cut off)."""
    text = str(e).strip()
    line = (text.splitlines()[0] if text else "").split(" [tensorstore_spec")[0]
    if len(line) > limit:
        line = line[:limit - 3] + "..."
    return f"{type(e).__name__}: {line}"


def restore_checkpoint(manager, abstract_state, say=None):
    """(state, meta) of the newest restorable step onto `abstract_state`'s shardings, or (None,
    None) when the manager holds no checkpoint.

    When the newest step cannot be read (files missing or truncated) but an older one can,
    each unreadable newer step directory is renamed `<step>.damaged` (kept, never deleted),
    `say` reports it in one line, and the older step is restored. When no step can be read,
    nothing is renamed and TrainingError says so."""
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None, None
    failures = []
    for step in steps:
        try:
            restored = _restore_step(manager, step, abstract_state)
        except Exception as e:                      # noqa: BLE001 -- reported below
            failures.append((step, e))
            continue
        root = os.fspath(manager.directory)
        import jax
        for bad, e in failures:
            src = os.path.join(root, str(bad))
            dst = src + ".damaged"
            n = 1
            while os.path.exists(dst):
                dst, n = f"{src}.damaged{n}", n + 1
            if jax.process_index() == 0:
                os.rename(src, dst)
            if say is not None:
                say(f"checkpoint {src} is damaged ({_first_line(e)}); moved it to {dst} and "
                    f"resumed from step {step}, the newest intact checkpoint")
        if failures:
            manager.reload()                        # forget the renamed steps
        return restored
    bad, e = failures[0]
    raise TrainingError(
        f"no checkpoint in {manager.directory} can be restored (newest, step {bad}: "
        f"{_first_line(e)}); nothing was changed there: use another --workdir to start over.")


def export(setup: Setup, state, path: str, steps: int) -> str:
    """Writes the inference directory (e4e_jax.load_encoder, encode, eval.py) of `state`'s
    encoder with the frozen generator and latent_avg; returns `path`."""
    variables = to_host({"params": state.params, "batch_stats": state.batch_stats})
    cfg, inv = setup.config, setup.inverter
    latent_avg = setup.frozen["latent_avg"]
    return save_inverter(path, inv.encoder_config, variables, setup.generator,
                         latent_avg=None if latent_avg is None else to_host(latent_avg),
                         start_from_latent_avg=bool(cfg.start_from_latent_avg),
                         crop_rows=inv.crop_rows, face_pool=inv.face_pool_size,
                         extra_config={"dataset_type": cfg.dataset_type, "trained_steps": steps,
                                       "variant": cfg.get("variant", None)},
                         source="e4e_jax train.py")
