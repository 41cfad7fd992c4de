"""The invert command's library: e4e, the W projector or PTI over a folder, image by image.

    req = InvertRequest("converted/e4e_ffhq_encode", "photos/", "out/", method="pti",
                        lpips="weights/lpips_vgg", steps=350)
    summary = invert_folder(req)             # also OUT/summary.json

Per image (`Pipeline.run`): the e4e code and reconstruction (always: it is the middle column of
the side-by-side PNG and PTI's default pivot), then
    projector: `e4e_jax.project` (ADA defaults: lr 0.1, `steps` steps) from w_avg;
    pti:       the pivot (the e4e code, or `project` with PTI's settings: lr 0.01,
               `pivot_steps` steps) then `e4e_jax.inversion.pti.tune` (`steps` steps, lr 3e-4, stop at
               LPIPS 0.06).
Outputs (`RunOutputs`) are written as soon as an image is finished (latents.npy stays a valid
array of the finished rows), so an interrupt or a crash keeps every finished image. The command
wrapper (argv, exit codes) is e4e_jax/invert.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time

import numpy as np

from e4e_jax.apps.encode import FolderOutputs
from e4e_jax.data import image_io
from e4e_jax.outputs.grids import labelled_grid

METHODS = ("e4e", "projector", "pti")
PIVOTS = ("e4e", "projector")
DEFAULT_STEPS = {"e4e": 0, "projector": 1000, "pti": 350}   # ADA num_steps, PTI max_pti_steps
PTI_PIVOT_STEPS = 450              # PTI configs/hyperparameters.py first_inv_steps
PTI_PROJECTOR_LR = 0.01            # PTI's w_projector initial_learning_rate


class InvertError(ValueError):
    """A bad request (the message names the problem and the fix); the command exits 2."""


@dataclasses.dataclass
class InvertRequest:
    """The command's arguments. steps None: the method's official default (projector 1000,
    pti 350); pivot_steps: the projector pivot's steps (pti --pivot projector, PTI's 450)."""
    checkpoint: str
    input_dir: str
    output_dir: str
    method: str = "e4e"
    pivot: str = "e4e"
    steps: int | None = None
    pivot_steps: int = PTI_PIVOT_STEPS
    lpips: str | None = None
    lpips_threshold: float = 0.06
    overwrite: bool = False
    seed: int = 0

    @property
    def num_steps(self) -> int:
        """--steps, or the method's official default."""
        return DEFAULT_STEPS[self.method] if self.steps is None else int(self.steps)


def check_request(req: InvertRequest) -> list[str]:
    """Checks the arguments before any model is loaded; returns the image files (relative).

    Raises InvertError (unknown method/pivot, steps < 1, missing --lpips, existing outputs
    without --overwrite, no images) or FileNotFoundError (missing folders).
    """
    if req.method not in METHODS:
        raise InvertError(f"--method must be one of {', '.join(METHODS)}, got {req.method!r}.")
    if req.pivot not in PIVOTS:
        raise InvertError(f"--pivot must be one of {', '.join(PIVOTS)}, got {req.pivot!r}.")
    if req.pivot == "projector" and req.method != "pti":
        raise InvertError(f"--pivot chooses PTI's pivot; it needs --method pti, not "
                          f"--method {req.method}.")
    if req.method == "e4e" and (req.steps is not None or req.lpips):
        given = " and ".join(f for f, v in (("--steps", req.steps), ("--lpips", req.lpips))
                             if v is not None and v != "")
        raise InvertError(f"{given} only apply to --method projector or pti; --method e4e (the "
                          f"default) runs the encoder alone. Add --method projector or --method "
                          f"pti, or drop {given}.")
    if req.method != "e4e" and req.num_steps < 1:
        raise InvertError(f"--steps must be >= 1, got {req.steps}.")
    if req.method == "pti" and req.pivot == "projector" and req.pivot_steps < 1:
        raise InvertError(f"--pivot-steps must be >= 1, got {req.pivot_steps}.")
    if req.method != "e4e" and not req.lpips:
        recipe = "LPIPS-VGG (the official projector)" if req.method == "projector" else \
            "LPIPS-alex (PTI's default)"
        raise InvertError(f"--method {req.method} needs a loss network: pass --lpips DIR, a "
                          f"converted LPIPS directory (`e4e-jax convert lpips`; official "
                          f"recipe {recipe}).")
    if req.lpips and not os.path.isdir(req.lpips):
        raise FileNotFoundError(f"--lpips {req.lpips!r} is not a directory (convert one with "
                                f"`e4e-jax convert lpips`).")
    if not os.path.isdir(req.input_dir):
        raise FileNotFoundError(f"--input {req.input_dir!r} is not a directory.")
    files = image_io.list_images(req.input_dir)
    if not files:
        raise InvertError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) under "
                          f"{req.input_dir!r}.")
    if os.path.exists(req.output_dir) and not os.path.isdir(req.output_dir):
        raise InvertError(f"--output {req.output_dir!r} is a file; give a folder (it is "
                          f"created if missing).")
    for name in ("latents.npy", "generators"):
        path = os.path.join(req.output_dir, name)
        if os.path.exists(path) and not req.overwrite:
            raise InvertError(f"{path!r} exists; pass --overwrite to replace the outputs in "
                              f"{req.output_dir!r}, or choose another --output.")
    return files


