"""Converts LPIPS v0.1 (AlexNet or VGG16 backbone + linear layers) to a model directory.

    e4e-jax convert lpips --net alex --backbone alexnet-owt-7be5be79.pth \
        [--lin alex.pth] DST_DIR
    e4e-jax convert lpips --net vgg --backbone vgg16-397923af.pth [--lin vgg.pth] DST_DIR

The backbone is a torchvision ImageNet state dict (only `features.*` is used; `classifier.*` is
ignored). The linear layers are the `lpips` package's `weights/v0.1/{alex,vgg}.pth` (keys
`lin{k}.model.1.weight`, shape (1, C_k, 1, 1)); without `--lin` they are taken from an installed
`lpips` package. The result is read by `e4e_jax.load_lpips(DST_DIR)`.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Mapping

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from e4e_jax.convert.arcface import LayerMap
from e4e_jax.convert.common import ConversionError, cli_main, load_torch_file

KIND = "lpips"
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _arch(net: str) -> dict:
    from e4e_jax.models.lpips import ARCHS
    if net not in ARCHS:
        raise ConversionError(f"--net must be one of {sorted(ARCHS)}, got {net!r}.")
    return ARCHS[net]


def backbone_layer_map(net: str) -> LayerMap:
    lm = LayerMap()
    c_in = 3
    for idx, c_out, k, _, _ in _arch(net)["convs"]:
        lm.conv(f"features.{idx}", ("backbone", f"features_{idx}"), c_out, c_in, k, bias=True)
        c_in = c_out
    return lm


def lin_layer_map(net: str) -> LayerMap:
    lm = LayerMap()
    for k, c in enumerate(_arch(net)["channels"]):
        lm.add(f"lin{k}.model.1.weight", (1, c, 1, 1), "params", (f"lin_{k}", "kernel"),
               lambda w: np.ascontiguousarray(np.asarray(w, np.float32).transpose(2, 3, 1, 0)))
    return lm


def _matches(lm: LayerMap, state: Mapping[str, Any]) -> bool:
    try:
        lm.check(state, "", ignore=("classifier.",))
    except ConversionError:
        return False
    return True


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def convert_lpips(backbone: Mapping[str, Any], lin: Mapping[str, Any], net: str) -> dict:
    """torchvision backbone + lpips linear-layer state dicts -> Flax variables {'params'}."""
    arch_name = {"alex": "AlexNet", "vgg": "VGG16"}.get(net, net)
    for what, obj in (("backbone", backbone), ("linear layers", lin)):
        if not isinstance(obj, Mapping):
            raise ConversionError(f"The LPIPS {what} file should hold a state dict, found "
                                  f"{type(obj).__name__}.")
    if any(str(k).startswith("lin") for k in backbone) and not any(
            str(k).startswith("features.") for k in backbone):
        raise ConversionError("The backbone file holds LPIPS linear layers (lin*.model.1.weight); "
                              "pass it with --lin and the torchvision file with --backbone.")
    _arch(net)
    for other in ("alex", "vgg"):
        if other != net and _matches(backbone_layer_map(other), backbone):
            raise ConversionError(f"The backbone file holds torchvision "
                                  f"{'AlexNet' if other == 'alex' else 'VGG16'} weights; convert "
                                  f"it with --net {other} (or pass the {arch_name} file).")
    params = backbone_layer_map(net).convert(
        backbone, f"LPIPS {net} backbone (torchvision {arch_name} state dict, "
                  f"e.g. {BACKBONE_FILES.get(net, '?')})", ignore=("classifier.",))
    lins = lin_layer_map(net).convert(lin, f"LPIPS v0.1 {net} linear layers (lpips package "
                                           f"weights/v0.1/{net}.pth)")
    return _merge(params, lins)


def installed_lin_file(net: str) -> str:
    """weights/v0.1/{net}.pth of an installed `lpips` package, or a ConversionError."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            f"--lin was not given and no `lpips` package is installed. Pass the linear layers "
            f"explicitly: --lin path/to/{net}.pth (weights/v0.1/{net}.pth of the lpips package, "
            f"https://github.com/richzhang/PerceptualSimilarity), or `pip install lpips`.")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "weights", "v0.1", f"{net}.pth")
        if os.path.isfile(path):
            return path
    where = ", ".join(spec.submodule_search_locations)
    raise ConversionError(f"The installed lpips package ({where}) has no weights/v0.1/{net}.pth; "
                          f"pass --lin explicitly.")


def write_lpips(backbone: Mapping[str, Any], lin: Mapping[str, Any], net: str, dst: str,
                source: str | None = None) -> str:
    from e4e_jax.nets.model_dir import save_model_dir
    variables = convert_lpips(backbone, lin, net)
    return save_model_dir(dst, KIND, {"net": net, "version": "0.1"}, variables=variables,
                          source=source)


def main(argv=None) -> int:
    def add_args(p):
        p.add_argument("--net", required=True, choices=("alex", "vgg"), help="LPIPS backbone")
        p.add_argument("--backbone", required=True,
                       help="torchvision ImageNet state dict (alexnet-owt-7be5be79.pth or "
                            "vgg16-397923af.pth)")
        p.add_argument("--lin", default=None,
                       help="lpips package weights/v0.1/{alex,vgg}.pth (default: from an "
                            "installed lpips package)")
        p.add_argument("dst", help="output model directory (read by e4e_jax.load_lpips)")

    def run(args):
        lin_path = args.lin or installed_lin_file(args.net)
        backbone = load_torch_file(args.backbone)
        lin = load_torch_file(lin_path)
        path = write_lpips(backbone, lin, args.net, args.dst,
                           source=f"{os.path.basename(args.backbone)} + {lin_path}")
        return f"wrote {path}"

    return cli_main("Convert LPIPS v0.1 (AlexNet / VGG16) weights.", add_args, run, argv,
                    module="lpips",
                    examples=['--net alex --backbone alexnet-owt-7be5be79.pth weights/lpips_alex'])


if __name__ == "__main__":
    sys.exit(main())
