r"""Rebuilds tests/fixtures/arcface_ir_se50 from e4e's official identity loss.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged.

Official functions whose outputs are saved: criteria/id_loss.py `IDLoss()`, whose constructor
builds models/encoders/model_irse.py `Backbone(input_size=112, num_layers=50, drop_ratio=0.6,
mode='ir_se')` and loads `model_paths['ir_se50']` with strict=True (the path is pointed at the
synthetic state-dict file for the call, nothing else changes):
- `IDLoss.extract_feats(img)` for x, y and y_hat (crop, 112 px adaptive pooling, ArcFace, l2 norm);
- `IDLoss.forward(y_hat, y, x)` -> loss, sim_improvement and the per-sample similarity logs.

Run it (needs torch; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/arcface_ir_se50.py --official /tmp/official/encoder4editing \
        --out tests/fixtures/arcface_ir_se50

Add `--compare tests/fixtures/arcface_ir_se50` (with --out elsewhere) to check a rebuild against
the committed fixture.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "arcface_ir_se50"
SEED = 701
BATCH = 3


def blend_u8(a: np.ndarray, b: np.ndarray, weight_a: float, weight_b: float) -> np.ndarray:
    """uint8 mix weight_a * a + weight_b * b, rounded: a 'reconstruction' of a. Both weights are
    given as written (0.7, 0.3): 1 - 0.7 is not 0.3 in floating point and would move some pixels."""
    return np.round(weight_a * a.astype(np.float64) + weight_b * b).astype(np.uint8)


def generate(e4e_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    from configs.paths_config import model_paths
    from criteria import id_loss
    from models.encoders.model_irse import Backbone

    manifest = {
        "seed": SEED,
        "model": ("models/encoders/model_irse.py Backbone(input_size=112, num_layers=50, drop_ratio=0.6, "
                  "mode='ir_se') as built by criteria/id_loss.py IDLoss"),
        "container": "<all keys in tensors>",
        "tensors": common.tensor_entries(Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se"),
                                         rule=common.ir_se_rule),
    }
    image_seed = SEED * 1000 + 17
    x_u8 = common.pattern_images_u8(BATCH, 256, image_seed)
    y_u8 = common.pattern_images_u8(BATCH, 256, image_seed + 1)
    other_u8 = common.pattern_images_u8(BATCH, 256, image_seed + 2)
    inputs = {"x": common.u8_to_input(x_u8), "y": common.u8_to_input(y_u8),
              "y_hat": common.u8_to_input(blend_u8(y_u8, other_u8, 0.7, 0.3))}

    weights_file = os.path.join(tempfile.mkdtemp(prefix="parity_arcface_"), "model_ir_se50.pth")
    torch.save(common.build_tensors(manifest), weights_file)
    saved_path = model_paths["ir_se50"]
    model_paths["ir_se50"] = weights_file  # the constructor reads the file from this table
    try:
        criterion = id_loss.IDLoss()
    finally:
        model_paths["ir_se50"] = saved_path
    criterion.eval()

    x, y, y_hat = (torch.from_numpy(inputs[k]) for k in ("x", "y", "y_hat"))
    out = {}
    with torch.no_grad():
        out["feats_x"] = criterion.extract_feats(x)
        out["feats_y"] = criterion.extract_feats(y)
        out["feats_y_hat"] = criterion.extract_feats(y_hat)
        out["loss"], sim_improvement, logs = criterion(y_hat, y, x)
    out["sim_improvement"] = np.float64(sim_improvement)  # a Python float in the official code
    out["id_logs"] = np.array([[log["diff_target"], log["diff_input"], log["diff_views"]] for log in logs],
                              dtype=np.float64)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    args = common.parse_args(common.argument_parser(__doc__, FAMILY, "checkout of omertov/encoder4editing at 99ea505"))
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir), args)


if __name__ == "__main__":
    sys.exit(main())
