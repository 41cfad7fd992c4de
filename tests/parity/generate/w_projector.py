r"""Rebuilds tests/fixtures/w_projector from the two official copies of the StyleGAN2-ADA W projector.

Official code, imported unchanged:
- case `pti`: danielroich/PTI at commit da94d59 (https://github.com/danielroich/PTI),
  training/projectors/w_projector.py `project()` (what PTI's first inversion calls), with PTI's
  defaults and PTI's conversion of the dataset image to a [0, 255] target;
- case `ada`: NVlabs/stylegan2-ada-pytorch at commit d72cc7d
  (https://github.com/NVlabs/stylegan2-ada-pytorch), projector.py `project()` (the original), with
  its defaults and run_projection's uint8 CHW target tensor.
Both run on the same tiny official generator (training/networks.py of the ADA commit, synthetic
weights) loaded from a pickle {'G_ema': G}: PTI's `utils/models_utils.load_old_G`, and for ADA
`pickle.load(f)['G_ema'].requires_grad_(False)` as run_projection does with legacy's loader.

Saved per case: project()'s per-step locals (dist, reg_loss, loss, lr, w_noise_scale; w_opt after
each step), its noise buffers after the last step, its return value and the target features; and
the w statistics (w_avg, w_std) both copies compute. Every torch.randn_like draw of project() (the
initial noise buffers, one w noise per step) is recorded from the real call after
`torch.manual_seed` and stored as an input, so an implementation can feed the same samples.

The only functional stand-in: project() loads NVIDIA's VGG16 TorchScript file from a URL that is not
reachable here. It gets instead a TorchScript module with the same call signature,
`f(img, resize_images=False, return_lpips=True) -> (N, D)`, computing LPIPS-alex features (the
`lpips` 0.1.4 package's AlexNet trunk and lin weights, synthetic) scaled so that
`(f(a) - f(b)).square().sum()` is the LPIPS-alex distance of a/127.5-1 and b/127.5-1 (formula in
tests/fixtures/w_projector/README.md). It is served by the official download code itself: the file
sits in dnnlib's download cache under the name `<md5(url)>_vgg16.pt`. wandb, imageio, click and
requests are inert stand-ins when not installed (imported, never called here); no CUDA plugin is
built.

Run it (needs torch, torchvision, lpips==0.1.4; checkouts of both official repositories):

    git clone https://github.com/danielroich/PTI /tmp/official/PTI
    git -C /tmp/official/PTI checkout da94d59
    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/official/stylegan2-ada-pytorch
    git -C /tmp/official/stylegan2-ada-pytorch checkout d72cc7d
    pip install --no-deps lpips==0.1.4
    python tests/parity/generate/w_projector.py --official /tmp/official/PTI \
        --ada /tmp/official/stylegan2-ada-pytorch --out tests/fixtures/w_projector

Add `--compare tests/fixtures/w_projector` (with --out elsewhere) to check a rebuild against the
committed fixture.
"""
import contextlib
import hashlib
import importlib.util
import math
import os
import pickle
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import pti_tuning as pti  # noqa: E402

FAMILY = "w_projector"
SEED = 1301
RESOLUTION = 32
CHANNEL_BASE = 512
CHANNEL_MAX = 32
STEPS = 20
W_AVG_SAMPLES = 64
PTI_LEARNING_RATE = 0.01  # the defaults of the two copies, recorded as inputs
ADA_LEARNING_RATE = 0.1
PICKLE_NAME = "snapshot_G_ema.pkl"
VGG16_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"


