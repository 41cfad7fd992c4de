"""What every evaluator shares: the metric table, options, the per-checkpoint context, entries.

An entry (one checkpoint's part of metrics.json) maps every key of METRICS to a float, or to
None with a `<key>_reason` string saying why it is unavailable, plus the METADATA keys.

Evaluators (distortion, distribution, editability, proximity) follow one protocol:

    ev = FamilyEvaluator(ctx)        # decides which of its metrics can run (the *_reason logic)
    ev.update(out)                   # once per inverted batch (BatchOutputs)
    ev.finish(entry, n)              # writes its entries; may run its own loops (LEC, deviation)

`batch_outputs` makes the BatchOutputs of one padded batch for every caller, eval.py and the
training loop's evaluations (e4e_jax.train.validation) alike: the distortion evaluator is built
from networks and sizes only (`DistortionEvaluator(nets, in_hw, out_hw)`), so training runs the
same code on its held-out images.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

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

# eval.py's default number of sampled w for w_deviation: minutes on a CPU for a small folder.
# The paper's setting (5,000 codes, each generated and inverted) is `--paper`.
DEFAULT_DEVIATION_SAMPLES = 500
PAPER_DEVIATION_SAMPLES = 5000



class EvalError(ValueError):
    """A bad argument: missing files, not an inverter directory, unusable data."""


class NothingEvaluatedError(EvalError):
    """The evaluation ran but no image could be read (eval.py exits 1)."""


@dataclasses.dataclass
class EvalOptions:
    """eval.py's options (see its --help): batch size, seed, --edits (None: the LEC edit; []:
    none), --lec_edit (None: off), --deviation_samples (0: off; eval.py's default is
    DEFAULT_DEVIATION_SAMPLES, --paper gives PAPER_DEVIATION_SAMPLES), --fid_method,
    --num_grid."""
    batch_size: int = 8
    seed: int = 0
    edits: Sequence[str] | None = None     # None: the LEC edit; []: none
    lec_edit: str | None = "sefa:0"        # None: LEC off
    deviation_samples: int = DEFAULT_DEVIATION_SAMPLES   # 0: off
    fid_method: str = "sqrtm"
    num_grid: int = 4


@dataclasses.dataclass
class Context:
    """One checkpoint's evaluation: the model, data, networks, options and derived sizes.

    in_hw: the encoder's input size; out_hw: the reconstructions' size (face_pool / crop);
    image comparisons need `same_size` and otherwise report `size_reason`. `edits` are the
    PreparedEdits of --edits; `lec_edit` (and its spec) the LEC edit or None. `marks` collects
    the recompilation counts per loop; `counter` is the active CompileCounter.
    """
    inv: Any
    data: Any
    nets: Any
    options: Any
    name: str
    progress: Callable
    bs: int
    decode: Callable
    gv: Any
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    edits: list
    lec_edit: Any
    lec_spec: Any
    counter: Any = None
    marks: dict = dataclasses.field(
        default_factory=lambda: {k: None for k in ("inversion", "lec", "deviation")})

    @property
    def same_size(self) -> bool:
        return self.out_hw == self.in_hw

    @property
    def size_reason(self) -> str:
        return size_reason(self.in_hw, self.out_hw)

    @property
    def generation_reason(self) -> str | None:
        """Why E(G(w)) cannot run (LEC, W deviation), or None."""
        if self.same_size:
            return None
        (in_h, in_w), (out_h, out_w) = self.in_hw, self.out_hw
        return (f"generated images are {out_h}x{out_w} but the encoder takes {in_h}x{in_w}; "
                f"E(G(w)) needs them equal")


def size_reason(in_hw: Sequence[int], out_hw: Sequence[int]) -> str:
    """Why inputs of size in_hw and reconstructions of size out_hw cannot be compared."""
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    return (f"inputs are {in_h}x{in_w} (the encoder's input size) but reconstructions "
            f"{out_h}x{out_w} (face_pool / crop); image comparisons need one size and "
            f"nothing is resampled")


@dataclasses.dataclass
class BatchOutputs:
    """One inverted batch, shared by the evaluators' `update`.

    x, rec: (B, H, W, 3) inputs and reconstructions as the model saw / made them (device, not
    clipped); m: valid rows (the rest is the loader's padding); w: (B, n_latent, S) codes;
    xc, rc: clipped inputs / reconstructions (device); w_np, xc_np, rc_np: host copies (the
    valid rows are cut from these: slicing device arrays to the short last batch would compile
    new programs); edited: per --edits edit, the clipped decoded edit (B, H, W, 3) on the host.
    """
    x: Any
    rec: Any
    m: int
    w: Any
    xc: Any
    rc: Any
    w_np: np.ndarray
    xc_np: np.ndarray
    rc_np: np.ndarray
    edited: list = dataclasses.field(default_factory=list)


_CLIP = None


def clip_images(x):
    """x clipped to [-1, 1] by one jitted program (what a saved image holds), on device."""
    global _CLIP
    if _CLIP is None:
        import jax
        import jax.numpy as jnp
        _CLIP = jax.jit(lambda a: jnp.clip(a, -1.0, 1.0))
    return _CLIP(x)


def batch_outputs(x, rec, w, m: int, edited: Sequence[np.ndarray] = ()) -> BatchOutputs:
    """The BatchOutputs of one padded batch: inputs x (B, H, W, 3), reconstructions rec
    (B, H', W', 3) and codes w (B, n_latent, S), `m` rows real."""
    xc, rc = clip_images(x), clip_images(rec)
    return BatchOutputs(x=x, rec=rec, m=int(m), w=w, xc=xc, rc=rc, w_np=np.asarray(w),
                        xc_np=np.asarray(xc), rc_np=np.asarray(rc), edited=list(edited))


def per_image_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) float32 mean over pixels and channels of (b - a)^2, computed on the host."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.mean((b - a) ** 2, axis=(1, 2, 3))


def set_metric(entry: dict, key: str, value: Any, reason: str | None = None) -> None:
    """entry[key] = float(value), or None with entry[key + "_reason"] (a non-finite value too)."""
    if value is not None and not np.isfinite(value):
        # JSON has no NaN / inf: a diverged model's metric becomes null with the value as reason
        value, reason = None, f"the value is not finite ({value})"
    if value is None:
        entry[key] = None
        entry[f"{key}_reason"] = reason or "unavailable"
    else:
        entry[key] = float(value)
        entry.pop(f"{key}_reason", None)


def reason_for_all(entry: dict, keys: Sequence[str], reason: str) -> None:
    for k in keys:
        set_metric(entry, k, None, reason)


def edit_id(spec, strength: float) -> str:
    return f"{spec.name}:{strength:+g}"


def runs_on(fn: Callable, *shapes) -> str | None:
    """None when fn traces on arrays of these shapes, else the error text."""
    import jax
    import jax.numpy as jnp
    try:
        jax.eval_shape(fn, *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
        return None
    except Exception as e:  # shape errors surface as TypeError / ValueError from flax / lax
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

