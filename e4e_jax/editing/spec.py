"""The edit-spec language shared by `python -m e4e_jax.edit` and eval.py's --edits / --lec_edit.

    interfacegan:PATH[:STRENGTH]            w + STRENGTH * direction (a (1, 512) W or
                                            (1, n_latent, 512) W+ direction: .pt, .npy, .npz)
    ganspace:PATH:IDX,START,END[,STRENGTH]  the official GANSpace tuple: component IDX of the
                                            PCA file on W+ rows START..END-1, coordinate set
                                            to STRENGTH (standard deviations)
    sefa:SEMANTIC[:STRENGTH[:LAYERS]]       SeFa eigenvector SEMANTIC (0 = largest eigenvalue)
                                            of the generator's own weights, moved by STRENGTH;
                                            LAYERS 'all' (default), '2-5' or '2,3,4,5'

A STRENGTH in the spec is its default strength (defaults: interfacegan 3, the official LEC
example; ganspace and sefa 5). Parsing needs no model and no files (see `prepared` for that).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

EDIT_KINDS = ("interfacegan", "ganspace", "sefa")
DEFAULT_STRENGTH = {"interfacegan": 3.0, "ganspace": 5.0, "sefa": 5.0}
DEFAULT_STRENGTHS = (-3.0, 0.0, 3.0)
SPEC_HELP = ("interfacegan:PATH[:STRENGTH] | ganspace:PATH:IDX,START,END[,STRENGTH] | "
             "sefa:SEMANTIC[:STRENGTH[:LAYERS]] (LAYERS: all, 2-5 or 2,3,4,5)")


class EditError(ValueError):
    """A bad argument of the edit command (missing input, wrong latents shape)."""


class EditSpecError(EditError):
    """An edit spec string that does not parse, or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class EditSpec:
    """A parsed edit spec (see the module docstring for the syntax)."""
    kind: str
    text: str
    path: str | None = None
    index: int = 0                            # ganspace component / sefa semantic
    rows: tuple[int, int] | None = None       # ganspace W+ rows start..end-1
    layers: Any = "all"                       # sefa: 'all' or a tuple of layer indices
    strength: float | None = None             # None: the kind's default

    @property
    def default_strength(self) -> float:
        return DEFAULT_STRENGTH[self.kind] if self.strength is None else self.strength

    @property
    def name(self) -> str:
        """A short label without the strength (captions, metric keys)."""
        if self.kind == "interfacegan":
            return f"interfacegan:{_stem(self.path)}"
        if self.kind == "ganspace":
            return f"ganspace:{_stem(self.path)}:{self.index},{self.rows[0]},{self.rows[1]}"
        layers = "" if self.layers == "all" else ":" + _layers_text(self.layers)
        return f"sefa:{self.index}{layers}"

    def describe(self, strength: float) -> str:
        """The label of this edit at `strength`, e.g. 'sefa:0 +5'."""
        return f"{self.name} {format_number(strength)}"


def _stem(path: str | None) -> str:
    return os.path.splitext(os.path.basename(path or ""))[0]


def format_number(strength: float) -> str:
    return f"{float(strength):+g}"


def _layers_text(layers) -> str:
    layers = list(layers)
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(i) for i in layers)


def _float(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: {what} must be a number, got {text!r}. "
                            f"Syntax: {SPEC_HELP}.") from None
    if not math.isfinite(value):
        raise EditSpecError(f"edit spec {spec!r}: {what} must be finite, got {text!r}.")
    return value


def _int(text: str, spec: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: {what} must be an integer, got {text!r}. "
                            f"Syntax: {SPEC_HELP}.") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _parse_layers(text: str, spec: str):
    if text == "all":
        return "all"
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            layers = tuple(range(lo, hi + 1))
        else:
            layers = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: LAYERS must be 'all', a range like '2-5' or a "
                            f"list like '2,3,4,5', got {text!r}.") from None
    if not layers or min(layers) < 0:
        raise EditSpecError(f"edit spec {spec!r}: LAYERS {text!r} selects no valid layer.")
    return layers


def parse_edit_spec(text: str) -> EditSpec:
    """Parses 'interfacegan:...', 'ganspace:...' or 'sefa:...' (see the module docstring)."""
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind not in EDIT_KINDS or not sep or not rest:
        raise EditSpecError(f"cannot parse edit spec {text!r}: expected one of {SPEC_HELP}.")
    if kind == "interfacegan":
        path, strength = rest, None
        head, _, tail = rest.rpartition(":")
        if head and _is_number(tail):
            path, strength = head, _float(tail, text, "STRENGTH")
        return EditSpec(kind, text, path=path, strength=strength)
    if kind == "ganspace":
        path, _, numbers = rest.rpartition(":")
        if not path:
            raise EditSpecError(f"edit spec {text!r}: GANSpace needs PATH:IDX,START,END[,STRENGTH]"
                                f" (the official tuple, e.g. ganspace:ffhq_pca.pt:54,7,8,5).")
        parts = numbers.split(",")
        if len(parts) not in (3, 4):
            raise EditSpecError(f"edit spec {text!r}: GANSpace takes IDX,START,END[,STRENGTH], "
                                f"got {numbers!r}.")
        idx, start, end = (_int(p, text, w) for p, w in zip(parts[:3], ("IDX", "START", "END")))
        strength = _float(parts[3], text, "STRENGTH") if len(parts) == 4 else None
        if idx < 0 or not 0 <= start < end:
            raise EditSpecError(f"edit spec {text!r}: need IDX >= 0 and 0 <= START < END.")
        return EditSpec(kind, text, path=path, index=idx, rows=(start, end), strength=strength)
    parts = rest.split(":")
    if len(parts) > 3:
        raise EditSpecError(f"edit spec {text!r}: SeFa takes SEMANTIC[:STRENGTH[:LAYERS]].")
    semantic = _int(parts[0], text, "SEMANTIC")
    if semantic < 0:
        raise EditSpecError(f"edit spec {text!r}: SEMANTIC must be >= 0.")
    strength = _float(parts[1], text, "STRENGTH") if len(parts) > 1 and parts[1] else None
    layers = _parse_layers(parts[2], text) if len(parts) > 2 else "all"
    return EditSpec(kind, text, index=semantic, layers=layers, strength=strength)
