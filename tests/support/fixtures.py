"""Loads the official reference fixtures copied under tests/fixtures and compares outputs.

Every fixture is rebuilt from its manifest with the synth_weights helper (bit-exact, numpy only).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import numpy as np

from tests.support.synth_weights import build_state_dict

from tests.support.paths import DATA, FIXTURES  # noqa: E402,F401 (DATA: for the tests)
REAL_SIZE = os.path.join(FIXTURES, "real_size_manifests")


@dataclasses.dataclass
class Fixture:
    name: str
    manifest: dict
    state: dict      # the module's state dict, {key: np.ndarray}, fixed buffers filled in
    extra: dict      # extra tensors of the checkpoint file (e.g. latent_avg)
    inputs: dict
    expected: dict

    def container(self) -> Any:
        """The object the official loader reads with torch.load, with numpy arrays as tensors."""
        return build_container(self.manifest, self.state, self.extra)


def state_from_manifest(manifest: dict) -> tuple[dict, dict]:
    state = build_state_dict(manifest)
    for key, spec in manifest["tensors"].items():
        if "value" in spec:
            state[key] = np.asarray(spec["value"], dtype=spec["dtype"]).reshape(spec["shape"])
    extra = build_state_dict({"seed": manifest["seed"], "tensors": manifest.get("extra_tensors", {})})
    return state, extra


def build_container(manifest: dict, state: dict, extra: dict) -> Any:
    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            if node == "<all keys in tensors>":
                return dict(state)
            m = re.fullmatch(r"<extra_tensors\['(.+)'\]>", node)
            if m:
                return extra[m.group(1)]
            m = re.fullmatch(r"<keys in tensors starting with '(.*)'>", node)
            if m:
                return {k: v for k, v in state.items() if k.startswith(m.group(1))}
        return node
    return fill(manifest["container"])


def load_fixture(name: str) -> Fixture:
    folder = os.path.join(FIXTURES, name)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    state, extra = state_from_manifest(manifest)
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    expected = dict(np.load(os.path.join(folder, "expected.npz")))
    return Fixture(name, manifest, state, extra, inputs, expected)


def load_real_size(name: str) -> tuple[dict, dict, dict]:
    """(manifest, state, extra) of a real-size manifest (synthetic values, full shapes)."""
    with open(os.path.join(REAL_SIZE, name)) as f:
        manifest = json.load(f)
    state, extra = state_from_manifest(manifest)
    return manifest, state, extra


def to_torch(obj: Any) -> Any:
    import torch
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: to_torch(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_torch(v) for v in obj]
    return obj


def save_torch(obj: Any, path: str) -> str:
    """Writes `obj` (numpy arrays inside) with torch.save, as the official code writes files."""
    import torch
    torch.save(to_torch(obj), path)
    return path


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def assert_close(name: str, got: Any, want: Any, atol: float, rtol: float = 0.0) -> float:
    """Asserts |got - want| <= atol + rtol |want| elementwise; prints max abs and relative error."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != expected {want.shape}"
    err = np.abs(got - want)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    print(f"[parity] {name}: max abs err {max_abs:.3e}, rel (to max |x|={scale:.3g}) {rel:.3e}, "
          f"atol {atol:.2e}")
    bad = err > atol + rtol * np.abs(want)
    assert not bad.any(), (f"{name}: {int(bad.sum())} of {err.size} values differ by more than "
                           f"atol={atol:g} (max abs err {max_abs:.3e})")
    return max_abs


def suggested_atol(name: str, key: str) -> float:
    """The suggested atol of output `key` from the fixture README's tolerance table."""
    with open(os.path.join(FIXTURES, name, "README.md")) as f:
        text = f.read()
    # Only the tolerance table counts (the statistics table has the same first column).
    text = text[text.lower().find("## tolerance"):]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].strip("`") == key:
            try:
                return float(cells[-1])
            except ValueError:
                continue
    raise KeyError(f"no tolerance for {key!r} in {name}/README.md")
