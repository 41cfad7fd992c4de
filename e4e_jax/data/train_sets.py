"""What a training run reads: the training stream and two fixed sets, validation and held-out.

    data = TrainData(setup)
    data.train                          # BatchLoader (folders / TFDS), None for the synthetic
                                        # domain (its batches are generated inside the step)
    for batch in data.batches("validation", 8): ...   # e4e_jax.data.loader.Batch, padded
    x = data.holdout_images()           # (holdout, H, W, 3): the image grids' inputs

The fixed sets are the ones eval.py reads for the same arguments, through the same loader:

    folders / TFDS   validation: the first test_batch_size x max_val_batches readable
                     images of config.data.test (all of them when max_val_batches is None);
                     held-out: its first `holdout` readable images (eval.py --data TEST
                     --num-images HOLDOUT when none of them is unreadable: eval counts files);
                     unreadable files are skipped, replaced by the next ones and reported once
    synthetic        e4e_jax.data.synthetic's sets of key(seed + 1000) and key(seed + 2000)
                     (eval.py --data synthetic --seed SEED+2000 --num-images HOLDOUT, with
                     stored noise)
"""
from __future__ import annotations

import sys
from typing import Iterator

import jax
import numpy as np

from e4e_jax.data.loader import Batch, BatchLoader, BatchSpec, SourceImages, batches_of
from e4e_jax.data.sources import DataError, hide_accelerators_from_tensorflow, make_source
from e4e_jax.data.synthetic import SyntheticImages

SETS = ("validation", "holdout")
SYNTHETIC_VALIDATION_BATCHES = 4     # validation batches of the synthetic domain by default


def _report_skip(name: str, error: Exception) -> None:
    # stdout, one write per line, like the training stream's own report of a corrupt file
    sys.stdout.write(f"warning: skipping unreadable image {name} of the test set: {error}\n")
    sys.stdout.flush()


class TrainData:
    """The training stream (`train`) and the fixed `validation` / `holdout` sets of a run.

    setup: the run's e4e_jax.train.setup.Setup (the synthetic domain is its generator's; the
    image size and precision are the encoder's)."""

    def __init__(self, setup):
        config = setup.config
        self.size = tuple(int(s) for s in config.data.input_size)
        self.setup = setup
        self.synthetic = config.data.kind == "synthetic"
        self._holdout: tuple[np.ndarray, list[str]] | None = None
        if self.synthetic:
            self.train = None
            noise = config.data.synthetic_noise
            val = int(config.max_val_batches or SYNTHETIC_VALIDATION_BATCHES)
            self.sets = {
                "validation": SyntheticImages(val * int(config.test_batch_size),
                                              config.seed + 1000, noise),
                "holdout": SyntheticImages(int(config.holdout), config.seed + 2000, noise)}
            return
        hide_accelerators_from_tensorflow()
        self.train = BatchLoader(
            make_source(config.data.train, config.data.data_dir),
            BatchSpec(config.batch_size, self.size, seed=config.seed, shuffle=True,
                      flip_prob=config.data.flip_prob, process_index=jax.process_index(),
                      process_count=jax.process_count()))
        test_spec = config.data.test or config.data.train
        test = make_source(test_spec, config.data.data_dir)
        # every host reads the fixed sets in full (they are small): the evaluators see the
        # same images on every host
        val = (int(config.max_val_batches) * int(config.test_batch_size)
               if config.max_val_batches else None)
        self.sets = {
            "validation": SourceImages(test, test_spec, val, on_skip=_report_skip, fill=True),
            "holdout": SourceImages(test, test_spec, int(config.holdout), on_skip=_report_skip,
                                    fill=True)}

    def batches(self, name: str, batch_size: int) -> Iterator[Batch]:
        """The set `name` ("validation" | "holdout") in padded batches of `batch_size` (the
        held-out set is read once and kept: it is small and read at every evaluation)."""
        if name == "holdout":
            images, names = self._read_holdout()
            return batches_of(images, batch_size, names)
        return self._read(name, batch_size)

    def _read(self, name: str, batch_size: int) -> Iterator[Batch]:
        images = self.sets[name]
        if not self.synthetic:
            return images.read(self.size, batch_size)
        inv = self.setup.spec.inverter
        return images.generate(inv.generator, self.setup.frozen["generator"], self.size,
                               batch_size, inv.precision, in_one_call=True)

    def _read_holdout(self) -> tuple[np.ndarray, list[str]]:
        if self._holdout is None:
            holdout = self.sets["holdout"]
            batches = list(self._read("holdout", len(holdout)))
            if not batches or not batches[0].valid:
                raise DataError(f"none of the {len(holdout)} held-out images of "
                                f"{holdout.description} is readable; check config.data.test.")
            self._holdout = (batches[0].images[:batches[0].valid], batches[0].names)
        return self._holdout

    def holdout_images(self) -> np.ndarray:
        """The held-out images (n, H, W, 3) float32 in [-1, 1] (the grids' inputs). DataError
        when none of them is readable."""
        return self._read_holdout()[0]

    @property
    def unreadable_training_images(self) -> list[str]:
        """Training files found unreadable so far (sorted names; [] for synthetic data)."""
        return [] if self.train is None else self.train.bad_files
