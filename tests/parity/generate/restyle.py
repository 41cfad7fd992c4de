"""Rebuilds tests/fixtures/restyle from the official ReStyle code: four encoders, the loop.

Official code: yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975
(https://github.com/yuval-alaluf/restyle-encoder), imported unchanged; the StyleGAN2 decoder's
CUDA ops run as the CPU stand-ins of common.py. Needs torch and torchvision (the ResNet-34
encoders are built from torchvision's resnet34).

Four synthetic checkpoints {state_dict, latent_avg, opts}, as the official coaches save them, one
per encoder, each over a 64x64 generator (10 W+ rows) with official encoder widths:

    psp_backbone          models/psp.py pSp, BackboneEncoder (IR-SE-50), ffhq_encode
    psp_resnet_backbone   models/psp.py pSp, ResNetBackboneEncoder (ResNet-34), cars_encode
    e4e_backbone          models/e4e.py e4e, ProgressiveBackboneEncoder (IR-SE-50), ffhq_encode
    e4e_resnet_backbone   models/e4e.py e4e, ResNetProgressiveBackboneEncoder, horse_encode

Each checkpoint is written with torch.save and loaded the way scripts/inference_iterative.py
loads one (torch.load, opts = ckpt['opts'] updated with the test options, pSp(opts) or e4e(opts)
by utils/model_utils.ENCODER_TYPES, whose load_weights reads encoder.* (strict=False: this script
checks that every encoder tensor was loaded), decoder.* (strict=True) and latent_avg; .eval()).
Saved outputs (expected.npz, keys prefixed with the model name):

- `<model>/codes` = `net.encoder(x6)` on a 6-channel input x6 = cat([x, y], dim=1) (the image and a
  second image standing for the current reconstruction); for the e4e encoders also
  `<model>/codes_stage3` with `encoder.progressive_stage = ProgressiveStage.Delta3Training`.
- for psp_resnet_backbone (cars: 192x256 inputs, the row crop) and e4e_backbone (faces):
  `<model>/avg_image` = utils/inference_utils.py `get_average_image(net, opts)` and
  `<model>/loop_latents`, `<model>/loop_images` = `run_on_batch(x, net, opts, avg_image)` with
  n_iters_per_batch=3 and resize_outputs=True: every iteration's W+ codes (3, N, 10, 512) and
  images (3, N, 3, h, w) after face_pool (and the cars crop).

Harness stand-ins (the official files are never edited): torchvision's resnet34 is built without
downloading ImageNet weights (every encoder tensor is then overwritten by the checkpoint);
`opts.device` is set to 'cpu'; get_average_image's `.to('cuda')` stays on the CPU.

Run it (needs torch + torchvision; a checkout of the official repository at the pinned commit):

    git clone https://github.com/yuval-alaluf/restyle-encoder /tmp/official/restyle-encoder
    git -C /tmp/official/restyle-encoder checkout 5e80276228cc5d9e0a39a16119210ee49ce2c975
    python tests/parity/generate/restyle.py --official /tmp/official/restyle-encoder \
        --out tests/fixtures/restyle

(or `python tests/parity/generate/common.py extract --git-dir MIRROR --commit 5e80276 --dest ..`
for the checkout). Add `--compare tests/fixtures/restyle` (with --out elsewhere) to check a rebuild.
The script prints the output statistics and the float32-vs-float64 tolerance table of the README.
"""
import argparse
import contextlib
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RESTYLE = common.Pin("yuval-alaluf/restyle-encoder", "5e80276228cc5d9e0a39a16119210ee49ce2c975",
                     "models/encoders/restyle_e4e_encoders.py")
OUTPUT_SIZE = 64
BATCH = 2
ITERATIONS = 3
STYLE_HEAD_GAIN = 2 ** 0.5   # the heads' stride-2 conv + LeakyReLU stacks keep their signal
# The loop feeds the generator's images back into the encoder. With unit-variance head outputs
# the synthetic weights make that feedback expansive: codes and images grow several-fold per
# iteration and a float32 run parts ways with a float64 one (rounding differences x25 per
# iteration). Heads whose EqualLinear weights are 100x smaller keep the loop well conditioned (W+
# within +-2.2 after 3 iterations, float32 within 4e-6 of float64 relative to the largest value)
# while every iteration still moves the codes by up to ~0.5 and the images by up to ~1.7.
HEAD_LINEAR_SCALE = 0.01

# name -> (net class, encoder type, dataset_type, seed, run the loop)
MODELS = {
    "psp_backbone": ("pSp", "BackboneEncoder", "ffhq_encode", 501, False),
    "psp_resnet_backbone": ("pSp", "ResNetBackboneEncoder", "cars_encode", 502, True),
    "e4e_backbone": ("e4e", "ProgressiveBackboneEncoder", "ffhq_encode", 503, True),
    "e4e_resnet_backbone": ("e4e", "ResNetProgressiveBackboneEncoder", "horse_encode", 504, False),
}


