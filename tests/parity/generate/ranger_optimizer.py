r"""Rebuilds tests/fixtures/ranger_optimizer from e4e's official Ranger optimizer.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged.

Official function whose outputs are saved: training/ranger.py `Ranger(params, lr=1e-2)` with its
defaults (alpha 0.5, k 6, N_sma_threshhold 5, betas (0.95, 0.999), eps 1e-5, weight_decay 0,
use_gc True, gc_conv_only False), `Ranger.step()` 20 times on three synthetic parameters. The
gradients are fixed per step (synthetic, independent of the parameters) so that another
implementation can replay them; the parameters after every step are stored.

This folder has `meta.json` (the settings) instead of a manifest: there are no network weights.

Run it (needs torch; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/ranger_optimizer.py --official /tmp/official/encoder4editing \
        --out tests/fixtures/ranger_optimizer

Add `--compare tests/fixtures/ranger_optimizer` (with --out elsewhere) to check a rebuild against
the committed fixture.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "ranger_optimizer"
SEED = 901
LEARNING_RATE = 1e-2
STEPS = 20
# in this order in the optimizer; a conv weight (centralized over 3 dims), a linear weight
# (centralized over 1) and a bias (never centralized)
SHAPES = {"conv.weight": (8, 4, 3, 3), "linear.weight": (16, 8), "linear.bias": (16,)}
INIT_SCALE = 0.5
GRAD_OFFSET = 0.3  # gradients uniform in [-0.7, 1.3): a non-zero mean, so centralization matters


def generate(e4e_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    from training.ranger import Ranger

    initial = {name: common.synth_weights.synth(name, shape, SEED, INIT_SCALE) for name, shape in SHAPES.items()}
    params = {name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in initial.items()}
    optimizer = Ranger(list(params.values()), lr=LEARNING_RATE)

    inputs = {f"init/{name}": value for name, value in initial.items()}
    history = {name: [] for name in SHAPES}
    for step in range(STEPS):
        for name, param in params.items():
            grad = (common.synth_weights.uniform(f"grad/{name}/{step}", SHAPES[name], SEED)
                    + GRAD_OFFSET).astype(np.float32)
            inputs[f"grad/{name}/{step}"] = grad
            param.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        for name, param in params.items():
            history[name].append(param.detach().numpy().copy())

    meta = {
        "seed": SEED, "lr": LEARNING_RATE, "steps": STEPS,
        "shapes": {name: list(shape) for name, shape in SHAPES.items()},
        "optimizer": "training/ranger.py Ranger(params, lr=1e-2) with its defaults: alpha=0.5, k=6, "
                     "N_sma_threshhold=5, betas=(0.95, 0.999), eps=1e-5, weight_decay=0, use_gc=True, "
                     "gc_conv_only=False",
    }
    expected = {f"params/{name}": np.stack(values) for name, values in history.items()}
    # meta.json of the committed fixture has no newline at the end; kept that way
    return common.Fixture(inputs=inputs, expected=expected, json_files={"meta.json": meta},
                          json_trailing_newline=False)


def main() -> int:
    args = common.parse_args(common.argument_parser(__doc__, FAMILY, "checkout of omertov/encoder4editing at 99ea505"))
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir), args)


if __name__ == "__main__":
    sys.exit(main())
