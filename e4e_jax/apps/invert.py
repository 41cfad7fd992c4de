"""The invert command's library: e4e, the W projector or PTI over a folder, image by image.

    req = InvertRequest("converted/e4e_ffhq_encode", "photos/", "out/", method="pti",
                        lpips="weights/lpips_vgg", steps=350)
    summary = invert_folder(req)             # also OUT/summary.json

Per image (`Pipeline.run`): the e4e code and reconstruction (always: it is the middle column of
the side-by-side PNG and PTI's default pivot), then
    projector: `e4e_jax.project` (ADA defaults: lr 0.1, `steps` steps) from w_avg;
    pti:       the pivot (the e4e code, or `project` with PTI's settings: lr 0.01,
               `pivot_steps` steps) then `e4e_jax.inversion.pti.tune` (`steps` steps, lr 3e-4,
               stop at LPIPS 0.06).
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
from e4e_jax.core import fs
from e4e_jax.data import image_io, prepared
from e4e_jax.outputs.grids import labelled_grid
from e4e_jax.outputs.progress import AFTER_COMPILE

METHODS = ("e4e", "projector", "pti", "restyle")
PIVOTS = ("e4e", "projector")
DEFAULT_STEPS = {"e4e": 0, "projector": 1000, "pti": 350,    # ADA num_steps, PTI max_pti_steps
                 "restyle": 0}
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
    iterations: int | None = None   # restyle: encoder passes (None: the official 5)
    dtype: str | None = None        # --dtype / --precision of every network loaded (None:
    precision: str | None = None    # the loaders' defaults; e4e_jax.core.precision)
    transforms: str | None = None   # StyleGAN3: (N, 3, 3) .npy, per-image input transforms
    given: tuple | None = None      # fields the user set (the CLI's flags); None: the fields
    #                                 that differ from these defaults

    @property
    def num_steps(self) -> int:
        """--steps, or the method's official default."""
        return DEFAULT_STEPS[self.method] if self.steps is None else int(self.steps)

    @property
    def num_iterations(self) -> int:
        """--iterations, or ReStyle's official n_iters_per_batch (5)."""
        from e4e_jax.inversion.restyle import DEFAULT_ITERATIONS
        return DEFAULT_ITERATIONS if self.iterations is None else int(self.iterations)


def check_request(req: InvertRequest) -> list[str]:
    """Checks the arguments before any model is loaded; returns the image files (relative).

    Raises InvertError (unknown method/pivot, steps < 1, missing --lpips, existing outputs
    without --overwrite, no images) or FileNotFoundError (missing folders).
    """
    if req.method not in METHODS:
        raise InvertError(f"--method must be one of {', '.join(METHODS)}, got {req.method!r}.")
    if req.pivot not in PIVOTS:
        raise InvertError(f"--pivot must be one of {', '.join(PIVOTS)}, got {req.pivot!r}.")
    check_settings_apply(req)
    if req.method == "restyle":
        _check_restyle_request(req)
    if req.method in ("projector", "pti") and req.num_steps < 1:
        raise InvertError(f"--steps must be >= 1, got {req.steps}.")
    if not np.isfinite(req.lpips_threshold):
        raise InvertError(f"--lpips-threshold must be a finite number, got "
                          f"{req.lpips_threshold}.")
    if req.method == "pti" and req.pivot == "projector" and req.pivot_steps < 1:
        raise InvertError(f"--pivot-steps must be >= 1, got {req.pivot_steps}.")
    if req.method in ("projector", "pti") and not req.lpips:
        recipe = "LPIPS-VGG (the official projector)" if req.method == "projector" else \
            "LPIPS-alex (PTI's default)"
        raise InvertError(f"--method {req.method} needs a loss network: pass --lpips DIR, a "
                          f"converted LPIPS directory (`e4e-jax convert lpips`; official "
                          f"recipe {recipe}).")
    if req.transforms is not None and not os.path.isfile(req.transforms):
        raise FileNotFoundError(f"--transforms {req.transforms!r} is not a file (an .npy "
                                f"array of shape (N, 3, 3), one transform per image).")
    if req.lpips and not os.path.isdir(req.lpips):
        raise FileNotFoundError(f"--lpips {req.lpips!r} is not a directory (convert one with "
                                f"`e4e-jax convert lpips`).")
    if not fs.isdir(req.input_dir):
        raise FileNotFoundError(f"--input {req.input_dir!r} is not a directory.")
    files = prepared.list_inputs(req.input_dir)      # an image folder or a prepared dataset
    if not files:
        raise InvertError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) under "
                          f"{req.input_dir!r}.")
    if fs.exists(req.output_dir) and not fs.isdir(req.output_dir):
        raise InvertError(f"--output {req.output_dir!r} is a file; give a folder (it is "
                          f"created if missing).")
    if req.transforms is not None:
        load_transforms(req.transforms, len(files))
    previous_run(req, files)            # refuses outputs it cannot resume
    return files


