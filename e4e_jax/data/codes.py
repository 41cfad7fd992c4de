"""Arrays and latent codes from the files users have: .npy, .npz and torch .pt / .pth.

    array = read_array_file("age.pt")                   # ndarray, or {name: ndarray} for a dict
    codes = read_codes("out/latents.npy")               # float32, every value finite
    codes = read_codes("latents.pt")                    # the official e4e inference's output
    codes = read_codes("codes.npz:w_plus")              # one array of an .npz, named

The official e4e `scripts/inference.py` saves its W+ codes with `torch.save` as `latents.pt`;
reading it needs torch (`pip install .[convert]`) and runs no pickled code (weights_only).
Codes holding NaN or Inf are refused naming the rows, so no command turns them into images or
edits silently.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

ARRAY_EXTENSIONS = (".npy", ".npz", ".pt", ".pth")


class CodesError(ValueError):
    """A codes file that cannot be used (the message names the problem and the fix)."""


def read_array_file(path: str) -> Any:
    """The content of an array file: an ndarray (.npy, a tensor in a .pt) or {name: ndarray}
    (.npz; a dict in a .pt, nested values as the torch loader returns them).

    .pt / .pth files need torch and are read with weights_only (no pickled code runs).
    Raises FileNotFoundError, or ValueError naming an unknown extension or an unreadable file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist or is not a file.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return np.load(path, allow_pickle=False)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"{path!r} is not a readable {ext} file: {e}") from e
    if ext in (".pt", ".pth"):
        from e4e_jax.convert.common import load_torch_file
        return load_torch_file(path, keep="the codes tensor")
    raise ValueError(f"{path!r}: unknown file type {ext!r}; expected one of "
                     f"{', '.join(ARRAY_EXTENSIONS)}.")


def split_key(spec: str) -> tuple[str, str | None]:
    """"codes.npz:w_plus" -> ("codes.npz", "w_plus"); a path without a key -> (path, None)."""
    head, sep, key = os.fspath(spec).rpartition(":")
    if sep and head.lower().endswith(ARRAY_EXTENSIONS) and not os.path.exists(spec):
        return head, key
    return os.fspath(spec), None


def non_finite_rows(array: np.ndarray) -> np.ndarray:
    """Indices along the first axis of the rows that hold NaN or Inf."""
    flat = np.asarray(array).reshape(len(array), -1)
    return np.flatnonzero(~np.all(np.isfinite(flat), axis=1))


def describe_rows(rows: np.ndarray, names=None) -> str:
    """"rows 0, 3, ..." (at most 10), or the rows' names when given."""
    shown = [str(names[i]) if names is not None else str(i) for i in rows[:10]]
    return ", ".join(shown) + (", ..." if len(rows) > 10 else "")


def check_finite(codes: np.ndarray, what: str) -> None:
    """Raises CodesError naming the rows (first axis) that hold NaN or Inf."""
    bad = non_finite_rows(codes)
    if len(bad):
        raise CodesError(f"{what}: {len(bad)} of {len(codes)} rows hold NaN or Inf (rows "
                         f"{describe_rows(bad)}); they cannot be decoded or edited. Re-create "
                         f"them, or drop those rows.")


def read_codes(spec: str) -> np.ndarray:
    """Latent codes (float32, first axis = one code per row) from `spec`: a .npy file, a .npz
    or .pt / .pth file holding one array (or `FILE:KEY` naming one of several), or a .pt holding
    a tensor (the official inference's latents.pt).

    Raises FileNotFoundError, CodesError (no array, several without a key, a non-numeric entry,
    non-finite rows), ValueError (unreadable file).
    """
    path, key = split_key(spec)
    content = read_array_file(path)
    if isinstance(content, Mapping):
        arrays = {str(k): v for k, v in content.items() if _is_array(v)}
        if key is not None:
            if key not in arrays:
                raise CodesError(f"{path!r} has no array {key!r}; it holds "
                                 f"{sorted(arrays) or 'no arrays'}.")
            content = arrays[key]
        elif len(arrays) == 1:
            content = next(iter(arrays.values()))
        else:
            listing = ", ".join(sorted(arrays)) or "no arrays"
            raise CodesError(f"{path!r} holds several arrays ({listing}); name one as "
                             f"'{path}:KEY'." if arrays else f"{path!r} holds no array.")
    elif key is not None:
        raise CodesError(f"{path!r} holds a single array; drop ':{key}'.")
    if not _is_array(content):
        raise CodesError(f"{path!r} holds a {type(content).__name__}, not an array of codes.")
    codes = np.asarray(content)
    if not np.issubdtype(codes.dtype, np.number) or codes.ndim == 0 or len(codes) == 0:
        raise CodesError(f"{path!r} holds an array of shape {codes.shape} and dtype "
                         f"{codes.dtype}; expected codes, one per row.")
    codes = codes.astype(np.float32)
    check_finite(codes, repr(spec))
    return codes


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype"))
