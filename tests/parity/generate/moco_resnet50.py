r"""Rebuilds tests/fixtures/moco_resnet50 from e4e's official MoCo similarity loss.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged, on torchvision's `resnet50()`.

Official functions whose outputs are saved: criteria/moco_loss.py `MocoLoss(opts=None)`, whose
constructor builds torchvision resnet50, reads the MoCo v2 checkpoint `model_paths['moco']`, keeps
`module.encoder_q.*` minus the fc head, loads it with strict=False and drops the final fc (the path
is pointed at the synthetic checkpoint for the call; its `.cuda()` stays on the CPU):
- `MocoLoss.extract_feats(img)` for x, y and y_hat (nearest resize to 224, ResNet-50, l2 norm);
- `MocoLoss.forward(y_hat, y, x)` -> loss, sim_improvement and the per-sample similarity logs.

Run it (needs torch and torchvision; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/moco_resnet50.py --official /tmp/official/encoder4editing \
        --out tests/fixtures/moco_resnet50

Add `--compare tests/fixtures/moco_resnet50` (with --out elsewhere) to check a rebuild against the
committed fixture.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from arcface_ir_se50 import blend_u8  # noqa: E402

FAMILY = "moco_resnet50"
SEED = 801
BATCH = 3
PREFIX = "module.encoder_q."  # the MoCo v2 checkpoint's key prefix (DataParallel + query encoder)


def moco_query_encoder():
    """torchvision resnet50 with the MoCo v2 MLP head, the module a MoCo v2 checkpoint stores
    as `module.encoder_q`: fc = Linear(2048, 2048), ReLU, Linear(2048, 128)."""
    import torchvision
    from torch import nn

    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
    return model


def weight_rule(key, owner, attr, tensor):
    """He scales for the ReLU network, except the last BatchNorm gamma of every bottleneck.

    Deep random ReLU ResNets send all images to nearly the same pooled direction (cosine ~0.9996),
    which would make the loss insensitive to the input; small gammas of both signs on `bn3`
    keep the identity path dominant and the features image-dependent."""
    if key.endswith(".bn3.weight"):
        return common.spec(0.3, 0.0)
    return common.default_rule(key, owner, attr, tensor, conv_gain=common.RELU_GAIN)


def generate(e4e_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    from configs.paths_config import model_paths
    from criteria import moco_loss

    manifest = {
        "seed": SEED,
        "model": ("criteria/moco_loss.py MocoLoss: torchvision resnet50() loaded from a MoCo v2 checkpoint "
                  "(module.encoder_q.* minus the fc head), final fc removed"),
        "container": {"state_dict": "<all keys in tensors>"},
        "tensors": common.tensor_entries(moco_query_encoder(), rule=weight_rule, prefix=PREFIX),
    }
    image_seed = SEED * 1000 + 19
    x_u8 = common.pattern_images_u8(BATCH, 256, image_seed)
    y_u8 = common.pattern_images_u8(BATCH, 256, image_seed + 1)
    other_u8 = common.pattern_images_u8(BATCH, 256, image_seed + 2)
    inputs = {"x": common.u8_to_input(x_u8), "y": common.u8_to_input(y_u8),
              "y_hat": common.u8_to_input(blend_u8(y_u8, other_u8, 0.7, 0.3))}

    checkpoint = os.path.join(tempfile.mkdtemp(prefix="parity_moco_"), "moco_v2_800ep_pretrain.pth.tar")
    torch.save({"state_dict": common.build_tensors(manifest)}, checkpoint)
    saved_path = model_paths["moco"]
    model_paths["moco"] = checkpoint
    try:
        with common.cuda_requests_stay_on_cpu():
            criterion = moco_loss.MocoLoss(opts=None)
    finally:
        model_paths["moco"] = saved_path
    criterion.eval()

    x, y, y_hat = (torch.from_numpy(inputs[k]) for k in ("x", "y", "y_hat"))
    out = {}
    with torch.no_grad():
        out["feats_x"] = criterion.extract_feats(x)
        out["feats_y"] = criterion.extract_feats(y)
        out["feats_y_hat"] = criterion.extract_feats(y_hat)
        out["loss"], sim_improvement, logs = criterion(y_hat, y, x)
    out["sim_improvement"] = np.float64(sim_improvement)
    out["sim_logs"] = np.array([[log["diff_target"], log["diff_input"], log["diff_views"]] for log in logs],
                               dtype=np.float64)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    args = common.parse_args(common.argument_parser(__doc__, FAMILY, "checkout of omertov/encoder4editing at 99ea505"))
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir), args)


if __name__ == "__main__":
    sys.exit(main())