# Which --method each optional setting acts on (request field: flag, methods, and for pti
# whether it needs --pivot projector). A setting given for another method is refused rather
# than ignored, and resume compares only the settings the method uses.
APPLIES = {
    "iterations": ("--iterations", ("restyle",), False),
    "pivot": ("--pivot", ("pti",), False),
    "steps": ("--steps", ("projector", "pti"), False),
    "lpips": ("--lpips", ("projector", "pti"), False),
    "lpips_threshold": ("--lpips-threshold", ("pti",), False),
    "pivot_steps": ("--pivot-steps", ("pti",), True),
    "seed": ("--seed", ("projector", "pti"), True),
    "transforms": ("--transforms", ("e4e", "projector", "pti", "restyle"), False),
}


def setting_applies(field: str, method: str, pivot: str | None = "e4e") -> bool:
    """Whether request field `field` has an effect under --method `method` (and PTI's
    --pivot); fields outside APPLIES (checkpoint, input, dtype, ...) always do."""
    if field not in APPLIES:
        return True
    _, methods, needs_projector_pivot = APPLIES[field]
    if method not in methods:
        return False
    return not (method == "pti" and needs_projector_pivot and pivot != "projector")


def _where(field: str) -> str:
    _, methods, needs_projector_pivot = APPLIES[field]
    names = ["pti --pivot projector" if m == "pti" and needs_projector_pivot else m
             for m in methods]
    return "--method " + " or ".join(names)


def check_settings_apply(req: InvertRequest) -> None:
    """Refuses, in one line, the settings the user gave that --method (and --pivot) would
    ignore, naming the methods each applies to. The given settings are `req.given` (the CLI
    passes the flags on its command line) or, when None, the fields that differ from
    InvertRequest's defaults. Raises InvertError."""
    defaults = InvertRequest("", "", "")
    given = req.given if req.given is not None else [
        f for f in APPLIES if getattr(req, f) != getattr(defaults, f)]
    unused = [f for f in APPLIES if f in given
              and not setting_applies(f, req.method, req.pivot)]
    if not unused:
        return
    groups: dict[str, list[str]] = {}
    for f in unused:
        groups.setdefault(_where(f), []).append(APPLIES[f][0])
    parts = [f"{' and '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} to {where} "
             f"only" for where, flags in groups.items()]
    now = f"--method {req.method}" + (f" --pivot {req.pivot}" if req.method == "pti" else "")
    flags = [APPLIES[f][0] for f in unused]
    raise InvertError(f"{'; '.join(parts)}; {'it does' if len(flags) == 1 else 'they do'} not "
                      f"apply to {now}: drop {' and '.join(flags)} or choose the method "
                      f"{'it is' if len(flags) == 1 else 'they are'} for.")


