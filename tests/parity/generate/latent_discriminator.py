r"""Rebuilds tests/fixtures/latent_discriminator from e4e's official latent-code discriminator.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged.

Official functions whose outputs are saved:
- models/discriminator.py `LatentCodesDiscriminator(512, 4)` (as training/coach.py builds it),
  loaded with strict=True from a checkpoint entry `discriminator_state_dict`: `D(real_w)`, `D(fake_w)`;
- training/coach.py `Coach.discriminator_loss(real_pred, fake_pred, loss_dict)` (static): the total
  and the two parts it writes into loss_dict;
- training/coach.py `Coach.discriminator_r1_loss(D(w), w)` (static) on a fresh leaf copy of real_w,
  plus the input gradient it squares (`torch.autograd.grad(D(real_w).sum(), real_w)`);
- the encoder's adversarial term of `Coach.calc_loss`, softplus(-D(fake_w)).mean().

Run it (needs torch, and torchvision and matplotlib, which training/coach.py imports; tensorboard
is stubbed when absent; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/latent_discriminator.py --official /tmp/official/encoder4editing \
        --out tests/fixtures/latent_discriminator

Add `--compare tests/fixtures/latent_discriminator` (with --out elsewhere) to check a rebuild
against the committed fixture.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "latent_discriminator"
SEED = 501
BATCH = 8


def generate(e4e_dir: str) -> common.Fixture:
    import torch
    import torch.nn.functional as F

    common.OfficialTree(e4e_dir).activate()
    common.install_e4e_op_standin(e4e_dir)  # coach.py imports pSp, hence the generator
    common.stub_tensorboard_if_missing()
    from models.discriminator import LatentCodesDiscriminator
    from training.coach import Coach  # only its static loss functions are called

    manifest = {
        "seed": SEED,
        "model": "models/discriminator.py LatentCodesDiscriminator(style_dim=512, n_mlp=4)",
        "container": {"discriminator_state_dict": "<all keys in tensors>"},
        "tensors": common.tensor_entries(LatentCodesDiscriminator(512, 4)),
    }
    inputs = {
        # "real" codes shifted and narrowed like mapping outputs after the leaky ReLUs; "fake"
        # codes plain normal, like untrained encoder outputs
        "real_w": (common.gaussian("real_w", (BATCH, 512), SEED) * 0.8 + 0.3).astype(np.float32),
        "fake_w": common.gaussian("fake_w", (BATCH, 512), SEED),
    }

    checkpoint = os.path.join(tempfile.mkdtemp(prefix="parity_disc_"), "discriminator.pt")
    torch.save({"discriminator_state_dict": common.build_tensors(manifest)}, checkpoint)
    d = LatentCodesDiscriminator(512, 4)
    d.load_state_dict(torch.load(checkpoint, map_location="cpu")["discriminator_state_dict"], strict=True)
    d.eval()

    real_w, fake_w = torch.from_numpy(inputs["real_w"]), torch.from_numpy(inputs["fake_w"])
    out = {}
    with torch.no_grad():
        out["real_pred"], out["fake_pred"] = d(real_w), d(fake_w)
        loss_dict = {}
        out["d_loss"] = Coach.discriminator_loss(out["real_pred"], out["fake_pred"], loss_dict)
        # the official function stores Python floats; kept as such (float64) until storing
        out["d_real_loss"] = np.float64(loss_dict["d_real_loss"])
        out["d_fake_loss"] = np.float64(loss_dict["d_fake_loss"])
        out["enc_adv_loss"] = F.softplus(-out["fake_pred"]).mean()
    # R1 as Coach.train_discriminator calls it: a leaf copy of the real codes that requires grad
    leaf = real_w.detach().clone()
    leaf.requires_grad = True
    out["r1_penalty"] = Coach.discriminator_r1_loss(d(leaf), leaf)
    leaf = real_w.detach().clone().requires_grad_(True)
    out["r1_grad"], = torch.autograd.grad(d(leaf).sum(), leaf)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    args = common.parse_args(common.argument_parser(__doc__, FAMILY, "checkout of omertov/encoder4editing at 99ea505"))
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir), args)


if __name__ == "__main__":
    sys.exit(main())
