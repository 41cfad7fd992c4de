"""Converts pytorch-fid's FID Inception-v3 weights to a model directory.

    e4e-jax convert fid_inception pt_inception-2015-12-05-6726825d.pth DST_DIR

The file is the plain state dict that pytorch-fid's `fid_inception_v3()` downloads (the
TensorFlow inception-2015-12-05 graph ported to PyTorch), keys as `fid_inception_v3().state_dict()`.
Every conv unit `<unit>.conv.weight` / `<unit>.bn.{weight, bias, running_mean, running_var}`
becomes `<unit>/conv/kernel` (HWIO) / `<unit>/bn/{scale, bias}` + batch_stats `{mean, var}` of
e4e_jax/models/inception.py. `fc.*` (the 1008-way classifier) and `num_batches_tracked` play no
part in the pool3 features and are not converted. The result is read by
`e4e_jax.load_inception(DST_DIR)`.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.convert.arcface import LayerMap
from e4e_jax.convert.common import ConversionError, cli_main, conv_kernel, load_torch_file

KIND = "fid_inception"
CONFIG = {"resize_input": True, "normalize_input": True, "feature_dim": 2048,
          "source_format": "pytorch-fid 0.3.0 pt_inception-2015-12-05"}
IGNORED_PREFIXES = ("fc.",)


def inception_layer_map() -> LayerMap:
    """Official key -> Flax variable rules, derived from the Flax module's own variable shapes."""
    from e4e_jax.models.inception import expected_variables
    from e4e_jax.nets.model_dir import flatten_tree

    params = flatten_tree(expected_variables()["params"])
    lm = LayerMap()
    for path, spec in params.items():
        parts = tuple(path.split("/"))
        unit, leaf = parts[:-2], parts[-2:]
        key = ".".join(unit)
        if leaf == ("conv", "kernel"):
            kh, kw, c_in, c_out = spec.shape
            lm.add(key + ".conv.weight", (c_out, c_in, kh, kw), "params", parts, conv_kernel)
        elif leaf == ("bn", "scale"):
            lm.bn(key + ".bn", unit + ("bn",), spec.shape[0])
    return lm


def convert_fid_inception(state: Mapping[str, Any]) -> dict:
    """pytorch-fid Inception state dict ({key: array}) -> Flax variables {params, batch_stats}."""
    if not isinstance(state, Mapping):
        raise ConversionError(f"The FID Inception file is a plain state dict (key -> tensor), "
                              f"found {type(state).__name__}.")
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not any(str(k).startswith("Mixed_7c.") for k in state):
        raise ConversionError(
            "This does not look like the FID Inception-v3 state dict (no 'Mixed_7c.*' keys; found "
            f"e.g. {', '.join(sorted(map(str, state))[:5])}). Expected "
            "pt_inception-2015-12-05-6726825d.pth from pytorch-fid.")
    return inception_layer_map().convert(state, "FID Inception-v3 (pt_inception-2015-12-05)",
                                         ignore=IGNORED_PREFIXES)


def write_fid_inception(state: Mapping[str, Any], dst: str, source: str | None = None) -> str:
    from e4e_jax.nets.model_dir import save_model_dir
    variables = convert_fid_inception(state)
    return save_model_dir(dst, KIND, dict(CONFIG), variables=variables, source=source)


def main(argv=None) -> int:
    def add_args(p):
        p.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid weights)")
        p.add_argument("dst", help="output model directory (read by e4e_jax.load_inception)")

    def run(args):
        state = load_torch_file(args.src)
        path = write_fid_inception(state, args.dst, source=os.path.basename(args.src))
        return f"wrote {path}"

    return cli_main("Convert pytorch-fid's FID Inception-v3 weights.", add_args, run, argv,
                    module="fid_inception",
                    examples=['pt_inception-2015-12-05-6726825d.pth weights/fid_inception'])


if __name__ == "__main__":
    sys.exit(main())
