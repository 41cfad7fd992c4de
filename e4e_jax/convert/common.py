"""Shared helpers of the converters: reading PyTorch files safely, key checks, layout changes.

Only this directory knows PyTorch layouts. Every converter is a pure function from a
`{key: numpy array}` state dict to Flax variables (testable without torch), plus a CLI that reads
the official file with `torch.load(weights_only=True)` (never unpickling code from a downloaded
file) and writes a model directory with `e4e_jax.nets.model_dir.save_model_dir`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import sys
import warnings
from typing import Any, Iterable, Mapping

import numpy as np

from e4e_jax.convert.pickle_scan import file_kind, pickle_globals
from e4e_jax.nets.model_dir import describe_mismatch


DST_HELP = ("output directory (created; an earlier conversion of the same kind there is "
            "replaced, anything else at that path is refused)")


class ConversionError(ValueError):
    """The file is not the checkpoint format the converter reads."""


def require_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "Reading PyTorch checkpoints needs torch (the CPU build is enough): `pip install torch "
            "--index-url https://download.pytorch.org/whl/cpu`, or `pip install -e .[convert]`."
        ) from e
    return torch


def to_numpy(obj: Any) -> Any:
    """Recursively turns torch tensors inside dicts/lists/tuples into numpy arrays (and
    argparse.Namespace objects into dicts, pathlib paths into strings)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy().copy()
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def _numpy_allow_list() -> list:
    """numpy numbers and number arrays (and the dtypes they are built from), under both module
    spellings (files written with numpy 1.x name `numpy.core`, numpy 2.x `numpy._core`)."""
    core = getattr(np, "_core", None) or np.core
    out: list = [np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(core.multiarray, name)
        out += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    # Only number kinds: building an object, string or void dtype stays refused by torch.
    out += sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}, key=str)
    return out


def plain_data_allow_list() -> list:
    """The classes `load_torch_file` lets torch's weights-only unpickler build, beyond the
    tensors, containers, numbers and strings torch allows by default. Each is plain data whose
    construction runs no code from the file:

    - argparse.Namespace: `args` of rosinality's train.py checkpoints, `opts` of pSp-family
      training checkpoints saved as a Namespace instead of `vars(opts)`.
    - numpy number scalars and number arrays (e.g. a loss or `ada_aug_p` computed with numpy).
    - pathlib.PosixPath / PurePosixPath / PureWindowsPath: the Path entries of
      stylegan3-editing's `opts` (dataclasses.asdict of its options); built from strings.

    Optimizer states (`g_optim`, `optimizer`, ...) and torch.device need nothing extra.
    """
    return ([argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath,
             pathlib.PureWindowsPath] + _numpy_allow_list())


def _allowed_names(allow_list: list) -> set[str]:
    return {item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}"
            for item in allow_list}


PLAIN_DATA = ("tensors, numbers, strings, None, dict / list / tuple / set / OrderedDict, "
              "torch dtypes and devices, numpy numbers and number arrays, argparse.Namespace, "
              "pathlib paths")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# torch's two wordings for a refused class: a GLOBAL opcode, or a BUILD of a type it cannot make
_REFUSED_PATTERNS = (re.compile(r"GLOBAL ([\w.]+) was not an allowed global"),
                     re.compile(r"but got <class '([\w.]+)'>"))


class UnsafeCheckpointError(ConversionError):
    """The file refers to Python classes or functions outside the allow-list; nothing was run.

    `refused` lists them as full paths (`module.QualName`)."""

    def __init__(self, message: str, refused: list[str]):
        super().__init__(message)
        self.refused = refused


