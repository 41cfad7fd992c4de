"""Outputs and progress of the invert command: unique names, per-image files, ETA lines.

    names = output_names(["A.png", "a.jpg", "a.png", "sub/b.png"])
    #  -> ['A', 'a_jpg', 'a_png', 'sub_b']
    out = RunOutputs("out/", (n_latent, 512), "pti"); out.add(rel, name, result); out.close()

Per finished image `RunOutputs.add` writes reconstructions/<name>.png, side_by_side/<name>.png
(a labelled grid input | e4e | projector/PTI), latents/<name>.npy ((1, n_latent, S): the code
or PTI pivot of that image alone), noises/<name>.npz (projector: the optimized noise maps) and
generators/<name>/ (PTI: the tuned generator, `save_generator`), and only then appends the row
to latents.npy / files.txt / names.txt (through the encode command's `FolderOutputs`), so every
row of latents.npy has its files, and every file set written stays after an interrupt.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from e4e_jax import image_io
from e4e_jax.encoding import FolderOutputs
from e4e_jax.grids import labelled_grid

COLUMN_LABELS = {"e4e": "e4e", "projector": "projector", "pti": "PTI (tuned)"}


def output_names(files: list[str]) -> list[str]:
    """Unique output names for relative image paths, in the given (sorted) order.

    The package's naming rule (e4e_jax/output_names.py: a name taken earlier in the run,
    compared ignoring case, keeps the input's extension, then gets '-2', '-3', ...) applied to
    the path flattened with '_' ('sub/b.png' -> 'sub_b'): flat names keep every tuned
    generator directory OUT/generators/<name>/ out of another one's.
    """
    from e4e_jax.output_names import OutputNames
    taken = OutputNames(".png")
    return [taken.name(f.replace(os.sep, "/").replace("/", "_"))[: -len(".png")]
            for f in files]


class RunOutputs:
    """The files of one invert run (see the module docstring). Close it in a `finally`."""

    def __init__(self, output_dir: str, shape: tuple[int, int], method: str):
        self.dir, self.method = output_dir, method
        self.folder = FolderOutputs(output_dir, shape, save_images=False)
        self.names_f = open(os.path.join(output_dir, "names.txt"), "w")

    @property
    def skipped(self) -> list:
        """(file, reason) of every file recorded in skipped.txt."""
        return self.folder.skipped

    def _path(self, sub: str, name: str) -> str:
        return os.path.join(self.dir, sub, name)

    def add(self, rel: str, name: str, result) -> None:
        """Writes one finished image's files, then its latents.npy / files.txt / names.txt row.
        `result`: an `e4e_jax.invert_run.ImageResult`."""
        image_io.save_png(result.recon8, self._path("reconstructions", name + ".png"))
        cells = [(result.input8, "input"), (result.e4e8, "e4e")]
        if result.final8 is not None:
            cells.append((result.final8, COLUMN_LABELS[self.method]))
        title = f"{rel}: " + " | ".join(label for _, label in cells)
        image_io.save_png(labelled_grid([cells], title=title),
                          self._path("side_by_side", name + ".png"))
        os.makedirs(os.path.join(self.dir, "latents"), exist_ok=True)
        np.save(self._path("latents", name + ".npy"), np.asarray(result.w, np.float32)[None])
        if result.noises is not None:
            os.makedirs(os.path.join(self.dir, "noises"), exist_ok=True)
            np.savez(self._path("noises", name + ".npz"),
                     **{f"noise_{i}": np.asarray(n) for i, n in enumerate(result.noises)})
        if result.generator is not None:
            from e4e_jax.generator import save_generator
            save_generator(result.generator, self._path("generators", name),
                           source=f"PTI tuning on {rel}")
        self.folder.add([rel], [None], np.asarray(result.w, np.float32)[None], None)
        self.names_f.write(name + "\n")
        self.names_f.flush()

    def skip(self, rel: str, reason: str) -> None:
        """Records a file that produced nothing in skipped.txt."""
        self.folder.skip(rel, reason)

    def close(self) -> None:
        """Closes latents.npy (valid with the rows written), files.txt, names.txt."""
        self.folder.close()
        self.names_f.close()


class Ticker:
    """Progress lines with an ETA per image and overall.

    Each image is one compiled call (no per-step host callback), so the per-image ETA comes
    from the images already done (the first one includes compilation, so later images are
    estimated from the others when there are any); while an image runs, a background thread
    prints its elapsed time and ETAs every `interval` seconds.
    """

    def __init__(self, total: int, log=sys.stderr, interval: float = 30.0):
        self.total, self.log, self.interval = total, log, interval
        self.durations: list[float] = []
        self.last_reason = ""
        self._t = 0.0
        self._stop = threading.Event()
        self._thread = None
        self._label = ""

    def estimate(self) -> float | None:
        """Expected seconds of the next image (None before the first one finished)."""
        if not self.durations:
            return None
        later = self.durations[1:] or self.durations
        return float(np.mean(later))

    def _eta(self, remaining_after: int, elapsed: float) -> str:
        est = self.estimate()
        if est is None:
            return "ETA after the first image (it includes compilation)"
        here = max(0.0, est - elapsed)
        total = here + est * remaining_after
        bound = "<=" if len(self.durations) == 1 else "~"   # the first image's time has compile
        return f"{bound}{here:.0f} s left for this image, overall ETA {bound}{total:.0f} s"

    def _print(self, line: str) -> None:
        print(line, file=self.log, flush=True)

    def start(self, k: int, rel: str) -> None:
        """Announces image k (0-based) and starts the heartbeat."""
        self._label, self._left = f"[{k + 1}/{self.total}] {rel}", self.total - k - 1
        est = self.estimate()
        expect = "" if est is None else f" ({self._eta(self._left, 0)})"
        self._print(f"{self._label}: started{expect}")
        self._t = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            el = time.perf_counter() - self._t
            self._print(f"{self._label}: {el:.0f} s elapsed, {self._eta(self._left, el)}")

    def stop(self) -> None:
        """Ends the heartbeat of the current image."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def done(self, k: int, rel: str, info: dict) -> None:
        """Records the duration of image k and prints it with the overall ETA."""
        dt = time.perf_counter() - self._t
        self.durations.append(dt)
        parts = ", ".join(f"{key} {v}" for key, v in info.items())
        left = self.total - k - 1
        eta = f"overall ETA {self.estimate() * left:.0f} s" if left else "last image"
        self._print(f"[{k + 1}/{self.total}] {rel}: done in {dt:.1f} s ({parts}); {eta}")

    def skip(self, rel: str, reason: str) -> None:
        """Reports a file that produced nothing."""
        self.last_reason = reason
        self._print(f"skipping {rel}: {reason}")
