"""eval.py's logic: every metric of the paper for one or more encoder checkpoints, and the report.

    python eval.py --checkpoint runs/demo/export --data synthetic --out eval/
    python eval.py --checkpoint e4e_ffhq --checkpoint psp_ffhq --data celeba_test/ --out eval/ \\
        --lpips weights/lpips_alex --arcface weights/arcface --inception weights/fid_inception \\
        --edits interfacegan:age.pt:3 --lec_edit interfacegan:age.pt:3

Writes OUT/metrics.json ({checkpoint name: entry}), OUT/report.md, and per checkpoint
OUT/<name>/inversions.png and OUT/<name>/edits.png (linked from the report).

An entry maps every metric key of METRICS to a number, or to null with a `<key>_reason` string
saying why it is unavailable (e.g. "no --lpips directory given"), plus the metadata keys of
METADATA (checkpoint path, image_size, num_images, ...). Checkpoints are keyed by the basename of
their directory; a repeated basename gets a suffix: export, export-2, export-3.

Comparisons: inputs at the model's input size (image_io, like the official test transform) in
[-1, 1]; reconstructions are the Inverter's (face_pool, cars crop) clipped to [-1, 1] (what a
saved image holds) and not rounded to uint8. The comparison size is the model's own output size
(256x256 for the official models, 32x32 for the demo; recorded as image_size); nothing is
resampled. On the synthetic domain the encoder sees the generated images as in training and
both sides are clipped for every image comparison.

Everything runs in fixed-size batches (the last one padded and its padding dropped), so each
jitted function compiles once; `recompilations` in an entry counts compilations after the second
batch of each loop (0: every later batch, the padded last one included, reused the programs).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from e4e_jax import image_io

# (key, family, better, description)
METRICS = (
    ("mse", "distortion", "lower", "L2: mean squared error, inputs vs inversions"),
    ("lpips", "distortion", "lower", "LPIPS (alex) between inputs and inversions"),
    ("identity", "distortion", "higher",
     "cosine similarity of ArcFace (faces) or MoCo (other domains) features"),
    ("swd", "perception", "lower", "SWD x1e3, real images vs inversions"),
    ("fid", "perception", "lower", "FID, real images vs inversions"),
    ("swd_edit", "editability", "lower", "SWD x1e3, real images vs edited inversions "
                                         "(mean over --edits)"),
    ("fid_edit", "editability", "lower", "FID, real images vs edited inversions "
                                         "(mean over --edits)"),
    ("lec", "editability", "lower", "Latent Editing Consistency (eq. 8) of --lec_edit"),
    ("latent_variation", "proximity", "lower", "mean ||w - w_mu||_2 of the inversions"),
    ("w_deviation", "proximity", "lower", "E ||E(G(w)) - w||_2 over sampled w"),
)
METRIC_KEYS = tuple(m[0] for m in METRICS)
METADATA = ("checkpoint", "model", "data", "num_images", "image_size", "skipped_images",
            "edits", "lec_edit", "deviation_samples", "lpips_net", "identity_net", "fid_method",
            "recompilations", "grids", "seconds")
LEC_GROUP_SIZE = 8
SYNTHETIC = "synthetic"


class EvalError(ValueError):
    """A bad argument: missing files, not an inverter directory, unusable data."""


# ----------------------------------------------------------------------------------------------
# Checkpoints


def check_checkpoint(path: str) -> None:
    """Raises ModelDirError with a hint when `path` is not an inverter directory."""
    from e4e_jax import checkpoints
    from e4e_jax.inverter import KIND
    path = os.fspath(path)
    try:
        meta = checkpoints.read_meta(path)
    except checkpoints.ModelDirError as e:
        export = os.path.join(path, "export")
        if os.path.isdir(export):
            raise checkpoints.ModelDirError(f"{e} It holds an export/ folder: pass "
                                            f"{export!r} (a training workdir's inference "
                                            f"directory).") from None
        raise
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


# ----------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class Batch:
    images: np.ndarray        # (batch_size, H, W, 3) float32, padded by repeating the last row
    valid: int                # rows that are real images
    names: list[str]


class SourceImages:
    """An image folder or a TFDS split (e4e_jax.data sources), read at the model's input size
    like the official test transform; unreadable files are skipped and listed."""

    def __init__(self, source, description: str, num_images: int | None = None,
                 workers: int = 4):
        self.source = source
        self.description = description
        self.count = len(source) if not num_images else min(len(source), int(num_images))
        self.workers = max(1, int(workers))
        self.skipped: list[str] = []
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return self.count

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        size = inv.input_size
        skipped: list[str] = []

        def load(i):
            try:
                return self.source.name(i), image_io.to_model_input(self.source.load(i, size))
            except image_io.ImageReadError as e:
                return self.source.name(i), e

        names, rows = [], []
        with cf.ThreadPoolExecutor(self.workers) as pool:
            pending = collections.deque()
            indices = iter(range(self.count))
            for i in indices:
                pending.append(pool.submit(load, i))
                if len(pending) >= 2 * batch_size:
                    break
            while pending:
                name, x = pending.popleft().result()
                nxt = next(indices, None)
                if nxt is not None:
                    pending.append(pool.submit(load, nxt))
                if isinstance(x, Exception):
                    skipped.append(name)
                    if name not in self._warned:        # once, not on every pass
                        self._warned.add(name)
                        print(f"warning: skipping unreadable image {name}: {x}",
                              file=sys.stderr)
                    continue
                names.append(name)
                rows.append(x)
                if len(rows) == batch_size:
                    yield Batch(np.stack(rows), batch_size, names)
                    names, rows = [], []
        if rows:
            yield Batch(pad_batch(np.stack(rows), batch_size), len(rows), names)
        self.skipped = skipped


class SyntheticImages:
    """The checkpoint generator's own domain: image i is G(mapping(z_i)) with stored noise,
    z_i ~ N(0, I) from fold_in(key(seed), i) (independent of the batch size), pooled to the
    encoder's input size when the generator's resolution differs (as training does)."""

    def __init__(self, num_images: int, seed: int = 0):
        if num_images < 1:
            raise EvalError(f"--num_images must be >= 1 for synthetic data, got {num_images}.")
        self.count = int(num_images)
        self.seed = int(seed)
        self.skipped: list[str] = []
        self.description = (f"synthetic: the generator's own domain, G(mapping(z)) with seed "
                            f"{self.seed}")
        self._fns: dict[int, Callable] = {}

    def __len__(self) -> int:
        return self.count

    def _fn(self, inv):
        import jax
        import jax.numpy as jnp
        from e4e_jax.ops import adaptive_avg_pool2d
        g = inv.generator
        if g.c_dim:
            raise EvalError("--data synthetic needs an unconditional generator; this one takes "
                            f"class labels (c_dim={g.c_dim}).")
        size = tuple(inv.input_size)

        def make(variables, key, first, n):
            idx = first + jnp.arange(n)
            z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i),
                                                     (g.z_dim,)))(idx)
            w = g.map(variables, z)
            w_plus = jnp.broadcast_to(w[:, None], (n, g.n_latent, w.shape[-1]))
            x = g.synthesize(variables, w_plus, "const")
            if tuple(x.shape[1:3]) != size:
                x = adaptive_avg_pool2d(x, size)
            return x
        return jax.jit(make, static_argnums=3)

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        import jax
        fn = self._fns.get(id(inv))
        if fn is None:
            fn = self._fns[id(inv)] = self._fn(inv)
        key = jax.random.key(self.seed)
        for start in range(0, self.count, batch_size):
            m = min(batch_size, self.count - start)
            x = np.asarray(fn(inv.generator.variables, key, start, batch_size))
            yield Batch(pad_batch(x[:m], batch_size), m,
                        [f"synthetic_{i:05d}" for i in range(start, start + m)])


def pad_batch(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Pads a short batch by repeating its last row (one compiled shape for every batch)."""
    pad = batch_size - len(x)
    if pad <= 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])


