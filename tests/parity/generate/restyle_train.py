"""Rebuilds tests/fixtures/restyle_train: one official ReStyle-e4e training iteration's gradients.

Official code: yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975
(https://github.com/yuval-alaluf/restyle-encoder), imported unchanged; the StyleGAN2 decoder's
CUDA ops run as the CPU stand-ins of common.py. Needs torch, torchvision and matplotlib (imported
by the coach module).

The call is training/coach_restyle_e4e.py `Coach.perform_train_iteration_on_batch(x, y)`: for
each of opts.n_iters_per_batch = 2 iterations, `net.forward(cat([x, y_prev]), latent=w_prev)`
(BatchNorm in training mode, a fresh noise draw in every generator layer), `calc_loss` and
`loss.backward()`, with the previous image and codes detached (`clone().detach()`); the encoder
parameters' `.grad` afterwards is the gradient one `optimizer.step()` would use (the step itself
is not taken). The model is `models/e4e.py e4e` with `ResNetProgressiveBackboneEncoder` (ResNet-34,
horse_encode) over a Generator(64, 512, 8, channel_multiplier=2) (10 W+ rows), at progressive
stage 2 (`ProgressiveStage.Delta2Training`: style heads 3..9 receive no gradient), and the losses
are `l2_lambda=1`, `w_discriminator_lambda=0.1` (generator-side `compute_adversarial_loss` on rows
0..2 of W+ with a `LatentCodesDiscriminator(512, 4)`), `delta_norm_lambda=0.1` (deltas 1..2);
LPIPS / ID / MoCo are off (lambda 0: their pretrained weights are not needed).

A `Coach` subclass whose __init__ only stores the attributes the called methods read (`opts`,
`net`, `avg_image`, `discriminator`, `device`) stands in for the official constructor, which needs
the datasets, a GPU and a log folder; every method called is the official one. The average image
is computed as Coach.__init__ does it: `net(latent_avg.unsqueeze(0), input_code=True,
randomize_noise=False, return_latents=False, average_code=True)[0]`.

Saved (expected.npz):
- `loss/<t>/<name>` (t = 1, 2): every iteration's loss dict (`calc_loss`'s floats; the official
  method returns only the last one, the harness records each call), and `loss/<t>/total` the
  tensor each `backward()` received;
- `latents/<t>`: every iteration's W+ (N, 10, 512);
- `grad_norm/<key>`: the L2 norm of every encoder parameter's summed gradient (torch key, as in
  the state dict; parameters without a gradient count as zeros);
- `grad_sample/<key>`: 64 elements of every gradient, at flat (C-order, torch layout) indices
  `sample_indices(size)` (all elements when smaller);
- `grad/<key>`: the full gradient of a few tensors (FULL_GRADS);
- `disc_fake_w`: the codes `Coach.sample_real_and_fake_latents(x_input)` hands the latent
  discriminator (x_input = cat([x, avg_image]) as `compute_discriminator_loss` builds it; no W
  pool, progressive): `net.encoder(x_input)` rows 0..2, then row 0, the encoder's residual
  WITHOUT latent_avg; `disc_latent_avg_row0` = latent_avg[0], for the test's contrast.

Harness stand-ins (the official files are not edited): torchvision's resnet34 is built without
ImageNet weights (restyle.py); `opts.device` / the coach's device are 'cpu'; and the generator's
noise: `NoiseInjection.forward` (models/stylegan2/model.py) draws `image.new_empty(...).normal_()`
when given no noise, which is replaced, during the iterations only, by taking the next of the
pre-drawn arrays `noise/<t>/<layer>` (inputs.npz; common.gaussian, shape (N, 1, r, r), one per
noise layer in call order: the 4x4 conv, then the two convs of each resolution), so the JAX side
can use the same draws.

Run it (needs torch + torchvision + matplotlib; a checkout of the official repository):

    python tests/parity/generate/common.py extract --git-dir MIRROR --commit 5e80276 \
        --dest /tmp/official/restyle-encoder
    python tests/parity/generate/restyle_train.py --official /tmp/official/restyle-encoder \
        --out tests/fixtures/restyle_train

Add `--compare tests/fixtures/restyle_train` (with --out elsewhere) to check a rebuild. The script
also runs the same call in float64, writes tolerances.json (per output: 5x the float32-float64
distance) and prints the README's tolerance table. torchvision must import on the CPU torch build;
the CUDA wheel of torchvision 0.28 fails in its _meta_registrations unless the `torchvision::nms`
and `qnms` schemas are defined first (torch.library.Library("torchvision", "DEF")).
"""
import argparse
import contextlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
import restyle as restyle_gen