# ------------------------------------------------------------------------------------------------
# the feature-net stand-in
# ------------------------------------------------------------------------------------------------
def feature_net_class():
    import torch

    class LpipsAlexFeatures(torch.nn.Module):
        """Stand-in for vgg16.pt: features whose squared L2 distance is the LPIPS-alex distance.

        For img in [0, 255]: x = img / 127.5 - 1, then the lpips ScalingLayer (x - shift) / scale;
        h_k = AlexNet relu_k (the lpips slices 1..5); each h_k is unit-normalised over channels,
        n_k = h_k / (sqrt(sum_c h_k^2) + 1e-10), and scaled by sqrt(lin_k) / sqrt(H_k W_k) so that
        summing squared differences reproduces LPIPS's lin-weighted spatial mean. Output: the
        flattened (C, H, W) parts of the five layers, concatenated."""

        def __init__(self, lpips_module):
            super().__init__()
            self.register_buffer("shift", lpips_module.scaling_layer.shift.detach().clone())
            self.register_buffer("scale", lpips_module.scaling_layer.scale.detach().clone())
            net = lpips_module.net
            self.slice1, self.slice2, self.slice3, self.slice4, self.slice5 = (
                net.slice1, net.slice2, net.slice3, net.slice4, net.slice5)
            for k in range(5):  # lins[k].model = (Dropout, Conv2d 1x1): weight (1, C_k, 1, 1)
                self.register_buffer(f"lin{k}", lpips_module.lins[k].model[1].weight.detach().clone())

        def _layer(self, h: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
            normalised = h / (torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True)) + 1e-10)
            weighted = normalised * torch.sqrt(lin) / math.sqrt(float(h.shape[2] * h.shape[3]))
            return weighted.reshape(weighted.shape[0], -1)

        def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
            if resize_images or not return_lpips:
                raise RuntimeError("the stand-in supports only project()'s call")
            x = img.to(self.shift.dtype) / 127.5 - 1.0
            x = (x - self.shift) / self.scale
            h1 = self.slice1(x)
            h2 = self.slice2(h1)
            h3 = self.slice3(h2)
            h4 = self.slice4(h3)
            h5 = self.slice5(h4)
            return torch.cat([self._layer(h1, self.lin0), self._layer(h2, self.lin1), self._layer(h3, self.lin2),
                              self._layer(h4, self.lin3), self._layer(h5, self.lin4)], dim=1)

    return LpipsAlexFeatures