def load_transforms(path: str, n_files: int) -> np.ndarray:
    """--transforms: (n_files, 3, 3) float32, row k the StyleGAN3 synthesis.input.transform
    (the inverse of the wanted image transform, as stylegan3-editing's landmarks transforms)
    rendering the k-th input file (files in the sorted order of files.txt). InvertError for an
    unreadable file or another shape."""
    try:
        t = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InvertError(f"--transforms {path!r} is not a readable .npy array ({e}); save an "
                          f"(N, 3, 3) float array with numpy.save.") from None
    if t.shape != (n_files, 3, 3) or not np.issubdtype(t.dtype, np.floating):
        raise InvertError(f"--transforms {path!r} must be a float array of shape ({n_files}, 3, "
                          f"3) (one transform per input file, in sorted order), got "
                          f"{t.dtype} {t.shape}.")
    if not np.isfinite(t).all():
        raise InvertError(f"--transforms {path!r} holds non-finite values.")
    # a transform maps the output grid onto the input plane: a singular one renders every
    # pixel from one line or point, never what a landmarks transform means
    singular = np.flatnonzero(np.abs(np.linalg.det(t.astype(np.float64))) < 1e-8)
    if singular.size:
        raise InvertError(f"--transforms {path!r}: rows {singular[:5].tolist()} are singular "
                          f"matrices (determinant 0); each row must be an invertible 3x3 "
                          f"transform (np.linalg.inv of an image transform).")
    return t.astype(np.float32)


SUMMARY = "summary.json"


def run_settings(req: InvertRequest) -> dict:
    """What a rerun must repeat to resume a folder: every field of the request but --output and
    --overwrite, with absolute paths and the method's resolved step count."""
    settings = dataclasses.asdict(req)
    for key in ("output_dir", "overwrite", "given"):
        settings.pop(key, None)
    for key in ("checkpoint", "input_dir", "lpips", "transforms"):
        if settings.get(key) and not fs.is_remote(settings[key]):
            settings[key] = os.path.abspath(settings[key])
    settings["steps"] = req.num_steps
    return json.loads(json.dumps(settings))        # the types summary.json gives back


@dataclasses.dataclass
class PreviousRun:
    """What an earlier run of the same command left in OUT: the first `processed` input files
    are finished (`files` inverted, the rows of `latents`, named `names`; `skipped` as
    (file, reason)); `records` and `seconds` are its summary's; `complete`: it was not
    interrupted and every file was handled."""
    processed: int
    latents: np.ndarray
    files: list
    names: list
    skipped: list
    records: list
    seconds: float
    complete: bool


def _lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def summary_owner(summary) -> str:
    """Which command wrote a summary.json found in an --output folder, by the keys each one
    writes ("an encode run's", "a training run's"), for the refusal to resume it."""
    if not isinstance(summary, dict):
        return "not a summary of this package"
    if "images_per_s" in summary and "latents_shape" in summary:
        return "an encode run's"
    if "mse_before" in summary and "steps" in summary:
        return "a training run's"
    return "another command's"


