r"""Rebuilds tests/fixtures/lpips_alex and tests/fixtures/lpips_vgg from e4e's official LPIPS.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
`criteria/lpips/` imported unchanged, on torchvision's AlexNet / VGG16 (`.features`).

Official functions whose outputs are saved: criteria/lpips/lpips.py `LPIPS(net_type='alex' | 'vgg')`
- `LPIPS.forward(x, y)` for a batch of 3 pairs, for each pair alone, and for (x, x);
- `LPIPS.net(probe)` (criteria/lpips/networks.py `AlexNet` / `VGG16`): the five unit-normalised
  feature maps of one probe image.

The official constructor downloads two files; both are served from the synthetic weights instead,
through the official loading code: `torchvision.models.alexnet(True)` / `vgg16(True)` (an
ImageNet download, as `criteria/lpips/networks.py` calls it through its `models` name) is answered
by a torchvision model built with weights=None into which the synthetic `features.*` are loaded, and
`torch.hub.load_state_dict_from_url` (the LPIPS linear layers) returns the synthetic lin file,
which the official `get_state_dict` renames as usual. Its `.to("cuda")` calls stay on the CPU.

Run it (needs torch and torchvision; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/lpips_criterion.py --net alex --official /tmp/official/encoder4editing \
        --out tests/fixtures/lpips_alex
    python tests/parity/generate/lpips_criterion.py --net vgg --official /tmp/official/encoder4editing \
        --out tests/fixtures/lpips_vgg

Add `--compare tests/fixtures/lpips_<net>` (with --out elsewhere) to check a rebuild against the
committed fixture.
"""
import collections
import os
import sys
import types
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SEED = 601
TORCHVISION_NAME = {"alex": "alexnet", "vgg": "vgg16"}
TORCHVISION_FILE = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LIN_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
PROBE_SIZE = {"alex": 128, "vgg": 64}
IMAGE_OFFSET = {"alex": 11, "vgg": 13}  # the two fixtures use different images
PAIRS = 3
BACKBONE_BIAS_SCALE = 0.01
# LPIPS linear weights are non-negative in the real file: uniform in [0, 2 * LIN_SCALE)
LIN_SCALE = 0.1


def backbone_entries(net: str) -> dict:
    """Manifest entries of torchvision's `features` (the only part LPIPS uses), ReLU stacks
    with the He gain so the deep features still depend on the image."""
    import torchvision

    model = getattr(torchvision.models, TORCHVISION_NAME[net])(weights=None)
    return common.tensor_entries(model.features, prefix="features.", conv_gain=common.RELU_GAIN,
                                 bias_scale=BACKBONE_BIAS_SCALE)


def lin_entries(net: str) -> dict:
    """Manifest entries of the LPIPS linear-layer file, keys as in the real file."""
    return {f"lin{i}.model.1.weight": {"shape": [1, channels, 1, 1], "dtype": "float32",
                                       "scale": LIN_SCALE, "offset": LIN_SCALE}
            for i, channels in enumerate(LIN_CHANNELS[net])}


def lpips_manifest(net: str) -> dict:
    name = TORCHVISION_NAME[net]
    return {
        "seed": SEED,
        "model": (f"criteria/lpips/lpips.py LPIPS(net_type='{net}', version='0.1'): torchvision "
                  f"{name}().features + criteria/lpips/networks.py LinLayers"),
        "container": {"files": {
            "backbone": {"file": f"torchvision {name} ImageNet state dict ({TORCHVISION_FILE[net]})",
                         "layout": "<keys in tensors starting with 'features.'>",
                         "note": "the real file also holds classifier.* (unused by LPIPS; shapes in "
                                 "real_size_manifests)"},
            "lin": {"file": f"lpips package weights/v0.1/{net}.pth",
                    "layout": "<keys in tensors starting with 'lin'>"},
        }},
        "tensors": {**backbone_entries(net), **lin_entries(net)},
    }


def official_lpips(manifest: dict, net: str):
    """The official LPIPS module, its two downloads answered with the synthetic weights."""
    import torch
    import torchvision
    from criteria.lpips import networks
    from criteria.lpips.lpips import LPIPS

    weights = common.build_tensors(manifest)
    backbone = {k: v for k, v in weights.items() if k.startswith("features.")}
    lin_file = collections.OrderedDict((k, v) for k, v in weights.items() if k.startswith("lin"))

    def pretrained_model(name):
        def build(pretrained=False):
            if pretrained is not True:
                raise RuntimeError("the official LPIPS asks for the pretrained network")
            model = getattr(torchvision.models, name)(weights=None)
            result = model.load_state_dict(backbone, strict=False)
            if result.unexpected_keys or any(not k.startswith("classifier.") for k in result.missing_keys):
                raise RuntimeError(f"backbone keys do not match: {result}")
            return model
        return build

    models = types.SimpleNamespace(alexnet=pretrained_model("alexnet"), vgg16=pretrained_model("vgg16"))

    def lin_download(url, *args, **kwargs):
        if not url.endswith(f"lpips/weights/v0.1/{net}.pth"):
            raise RuntimeError(f"unexpected download {url}")
        return collections.OrderedDict((k, v.clone()) for k, v in lin_file.items())

    with common.cuda_requests_stay_on_cpu(), mock.patch.object(networks, "models", models), \
            mock.patch.object(torch.hub, "load_state_dict_from_url", lin_download):
        module = LPIPS(net_type=net)
    return module.eval()


def generate(e4e_dir: str, net: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    manifest = lpips_manifest(net)

    image_seed = SEED * 1000 + IMAGE_OFFSET[net]
    x_u8 = common.pattern_images_u8(PAIRS, 256, image_seed)
    y_u8 = common.pattern_images_u8(PAIRS, 256, image_seed + 1)
    # pair 0 similar (y0 a 75/25 blend with x0), pairs 1 and 2 unrelated
    y_u8[0] = np.round(0.75 * x_u8[0].astype(np.float64) + 0.25 * y_u8[0]).astype(np.uint8)
    probe_u8 = common.pattern_images_u8(1, PROBE_SIZE[net], image_seed + 2)
    inputs = {"x": common.u8_to_input(x_u8), "y": common.u8_to_input(y_u8),
              "probe": common.u8_to_input(probe_u8)}

    lpips = official_lpips(manifest, net)
    x, y = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"])
    out = {}
    with torch.no_grad():
        out["lpips_batch"] = lpips(x, y)
        out["lpips_per_pair"] = torch.stack([lpips(x[i:i + 1], y[i:i + 1]) for i in range(PAIRS)])
        out["lpips_self"] = lpips(x, x)
        for i, feature in enumerate(lpips.net(torch.from_numpy(inputs["probe"]))):
            out[f"probe_feat_{i}"] = feature
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, "lpips_<net>", "checkout of omertov/encoder4editing at 99ea505")
    parser.add_argument("--net", required=True, choices=sorted(TORCHVISION_NAME), help="backbone: alex or vgg")
    args = common.parse_args(parser)
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir, args.net), args)


if __name__ == "__main__":
    sys.exit(main())