RESTYLE = restyle_gen.RESTYLE
NAME = "e4e_resnet_backbone"
ENCODER_TYPE = "ResNetProgressiveBackboneEncoder"
DATASET_TYPE = "horse_encode"
SEED = 611
DISC_SEED = 612
BATCH = 2
ITERATIONS = 2
STAGE = 2                       # ProgressiveStage.Delta2Training
LOSS_OPTS = {"l2_lambda": 1.0, "lpips_lambda": 0.0, "id_lambda": 0.0, "moco_lambda": 0.0,
             "w_discriminator_lambda": 0.1, "delta_norm_lambda": 0.1, "delta_norm": 2,
             "use_w_pool": False, "progressive_steps": list(range(0, 1000, 100))}
N_SAMPLES = 64
FULL_GRADS = ("conv1.weight", "bn1.weight", "bn1.bias", "relu.weight", "body.15.bn2.bias",
              "styles.0.linear.bias", "styles.2.linear.bias", "styles.2.convs.6.bias")


def sample_indices(size: int) -> np.ndarray:
    """The flat indices grad_sample stores: N_SAMPLES evenly spread over the tensor, both ends
    included (every index when the tensor is smaller)."""
    if size <= N_SAMPLES:
        return np.arange(size)
    return np.round(np.linspace(0, size - 1, N_SAMPLES)).astype(np.int64)


def noise_shapes(resolution: int) -> list:
    """(r, r) of the generator's noise layers in call order: 4, then two per resolution 8..S."""
    shapes = [4]
    r = 8
    while r <= resolution:
        shapes += [r, r]
        r *= 2
    return shapes


@contextlib.contextmanager
def drawn_noise(arrays):
    """NoiseInjection draws its noise with `normal_()` when given none; hand it the next of
    `arrays` instead (torch tensors, call order), and check that all of them were used."""
    from models.stylegan2.model import NoiseInjection

    real = NoiseInjection.forward
    queue = list(arrays)

    def forward(self, image, noise=None):
        if noise is None:
            noise = queue.pop(0)
            if tuple(noise.shape) != (image.shape[0], 1) + tuple(image.shape[2:]):
                raise RuntimeError(f"pre-drawn noise {tuple(noise.shape)} does not fit the layer "
                                   f"{tuple(image.shape)}")
        return real(self, image, noise=noise)

    NoiseInjection.forward = forward
    try:
        yield
    finally:
        NoiseInjection.forward = real
    if queue:
        raise RuntimeError(f"{len(queue)} pre-drawn noise arrays were not used")


def build_manifest():
    import torch  # noqa: F401
    from models.e4e import e4e
    from models.e4e_modules.discriminator import LatentCodesDiscriminator

    opts = restyle_gen.official_opts("e4e", ENCODER_TYPE, DATASET_TYPE)
    opts.update(LOSS_OPTS, n_iters_per_batch=ITERATIONS, batch_size=BATCH)

    class Skeleton(e4e):
        def load_weights(self):
            pass

    skeleton = Skeleton(argparse.Namespace(**dict(opts, device="cpu")))
    n_latent = skeleton.decoder.n_latent
    entry = {
        "seed": SEED,
        "model": (f"models/e4e.py e4e(opts) with opts.encoder_type='{ENCODER_TYPE}' "
                  f"(models/encoders/restyle_e4e_encoders.py), opts.input_nc=6, "
                  f"opts.output_size={restyle_gen.OUTPUT_SIZE}, opts.dataset_type="
                  f"'{DATASET_TYPE}', decoder models/stylegan2/model.py Generator("
                  f"{restyle_gen.OUTPUT_SIZE}, 512, 8, channel_multiplier=2)"),
        "container": {"state_dict": "<all keys in tensors>",
                      "latent_avg": "<extra_tensors['latent_avg']>", "opts": opts},
        "tensors": common.tensor_entries(skeleton, rule=restyle_gen.weight_rule),
        "extra_tensors": {"latent_avg": {"shape": [n_latent, 512], "dtype": "float32",
                                         "scale": 1.0, "offset": 0.0}},
    }
    del skeleton
    disc = {
        "seed": DISC_SEED,
        "model": "models/e4e_modules/discriminator.py LatentCodesDiscriminator(512, 4)",
        "container": {"discriminator_state_dict": "<all keys in tensors>"},
        "tensors": common.tensor_entries(LatentCodesDiscriminator(512, 4)),
    }
    return {"official": {"repo": RESTYLE.repo, "commit": RESTYLE.commit},
            "call": "training/coach_restyle_e4e.py Coach.perform_train_iteration_on_batch",
            "models": {NAME: entry, "discriminator": disc}}