def previous_run(req: InvertRequest, files: list[str]) -> PreviousRun | None:
    """The earlier run of this very command (same settings, same input files) whose outputs are
    in OUT, to resume; None when OUT holds no outputs or --overwrite is given.

    Raises InvertError (the outputs exist but another command wrote them, or they do not match
    the inputs): resuming them would mix two runs.
    """
    out = req.output_dir
    existing = [os.path.join(out, n) for n in ("latents.npy", "generators")
                if os.path.exists(os.path.join(out, n))]
    if not existing or req.overwrite:
        return None

    def refuse(why: str) -> InvertError:
        return InvertError(f"{existing[0]!r} exists; pass --overwrite to replace the outputs in "
                           f"{out!r}, or choose another --output ({why}).")

    try:
        with open(os.path.join(out, SUMMARY)) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = {}
    old = summary.get("settings") if isinstance(summary, dict) else None
    if not isinstance(old, dict):
        raise refuse(f"summary.json there is {summary_owner(summary)}, not an invert run's "
                     f"that can be resumed" if summary
                     else "no summary.json of an invert run that can be resumed")
    new = run_settings(req)
    differ = _settings_differ(old, new)
    if differ:
        raise refuse("an invert run with other settings wrote it: " + ", ".join(differ))
    before = summary.get("input_files")
    if before != list(files):
        raise refuse(f"an invert run of other input files wrote it: "
                     f"{_files_changed(before if isinstance(before, list) else [], files)} "
                     f"in {req.input_dir!r}")
    latents = np.load(os.path.join(out, "latents.npy"), mmap_mode="r") \
        if os.path.exists(os.path.join(out, "latents.npy")) else np.zeros((0,), np.float32)
    done, names = _lines(os.path.join(out, "files.txt")), _lines(os.path.join(out, "names.txt"))
    # a run killed inside one image's writes leaves that row in some files only: drop it
    n = min(len(latents), len(done), len(names))
    skipped = [tuple(line.split("\t", 1)) for line in _lines(os.path.join(out, "skipped.txt"))]
    handled = done[:n] + [s[0] for s in skipped]
    if sorted(handled) != sorted(files[:len(handled)]):
        raise refuse("its files.txt / skipped.txt are not the first input files in order")
    # a killed run wrote no summary rows: those images keep their file and name only
    rows = {r.get("file"): r for r in summary.get("images", []) if isinstance(r, dict)}
    return PreviousRun(
        processed=len(handled), latents=np.array(latents[:n], np.float32), files=done[:n],
        names=names[:n], skipped=[(s[0], s[1] if len(s) > 1 else "") for s in skipped],
        records=[rows.get(f, {"file": f, "name": name}) for f, name in zip(done[:n], names)],
        seconds=float(summary.get("seconds") or 0.0),
        complete=bool(summary.get("complete")) and len(handled) == len(files))


def _settings_differ(old: dict, new: dict) -> list[str]:
    """'key A there, B now' for each setting that differs between two runs' summary settings;
    a setting the run's method does not use reads "not used" (and is not compared when neither
    run used it)."""
    def value(settings: dict, key: str):
        if not setting_applies(key, settings.get("method"), settings.get("pivot")):
            return "not used"
        return repr(settings.get(key))
    out = []
    for k in sorted(set(old) | set(new)):
        was, now = value(old, k), value(new, k)
        if was != now:
            out.append(f"{k} {was} there, {now} now")
    return out


def _files_changed(before: list, after: list, show: int = 3) -> str:
    """Names the input files added and removed since the earlier run (the first `show` of
    each, and their count)."""
    def some(names: list) -> str:
        more = f", ... {len(names) - show} more" if len(names) > show else ""
        return ", ".join(repr(n) for n in names[:show]) + more
    was, now = set(before), set(after)
    added, removed = [f for f in after if f not in was], [f for f in before if f not in now]
    parts = ([f"{len(added)} file(s) added ({some(added)})"] if added else []) + \
        ([f"{len(removed)} removed ({some(removed)})"] if removed else [])
    return ", ".join(parts) if parts else "the same files in another order"


def _check_restyle_request(req: InvertRequest) -> None:
    iters = req.iterations
    if iters is not None and (isinstance(iters, bool) or int(iters) != iters or int(iters) < 1):
        raise InvertError(f"--iterations must be >= 1, got {iters}.")