def open_data(spec: str, data_dir: str | None = None, num_images: int | None = None,
              seed: int = 0):
    """'synthetic' | 'tfds:NAME:SPLIT' | an image folder -> SyntheticImages / SourceImages."""
    from e4e_jax import data as data_lib
    if spec == SYNTHETIC:
        return SyntheticImages(1000 if num_images is None else num_images, seed)
    if num_images is not None and num_images < 1:
        raise EvalError(f"--num_images must be >= 1, got {num_images}.")
    if not spec.startswith("tfds:") and not os.path.isdir(spec):
        raise EvalError(f"--data {spec!r} is not a folder, 'tfds:NAME:SPLIT' or 'synthetic'.")
    try:
        source = data_lib.make_source(spec, data_dir)
    except data_lib.DataError as e:
        raise EvalError(str(e)) from e
    return SourceImages(source, repr(source), num_images)


# ----------------------------------------------------------------------------------------------
# Networks


@dataclasses.dataclass
class Networks:
    """The optional networks, loaded once for every checkpoint; reasons say why one is absent."""
    lpips: Any = None
    lpips_reason: str | None = "no --lpips directory given"
    similarity: Any = None
    similarity_kind: str | None = None
    similarity_reason: str | None = "no --arcface (faces) or --moco (other domains) directory given"
    inception: Any = None
    inception_reason: str | None = None

    def __post_init__(self):
        if self.inception is None and self.inception_reason is None:
            from e4e_jax import metrics
            self.inception_reason = metrics.maybe_load_inception(None)[1]
        self._sim_fn = None

    def similarity_fn(self):
        """jit (variables, a, b) -> per-image cosine similarity of the unit feature vectors."""
        import jax
        import jax.numpy as jnp
        if self._sim_fn is None:
            module = self.similarity.module
            self._sim_fn = jax.jit(lambda v, a, b: jnp.sum(module.apply(v, a) * module.apply(v, b),
                                                           axis=-1))
        return self._sim_fn