def make_inputs():
    u8, x, _ = restyle_gen.inputs_for(DATASET_TYPE, SEED * 1000 + 7)
    inputs = {"x": x, "x_uint8_nhwc": u8}
    for t in range(ITERATIONS):
        for i, r in enumerate(noise_shapes(restyle_gen.OUTPUT_SIZE)):
            inputs[f"noise/{t + 1}/{i}"] = common.gaussian(f"noise/{t + 1}/{i}",
                                                           (BATCH, 1, r, r), SEED)
    return inputs


def run(manifest, inputs, dtype):
    import torch
    from models.e4e import e4e
    from models.e4e_modules.discriminator import LatentCodesDiscriminator
    from models.encoders.restyle_e4e_encoders import ProgressiveStage
    from training.coach_restyle_e4e import Coach

    entry = manifest["models"][NAME]
    opts = argparse.Namespace(**dict(entry["container"]["opts"], device="cpu",
                                     checkpoint_path=None))

    class Built(e4e):
        def load_weights(self):
            state = common.build_tensors(entry)
            self.encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items()
                                          if k.startswith("encoder.")}, strict=True)
            self.decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items()
                                          if k.startswith("decoder.")}, strict=True)
            self.latent_avg = common.build_tensors(entry, "extra_tensors")["latent_avg"]

    net = Built(opts)
    net.encoder.progressive_stage = ProgressiveStage(STAGE)
    discriminator = LatentCodesDiscriminator(512, 4)
    discriminator.load_state_dict(common.build_tensors(manifest["models"]["discriminator"]))
    net, discriminator = net.to(dtype), discriminator.to(dtype)
    net.latent_avg = net.latent_avg.to(dtype)

    class Harness(Coach):
        """The official methods over the attributes they read (Coach.__init__ needs datasets, a
        GPU and a log folder); calc_loss is recorded per call."""

        def __init__(self, **attributes):
            self.__dict__.update(attributes)
            self.recorded = []

        def calc_loss(self, x, y, y_hat, latent):
            loss, loss_dict, id_logs = super().calc_loss(x, y, y_hat, latent)
            self.recorded.append((loss.detach().clone(), dict(loss_dict), latent.detach().clone()))
            # the official loop indexes id_logs per sample (id_logs is None without ID / MoCo)
            if id_logs is None:
                id_logs = [{"diff_target": 0.0} for _ in range(x.shape[0])]
            return loss, loss_dict, id_logs

    # Coach.__init__'s average image (stored noise buffers, no face-pool crop for horses)
    avg_image = net(net.latent_avg.unsqueeze(0), input_code=True, randomize_noise=False,
                    return_latents=False, average_code=True)[0]
    # Coach.__init__ casts with .float(); the float64 run keeps its own dtype
    avg_image = avg_image.float().detach().to(dtype)
    coach = Harness(opts=opts, net=net, avg_image=avg_image, discriminator=discriminator,
                    device="cpu", global_step=0, mse_loss=torch.nn.MSELoss().eval())
    net.train()
    coach.requires_grad(coach.discriminator, False)   # as after train_discriminator
    x = torch.from_numpy(inputs["x"]).to(dtype)
    out = {}

    # what the latent discriminator's step sees (compute_discriminator_loss's input)
    x_input = torch.cat([x, avg_image.unsqueeze(0).repeat(x.shape[0], 1, 1, 1)], dim=1)
    torch.manual_seed(0)
    with torch.no_grad():
        _, fake_w = coach.sample_real_and_fake_latents(x_input)
    out["disc_fake_w"] = fake_w
    out["disc_latent_avg_row0"] = net.latent_avg[0]

    noise = [torch.from_numpy(inputs[f"noise/{t + 1}/{i}"]).to(dtype)
             for t in range(ITERATIONS)
             for i in range(len(noise_shapes(restyle_gen.OUTPUT_SIZE)))]
    net.encoder.zero_grad(set_to_none=True)
    with drawn_noise(noise):
        coach.perform_train_iteration_on_batch(x, x)   # y = x: the source transform is None
    if len(coach.recorded) != ITERATIONS:
        raise RuntimeError(f"calc_loss ran {len(coach.recorded)} times")
    for t, (total, loss_dict, latent) in enumerate(coach.recorded, start=1):
        out[f"loss/{t}/total"] = total
        for k, v in loss_dict.items():
            out[f"loss/{t}/{k}"] = np.asarray(v)
        out[f"latents/{t}"] = latent
    out["avg_image"] = avg_image
    for key, p in net.encoder.named_parameters():
        g = (torch.zeros_like(p) if p.grad is None else p.grad).detach().to(torch.float64)
        flat = g.reshape(-1).numpy()
        out[f"grad_norm/{key}"] = np.asarray(np.sqrt(np.sum(flat * flat)))
        out[f"grad_sample/{key}"] = flat[sample_indices(flat.size)]
        if key in FULL_GRADS:
            out[f"grad/{key}"] = g
    missing = set(FULL_GRADS) - {k for k, _ in net.encoder.named_parameters()}
    if missing:
        raise RuntimeError(f"FULL_GRADS names unknown parameters: {sorted(missing)}")
    return {k: common.to_numpy(v) for k, v in out.items()}