def load_models(req: InvertRequest):
    """(inverter, lpips or None). Raises ModelDirError for bad directories and InvertError for
    a model the method cannot use (cars crop, conditional generator, an LPIPS network that sees
    nothing at the generator's resolution)."""
    from e4e_jax.nets.encoder import check_checkpoint, load_encoder
    from e4e_jax.nets.loss_nets import load_lpips
    check_checkpoint(req.checkpoint)
    policy = {k: v for k, v in (("dtype", req.dtype), ("precision", req.precision))
              if v is not None}
    inv = load_encoder(req.checkpoint, **policy)
    from e4e_jax.apps.invert_restyle import check_model
    check_model(inv, req.method)
    if req.method in ("projector", "pti"):
        if inv.crop_rows is not None:
            raise InvertError(f"--method {req.method} fits the generator's full square image; "
                              f"this checkpoint crops rows {inv.crop_rows} (cars), which is not "
                              f"supported: use --method e4e.")
        if inv.generator.c_dim:
            raise InvertError(f"--method {req.method} needs an unconditional generator.")
    if req.transforms is not None and not hasattr(inv.generator, "transform"):
        raise InvertError(f"--transforms: only a StyleGAN3 generator has an input transform; "
                          f"{req.checkpoint} holds a StyleGAN2 one ({inv.generator.resolution}px)"
                          f": drop --transforms.")
    optimises = req.method in ("projector", "pti")
    lpips = load_lpips(req.lpips, **policy) if req.lpips and optimises else None
    if lpips is not None:
        from e4e_jax.inversion.common import InversionError, check_lpips_resolution
        try:
            check_lpips_resolution(lpips, inv.generator.resolution,
                                   f"--lpips {req.lpips} with the checkpoint's generator")
        except InversionError as e:
            raise InvertError(str(e)) from None
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
    columns: list | None = None        # [(uint8 image, label)]: replaces the side-by-side row
    unaligned8: np.ndarray | None = None     # --transforms: the code rendered with its transform
    iterations_w: np.ndarray | None = None   # restyle: (N, n_latent, S), every iteration's W+


class Pipeline:
    """The per-image work, importable without argv: `Pipeline(inv, lpips, req).run(path)`.

    Every model call is jit-compiled once (weights are arguments; every image has the same
    shapes), so the first image pays the compilation.
    """

    def __init__(self, inv, lpips, req: InvertRequest):
        self.inv, self.lpips, self.req = inv, lpips, req
        self.g = inv.generator
        self.transforms = (None if req.transforms is None else
                           load_transforms(req.transforms, len(prepared.list_inputs(
                               req.input_dir))))

    def _unaligned(self, result: ImageResult, k: int) -> ImageResult:
        """stylegan3-editing's unaligned inversion: the same code rendered with the k-th input
        transform (by the PTI-tuned generator for pti), at the size of the reconstruction (the
        encoder's face pool for e4e and restyle: stylegan3-editing's run_on_batch renders the
        last ReStyle iteration with the transform and resizes it like the others)."""
        if self.transforms is None:
            return result
        g = result.generator if result.generator is not None else self.g
        full = g.synthesis(np.asarray(result.w)[None], transform=self.transforms[k])
        if self.req.method in ("e4e", "restyle"):
            return dataclasses.replace(result, unaligned8=self._display(full))
        return dataclasses.replace(result, unaligned8=image_io.to_uint8(np.asarray(full)[0]))

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
        """Inverts the image file `path` (the k-th image: its random draws use seed + k, its
        --transforms row is k)."""
        return self._unaligned(self._run(path, k), k)

    def _run(self, path: str, k: int) -> ImageResult:
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
    if req.method == "restyle":
        return f"ReStyle, {req.num_iterations} iterations"
    if req.method == "projector":
        return f"W projector, {req.num_steps} steps"
    pivot = "e4e pivot" if req.pivot == "e4e" else \
        f"projector pivot ({req.pivot_steps} steps, lr {PTI_PROJECTOR_LR})"
    return f"PTI, {pivot}, {req.num_steps} tuning steps"


RESUME_FILES = ("latents.npy", "files.txt", "names.txt", "skipped.txt", SUMMARY)


class _Renamed:
    """A log stream that writes `old` (a staging folder) as `new` (the bucket it stands for)."""

    def __init__(self, stream, old: str, new: str):
        self.stream, self.old, self.new = stream, old, new

    def write(self, text: str) -> int:
        return self.stream.write(text.replace(self.old, self.new))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()


