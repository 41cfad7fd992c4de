"""The module paths of earlier releases, kept importable: every alias of the package in one table.

Issue 20 laid the package out in layers (core, models, nets, data, outputs, losses, train,
evaluation, editing, inversion, align, convert, apps, cli; docs/architecture.md). Code written
against the flat layout keeps working: `import e4e_jax.generator` returns the module
`e4e_jax.nets.generator` itself (the same object, so monkeypatching either name patches both).
New code imports the new paths; nothing inside the package uses an alias.

Command entry points that must stay runnable as files or with `python -m` are real files, listed
in COMMANDS: `python -m e4e_jax.encode` and friends, and `python convert_weights/X.py`.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module path -> the module that holds its code now
MOVED = {
    "e4e_jax.adversarial": "e4e_jax.losses.adversarial",
    "e4e_jax.checkpoints": "e4e_jax.nets.model_dir",
    "e4e_jax.config_base": "e4e_jax.train.config",
    "e4e_jax.encoder_dirs": "e4e_jax.nets.encoder",
    "e4e_jax.encoding": "e4e_jax.apps.encode",
    "e4e_jax.evaluation.base": "e4e_jax.evaluation.evaluators.base",
    "e4e_jax.evaluation.cli": "e4e_jax.cli.eval",
    "e4e_jax.evaluation.distortion": "e4e_jax.evaluation.evaluators.distortion",
    "e4e_jax.evaluation.distribution": "e4e_jax.evaluation.evaluators.distribution",
    "e4e_jax.evaluation.editability": "e4e_jax.evaluation.evaluators.editability",
    "e4e_jax.evaluation.loop": "e4e_jax.apps.evaluate",
    "e4e_jax.evaluation.proximity": "e4e_jax.evaluation.evaluators.proximity",
    "e4e_jax.editing.run": "e4e_jax.apps.edit",
    "e4e_jax.face_crop": "e4e_jax.align.crop",
    "e4e_jax.generator": "e4e_jax.nets.generator",
    "e4e_jax.grids": "e4e_jax.outputs.grids",
    "e4e_jax.image_io": "e4e_jax.data.image_io",
    "e4e_jax.inversion_common": "e4e_jax.inversion.common",
    "e4e_jax.inverter": "e4e_jax.nets.encoder",
    "e4e_jax.invert_outputs": "e4e_jax.apps.invert",
    "e4e_jax.invert_run": "e4e_jax.apps.invert",
    "e4e_jax.loss_nets": "e4e_jax.nets.loss_nets",
    "e4e_jax.losses_checks": "e4e_jax.losses.checks",
    "e4e_jax.metrics": "e4e_jax.evaluation.metrics",
    "e4e_jax.metrics.batching": "e4e_jax.evaluation.metrics.batching",
    "e4e_jax.metrics.fid_metric": "e4e_jax.evaluation.metrics.fid",
    "e4e_jax.metrics.latent_metrics": "e4e_jax.evaluation.metrics.latent",
    "e4e_jax.metrics.swd_metric": "e4e_jax.evaluation.metrics.swd",
    "e4e_jax.models.conv": "e4e_jax.core.conv",
    "e4e_jax.ops": "e4e_jax.core.ops",
    "e4e_jax.optim": "e4e_jax.core.optim",
    "e4e_jax.output_names": "e4e_jax.outputs.names",
    "e4e_jax.precision": "e4e_jax.core.precision",
    "e4e_jax.projector": "e4e_jax.inversion.projector",
    "e4e_jax.pti": "e4e_jax.inversion.pti",
    "e4e_jax.train_step": "e4e_jax.train.step",
    "e4e_jax.trainer": "e4e_jax.train",
    "convert_weights._common": "e4e_jax.convert.common",
    "convert_weights._pickle_scan": "e4e_jax.convert.pickle_scan",
    "convert_weights._safe_pickle": "e4e_jax.convert.safe_pickle",
}

# entry points kept as small files: path -> what it runs
COMMANDS = {
    "python -m e4e_jax.encode": "e4e-jax encode",
    "python -m e4e_jax.invert": "e4e-jax invert",
    "python -m e4e_jax.edit": "e4e-jax edit",
    "python -m e4e_jax.sample": "e4e-jax sample",
    "python -m e4e_jax.align": "e4e-jax align",
    "python -m e4e_jax.directions": "e4e-jax directions",
    "python -m e4e_jax.prepare": "e4e-jax prepare",
    "python train.py": "e4e-jax train",
    "python eval.py": "e4e-jax eval",
    **{f"python convert_weights/{n}.py, python -m convert_weights.{n}": f"e4e-jax convert {n}"
       for n in ("arcface", "e4e", "fid_inception", "lpips", "moco", "stylegan2",
                 "stylegan2_ada", "stylegan3")},
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path in MOVED to the module that holds its code now (same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        # the target module ran its code when create_module imported it
        return None


def install() -> None:
    """Puts the finder first on sys.meta_path (once)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
