r"""Rebuilds the three encoder fixtures from the official pSp wrapper of e4e.

    --encoder e4e      -> tests/fixtures/e4e_encoder                    (Encoder4Editing)
    --encoder gradual  -> tests/fixtures/psp_gradual_style_encoder      (GradualStyleEncoder)
    --encoder single   -> tests/fixtures/psp_single_style_code_encoder  (SingleStyleCodeEncoder)

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged; the StyleGAN2 decoder's CUDA ops run as the CPU stand-ins of common.py.

Official functions whose outputs are saved: a checkpoint {state_dict, latent_avg, opts} written
with torch.save is loaded by utils/model_utils.py `setup_model(path, device='cpu')` (rebuilds opts,
constructs models/psp.py `pSp(opts)`, whose `load_weights` loads encoder and decoder with
strict=True); then
- `net.encoder(x)` (models/encoders/psp_encoders.py `Encoder4Editing` / `GradualStyleEncoder` /
  `BackboneEncoderUsingLastLayerIntoW`); for e4e at `progressive_stage` Inference (18),
  Delta3Training (3) and WTraining (0);
- `pSp.forward(x, resize=True, randomize_noise=False, return_latents=True)` -> images, latents,
  and `pSp.forward(x, resize=False, randomize_noise=False)` -> the raw decoder images.

Run it (needs torch; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/psp_encoders.py --encoder e4e \
        --official /tmp/official/encoder4editing --out tests/fixtures/e4e_encoder
    python tests/parity/generate/psp_encoders.py --encoder gradual \
        --official /tmp/official/encoder4editing --out tests/fixtures/psp_gradual_style_encoder
    python tests/parity/generate/psp_encoders.py --encoder single \
        --official /tmp/official/encoder4editing --out tests/fixtures/psp_single_style_code_encoder

Add `--compare tests/fixtures/<family>` (with --out elsewhere) to check a rebuild against the
committed fixture.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# --encoder -> (fixture folder, opts.encoder_type, encoder class, seed)
ENCODERS = {
    "e4e": ("e4e_encoder", "Encoder4Editing", "Encoder4Editing", 303),
    "gradual": ("psp_gradual_style_encoder", "GradualStyleEncoder", "GradualStyleEncoder", 305),
    "single": ("psp_single_style_code_encoder", "SingleStyleCodeEncoder", "BackboneEncoderUsingLastLayerIntoW", 306),
}
STYLEGAN_SIZE = 64
BATCH = 2
IMAGE_SIZE = 256
# The style heads (GradualStyleBlock) stack 4-6 stride-2 convs with LeakyReLU(0.01): with
# variance-preserving scales each conv would halve the signal power and the codes would hardly
# depend on the image, so those convs get the He gain.
STYLE_HEAD_GAIN = 2 ** 0.5


def official_opts(encoder: str) -> dict:
    """The `opts` dict an official training run would store in its checkpoint: the parser
    defaults of options/train_options.py plus the settings of this fixture."""
    from options.train_options import TrainOptions

    opts = vars(TrainOptions().parser.parse_args([]))
    opts.update(encoder_type=ENCODERS[encoder][1], stylegan_size=STYLEGAN_SIZE, start_from_latent_avg=True,
                dataset_type="ffhq_encode", exp_dir="experiment", device="cuda:0", checkpoint_path=None)
    if encoder == "e4e":  # what an e4e run sets on the command line
        opts.update(w_discriminator_lambda=0.1, progressive_start=20000, progressive_steps=None)
    return opts


def weight_rule(key, owner, attr, tensor):
    gain = STYLE_HEAD_GAIN if (".styles." in key and ".convs." in key and attr == "weight") else 1.0
    return common.ir_se_rule(key, owner, attr, tensor, conv_gain=gain)


def generate(e4e_dir: str, encoder: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    common.install_e4e_op_standin(e4e_dir)
    from models.encoders.psp_encoders import ProgressiveStage
    from models.psp import pSp
    from utils.model_utils import setup_model

    folder, encoder_type, encoder_class, seed = ENCODERS[encoder]
    opts = official_opts(encoder)

    class Skeleton(pSp):
        """pSp without its weight loading: only to list the state-dict keys and owners."""

        def load_weights(self):
            pass

    skeleton = Skeleton(argparse.Namespace(**dict(opts, device="cpu")))
    n_latent = skeleton.decoder.n_latent
    manifest = {
        "seed": seed,
        "model": (f"models/psp.py pSp(opts) with opts.encoder_type='{encoder_type}' "
                  f"(models/encoders/psp_encoders.py {encoder_class}(50, 'ir_se', opts)), "
                  f"opts.stylegan_size={STYLEGAN_SIZE}, decoder models/stylegan2/model.py "
                  f"Generator({STYLEGAN_SIZE}, 512, 8, channel_multiplier=2)"),
        "container": {"state_dict": "<all keys in tensors>", "latent_avg": "<extra_tensors['latent_avg']>",
                      "opts": opts},
        "tensors": common.tensor_entries(skeleton, rule=weight_rule),
        # one row per W+ layer, every row different: a broadcast of row 0 would fail the test
        "extra_tensors": {"latent_avg": {"shape": [n_latent, 512], "dtype": "float32", "scale": 1.0,
                                         "offset": 0.0}},
    }
    del skeleton

    images_u8 = common.pattern_images_u8(BATCH, IMAGE_SIZE, seed * 1000 + 7)
    inputs = {"x": common.u8_to_input(images_u8), "x_uint8_nhwc": images_u8}

    checkpoint = os.path.join(tempfile.mkdtemp(prefix="parity_psp_"), f"{folder}.pt")
    torch.save({"state_dict": common.build_tensors(manifest),
                "latent_avg": common.build_tensors(manifest, "extra_tensors")["latent_avg"],
                "opts": opts}, checkpoint)
    net, _ = setup_model(checkpoint, device="cpu")  # the official loader; it also calls eval()

    x = torch.from_numpy(inputs["x"])
    out = {}
    with torch.no_grad():
        if encoder == "e4e":
            if net.encoder.progressive_stage != ProgressiveStage.Inference:
                raise RuntimeError("a freshly built Encoder4Editing should be at the Inference stage")
            for name, stage in (("codes_stage18", ProgressiveStage.Inference),
                                ("codes_stage3", ProgressiveStage.Delta3Training),
                                ("codes_stage0", ProgressiveStage.WTraining)):
                net.encoder.progressive_stage = stage
                out[name] = net.encoder(x)
            net.encoder.progressive_stage = ProgressiveStage.Inference  # pSp.forward below: all deltas
        else:
            out["codes"] = net.encoder(x)
        out["images"], out["latents"] = net(x, resize=True, randomize_noise=False, return_latents=True)
        out["images_noresize"] = net(x, resize=False, randomize_noise=False)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, "<e4e_encoder|psp_gradual_style_encoder|psp_single_style_code_encoder>",
                                    "checkout of omertov/encoder4editing at 99ea505")
    parser.add_argument("--encoder", required=True, choices=sorted(ENCODERS),
                        help="which fixture: e4e, gradual (pSp) or single (single style code)")
    args = common.parse_args(parser)
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir, args.encoder), args)


if __name__ == "__main__":
    sys.exit(main())