def load_networks(lpips: str | None = None, arcface: str | None = None, moco: str | None = None,
                  inception: str | None = None) -> Networks:
    """Loads the given directories (an explicitly given directory that fails is an error)."""
    from e4e_jax import loss_nets, metrics
    if arcface and moco:
        raise EvalError("give --arcface (faces) or --moco (other domains), not both: they fill "
                        "the same 'identity' metric.")
    nets = Networks()
    if lpips:
        nets.lpips, nets.lpips_reason = loss_nets.load_lpips(lpips), None
    if arcface or moco:
        loader = loss_nets.load_arcface if arcface else loss_nets.load_moco
        nets.similarity = loader(arcface or moco)
        nets.similarity_kind = "arcface" if arcface else "moco"
        nets.similarity_reason = None
    if inception:
        nets.inception, nets.inception_reason = metrics.load_inception(inception), None
    return nets


def _runs_on(fn: Callable, *shapes) -> str | None:
    """None when fn traces on arrays of these shapes, else the error text."""
    import jax
    import jax.numpy as jnp
    try:
        jax.eval_shape(fn, *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
        return None
    except Exception as e:  # shape errors surface as TypeError / ValueError from flax / lax
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# ----------------------------------------------------------------------------------------------
# Compilation counting


class CompileCounter:
    """Counts XLA compilations (jax.monitoring backend_compile events) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1

    def __enter__(self) -> "CompileCounter":
        from jax import monitoring
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        from jax import monitoring
        monitoring.unregister_event_duration_listener(self._listener)


class _BatchMarks:
    """Compilation count at the start of each batch of a loop: later batches must add none."""

    def __init__(self, counter: CompileCounter):
        self.counter = counter
        self.marks: list[int] = []

    def mark(self) -> None:
        self.marks.append(self.counter.count)

    def after_second_batch(self) -> int | None:
        """Compilations from the start of the second batch to now (None: fewer batches)."""
        return None if len(self.marks) < 2 else self.counter.count - self.marks[1]


# ----------------------------------------------------------------------------------------------
# Progress


class ProgressPrinter:
    """'[name] stage: done/total (rate/s)' lines on stderr: in place on a terminal, otherwise
    every `every_s` seconds and at the end of each stage."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.every_s = every_s
        self._start: dict[tuple, float] = {}
        self._last = 0.0

    def __call__(self, name: str, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        t0 = self._start.setdefault((name, stage), now)
        if done == 0:                   # a stage starts: only its clock
            return
        rate = done / (now - t0) if now > t0 else 0.0
        line = f"[{name}] {stage}: {done}/{total} ({rate:.1f}/s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total or now - self._last >= self.every_s:
            self.stream.write(line + "\n")
            self._last = now
        self.stream.flush()


# ----------------------------------------------------------------------------------------------
# Evaluation of one checkpoint


@dataclasses.dataclass
class EvalOptions:
    batch_size: int = 8
    seed: int = 0
    edits: Sequence[str] | None = None     # None: the LEC edit; []: none
    lec_edit: str | None = "sefa:0"        # None: LEC off
    deviation_samples: int = 5000          # 0: off
    fid_method: str = "sqrtm"
    num_grid: int = 4


def _compare_fn():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def compare(x, rec):
        xc, rc = jnp.clip(x, -1.0, 1.0), jnp.clip(rec, -1.0, 1.0)
        mse = jnp.mean(jnp.square(rc - xc), axis=(1, 2, 3))
        return xc, rc, mse
    return compare


_COMPARE = None
_CLIP = None


def _jitted_helpers():
    global _COMPARE, _CLIP
    import jax
    import jax.numpy as jnp
    if _COMPARE is None:
        _COMPARE = _compare_fn()
        _CLIP = jax.jit(lambda x: jnp.clip(x, -1.0, 1.0))
    return _COMPARE, _CLIP


def _set(entry: dict, key: str, value: Any, reason: str | None = None) -> None:
    if value is not None and not np.isfinite(value):
        # JSON has no NaN / inf: a diverged model's metric becomes null with the value as reason
        value, reason = None, f"the value is not finite ({value})"
    if value is None:
        entry[key] = None
        entry[f"{key}_reason"] = reason or "unavailable"
    else:
        entry[key] = float(value)
        entry.pop(f"{key}_reason", None)


def _reason_for_all(entry: dict, keys: Sequence[str], reason: str) -> None:
    for k in keys:
        _set(entry, k, None, reason)


def _edit_id(spec, strength: float) -> str:
    return f"{spec.name}:{strength:+g}"


def evaluate_checkpoint(inv, data, nets: Networks, options: EvalOptions, name: str = "model",
                        grid_dir: str | None = None, progress: Callable | None = None) -> dict:
    """Every metric for one loaded Inverter over `data` (SourceImages / SyntheticImages).

    Returns the metrics.json entry; with `grid_dir`, writes inversions.png and edits.png there
    (their paths are returned under 'grids').
    """
    import jax
    import jax.numpy as jnp
    from e4e_jax import metrics
    from e4e_jax.edit import EditSpecError, parse_edit_spec, prepare_edits

    t0 = time.perf_counter()
    progress = progress or (lambda *a: None)
    bs = int(options.batch_size)
    if bs < 1:
        raise EvalError(f"--batch_size must be >= 1, got {bs}.")
    compare, clip = _jitted_helpers()
    decode = make_decoder(inv)
    gv = inv.generator.variables

    lec_spec = parse_edit_spec(options.lec_edit) if options.lec_edit else None
    edit_specs = ([lec_spec] if lec_spec else []) if options.edits is None else \
        [parse_edit_spec(e) for e in options.edits]
    try:
        prepared = prepare_edits(edit_specs + ([lec_spec] if lec_spec else []), inv.generator,
                                 inv.n_latent)
        edits = prepared[:len(edit_specs)]
        lec_edit = prepared[-1] if lec_spec else None
    except EditSpecError as e:
        raise EvalError(f"{name}: {e}") from e

    in_h, in_w = inv.input_size
    out_shape = jax.eval_shape(decode, gv, jax.ShapeDtypeStruct(
        (1, inv.n_latent, inv.generator.style_dim), jnp.float32)).shape
    out_h, out_w = int(out_shape[1]), int(out_shape[2])
    same_size = (out_h, out_w) == (in_h, in_w)
    size_reason = (f"inputs are {in_h}x{in_w} (the encoder's input size) but reconstructions "
                   f"{out_h}x{out_w} (face_pool / crop); image comparisons need one size and "
                   f"nothing is resampled")
    entry: dict[str, Any] = {
        "checkpoint": None, "model": repr(inv), "data": data.description,
        "num_images": None, "image_size": [out_h, out_w], "skipped_images": [],
        "edits": [_edit_id(p.spec, p.spec.default_strength) for p in edits],
        "lec_edit": None if lec_edit is None else _edit_id(lec_spec, lec_spec.default_strength),
        "deviation_samples": int(options.deviation_samples),
        "lpips_net": None if nets.lpips is None else nets.lpips.net_type,
        "identity_net": nets.similarity_kind, "fid_method": options.fid_method,
    }

    # which per-batch metrics can run
    lp_reason = nets.lpips_reason
    if nets.lpips is not None:
        if not same_size:
            lp_reason = size_reason
        else:
            err = _runs_on(lambda a, b: nets.lpips.module.apply(nets.lpips.variables, a, b),
                           (1, out_h, out_w, 3), (1, out_h, out_w, 3))
            lp_reason = err and (f"LPIPS-{nets.lpips.net_type} cannot run on {out_h}x{out_w} "
                                 f"images: {err}")
    sim_reason = nets.similarity_reason
    if nets.similarity is not None:
        if not same_size:
            sim_reason = size_reason
        elif nets.similarity_kind == "arcface" and (out_h, out_w) != (256, 256):
            sim_reason = (f"ArcFace identity takes 256x256 aligned faces (it crops rows 35:223, "
                          f"columns 32:220); these images are {out_h}x{out_w}")
        else:
            err = _runs_on(lambda a: nets.similarity.module.apply(nets.similarity.variables, a),
                           (1, out_h, out_w, 3))
            sim_reason = err and (f"{nets.similarity_kind} cannot run on {out_h}x{out_w} "
                                  f"images: {err}")
    levels = metrics.swd_resolutions(out_h)
    swd_reason = None
    if not levels:
        swd_reason = (f"SWD needs images of at least {metrics.SWD_MIN_RESOLUTION}px, these are "
                      f"{out_h}x{out_w}")
    elif out_h % 2 ** (len(levels) - 1) or out_w % 2 ** (len(levels) - 1):
        swd_reason = (f"SWD's {len(levels)}-level pyramid needs sizes divisible by "
                      f"{2 ** (len(levels) - 1)}, these are {out_h}x{out_w}")
    elif not same_size:
        swd_reason = size_reason

    swd_kw = dict(seed=options.seed, batch_size=bs)
    swd_real = metrics.SWDDescriptors(**swd_kw) if swd_reason is None else None
    swd_rec = metrics.SWDDescriptors(**swd_kw) if swd_reason is None else None
    swd_edits = [metrics.SWDDescriptors(**swd_kw) for _ in edits] if swd_reason is None else []
    feats: dict[str, list] = collections.defaultdict(list)
    sums = collections.defaultdict(float)
    grid_rows: list[dict] = []
    n = 0
    marks = {k: None for k in ("inversion", "lec", "deviation")}
    sim_fn = nets.similarity_fn() if nets.similarity is not None and sim_reason is None else None

    with CompileCounter() as counter:
        inv_marks = _BatchMarks(counter)
        total = len(data)
        progress(name, "inversion metrics", 0, total)
        for batch in data.batches(inv, bs):
            inv_marks.mark()
            x, m = batch.images, batch.valid
            w, rec = inv.invert(x)
            if same_size:
                xc, rc, mse = compare(x, rec)
                sums["mse"] += float(np.sum(np.asarray(mse)[:m]))
            else:
                xc, rc = clip(x), clip(rec)
            if nets.lpips is not None and lp_reason is None:
                sums["lpips"] += float(np.sum(np.asarray(nets.lpips(xc, rc))[:m]))
            if sim_fn is not None:
                sims = sim_fn(nets.similarity.variables, xc, rc)
                sums["identity"] += float(np.sum(np.asarray(sims)[:m]))
            # the valid rows are cut from host copies: slicing device arrays to the short last
            # batch would compile new (small) programs
            w_np, xc_np, rc_np = np.asarray(w), np.asarray(xc), np.asarray(rc)
            sums["latent_variation"] += metrics.latent_variation(w_np[:m], batch_size=bs) * m
            if swd_real is not None:
                swd_real.add(xc_np[:m])
                swd_rec.add(rc_np[:m])
            if nets.inception is not None:
                feats["real"].append(nets.inception.features(xc_np[:m], batch_size=bs))
                feats["rec"].append(nets.inception.features(rc_np[:m], batch_size=bs))
            edited = []
            for e, p in enumerate(edits):
                we = p.apply(w, (p.spec.default_strength,))
                img = np.asarray(clip(decode(gv, we.reshape(we.shape[:1] + we.shape[2:]))))
                edited.append(img)
                if swd_edits:
                    swd_edits[e].add(img[:m])
                if nets.inception is not None:
                    feats[f"edit{e}"].append(nets.inception.features(img[:m], batch_size=bs))
            for i in range(min(m, options.num_grid - len(grid_rows))):
                grid_rows.append({"name": batch.names[i],
                                  "source": image_io.to_uint8(xc_np[i]),
                                  "inversion": image_io.to_uint8(rc_np[i]),
                                  "edits": [image_io.to_uint8(im[i]) for im in edited]})
            n += m
            progress(name, "inversion metrics", n, total)
        marks["inversion"] = inv_marks.after_second_batch()
        entry["num_images"] = n
        entry["skipped_images"] = list(data.skipped)
        if n == 0:
            raise EvalError(f"{name}: no readable images in {data.description}.")

        # distortion
        _set(entry, "mse", sums["mse"] / n if same_size else None, size_reason)
        _set(entry, "lpips", sums["lpips"] / n if lp_reason is None else None, lp_reason)
        _set(entry, "identity", sums["identity"] / n if sim_reason is None else None, sim_reason)

        # perception and editability
        if swd_reason is None:
            res = metrics.swd_between(swd_real, swd_rec, seed=options.seed)
            for k, v in res.items():
                _set(entry, k, v)
        else:
            _set(entry, "swd", None, swd_reason)
        fid_reason = nets.inception_reason
        if fid_reason is None and n < 2:
            fid_reason = f"FID needs at least 2 images, got {n}"
        fid_real = np.concatenate(feats["real"]) if fid_reason is None else None
        _set(entry, "fid", None if fid_reason else metrics.fid_from_features(
            fid_real, np.concatenate(feats["rec"]), method=options.fid_method), fid_reason)
        if not edits:
            why = "no --edits given" if options.edits is not None else "no edit (--lec_edit none)"
            _reason_for_all(entry, ("swd_edit", "fid_edit"), why)
        else:
            swd_values, fid_values = [], []
            for e, p in enumerate(edits):
                eid = _edit_id(p.spec, p.spec.default_strength)
                if swd_reason is None:
                    v = metrics.swd_between(swd_real, swd_edits[e], seed=options.seed)["swd"]
                    _set(entry, f"swd_edit/{eid}", v)
                    swd_values.append(v)
                if fid_reason is None:
                    v = metrics.fid_from_features(fid_real, np.concatenate(feats[f"edit{e}"]),
                                                  method=options.fid_method)
                    _set(entry, f"fid_edit/{eid}", v)
                    fid_values.append(v)
            _set(entry, "swd_edit", np.mean(swd_values) if swd_values else None, swd_reason)
            _set(entry, "fid_edit", np.mean(fid_values) if fid_values else None, fid_reason)

        # latent editing consistency
        gen_reason = None if same_size else (
            f"generated images are {out_h}x{out_w} but the encoder takes {in_h}x{in_w}; "
            f"E(G(w)) needs them equal")
        if lec_edit is None:
            _set(entry, "lec", None, "disabled with --lec_edit none")
        elif gen_reason:
            _set(entry, "lec", None, gen_reason)
        elif n < LEC_GROUP_SIZE:
            _set(entry, "lec", None, f"LEC averages groups of {LEC_GROUP_SIZE} images (the "
                                     f"official batch) and needs at least {LEC_GROUP_SIZE}, "
                                     f"got {n}")
        else:
            lec_marks = _BatchMarks(counter)
            linear = lec_edit.linear()

            def lec_forward(codes):
                lec_marks.mark()        # called once per batch, after its first encode
                return linear(codes)

            lec_done = [0]

            def lec_inverse(codes):
                lec_done[0] += 1
                progress(name, "LEC", min(lec_done[0] * bs, n), n)
                return linear.inverse(codes)

            batches = (b.images[:b.valid] for b in data.batches(inv, bs))
            progress(name, "LEC", 0, n)
            lec = metrics.latent_editing_consistency(
                batches, inv.encode, lambda w: decode(gv, w), lec_forward, lec_inverse,
                batch_size=bs, group_size=LEC_GROUP_SIZE)
            _set(entry, "lec", lec)
            marks["lec"] = lec_marks.after_second_batch()

        # proximity to W
        _set(entry, "latent_variation", sums["latent_variation"] / n)
        g = inv.generator
        samples = int(options.deviation_samples)
        if samples <= 0:
            _set(entry, "w_deviation", None, "disabled with --deviation_samples 0")
        elif gen_reason:
            _set(entry, "w_deviation", None, gen_reason)
        elif g.c_dim:
            _set(entry, "w_deviation", None, f"the generator is conditional (c_dim={g.c_dim}); "
                                             f"w = mapping(z) needs class labels")
        else:
            dev_marks = _BatchMarks(counter)
            dev_done = [0]

            def mapping(z):
                dev_marks.mark()
                dev_done[0] += 1
                progress(name, "W deviation", min(dev_done[0] * bs, samples), samples)
                return g.mapping(z)

            progress(name, "W deviation", 0, samples)
            dev = metrics.latent_deviation(inv.encode, lambda w: decode(gv, w), mapping,
                                           inv.n_latent, n_samples=samples, batch_size=bs,
                                           seed=options.seed, style_dim=g.z_dim)
            _set(entry, "w_deviation", dev)
            marks["deviation"] = dev_marks.after_second_batch()
    entry["recompilations"] = marks

    if grid_dir is not None and grid_rows:
        entry["grids"] = _write_grids(grid_dir, grid_rows, edits)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def _write_grids(folder: str, rows: list[dict], edits) -> dict:
    from e4e_jax.edit import labelled_grid
    os.makedirs(folder, exist_ok=True)
    out = {}
    inv_rows = [[(r["source"], r["name"]), (r["inversion"], "inversion")] for r in rows]
    path = os.path.join(folder, "inversions.png")
    image_io.save_png(labelled_grid(inv_rows, title="source | inversion"), path)
    out["inversions"] = path
    if edits:
        edit_rows = [[(r["source"], r["name"]), (r["inversion"], "inversion")]
                     + [(im, p.spec.describe(p.spec.default_strength))
                        for im, p in zip(r["edits"], edits)] for r in rows]
        path = os.path.join(folder, "edits.png")
        image_io.save_png(labelled_grid(edit_rows, title="source | inversion | edits"), path)
        out["edits"] = path
    return out


# ----------------------------------------------------------------------------------------------
# Report


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(out: str, results: dict[str, dict], argv: Sequence[str] | None = None,
                 data_description: str = "") -> str:
    """OUT/report.md: a table of every metric per checkpoint, the reasons for unavailable ones,
    and the grids (relative links)."""
    names = list(results)
    lines = ["# e4e_jax evaluation", ""]
    if argv is not None:
        lines += ["```", "python eval.py " + " ".join(argv), "```", ""]
    if data_description:
        first = results[names[0]] if names else {}
        lines.append(f"- Data: {data_description}; {first.get('num_images')} images per "
                     f"checkpoint, compared at {first.get('image_size')} (H, W) in [-1, 1], "
                     f"reconstructions clipped, not rounded.")
    for nm in names:
        r = results[nm]
        lines.append(f"- `{nm}`: `{r.get('checkpoint')}` — {r.get('model')}; "
                     f"{r.get('seconds')} s")
    lines += ["", "## Metrics", "",
              "| metric | family | better | " + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    footnotes: list[str] = []
    extra_keys = sorted({k for r in results.values() for k in r
                         if k.startswith(("swd_", "fid_edit/")) and k not in METRIC_KEYS
                         and not k.endswith("_reason")})
    rows = [(k, fam, better, desc) for k, fam, better, desc in METRICS]
    rows += [(k, "editability" if "edit" in k else "perception", "lower",
              "per edit" if "edit" in k else "per pyramid level") for k in extra_keys]
    for key, family, better, desc in rows:
        cells = []
        for nm in names:
            v = results[nm].get(key)
            if v is None and f"{key}_reason" in results[nm]:
                reason = results[nm][f"{key}_reason"]
                if reason not in footnotes:
                    footnotes.append(reason)
                cells.append(f"n/a [{footnotes.index(reason) + 1}]")
            else:
                cells.append(_fmt(v))
        desc = desc.replace("|", "\\|")
        lines.append(f"| `{key}` ({desc}) | {family} | {better} | " + " | ".join(cells) + " |")
    if footnotes:
        lines += ["", "Unavailable metrics:", ""]
        lines += [f"{i + 1}. {r}" for i, r in enumerate(footnotes)]
    lines += ["", "Edits: " + "; ".join(f"`{nm}`: {', '.join(results[nm].get('edits') or [])}"
                                        f" (LEC: {results[nm].get('lec_edit')})" for nm in names)]
    for title, key in (("Inversions", "inversions"), ("Edits", "edits")):
        links = [(nm, results[nm].get("grids", {}).get(key)) for nm in names]
        links = [(nm, p) for nm, p in links if p]
        if not links:
            continue
        lines += ["", f"## {title}", ""]
        for nm, p in links:
            rel = os.path.relpath(p, out).replace(os.sep, "/")
            lines += [f"### `{nm}`", "", f"![{nm} {key}]({rel})", ""]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def _json_entry(entry: dict, out: str) -> dict:
    e = dict(entry)
    if "grids" in e:
        e["grids"] = {k: os.path.relpath(v, out).replace(os.sep, "/")
                      for k, v in e["grids"].items()}
    return e


# ----------------------------------------------------------------------------------------------
# The command


def run(checkpoints_: Sequence[str], data: str, out: str, data_dir: str | None = None,
        num_images: int | None = None, nets: Networks | None = None,
        options: EvalOptions | None = None, argv: Sequence[str] | None = None,
        progress: Callable | None = None, log=None) -> dict[str, dict]:
    """Evaluates every checkpoint; writes OUT/metrics.json and OUT/report.md after each one."""
    log = log or sys.stderr
    from e4e_jax.edit import parse_edit_spec
    from e4e_jax.inverter import load_encoder
    options = options or EvalOptions()
    if not checkpoints_:
        raise EvalError("give at least one --checkpoint DIR.")
    for c in checkpoints_:
        check_checkpoint(c)
    for spec in list(options.edits or []) + ([options.lec_edit] if options.lec_edit else []):
        parse_edit_spec(spec)                      # syntax errors before any work
    images = open_data(data, data_dir, num_images, options.seed)
    nets = nets or Networks()
    os.makedirs(out, exist_ok=True)
    names = checkpoint_names(checkpoints_)
    progress = progress or ProgressPrinter(log)
    loaded: dict[str, Any] = {}
    results: dict[str, dict] = {}
    for name, path in zip(names, checkpoints_):
        real = os.path.realpath(path)
        if real not in loaded:                    # the same directory twice: one compilation
            loaded[real] = load_encoder(path)
        inv = loaded[real]
        print(f"[{name}] evaluating {inv} on {images.description} ({len(images)} images)",
              file=log)
        entry = evaluate_checkpoint(inv, images, nets, options, name=name,
                                    grid_dir=os.path.join(out, name), progress=progress)
        entry["checkpoint"] = os.path.abspath(path)
        results[name] = entry
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({k: _json_entry(v, out) for k, v in results.items()}, f, indent=2)
        write_report(out, results, argv, images.description)
        summary = ", ".join(f"{k} {_fmt(entry.get(k))}" for k in METRIC_KEYS)
        print(f"[{name}] {summary} ({entry['seconds']} s)", file=log)
    print(f"wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'report.md')} "
          f"({len(results)} checkpoint(s))", file=log)
    return results


def build_parser() -> argparse.ArgumentParser:
    from e4e_jax.edit import SPEC_HELP
    p = argparse.ArgumentParser(
        prog="python eval.py",
        description="Distortion, perception, editability and proximity-to-W metrics of e4e/pSp "
                    "encoder checkpoints; writes OUT/metrics.json and OUT/report.md.",
        epilog=f"Edit specs: {SPEC_HELP}. Unavailable metrics are null with a "
               f"'<metric>_reason' in metrics.json.")
    p.add_argument("--checkpoint", action="append", required=True, metavar="DIR",
                   help="inverter directory (convert_weights/e4e.py output or WORKDIR/export); "
                        "repeat to compare several (keyed by directory name)")
    p.add_argument("--data", required=True,
                   help="an image folder, 'tfds:NAME:SPLIT' (with --data_dir), or 'synthetic' "
                        "(each checkpoint generator's own images G(mapping(z)))")
    p.add_argument("--data_dir", default=None, help="TFDS data directory")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num_images", type=int, default=None,
                   help="evaluate at most this many images (synthetic: how many; default 1000)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0,
                   help="synthetic images, SWD patches and projections, sampled w")
    p.add_argument("--lpips", help="converted LPIPS directory (convert_weights/lpips.py; alex)")
    p.add_argument("--arcface", help="converted ArcFace directory: identity similarity (faces)")
    p.add_argument("--moco", help="converted MoCo directory: feature similarity (other domains)")
    p.add_argument("--inception", help="converted FID Inception directory "
                                       "(convert_weights/fid_inception.py)")
    p.add_argument("--fid_method", default="sqrtm", choices=("sqrtm", "eigen"),
                   help="sqrtm: pytorch-fid's computation; eigen: same value, much faster")
    p.add_argument("--edits", nargs="+", action="extend", metavar="SPEC",
                   help="edits for the editability FID/SWD at each spec's strength (default: "
                        "the --lec_edit; 'none' for no edits)")
    p.add_argument("--lec_edit", default="sefa:0", metavar="SPEC",
                   help="the edit of the Latent Editing Consistency (default sefa:0, strength "
                        "5, needs no files; 'none' to skip)")
    p.add_argument("--deviation_samples", type=int, default=5000,
                   help="sampled w for E||E(G(w)) - w|| (0 to skip)")
    p.add_argument("--num_grid", type=int, default=4, help="images in the report's grids")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from e4e_jax.checkpoints import ModelDirError
    from e4e_jax.edit import EditSpecError, parse_edit_spec
    edits = args.edits
    if edits is not None and [e.lower() for e in edits] == ["none"]:
        edits = []
    lec = None if args.lec_edit.lower() == "none" else args.lec_edit
    options = EvalOptions(batch_size=args.batch_size, seed=args.seed, edits=edits, lec_edit=lec,
                          deviation_samples=args.deviation_samples, fid_method=args.fid_method,
                          num_grid=args.num_grid)
    try:
        for c in args.checkpoint:                 # cheap checks before loading any network
            check_checkpoint(c)
        for spec in list(edits or []) + ([lec] if lec else []):
            parse_edit_spec(spec)
        nets = load_networks(args.lpips, args.arcface, args.moco, args.inception)
        run(args.checkpoint, args.data, args.out, data_dir=args.data_dir,
            num_images=args.num_images, nets=nets, options=options, argv=argv)
    except (ModelDirError, EditSpecError, EvalError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