def invert_folder(req: InvertRequest, log=None, pipeline_factory=None) -> dict:
    """Runs the command (`run_folder`) and returns its summary (also OUT/summary.json).

    A bucket --output (gs://..., e4e_jax.core.fs) is written to a local staging folder
    (fs.OutputFolder) that starts with the files a resume reads back (RESUME_FILES), is
    uploaded after each finished image (at most every 30 s) and in full at the end, also when
    interrupted; messages name the bucket, not the staging folder.
    """
    log = log or sys.stderr
    if not fs.is_remote(req.output_dir):
        return run_folder(req, log, pipeline_factory)
    from e4e_jax.train.interrupts import Interrupted
    if fs.exists(req.output_dir) and not fs.isdir(req.output_dir):
        raise InvertError(f"--output {req.output_dir!r} is a file; give a folder.")
    stage = fs.OutputFolder(req.output_dir)
    stage.fetch(*RESUME_FILES)
    if fs.isdir(fs.join(req.output_dir, "generators")):
        os.makedirs(os.path.join(stage.local, "generators"), exist_ok=True)
    staged = dataclasses.replace(req, output_dir=stage.local)
    try:
        return run_folder(staged, _Renamed(log, stage.local, req.output_dir), pipeline_factory,
                          stage)
    except (InvertError, Interrupted) as e:
        e.args = tuple(a.replace(stage.local, req.output_dir) if isinstance(a, str) else a
                       for a in e.args)
        raise
    finally:
        stage.close()


