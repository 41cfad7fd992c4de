"""Converts the ArcFace IR-SE-50 of the identity loss (model_ir_se50.pth) to a model directory.

    e4e-jax convert arcface model_ir_se50.pth DST_DIR

The file is a plain state dict of `Backbone(112, 50, mode='ir_se')` (models/encoders/
model_irse.py): input_layer.*, body.{i}.*, output_layer.{0,3,4}.*. The result is read by
`e4e_jax.load_arcface(DST_DIR)`.

This module also holds `LayerMap`, the table-driven PyTorch -> Flax mapping the loss-network
converters share (moco.py, lpips.py and fid_inception.py use it): each rule names
a torch key, its shape, the Flax variable it becomes and the layout change, so the same table
checks the file's keys (missing / unexpected / mis-shaped, by name) and converts it. The input
layer and IR-SE body are converted by e4e.py's table, the one the encoders use.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from e4e_jax.convert.common import (
    ConversionError,
    check_keys,
    cli_main,
    conv_kernel,
    dense_kernel,
    f32,
    load_torch_file,
)

KIND = "arcface_ir_se50"
IRSE50_CONFIG = {"num_layers": 50, "mode": "ir_se", "widths": [64, 128, 256, 512],
                 "units": None, "embedding_dim": 512, "affine": True}
FEATURE_HW = 7  # the body's output size for 112x112 faces


class LayerMap:
    """Rules torch key -> Flax variable; `expected()` for key checks, `convert(state)` to apply."""

    def __init__(self):
        self.rules: list[tuple[str, tuple, str, tuple, Callable]] = []
        self.optional: set[str] = set()

    def add(self, key: str, shape: tuple, collection: str, path: tuple, fn=f32):
        self.rules.append((key, tuple(int(s) for s in shape), collection, tuple(path), fn))

    def conv(self, prefix: str, path: tuple, c_out: int, c_in: int, k: int, bias: bool = False):
        self.add(prefix + ".weight", (c_out, c_in, k, k), "params", path + ("kernel",),
                 conv_kernel)
        if bias:
            self.add(prefix + ".bias", (c_out,), "params", path + ("bias",))

    def dense(self, prefix: str, path: tuple, c_out: int, c_in: int, bias: bool = True,
              fn: Callable | None = None):
        self.add(prefix + ".weight", (c_out, c_in), "params", path + ("kernel",),
                 fn or dense_kernel)
        if bias:
            self.add(prefix + ".bias", (c_out,), "params", path + ("bias",))

    def bn(self, prefix: str, path: tuple, c: int, affine: bool = True):
        if affine:
            self.add(prefix + ".weight", (c,), "params", path + ("scale",))
            self.add(prefix + ".bias", (c,), "params", path + ("bias",))
        self.add(prefix + ".running_mean", (c,), "batch_stats", path + ("mean",))
        self.add(prefix + ".running_var", (c,), "batch_stats", path + ("var",))
        # only read by torch when BatchNorm momentum is None; files written before torch 0.4.1
        # do not have it
        self.optional.add(prefix + ".num_batches_tracked")

    def expected(self) -> dict[str, tuple]:
        return {key: shape for key, shape, *_ in self.rules}

    def check(self, state: Mapping[str, Any], what: str, ignore=()) -> None:
        present = {k: v for k, v in state.items() if k not in self.optional}
        check_keys(present, self.expected(), what, ignore=ignore)

    def convert(self, state: Mapping[str, Any], what: str, ignore=()) -> dict:
        self.check(state, what, ignore)
        out: dict = {}
        for key, _, collection, path, fn in self.rules:
            node = out.setdefault(collection, {})
            for p in path[:-1]:
                node = node.setdefault(p, {})
            value = np.asarray(fn(state[key]), np.float32)
            if not np.all(np.isfinite(value)):
                raise ConversionError(f"{what}: {key} holds non-finite values; the file is "
                                      f"corrupt.")
            node[path[-1]] = value
        return out


def linear_nchw_to_nhwc(w: np.ndarray, c: int, hw: int) -> np.ndarray:
    """Linear weight (out, C*H*W) over an NCHW flatten -> Dense kernel (H*W*C, out) over NHWC."""
    w = np.asarray(w, np.float32)
    out = w.shape[0]
    w = w.reshape(out, c, hw, hw).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(w.reshape(hw * hw * c, out))


def output_layer_map(config: Mapping[str, Any] = IRSE50_CONFIG) -> LayerMap:
    """Rules for `output_layer.{0,3,4}` (BatchNorm2d, Linear, BatchNorm1d)."""
    emb, c = int(config["embedding_dim"]), int(config["widths"][-1])
    lm = LayerMap()
    lm.bn("output_layer.0", ("output_bn",), c)
    lm.dense("output_layer.3", ("linear",), emb, c * FEATURE_HW * FEATURE_HW,
             fn=lambda w: linear_nchw_to_nhwc(w, c, FEATURE_HW))
    lm.bn("output_layer.4", ("feature_bn",), emb, affine=config.get("affine", True))
    return lm


def backbone_shapes(config: Mapping[str, Any] = IRSE50_CONFIG) -> dict:
    """Variable shapes of the ArcFace input layer and body (the IR-SE parts shared with the
    encoders, converted by e4e.py's table)."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.nets.loss_nets import arcface_module
    module = arcface_module(config)
    shapes = jax.eval_shape(module.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))
    return {c: {k: shapes[c][k] for k in ("input_layer", "body")} for c in shapes}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def convert_arcface(state: Mapping[str, Any], config: Mapping[str, Any] = IRSE50_CONFIG) -> dict:
    """model_ir_se50.pth state dict ({key: array}) -> Flax variables {'params', 'batch_stats'}."""
    from e4e_jax.convert.e4e import convert_modules, official_layout
    what = "ArcFace IR-SE-50 (model_ir_se50.pth)"
    if not isinstance(state, Mapping):
        raise ConversionError(f"model_ir_se50.pth should hold a state dict, found "
                              f"{type(state).__name__}.")
    if any(str(k).startswith(("encoder.", "decoder.")) for k in state) or "state_dict" in state:
        raise ConversionError("This looks like an e4e / pSp checkpoint, not the ArcFace "
                              "model_ir_se50.pth (e4e / pSp checkpoints have their own converter).")
    shapes = backbone_shapes(config)
    head = output_layer_map(config)
    present = {k: v for k, v in state.items() if not str(k).endswith(".num_batches_tracked")}
    expected = {k: v[3] for k, v in official_layout(shapes).items()}
    expected.update(head.expected())
    # one check over the whole file, so the error lists every problem at once
    check_keys(present, expected, what)
    backbone = convert_modules({k: v for k, v in present.items()
                                if not k.startswith("output_layer.")}, shapes, what)
    for leaf in jax_leaves(backbone):
        if not np.all(np.isfinite(leaf)):
            raise ConversionError(f"{what}: the backbone holds non-finite values; the file is "
                                  f"corrupt.")
    return _merge(backbone, head.convert(present, what, ignore=("input_layer.", "body.")))


def jax_leaves(tree: Mapping[str, Any]) -> list:
    out = []
    for v in tree.values():
        out.extend(jax_leaves(v) if isinstance(v, Mapping) else [v])
    return out


def write_arcface(state: Mapping[str, Any], dst: str, source: str | None = None) -> str:
    from e4e_jax.nets.model_dir import save_model_dir
    variables = convert_arcface(state)
    return save_model_dir(dst, KIND, dict(IRSE50_CONFIG), variables=variables, source=source)


def main(argv=None) -> int:
    def add_args(p):
        p.add_argument("src", help="model_ir_se50.pth (ArcFace IR-SE-50 state dict)")
        p.add_argument("dst", help="output model directory (read by e4e_jax.load_arcface)")

    def run(args):
        obj = load_torch_file(args.src)
        path = write_arcface(obj, args.dst, source=os.path.basename(args.src))
        return f"wrote {path}"

    return cli_main("Convert the ArcFace IR-SE-50 of the identity loss.", add_args, run, argv,
                    module="arcface",
                    examples=['model_ir_se50.pth weights/arcface'])


if __name__ == "__main__":
    sys.exit(main())