def install_torchvision_standin():
    """resnet34(pretrained=True) in the official constructors would download ImageNet weights;
    build the same architecture untrained instead (the checkpoint overwrites every tensor)."""
    import torchvision.models
    import torchvision.models.resnet as tv_resnet

    real = tv_resnet.resnet34

    def resnet34_untrained(pretrained=False, **kwargs):
        return real(weights=None)

    torchvision.models.resnet34 = resnet34_untrained
    tv_resnet.resnet34 = resnet34_untrained


@contextlib.contextmanager
def tensor_cuda_stays_on_cpu():
    """get_average_image ends with `avg_image.to('cuda')`; on this CPU machine it stays put."""
    import torch

    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], str) and args[0].startswith("cuda"):
            args = ("cpu",) + args[1:]
        return real_to(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = real_to


def official_opts(net_kind: str, encoder_type: str, dataset_type: str) -> dict:
    """The opts a training run stores (vars(opts)): parser defaults plus this fixture's settings."""
    if net_kind == "pSp":
        from options.train_options import TrainOptions as Options
    else:
        from options.e4e_train_options import e4eTrainOptions as Options
    opts = vars(Options().parser.parse_args([]))
    opts.update(encoder_type=encoder_type, output_size=OUTPUT_SIZE, dataset_type=dataset_type,
                start_from_latent_avg=True, exp_dir="experiment", device="cuda:0",
                stylegan_weights="pretrained_models/stylegan2.pt", checkpoint_path=None)
    return opts


def weight_rule(key, owner, attr, tensor):
    if ".styles." in key and ".linear." in key and attr == "weight":
        return common.spec(common.SQRT3 * HEAD_LINEAR_SCALE)
    gain = STYLE_HEAD_GAIN if (".styles." in key and ".convs." in key and attr == "weight") else 1.0
    return common.ir_se_rule(key, owner, attr, tensor, conv_gain=gain)


def inputs_for(dataset_type: str, seed: int):
    """x and y (the stand-in reconstruction): NCHW float32 in [-1, 1] as the official inference
    transform makes them, 256x256 (cars: rows 32:224 of 256x256 patterns, 192x256)."""
    u8 = common.pattern_images_u8(2 * BATCH, 256, seed)
    if "cars" in dataset_type:
        u8 = np.ascontiguousarray(u8[:, 32:224])
    return u8[:BATCH], common.u8_to_input(u8[:BATCH]), common.u8_to_input(u8[BATCH:])


def build_model(restyle_dir, name):
    """(manifest entry, loaded official net builder) of one model."""
    import torch
    from models.e4e import e4e
    from models.psp import pSp

    net_kind, encoder_type, dataset_type, seed, _ = MODELS[name]
    opts = official_opts(net_kind, encoder_type, dataset_type)
    cls = pSp if net_kind == "pSp" else e4e

    class Skeleton(cls):
        """The official net without its weight loading: only to list keys and owners."""

        def load_weights(self):
            pass

    skeleton = Skeleton(argparse.Namespace(**dict(opts, device="cpu")))
    n_latent = skeleton.decoder.n_latent
    entry = {
        "seed": seed,
        "model": (f"models/{'psp' if net_kind == 'pSp' else 'e4e'}.py {net_kind}(opts) with "
                  f"opts.encoder_type='{encoder_type}' (models/encoders/restyle_"
                  f"{'psp' if net_kind == 'pSp' else 'e4e'}_encoders.py), opts.input_nc=6, "
                  f"opts.output_size={OUTPUT_SIZE}, opts.dataset_type='{dataset_type}', decoder "
                  f"models/stylegan2/model.py Generator({OUTPUT_SIZE}, 512, 8, "
                  f"channel_multiplier=2)"),
        "container": {"state_dict": "<all keys in tensors>",
                      "latent_avg": "<extra_tensors['latent_avg']>", "opts": opts},
        "tensors": common.tensor_entries(skeleton, rule=weight_rule),
        # one row per W+ layer, every row different
        "extra_tensors": {"latent_avg": {"shape": [n_latent, 512], "dtype": "float32",
                                         "scale": 1.0, "offset": 0.0}},
    }
    del skeleton
    checkpoint = os.path.join(tempfile.mkdtemp(prefix="parity_restyle_"), f"{name}.pt")
    torch.save({"state_dict": common.build_tensors(entry),
                "latent_avg": common.build_tensors(entry, "extra_tensors")["latent_avg"],
                "opts": opts}, checkpoint)

    def load():
        """As scripts/inference_iterative.py: ckpt opts updated with the test options."""
        from options.test_options import TestOptions
        from utils.model_utils import ENCODER_TYPES

        test_opts = vars(TestOptions().parser.parse_args([]))
        test_opts.update(checkpoint_path=checkpoint, n_iters_per_batch=ITERATIONS,
                         resize_outputs=True, exp_dir="experiment")
        ckpt = torch.load(checkpoint, map_location="cpu")
        o = ckpt["opts"]
        o.update(test_opts)
        o["device"] = "cpu"   # stand-in: the stored 'cuda:0' would move latent_avg to a GPU
        o = argparse.Namespace(**o)
        net = pSp(o) if o.encoder_type in ENCODER_TYPES["pSp"] else e4e(o)
        net.eval()
        # the official encoder load is strict=False: make sure nothing was left at its init
        saved = ckpt["state_dict"]
        for key, value in net.encoder.state_dict().items():
            # (common.build_tensors stores 0-d num_batches_tracked as (1,): compare values)
            if not torch.equal(value.reshape(-1), saved["encoder." + key].reshape(-1)):
                raise RuntimeError(f"encoder.{key} was not loaded from the checkpoint "
                                   f"({value!r} vs {saved['encoder.' + key]!r})")
        return net, o

    return entry, load


def run_model(restyle_dir, name, load, inputs, dtype):
    import torch
    from models.encoders.restyle_e4e_encoders import ProgressiveStage
    from utils.inference_utils import get_average_image, run_on_batch

    net_kind, _, _, _, loop = MODELS[name]
    net, opts = load()
    net = net.to(dtype)
    net.latent_avg = net.latent_avg.to(dtype)
    x = torch.from_numpy(inputs[f"{name}/x"]).to(dtype)
    y = torch.from_numpy(inputs[f"{name}/y"]).to(dtype)
    out = {}
    with torch.no_grad():
        x6 = torch.cat([x, y], dim=1)
        out["codes"] = net.encoder(x6)
        if net_kind == "e4e":
            if net.encoder.progressive_stage != ProgressiveStage.Inference:
                raise RuntimeError("a freshly built e4e encoder should be at the Inference stage")
            net.encoder.progressive_stage = ProgressiveStage.Delta3Training
            out["codes_stage3"] = net.encoder(x6)
            net.encoder.progressive_stage = ProgressiveStage.Inference
        if loop:
            with tensor_cuda_stays_on_cpu():
                avg = get_average_image(net, opts)
            avg = avg.to(dtype)   # get_average_image casts to float32; keep the run's dtype
            images, latents = run_on_batch(x, net, opts, avg)
            out["avg_image"] = avg
            out["loop_images"] = torch.stack([torch.stack(images[i]) for i in range(BATCH)], 1)
            out["loop_latents"] = np.stack([np.stack(latents[i]) for i in range(BATCH)], 1)
    return {f"{name}/{k}": common.to_numpy(v) for k, v in out.items()}


def report(expected: dict, f64: dict):
    """The README's statistics and tolerance tables (markdown), printed."""
    print("\n| output | shape | dtype | min | max | std |\n|---|---|---|---|---|---|")
    for k in sorted(expected):
        a = np.asarray(expected[k], np.float64)
        print(f"| {k} | {tuple(a.shape)} | float32 | {a.min():.4g} | {a.max():.4g} | "
              f"{a.std():.4g} |")
    print("\n| output | max abs f32-f64 | rel. to max |x| | suggested atol |\n|---|---|---|---|")
    for k in sorted(expected):
        a = np.asarray(expected[k], np.float64)
        d = float(np.max(np.abs(a - np.asarray(f64[k], np.float64))))
        scale = float(np.max(np.abs(a)))
        atol = max(5 * d, 1e-6 * scale)
        print(f"| {k} | {d:.2e} | {d / scale:.2e} | {atol:.2e} |")


def generate(restyle_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(restyle_dir).activate()
    common.install_e4e_op_standin(restyle_dir)
    install_torchvision_standin()

    manifest = {"official": {"repo": RESTYLE.repo, "commit": RESTYLE.commit}, "models": {}}
    inputs, expected, f64 = {}, {}, {}
    for name, (_, _, dataset_type, seed, _) in MODELS.items():
        entry, load = build_model(restyle_dir, name)
        manifest["models"][name] = entry
        u8, x, y = inputs_for(dataset_type, seed * 1000 + 7)
        inputs.update({f"{name}/x": x, f"{name}/y": y, f"{name}/x_uint8_nhwc": u8})
        expected.update(run_model(restyle_dir, name, load, inputs, torch.float32))
        f64.update(run_model(restyle_dir, name, load, inputs, torch.float64))
        print(f"{name}: done", flush=True)
    for k, v in expected.items():
        if not np.all(np.isfinite(v)) or float(np.std(v)) < 1e-6:
            raise RuntimeError(f"{k}: degenerate output")
    report(expected, f64)
    return common.Fixture(inputs=inputs, expected=expected, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, "restyle",
                                    f"checkout of {RESTYLE.repo} at {RESTYLE.commit}")
    args = common.parse_args(parser)
    restyle_dir = common.require_checkout(args.official, RESTYLE, args.allow_other_commit)
    return common.finish(generate(restyle_dir), args)


if __name__ == "__main__":
    sys.exit(main())