def place_feature_net(manifest: dict, cache_dir: str) -> str:
    """The scripted stand-in, saved where dnnlib.util.open_url(VGG16_URL) looks before downloading:
    <cache>/downloads/<md5(url)>_vgg16.pt. Returns cache_dir (for dnnlib.util.set_cache_dir)."""
    import lpips
    import torch

    with pti.lpips_package_served(manifest, "feature_net_tensors"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lpips_module = lpips.LPIPS(net="alex", verbose=False).eval()
    feature_net = feature_net_class()(lpips_module).eval()
    downloads = os.path.join(cache_dir, "downloads")
    os.makedirs(downloads, exist_ok=True)
    url_md5 = hashlib.md5(VGG16_URL.encode("utf-8")).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        torch.jit.save(torch.jit.script(feature_net), os.path.join(downloads, f"{url_md5}_vgg16.pt"))
    return cache_dir


# ------------------------------------------------------------------------------------------------
# recording project()
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def recorded_randn_like(draws: list):
    """torch.randn_like draws as usual, and a copy of every result is appended to `draws`."""
    import torch

    real = torch.randn_like

    def randn_like(*args, **kwargs):
        result = real(*args, **kwargs)
        draws.append(result.detach().clone())
        return result

    torch.randn_like = randn_like
    try:
        yield draws
    finally:
        torch.randn_like = real


def tap_project(project, extra_returns=()):
    tap = pti.LocalsTap()
    tap.tap(project,
            at={"step": ("optimizer.zero_grad(set_to_none=True)",
                         ["step", "lr", "w_noise_scale", "dist", "reg_loss", "loss"]),
                "after_step": ("logprint(f'step", ["w_opt"])},
            at_return=["z_samples", "w_avg", "w_std", "noise_bufs", "w_opt", "target_features", *extra_returns])
    return tap


def case_outputs(case: str, tap, draws: list, noise_names: list) -> tuple:
    """(outputs, statistics, noise draws) of one project() run from its tapped locals."""
    steps = tap.lines["step"]
    if [int(s["step"]) for s in steps] != list(range(STEPS)):
        raise RuntimeError(f"{case}: unexpected steps")
    if len(draws) != len(noise_names) + STEPS:
        raise RuntimeError(f"{case}: {len(draws)} randn_like draws, expected {len(noise_names) + STEPS}")
    result = {f"{case}.{name}": np.array([pti.scalar(s[name]) for s in steps])
              for name in ("dist", "reg_loss", "loss", "lr", "w_noise_scale")}
    result[f"{case}.w_per_step"] = np.concatenate(
        [common.to_numpy(s["w_opt"]).reshape(1, -1) for s in tap.lines["after_step"]], 0)
    final = tap.returns["project"][-1]
    for name, buffer in final["noise_bufs"].items():  # after the last renormalisation
        result[f"{case}.noise_final.{name}"] = common.to_numpy(buffer)
    result[f"{case}.returned"] = common.to_numpy(final["__return__"])
    result[f"{case}.target_features"] = common.to_numpy(final["target_features"])
    statistics = {k: final[k] for k in ("z_samples", "w_avg", "w_std")}
    noise_inputs = {f"{case}.noise_init.{name}": common.to_numpy(d) for name, d in zip(noise_names, draws)}
    noise_inputs[f"{case}.w_noise_raw"] = np.stack([common.to_numpy(d) for d in draws[len(noise_names):]], 0)
    return result, statistics, noise_inputs


def run_pti_copy(trees, pickle_path: str, target_u8: np.ndarray, cache_dir: str, noise_names: list):
    """PTI's project(), called the way base_coach.calc_inversions calls it (with the fixture's
    w_avg_samples and num_steps)."""
    import torch
    from PIL import Image
    from torchvision import transforms

    with trees.in_pti():
        import dnnlib
        from configs import global_config
        from training.projectors import w_projector

        dnnlib.util.set_cache_dir(cache_dir)
        G = pti.load_old_generator(pickle_path)
        # run_pti.py's dataset transform, then calc_inversions' conversion to [0, 255]
        to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
        image = to_input(Image.fromarray(target_u8)).unsqueeze(0)
        target = torch.squeeze((image.to("cpu") + 1) / 2) * 255
        tap = tap_project(w_projector.project)
        draws = []
        torch.manual_seed(SEED)
        with pti.configured([(global_config, dict(device="cpu"))]), recorded_randn_like(draws), tap.active():
            w_projector.project(G, target, device=torch.device("cpu"), w_avg_samples=W_AVG_SAMPLES,
                                num_steps=STEPS, w_name=pti.IMAGE_NAME, use_wandb=False)
    outputs, statistics, noise_inputs = case_outputs("pti", tap, draws, noise_names)
    return outputs, statistics, noise_inputs, common.to_numpy(target)


def run_ada_original(trees, pickle_path: str, target_u8: np.ndarray, cache_dir: str, noise_names: list):
    """ADA's projector.py project(), called the way its run_projection calls it."""
    import torch

    with trees.in_ada():
        common.stub_missing_packages(["imageio"])
        import dnnlib

        # projector.py is a script at the top of the tree; loaded from its file under a private
        # name so nothing else called `projector` can interfere
        spec = importlib.util.spec_from_file_location("_ada_projector", os.path.join(trees.ada.path, "projector.py"))
        projector = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(projector)
        dnnlib.util.set_cache_dir(cache_dir)
        device = torch.device("cpu")
        with open(pickle_path, "rb") as f:
            G = pickle.load(f)["G_ema"].requires_grad_(False).to(device)
        target = torch.tensor(target_u8.transpose([2, 0, 1]), device=device)  # uint8 [C, H, W]
        tap = tap_project(projector.project, extra_returns=["w_out"])
        draws = []
        torch.manual_seed(SEED + 1)
        with recorded_randn_like(draws), tap.active():
            projector.project(G, target=target, num_steps=STEPS, w_avg_samples=W_AVG_SAMPLES, device=device,
                              verbose=False)
    return case_outputs("ada", tap, draws, noise_names)


def generate(pti_dir: str, ada_dir: str) -> common.Fixture:
    trees = pti.Trees(pti_dir, ada_dir)
    work = tempfile.mkdtemp(prefix="parity_projector_")
    g_entries, info = pti.generator_manifest_parts(trees, RESOLUTION, CHANNEL_BASE, CHANNEL_MAX)
    manifest = {
        "seed": SEED,
        "model": (f"G: training/networks.py Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution={RESOLUTION}, "
                  f"img_channels=3, mapping_kwargs={{'num_layers': 8}}, synthesis_kwargs={{'channel_base': "
                  f"{CHANNEL_BASE}, 'channel_max': {CHANNEL_MAX}, 'num_fp16_res': 0, 'conv_clamp': None}}); "
                  f"feature net: LPIPS-alex stand-in for vgg16.pt (see README)"),
        "container": {
            "G": {"file": f"{PICKLE_NAME} (harness scratch, not stored): pickle.dump({{'G_ema': G}})",
                  "class": "training.networks.Generator", "init_kwargs": info["init_kwargs"],
                  "state": "<all keys in tensors>"},
            "feature_net": {
                "replaces": VGG16_URL,
                "backbone": {"file": "torchvision alexnet ImageNet state dict (alexnet-owt-7be5be79.pth)",
                             "layout": "<keys in feature_net_tensors starting with 'features.'>"},
                "lin": {"file": "lpips package lpips/weights/v0.1/alex.pth",
                        "layout": "<keys in feature_net_tensors starting with 'lin'>"}},
        },
        "tensors": g_entries,
        "feature_net_tensors": pti.lpips_alex_entries(),
    }
    pickle_path = pti.write_generator_pickle(trees, manifest, RESOLUTION, CHANNEL_BASE, CHANNEL_MAX,
                                             os.path.join(work, PICKLE_NAME))
    cache_dir = place_feature_net(manifest, os.path.join(work, "dnnlib_cache"))
    target_u8 = common.pattern_images_u8(1, RESOLUTION, SEED * 1000 + 9)[0]
    noise_names = info["noise_buffers"]  # G.synthesis.named_buffers() order = project()'s order

    pti_out, pti_stats, pti_noise, target_pti = run_pti_copy(trees, pickle_path, target_u8, cache_dir, noise_names)
    ada_out, ada_stats, ada_noise = run_ada_original(trees, pickle_path, target_u8, cache_dir, noise_names)

    z_samples = np.random.RandomState(123).randn(W_AVG_SAMPLES, 512)  # hard-coded seed 123 in both copies
    for stats in (pti_stats, ada_stats):
        if not np.array_equal(stats["z_samples"], z_samples):
            raise RuntimeError("project()'s z samples are not RandomState(123) draws")
    if not (np.array_equal(pti_stats["w_avg"], ada_stats["w_avg"]) and pti_stats["w_std"] == ada_stats["w_std"]):
        raise RuntimeError("the two copies computed different w statistics")

    inputs = {
        "target_u8": target_u8,
        "target_ada": np.ascontiguousarray(target_u8.transpose(2, 0, 1)),
        "target_pti": target_pti.astype(np.float32),
        "num_steps": np.int64(STEPS),
        "w_avg_samples": np.int64(W_AVG_SAMPLES),
        "pti.initial_learning_rate": np.float64(PTI_LEARNING_RATE),
        "ada.initial_learning_rate": np.float64(ADA_LEARNING_RATE),
        "pti.torch_seed": np.int64(SEED),
        "ada.torch_seed": np.int64(SEED + 1),
        "z_samples": z_samples,
        **pti_noise,
        **ada_noise,
    }
    out = {"w_avg": pti_stats["w_avg"], "w_std": np.asarray(pti_stats["w_std"]), **pti_out, **ada_out}
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, FAMILY, "checkout of danielroich/PTI at da94d59", default_isa="native")
    parser.add_argument("--ada", required=True, help="checkout of NVlabs/stylegan2-ada-pytorch at d72cc7d")
    args = common.parse_args(parser)
    pti_dir = common.require_checkout(args.official, common.PTI, args.allow_other_commit)
    ada_dir = common.require_checkout(args.ada, common.ADA, args.allow_other_commit)
    return common.finish(generate(pti_dir, ada_dir), args)


if __name__ == "__main__":
    sys.exit(main())