def load_models(req: InvertRequest):
    """(inverter, lpips or None). Raises ModelDirError for bad directories and InvertError for
    a model the method cannot use (cars crop, conditional generator)."""
    from e4e_jax.nets.encoder import check_checkpoint, load_encoder
    from e4e_jax.nets.loss_nets import load_lpips
    check_checkpoint(req.checkpoint)
    inv = load_encoder(req.checkpoint)
    if req.method != "e4e":
        if inv.crop_rows is not None:
            raise InvertError(f"--method {req.method} fits the generator's full square image; "
                              f"this checkpoint crops rows {inv.crop_rows} (cars), which is not "
                              f"supported: use --method e4e.")
        if inv.generator.c_dim:
            raise InvertError(f"--method {req.method} needs an unconditional generator.")
    lpips = load_lpips(req.lpips) if req.lpips and req.method != "e4e" else None
    return inv, lpips


@dataclasses.dataclass
class ImageResult:
    """One finished image. w: (n_latent, S) float32 (the pivot for pti); input8 / e4e8 /
    final8: uint8 display cells; recon8: uint8 reconstruction PNG (generator resolution for
    projector/pti); generator: the tuned LoadedGenerator (pti); noises: optimized maps
    (projector); info: numbers for summary.json (seconds per stage, final losses)."""
    w: np.ndarray
    input8: np.ndarray
    e4e8: np.ndarray
    final8: np.ndarray | None
    recon8: np.ndarray
    generator: object = None
    noises: list | None = None
    info: dict = dataclasses.field(default_factory=dict)


class Pipeline:
    """The per-image work, importable without argv: `Pipeline(inv, lpips, req).run(path)`.

    Every model call is jit-compiled once (weights are arguments; every image has the same
    shapes), so the first image pays the compilation.
    """

    def __init__(self, inv, lpips, req: InvertRequest):
        self.inv, self.lpips, self.req = inv, lpips, req
        self.g = inv.generator

    def _e4e(self, img):
        x = image_io.load_image(img, self.inv.input_size)
        w, rec = self.inv.invert(x[None])
        return x, np.asarray(w)[0], image_io.to_uint8(np.asarray(rec)[0])

    def _project(self, target, num_steps: int, lr: float, k: int):
        """`e4e_jax.project` of the (R, R, 3) image in [-1, 1] (the inversions' convention)."""
        import jax

        from e4e_jax.inversion.projector import project
        return project(self.g, target, lpips=self.lpips, num_steps=num_steps,
                       initial_learning_rate=lr, rng=jax.random.key(self.req.seed + k))

    def _display(self, full):
        """Generator output -> the e4e column's display size (the inverter's face_pool)."""
        from e4e_jax.nets.encoder import face_pool
        return image_io.to_uint8(np.asarray(face_pool(full, self.inv.face_pool_size))[0])

    def run(self, path: str, k: int = 0) -> ImageResult:
        """Inverts the image file `path` (the k-th image: its random draws use seed + k)."""
        from e4e_jax.nets.encoder import face_pool
        info: dict = {}
        t = time.perf_counter()
        img = image_io.read_rgb(path)
        x, w_e4e, e4e8 = self._e4e(img)
        info["e4e_seconds"] = round(time.perf_counter() - t, 3)
        in8 = image_io.to_uint8(x)
        if self.req.method == "e4e":
            return ImageResult(w_e4e, in8, e4e8, None, e4e8, info=info)
        r = self.g.resolution
        target = image_io.load_image(img, (r, r))
        in8 = image_io.to_uint8(np.asarray(face_pool(target[None], self.inv.face_pool_size))[0])
        if self.req.method == "projector":
            t = time.perf_counter()
            res = self._project(target, self.req.num_steps, 0.1, k)
            info.update(projector_seconds=round(time.perf_counter() - t, 3),
                        final_dist=float(res.history["dist"][-1]))
            full = self.g.synthesis(res.w_plus[None], noise=res.synthesis_noise())
            return ImageResult(res.w_plus, in8, e4e8, self._display(full),
                               image_io.to_uint8(np.asarray(full)[0]), noises=res.noises,
                               info=info)
        return self._pti(target, w_e4e, in8, e4e8, info, k)

    def _pti(self, target, w_e4e, in8, e4e8, info, k) -> ImageResult:
        from e4e_jax.inversion import pti
        pivot = w_e4e
        if self.req.pivot == "projector":
            t = time.perf_counter()
            pivot = self._project(target, self.req.pivot_steps, PTI_PROJECTOR_LR, k).w_plus
            info["pivot_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        res = pti.tune(self.g, pivot, target, lpips=self.lpips,
                       steps=self.req.num_steps, lpips_threshold=self.req.lpips_threshold)
        h = res.history
        info.update(tuning_seconds=round(time.perf_counter() - t, 3),
                    num_updates=res.num_updates,
                    lpips_first=float(h["lpips"][0]), lpips_final=float(h["lpips"][-1]))
        full = res.generator.synthesis(pivot[None])
        return ImageResult(np.asarray(pivot), in8, e4e8, self._display(full),
                           image_io.to_uint8(np.asarray(full)[0]), generator=res.generator,
                           info=info)