def run_folder(req: InvertRequest, log=None, pipeline_factory=None,
               stage: fs.OutputFolder | None = None) -> dict:
    """Runs the command on a local --output; returns its summary (also OUT/summary.json).

    Unreadable files and images whose inversion fails are recorded in OUT/skipped.txt and the
    run goes on. SIGTERM / Ctrl-C stop at once (the image in progress is dropped, never half
    written), keep every finished image, write the summary and raise
    e4e_jax.train.interrupts.Interrupted (its one-line message, exit_code 143 / 130).
    Rerunning the same request resumes an interrupted run (`previous_run`): the finished
    images are kept and the others inverted, so the outputs end as an uninterrupted run's; a
    finished run is left as it is. A run that inverted nothing leaves no latents.npy.
    Raises InvertError / FileNotFoundError / ModelDirError for bad requests (before anything
    is written). `pipeline_factory(inv, lpips, req)` replaces `Pipeline` (tests inject
    failures through it).
    """
    from e4e_jax.train.interrupts import AbortSignals, Interrupted
    log = log or sys.stderr
    files = check_request(req)
    prev = previous_run(req, files)
    latents_path = os.path.join(req.output_dir, "latents.npy")
    if prev is not None and prev.complete:
        print(f"{req.output_dir} already holds this command's finished run ({len(prev.files)} "
              f"of {len(files)} images inverted, {len(prev.skipped)} skipped): nothing to do "
              f"(--overwrite redoes it)", file=log)
        with open(os.path.join(req.output_dir, SUMMARY)) as f:
            return json.load(f)
    inv, lpips = load_models(req)
    if pipeline_factory is None and req.method == "restyle":
        from e4e_jax.apps.invert_restyle import RestylePipeline as pipeline_factory
    pipe = (pipeline_factory or Pipeline)(inv, lpips, req)
    names = output_names(files)
    start = prev.processed if prev is not None else 0
    records = list(prev.records) if prev is not None else []
    print(f"inverting {len(files)} image{'' if len(files) == 1 else 's'} from {req.input_dir} "
          f"with {inv}: {_describe(req)}", file=log)
    if start:
        print(f"resuming the interrupted run in {req.output_dir}: {start} of {len(files)} "
              f"images already done, inverting the other {len(files) - start}", file=log)
    ticker = Ticker(len(files), log)
    interrupted, t0, processed = False, time.perf_counter(), start
    shape = (inv.n_latent, inv.generator.style_dim)

    def summary_now(complete: bool) -> dict:
        summary = dict(method=req.method, pivot=req.pivot if req.method == "pti" else None,
                       steps=req.num_steps if req.method in ("projector", "pti") else None,
                       iterations=req.num_iterations if req.method == "restyle" else None,
                       checkpoint=os.path.abspath(req.checkpoint), lpips=req.lpips,
                       files=len(files), processed=processed, inverted=len(records),
                       skipped=len(out.skipped), interrupted=interrupted, complete=complete,
                       resumed_at=start or None,
                       seconds=round((prev.seconds if prev else 0.0)
                                     + time.perf_counter() - t0, 3),
                       images=records, latents_shape=[len(records), *shape],
                       settings=run_settings(req), input_files=list(files))
        _write_json(os.path.join(req.output_dir, SUMMARY), summary)
        return summary

    out = None
    with AbortSignals() as signals:
        try:
            with signals.protect():
                out = RunOutputs(req.output_dir, shape, req.method)
                if prev is not None:
                    out.restore(prev)
                summary_now(complete=False)  # the settings a rerun must match, from the start
            for k in range(start, len(files)):
                rel, name = files[k], names[k]
                ticker.start(k, rel)
                try:
                    result = pipe.run(prepared.input_file(req.input_dir, rel), k)
                except image_io.ImageReadError as e:
                    with signals.protect():
                        ticker.skip(rel, e.named(rel))
                        out.skip(rel, ticker.last_reason)
                        processed = k + 1
                    continue
                except Exception as e:  # noqa: BLE001 (keep going; reported per file)
                    with signals.protect():
                        ticker.skip(rel, f"inversion failed: {type(e).__name__}: {e}")
                        out.skip(rel, ticker.last_reason)
                        processed = k + 1
                    continue
                finally:
                    ticker.stop()
                with signals.protect():
                    out.add(rel, name, result)
                    records.append(dict(file=rel, name=name, **result.info))
                    processed = k + 1
                    if stage is not None:
                        stage.sync()
                ticker.done(k, rel, result.info)
            signals.hold()                   # the final writes are not cut short
        except KeyboardInterrupt:
            signals.hold()
            interrupted = True
        ticker.stop()
        if out is None:                      # stopped before anything was opened
            raise Interrupted(f"{signals.name}: interrupted before the first image; nothing "
                              f"was changed in {req.output_dir}", signals.exit_code)
        out.close()
        summary = summary_now(complete=not interrupted)
        if not interrupted and not records:
            out.remove_empty()               # no empty latents.npy to block the next run
    seconds = time.perf_counter() - t0
    if interrupted:
        raise Interrupted(
            f"{signals.name}: interrupted after {processed} of {len(files)} images "
            f"({len(records)} inverted, {len(out.skipped)} skipped; {latents_path} "
            f"{tuple(summary['latents_shape'])}, summary.json); rerun the same command to "
            f"resume", signals.exit_code)
    wrote = (f"wrote {latents_path} {tuple(summary['latents_shape'])}, files.txt, names.txt"
             if records else "wrote no latents")
    print(f"inverted {len(records)} of {len(files)} images in {seconds:.1f} s; skipped "
          f"{len(out.skipped)}{' (see skipped.txt)' if out.skipped else ''}; {wrote}", file=log)
    return summary