def load_torch_file(path: str, keep: str = "model.state_dict()") -> Any:
    """Reads a torch.save file without executing pickled code; tensors become numpy arrays and
    argparse.Namespace objects become dicts of their attributes.

    torch.load(weights_only=True) is extended only by `plain_data_allow_list()`, so the training
    checkpoints people have (rosinality's train.py: g, d, g_ema, g_optim, d_optim, args as a
    Namespace, ada_aug_p; e4e/pSp coaches: state_dict, latent_avg, opts, optimizer,
    discriminator states) load, while any other class is refused. `keep` is the expression shown
    in the refusal message for what to re-save (e.g. "{'g_ema': ckpt['g_ema']}").

    Raises ConversionError (missing / unreadable file, torch too old) or UnsafeCheckpointError
    (naming every refused class and what to do). Messages never advise turning safety off.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path!r} does not exist or is not a file.")
    torch = require_torch()
    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):  # torch < 2.5: no allow-lists at all
        allowed = None
    else:
        allowed = plain_data_allow_list()
        if torch.__version__ < "2.6":  # (object, "module.name") aliases came with torch 2.6
            allowed = [a[0] if isinstance(a, tuple) else a for a in allowed]
    try:
        with warnings.catch_warnings():
            # plain pickles (protocol 4) make torch warn before it refuses them; we explain
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with (serialization.safe_globals(allowed) if allowed is not None
                  else contextlib.nullcontext()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        # `from None`: torch's own text (chained) recommends weights_only=False
        raise _read_error(path, e, keep, allowed, torch) from None
    return to_numpy(obj)


def _torch_default_safe_names(torch) -> set[str] | None:
    try:  # private, but the same table torch's weights-only unpickler consults
        from torch import _weights_only_unpickler as wou
        return set(wou._get_allowed_globals())
    except Exception:
        return None


def _refused_globals(path: str, text: str, allowed, torch) -> list[str]:
    """Every class torch refuses in the file: the globals of its pickle (a static scan: nothing
    is imported) that are neither torch's defaults nor on our allow-list, plus the ones torch's
    error names (torch names only the first; it is the fallback when the scan is impossible)."""
    names = {m for pattern in _REFUSED_PATTERNS for m in pattern.findall(text)}
    safe = _torch_default_safe_names(torch)
    ours = _allowed_names(allowed) if allowed is not None else set()
    try:
        if safe is not None:
            found = {n.replace("__builtin__.", "builtins.", 1) for n in pickle_globals(path)}
            names |= {n for n in found - safe - ours if not n.startswith("<")}
        elif allowed is not None and file_kind(path) == "zip":
            with torch.serialization.safe_globals(allowed):
                names.update(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # damaged file: keep what torch's error named
        pass
    return sorted(names)


def _torch_detail(text: str) -> str:
    """torch's error without colour codes, boilerplate or advice to disable weights_only."""
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.split("Check the documentation of torch.load", 1)[0]
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ("weights_only" in ln and "False" in ln)]
    return " ".join(lines)[:500].rstrip(". ")


_KIND_CAUSE = {
    "other": "it is not a torch.save file (neither torch's zip nor its legacy format): check "
             "that the download finished and that it is the right file (not, e.g., an HTML "
             "page)",
    "broken-zip": "it starts like a torch.save zip archive but is truncated or damaged (e.g. an "
                  "interrupted download): download it again",
    "pickle": "it is a plain pickle (pickle.dump), not a torch.save file: save the weights with "
              "torch.save",
}


def _read_error(path: str, e: Exception, keep: str, allowed, torch) -> ConversionError:
    text = _ANSI.sub("", str(e))
    try:
        kind = file_kind(path)
    except OSError:
        kind = "other"
    refused = _refused_globals(path, text, allowed, torch)
    if refused:
        return UnsafeCheckpointError(
            _refusal_message(path, refused, keep, allowed is None, kind), refused)
    cause = _KIND_CAUSE.get(kind, f"the file is corrupt or truncated (e.g. an interrupted "
                                  f"download), or was written by a newer torch than the "
                                  f"installed {torch.__version__}")
    return ConversionError(f"Could not read {path!r} as a PyTorch checkpoint: "
                           f"{type(e).__name__}: {_torch_detail(text) or 'no details'}. "
                           f"Likely cause: {cause}.")