def tolerances(expected: dict, f64: dict) -> dict:
    """{output key: suggested atol} for tolerances.json: 5x the float32 run's largest distance
    from the float64 run, never below 1e-6 of the output's largest magnitude (1e-9 for outputs
    that are exactly zero in both, e.g. the gradients of the inactive style heads)."""
    out = {}
    for k in sorted(expected):
        a = np.asarray(expected[k], np.float64)
        d = float(np.max(np.abs(a - np.asarray(f64[k], np.float64)))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        out[k] = float(f"{max(5 * d, 1e-6 * scale, 1e-9):.3g}")
    return out


def report(expected: dict, f64: dict):
    """The README's tolerance table (markdown): every output but the per-tensor gradient groups,
    which are summarised (the worst tensors by distance relative to their largest value)."""
    print("\n| output | max abs f32-f64 | rel. to max |x| | suggested atol |\n|---|---|---|---|")
    rel = {}
    for k in sorted(expected):
        a = np.asarray(expected[k], np.float64)
        d = float(np.max(np.abs(a - np.asarray(f64[k], np.float64)))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        rel[k] = d / scale if scale > 0 else 0.0
        if not k.startswith(("grad_norm/", "grad_sample/")):
            print(f"| {k} | {d:.2e} | {rel[k]:.2e} | {max(5 * d, 1e-6 * scale, 1e-9):.2e} |")
    for group in ("grad_norm/", "grad_sample/"):
        worst = sorted((v, k) for k, v in rel.items() if k.startswith(group))[::-1][:8]
        print(f"\nworst {group}: " + ", ".join(f"{k[len(group):]} {v:.2e}" for v, k in worst))
    norms = {k[len("grad_norm/"):]: float(v) for k, v in expected.items()
             if k.startswith("grad_norm/")}
    zero = [k for k, v in norms.items() if v == 0]
    print(f"\n{len(norms)} parameters, {len(zero)} with zero gradient "
          f"(style heads: {sum(k.startswith('styles.') for k in zero)}), largest norm "
          f"{max(norms.values()):.4g} ({max(norms, key=norms.get)})")


def generate(restyle_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(restyle_dir).activate()
    common.install_e4e_op_standin(restyle_dir)
    common.stub_tensorboard_if_missing()
    restyle_gen.install_torchvision_standin()
    manifest = build_manifest()
    inputs = make_inputs()
    expected = run(manifest, inputs, torch.float32)
    print("float32 done", flush=True)
    # sample_real_and_fake_latents draws its z with torch.randn (the default dtype)
    torch.set_default_dtype(torch.float64)
    f64 = run(manifest, inputs, torch.float64)
    torch.set_default_dtype(torch.float32)
    for k, v in expected.items():
        if not np.all(np.isfinite(v)):
            raise RuntimeError(f"{k}: not finite")
    report(expected, f64)
    return common.Fixture(inputs=inputs, expected=expected, manifest=manifest,
                          json_files={"tolerances.json": tolerances(expected, f64)})


def main() -> int:
    parser = common.argument_parser(__doc__, "restyle_train",
                                    f"checkout of {RESTYLE.repo} at {RESTYLE.commit}")
    args = common.parse_args(parser)
    restyle_dir = common.require_checkout(args.official, RESTYLE, args.allow_other_commit)
    return common.finish(generate(restyle_dir), args)


if __name__ == "__main__":
    sys.exit(main())