def _write_json(path: str, data: dict) -> None:
    """Replaces `path` in one rename, so a killed run never leaves half a summary."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


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
        if result.columns is not None:
            cells = list(result.columns)
        title = f"{rel}: " + " | ".join(label for _, label in cells)
        image_io.save_png(labelled_grid([cells], title=title),
                          self._path("side_by_side", name + ".png"))
        os.makedirs(os.path.join(self.dir, "latents"), exist_ok=True)
        np.save(self._path("latents", name + ".npy"), np.asarray(result.w, np.float32)[None])
        if result.unaligned8 is not None:
            image_io.save_png(result.unaligned8, self._path("unaligned", name + ".png"))
        if result.noises:      # a StyleGAN3 generator has no noise maps: no empty file
            os.makedirs(os.path.join(self.dir, "noises"), exist_ok=True)
            np.savez(self._path("noises", name + ".npz"),
                     **{f"noise_{i}": np.asarray(n) for i, n in enumerate(result.noises)})
        if result.iterations_w is not None:
            from e4e_jax.apps.invert_restyle import save_iterations
            save_iterations(self.dir, name, result.iterations_w)
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

    def restore(self, prev: "PreviousRun") -> None:
        """Writes back the rows of latents.npy, files.txt, names.txt and skipped.txt that an
        interrupted run of the same command finished (opening the files emptied them); the
        per-image files (PNGs, latents/, generators/, noises/) stay where they are."""
        if len(prev.latents):
            self.folder.writer.append(prev.latents)
        self.folder.names_f.write("".join(f + "\n" for f in prev.files))
        self.folder.names_f.flush()
        self.names_f.write("".join(n + "\n" for n in prev.names))
        self.names_f.flush()
        for rel, reason in prev.skipped:
            self.folder.skip(rel, reason)

    def remove_empty(self) -> None:
        """After close: deletes latents.npy, files.txt and names.txt when no row was written,
        so a folder of a run that inverted nothing is not taken for finished outputs."""
        if self.folder.writer.rows == 0:
            for name in ("latents.npy", "files.txt", "names.txt"):
                path = os.path.join(self.dir, name)
                if os.path.exists(path):
                    os.remove(path)

    def close(self) -> None:
        """Closes latents.npy (valid with the rows written), files.txt, names.txt."""
        self.folder.close()
        self.names_f.close()


class Ticker:
    """Progress lines with an ETA per image and overall.

    Each image is one compiled call (no per-step host callback), so the per-image ETA comes
    from the images already done, leaving out the first one (it includes compilation): until a
    second image is done the ETA reads "ETA after compile" (e4e_jax.outputs.progress); while an
    image runs, a background thread prints its elapsed time and ETAs every `interval` seconds.
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
        """Expected seconds of the next image: the mean of the images after the first (None
        before a second image finished; the first one's time is mostly compilation)."""
        if len(self.durations) < 2:
            return None
        return float(np.mean(self.durations[1:]))

    def _eta(self, remaining_after: int, elapsed: float) -> str:
        est = self.estimate()
        if est is None:
            return AFTER_COMPILE
        here = max(0.0, est - elapsed)
        total = here + est * remaining_after
        return f"~{here:.0f} s left for this image, overall ETA ~{total:.0f} s"

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
        # the console shows 5 significant digits; summary.json keeps the full values
        parts = ", ".join(f"{key} {v:.5g}" if isinstance(v, float) else f"{key} {v}"
                          for key, v in info.items())
        left = self.total - k - 1
        est = self.estimate()
        eta = ("last image" if not left else f"overall {AFTER_COMPILE}" if est is None
               else f"overall ETA {est * left:.0f} s")
        self._print(f"[{k + 1}/{self.total}] {rel}: done in {dt:.1f} s ({parts}); {eta}")

    def skip(self, rel: str, reason: str) -> None:
        """Reports a file that produced nothing."""
        self.last_reason = reason
        self._print(f"skipping {rel}: {reason}")


EXAMPLES = [
    "python -m e4e_jax.invert --checkpoint converted/e4e_ffhq_encode --input photos/ "
    "--output out/ --method pti --pivot e4e --steps 350 --lpips weights/lpips_alex",
    "python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode "
    "--generator out/generators/<name> --latents out/latents/<name>.npy --edit sefa:0 --output e/",
]


OUTPUTS = ("outputs: OUT/latents.npy + files.txt (+ names.txt), reconstructions/, side_by_side/, "
           "latents/<name>.npy, generators/<name>/ (pti), noises/<name>.npz (projector), "
           "iterations/<name>.npy (restyle), unaligned/<name>.png (--transforms), "
           "summary.json.\nexit codes: 0 ok, 1 nothing usable produced, 2 bad arguments, "
           "130 / 143 interrupted by Ctrl-C / SIGTERM (rerun the same command to resume).")