def _refusal_message(path: str, refused: list[str], keep: str, old_torch: bool,
                     kind: str) -> str:
    lines = [f"{path!r} refers to Python classes or functions that the converter does not "
             f"load: {', '.join(refused)}. Nothing from the file was executed."]
    if old_torch and set(refused) <= _allowed_names(plain_data_allow_list()):
        lines.append(f"The installed torch {require_torch().__version__} cannot allow "
                     f"plain-data classes such as argparse.Namespace; upgrade it "
                     f"(`pip install -U torch`, 2.5 or newer) and convert again.")
        return "\n".join(lines)
    lines.append(f"The converters read only plain data: {PLAIN_DATA}.")
    if any(n.startswith(("torch_utils.", "dnnlib.")) for n in refused):
        lines.append("This is a StyleGAN2-ADA / StyleGAN3 network pickle: convert it with "
                     "`e4e-jax convert stylegan2_ada` (StyleGAN3 generators: `e4e-jax convert "
                     "stylegan3`).")
        return "\n".join(lines)
    if kind == "pickle":
        lines.append("The file is a plain pickle (pickle.dump), not a torch.save file.")
    if any(n.startswith("torch.nn.") for n in refused):
        lines.append("The file holds a whole pickled model (torch.save(model)), not its state "
                     "dict.")
    lines.append(f"What to do: in the Python environment that wrote the file (where these "
                 f"classes can be imported), load it and save only the weights, e.g. "
                 f"`torch.save({keep}, 'plain.pt')` (option entries such as opts or args as "
                 f"dicts of plain values), then convert plain.pt. If a listed class is plain "
                 f"data written by a public training code, report it so it can join the "
                 f"allow-list (plain_data_allow_list in e4e_jax/convert/common.py).")
    return "\n".join(lines)


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def check_keys(state: Mapping[str, Any], expected: Mapping[str, tuple], what: str,
               ignore: Iterable[str] = ()) -> None:
    """Raises ConversionError naming missing, unexpected and mis-shaped keys.

    `expected` maps each official key to its shape; keys starting with an `ignore` prefix are
    allowed to be present and are not converted.
    """
    ignore = tuple(ignore)
    found = {k: tuple(np.shape(v)) for k, v in state.items()
             if not (ignore and k.startswith(ignore))}
    message = describe_mismatch(expected, found,
                                f"{what}: the file does not match the expected checkpoint format.",
                                missing_word="missing keys", unexpected_word="unexpected keys")
    if message:
        raise ConversionError(message)


# Layout changes from PyTorch to Flax.
def conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch Conv2d weight (out, in, kh, kw) -> Flax HWIO (kh, kw, in, out)."""
    return np.ascontiguousarray(np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0)))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
    return np.ascontiguousarray(np.asarray(w, np.float32).T)


def f32(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32)


def cli_main(description: str, add_args, run, argv=None, module: str | None = None,
             examples=()) -> int:
    """Runs a converter CLI: parses arguments, runs, prints errors without a traceback.

    module: the format's name, e.g. "stylegan2": the usage line and every example read
    `e4e-jax convert stylegan2 ...` (`python convert_weights/stylegan2.py` runs the same code).
    Exit codes: 0 written, 2 bad arguments or an unreadable / unexpected file, 130 interrupted
    (nothing half-written).
    """
    # the converters are commands too: they share the command-line conventions of cli/
    from e4e_jax import cli
    prog = f"e4e-jax convert {module}" if module else None
    parser = cli.make_parser(prog, description,
                             examples=[f"{prog} {e}" for e in examples] if prog else (),
                             epilog="Exit codes: 0 model directory written, 2 bad arguments "
                                    "or an unreadable / unexpected file, 130 interrupted.")
    add_args(parser)
    cli.add_verbose(parser)
    args = parser.parse_args(argv)
    cli.quiet_third_party_logs(args.verbose)
    from e4e_jax.nets.model_dir import ModelDirError, check_replaceable
    try:
        if getattr(args, "dst", None):
            check_replaceable(args.dst)     # before the conversion's work; the kind at the end
        out = run(args)
    except (ConversionError, ModelDirError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED
    if out:
        print(out)
    return cli.EXIT_OK
