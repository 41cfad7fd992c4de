"""Converts the MoCo v2 ResNet-50 of the similarity loss to a model directory.

    e4e-jax convert moco moco_v2_800ep_pretrain.pth.tar DST_DIR

Like the official `MocoLoss` loader: read checkpoint['state_dict'], keep the keys
`module.encoder_q.*` without the MLP head `module.encoder_q.fc*`, strip the prefix; everything
else in the file (encoder_k, queue, epoch, optimizer, ...) is ignored. The result is read by
`e4e_jax.load_moco(DST_DIR)`.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.convert.arcface import LayerMap
from e4e_jax.convert.common import ConversionError, cli_main, load_torch_file

KIND = "moco_resnet50"
PREFIX = "module.encoder_q."
KEEP = "{'state_dict': ckpt['state_dict']}"
RESNET50_CONFIG = {"blocks": [3, 4, 6, 3], "widths": [64, 128, 256, 512], "stem_width": 64,
                   "input_size": 224}


def resnet_layer_map(config: Mapping[str, Any] = RESNET50_CONFIG) -> LayerMap:
    """torchvision ResNet (Bottleneck blocks) keys -> models/resnet.py ResNet variables."""
    lm = LayerMap()
    stem = int(config["stem_width"])
    lm.conv("conv1", ("resnet", "conv1"), stem, 3, 7)
    lm.bn("bn1", ("resnet", "bn1"), stem)
    c = stem
    for layer, (n, w) in enumerate(zip(config["blocks"], config["widths"]), start=1):
        for b in range(n):
            t, f = f"layer{layer}.{b}", ("resnet", f"layer{layer}_{b}")
            c_in = c if b == 0 else 4 * w
            lm.conv(t + ".conv1", f + ("conv1",), w, c_in, 1)
            lm.bn(t + ".bn1", f + ("bn1",), w)
            lm.conv(t + ".conv2", f + ("conv2",), w, w, 3)
            lm.bn(t + ".bn2", f + ("bn2",), w)
            lm.conv(t + ".conv3", f + ("conv3",), 4 * w, w, 1)
            lm.bn(t + ".bn3", f + ("bn3",), 4 * w)
            if b == 0 and (layer > 1 or c_in != 4 * w):
                lm.conv(t + ".downsample.0", f + ("downsample_conv",), 4 * w, c_in, 1)
                lm.bn(t + ".downsample.1", f + ("downsample_bn",), 4 * w)
        c = 4 * w
    return lm


def moco_state_dict(checkpoint: Any) -> dict:
    """The torchvision-named backbone keys of a MoCo checkpoint, as the official loader keeps
    them."""
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"A MoCo checkpoint is a dict with a 'state_dict' entry, found "
                              f"{type(checkpoint).__name__}.")
    if "state_dict" not in checkpoint:
        raise ConversionError(
            "The file has no 'state_dict' entry (top-level keys: "
            f"{', '.join(sorted(map(str, checkpoint))[:10])}); expected a MoCo v2 checkpoint "
            "such as moco_v2_800ep_pretrain.pth.tar.")
    state = checkpoint["state_dict"]
    if not isinstance(state, Mapping):
        raise ConversionError("checkpoint['state_dict'] is not a dict of tensors.")
    kept = {k[len(PREFIX):]: v for k, v in state.items()
            if k.startswith(PREFIX) and not k.startswith(PREFIX + "fc")}
    if not kept:
        raise ConversionError(
            f"checkpoint['state_dict'] has no '{PREFIX}*' keys (found e.g. "
            f"{', '.join(sorted(map(str, state))[:5])}); expected the query encoder of a MoCo v2 "
            f"checkpoint.")
    return kept


def convert_moco(checkpoint: Any, config: Mapping[str, Any] = RESNET50_CONFIG) -> dict:
    """MoCo v2 checkpoint ({'state_dict': {key: array}, ...}) -> Flax variables."""
    state = moco_state_dict(checkpoint)
    return resnet_layer_map(config).convert(
        state, f"MoCo v2 ResNet-50 ({PREFIX}* of checkpoint['state_dict'])")


def write_moco(checkpoint: Any, dst: str, source: str | None = None) -> str:
    from e4e_jax.nets.model_dir import save_model_dir
    variables = convert_moco(checkpoint)
    return save_model_dir(dst, KIND, dict(RESNET50_CONFIG), variables=variables, source=source)


def main(argv=None) -> int:
    def add_args(p):
        p.add_argument("src", help="moco_v2_800ep_pretrain.pth.tar")
        p.add_argument("dst", help="output model directory (read by e4e_jax.load_moco)")

    def run(args):
        obj = load_torch_file(args.src, keep=KEEP)
        path = write_moco(obj, args.dst, source=os.path.basename(args.src))
        return f"wrote {path}"

    return cli_main("Convert the MoCo v2 ResNet-50 of the similarity loss.", add_args, run, argv,
                    module="moco",
                    examples=['moco_v2_800ep_pretrain.pth.tar weights/moco'])


if __name__ == "__main__":
    sys.exit(main())