def _describe(req: InvertRequest) -> str:
    if req.method == "e4e":
        return "e4e"
    if req.method == "projector":
        return f"W projector, {req.num_steps} steps"
    pivot = "e4e pivot" if req.pivot == "e4e" else \
        f"projector pivot ({req.pivot_steps} steps, lr {PTI_PROJECTOR_LR})"
    return f"PTI, {pivot}, {req.num_steps} tuning steps"


def invert_folder(req: InvertRequest, log=None, pipeline_factory=None) -> dict:
    """Runs the command; returns its summary (also OUT/summary.json).

    Unreadable files and images whose inversion fails are recorded in OUT/skipped.txt and the
    run goes on. Ctrl-C keeps every finished image (summary "interrupted": true) and re-raises
    KeyboardInterrupt. Raises InvertError / FileNotFoundError / ModelDirError for bad requests
    (before anything is written). `pipeline_factory(inv, lpips, req)` replaces `Pipeline`
    (tests inject failures through it).
    """
    log = log or sys.stderr
    files = check_request(req)
    inv, lpips = load_models(req)
    pipe = (pipeline_factory or Pipeline)(inv, lpips, req)
    names = output_names(files)
    out = RunOutputs(req.output_dir, (inv.n_latent, inv.generator.style_dim), req.method)
    print(f"inverting {len(files)} images from {req.input_dir} with {inv}: {_describe(req)}",
          file=log)
    ticker = Ticker(len(files), log)
    records, interrupted, t0 = [], False, time.perf_counter()
    try:
        for k, (rel, name) in enumerate(zip(files, names)):
            ticker.start(k, rel)
            try:
                result = pipe.run(os.path.join(req.input_dir, rel), k)
            except image_io.ImageReadError as e:
                ticker.skip(rel, str(e))
                out.skip(rel, ticker.last_reason)
                continue
            except Exception as e:  # noqa: BLE001 (keep going; the error is reported per file)
                ticker.skip(rel, f"inversion failed: {type(e).__name__}: {e}")
                out.skip(rel, ticker.last_reason)
                continue
            finally:
                ticker.stop()
            out.add(rel, name, result)
            records.append(dict(file=rel, name=name, **result.info))
            ticker.done(k, rel, result.info)
    except KeyboardInterrupt:
        interrupted = True
        ticker.stop()
    finally:
        out.close()
    seconds = time.perf_counter() - t0
    summary = dict(method=req.method, pivot=req.pivot if req.method == "pti" else None,
                   steps=req.num_steps if req.method != "e4e" else None,
                   checkpoint=os.path.abspath(req.checkpoint), lpips=req.lpips,
                   files=len(files), inverted=len(records), skipped=len(out.skipped),
                   interrupted=interrupted, seconds=round(seconds, 3), images=records,
                   latents_shape=[len(records), inv.n_latent, inv.generator.style_dim])
    with open(os.path.join(req.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{'interrupted: ' if interrupted else ''}inverted {len(records)} of {len(files)} "
          f"images in {seconds:.1f} s; skipped {len(out.skipped)}"
          f"{' (see skipped.txt)' if out.skipped else ''}; wrote {req.output_dir}/latents.npy "
          f"{tuple(summary['latents_shape'])}, files.txt, names.txt", file=log)
    if interrupted:
        raise KeyboardInterrupt
    return summary


COLUMN_LABELS = {"e4e": "e4e", "projector": "projector", "pti": "PTI (tuned)"}


def output_names(files: list[str]) -> list[str]:
    """Unique output names for relative image paths, in the given (sorted) order.

    The package's naming rule (e4e_jax/output_names.py: a name taken earlier in the run,
    compared ignoring case, keeps the input's extension, then gets '-2', '-3', ...) applied to
    the path flattened with '_' ('sub/b.png' -> 'sub_b'): flat names keep every tuned
    generator directory OUT/generators/<name>/ out of another one's.
    """
    from e4e_jax.outputs.names import OutputNames
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
        `result`: an `e4e_jax.apps.invert.ImageResult`."""
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
            from e4e_jax.nets.generator import save_generator
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


EXAMPLES = [
    "python -m e4e_jax.invert --checkpoint converted/e4e_ffhq_encode --input photos/ "
    "--output out/ --method pti --pivot e4e --steps 350 --lpips weights/lpips_alex",
    "python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode "
    "--generator out/generators/<name> --latents out/latents/<name>.npy --edit sefa:0 --out e/",
]


OUTPUTS = ("outputs: OUT/latents.npy + files.txt (+ names.txt), reconstructions/, side_by_side/, "
           "latents/<name>.npy, generators/<name>/ (pti), noises/<name>.npz (projector), "
           "summary.json.\nexit codes: 0 ok, 1 nothing usable produced, 2 bad arguments, "
           "130 interrupted.")
