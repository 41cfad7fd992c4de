"""Shared helpers of the converters: reading PyTorch files safely, key checks, layout changes.

Only this directory knows PyTorch layouts. Every converter is a pure function from a
`{key: numpy array}` state dict to Flax variables (testable without torch), plus a CLI that reads
the official file with `torch.load(weights_only=True)` (never unpickling code from a downloaded
file) and writes a model directory with `e4e_jax.checkpoints.save_model_dir`.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Mapping

import numpy as np

from e4e_jax.checkpoints import describe_mismatch


class ConversionError(ValueError):
    """The file is not the checkpoint format the converter reads."""


def require_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError(
            "Reading PyTorch checkpoints needs torch: `pip install -e .[convert]` "
            "(on machines with a local CPU wheel: `pip install torch==2.13.0`).") from e
    return torch


def to_numpy(obj: Any) -> Any:
    """Recursively turns torch tensors inside dicts/lists/tuples into numpy arrays."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy().copy()
    if isinstance(obj, Mapping):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def load_torch_file(path: str) -> Any:
    """Reads a PyTorch checkpoint without executing pickled code; tensors become numpy arrays."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path!r} does not exist or is not a file.")
    torch = require_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ConversionError(
            f"Could not read {path!r} as a PyTorch checkpoint with weights_only=True: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. The file is corrupt, "
            f"is not a torch.save file, or holds Python objects other than tensors and plain "
            f"containers (refused for safety).") from e
    return to_numpy(obj)


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

    module: e.g. "convert_weights.stylegan2", shown as `python -m convert_weights.stylegan2`
    in the usage line and before every example's arguments. Exit codes: 0 written, 2 bad
    arguments or an unreadable / unexpected file, 130 interrupted (nothing half-written).
    """
    from e4e_jax import cli
    prog = f"python -m {module}" if module else None
    parser = cli.make_parser(prog, description,
                             examples=[f"{prog} {e}" for e in examples] if prog else (),
                             epilog="Exit codes: 0 model directory written, 2 bad arguments "
                                    "or an unreadable / unexpected file, 130 interrupted.")
    add_args(parser)
    cli.add_verbose(parser)
    args = parser.parse_args(argv)
    cli.quiet_third_party_logs(args.verbose)
    try:
        out = run(args)
    except ConversionError as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED
    if out:
        print(out)
    return cli.EXIT_OK
