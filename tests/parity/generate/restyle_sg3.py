"""Rebuilds tests/fixtures/restyle_sg3 from stylegan3-editing's ReStyle over StyleGAN3.

Official code: yuval-alaluf/stylegan3-editing at commit 36ce2b4ddab7821586012c1d5fbf737a3ea1c355
(https://github.com/yuval-alaluf/stylegan3-editing), imported unchanged: inversion/models/e4e3.py
(ReStyle-e4e) and psp3.py (ReStyle-pSp), both with n_styles = 16, the decoder
models/stylegan3/networks_stylegan3.py rendered with the identity transform, and
utils/inference_utils.py `load_encoder`, `get_average_image`, `run_on_batch`.

Two synthetic checkpoints, each the dict inversion/training/coach_restyle_{e4e,psp}.py saves
(`state_dict` = net.state_dict() with encoder.* and decoder.*, `opts` = dataclasses.asdict(opts)
with its pathlib.Path entries, `latent_avg` = decoder.mapping.w_avg of shape (512,), plus
global_step / best_val_loss / optimizer entries the converter ignores):

    e4e_backbone   e4e3.e4e, ProgressiveBackboneEncoder (IR-SE-50, official widths)
    psp_backbone   psp3.pSp, BackboneEncoder (IR-SE-50, official widths)

over a small StyleGAN3-T generator (32 px, 14 layers -> 16 W+ rows as n_styles = 16 requires,
channels 16 -> 4, z_dim = w_dim = 512 as the encoders' 512-wide heads require). The stored
decoder.synthesis.input.transform is a rotation: the official loader drops it (load_weights'
remove=["synthesis.input.transform"]) and every forward renders with the identity, so a port
that used it would fail the test.

Outputs (expected.npz, keys prefixed with the model name):
- `<model>/codes` = net.encoder(cat([x, y], 1)) (y stands for the current reconstruction);
- `<model>/avg_image` = get_average_image(net) (G(latent_avg) after face_pool, 256x256);
- `<model>/loop_latents`, `<model>/loop_images` = run_on_batch(x, net, opts, avg_image) with
  n_iters_per_batch = 3 and the official default resize_outputs = False: every iteration's W+
  (3, N, 16, 512) and raw generator images (3, N, 3, 32, 32).

Tolerances (printed): the codes against a float64 run of the encoder (5x the difference, as
restyle.py); the outputs through StyleGAN3 at 2e-4 of their largest magnitude, the relative
tolerance of tests/fixtures/stylegan3_generator (the official synthesis is float32-only: it casts
ws to float32 and asserts float32 filters, so it has no float64 run).

Harness stand-ins (the official files are never edited):
- SG3Generator(checkpoint_path=None) builds the official 1024 px StyleGAN3-R before
  load_state_dict(strict=False); here models.stylegan3.model.Generator builds the small
  generator instead (this script checks that every decoder tensor was loaded);
- `.cuda()` / `.to("cuda")` on modules and tensors stay on the CPU; the CUDA plugins are off so
  filtered_lrelu / bias_act / upfirdn2d take their reference paths (impl 'ref');
- pyrallis (inversion/options/test_options.py imports `pyrallis.field`) is stood in by a
  dataclasses.field with a copied default when not installed;
- torch >= 2.6 loads with weights_only=True: pathlib.PosixPath (the opts' Paths) is allowed;
- imageio / wandb (top-level imports of utils/common.py) are inert stubs when missing;
- pkg_resources.parse_version as in stylegan3_generator.py.

Run it (torch, torchvision, scipy; a checkout of the official repository at the pinned commit):

    python tests/parity/generate/common.py extract --git-dir MIRROR --commit 36ce2b4 \
        --dest /tmp/official/stylegan3-editing
    nice python tests/parity/generate/restyle_sg3.py --official /tmp/official/stylegan3-editing \
        --out tests/fixtures/restyle_sg3
"""
import copy
import dataclasses
import os
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import restyle as restyle_gen  # noqa: E402
import stylegan3_generator as sg3_gen  # noqa: E402

EDITING = common.Pin("yuval-alaluf/stylegan3-editing", "36ce2b4ddab7821586012c1d5fbf737a3ea1c355",
                     "inversion/models/e4e3.py")
BATCH = 2
ITERATIONS = 3
ROTATION_DEG = 20.0
# tolerance of the outputs that pass through StyleGAN3 (relative to their largest magnitude), as
# for tests/fixtures/stylegan3_generator: its official synthesis has no float64 run
SG3_RELATIVE_TOLERANCE = 2e-4
# official Generator kwargs of the small decoder (the rest: networks_stylegan3 defaults, which
# SG3Generator's R configuration also keeps for output_scale / magnitude_ema_beta)
DECODER = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=32, img_channels=3,
               mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16,
               magnitude_ema_beta=0.9988915792636801)

# name -> (official module, class, encoder type, seed)
MODELS = {
    "e4e_backbone": ("inversion.models.e4e3", "e4e", "ProgressiveBackboneEncoder", 601),
    "psp_backbone": ("inversion.models.psp3", "pSp", "BackboneEncoder", 602),
}


def install_standins():
    import torch
    from torch import nn

    if "pyrallis" not in sys.modules:
        try:
            import pyrallis  # noqa: F401
        except ImportError:
            m = types.ModuleType("pyrallis")
            m.field = lambda default=None, is_mutable=False, **kw: dataclasses.field(
                default_factory=lambda: copy.deepcopy(default), **kw)
            sys.modules["pyrallis"] = m
    sg3_gen.install_pkg_resources_standin()
    sg3_gen.disable_plugins()
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], str) and args[0].startswith("cuda"):
            args = ("cpu",) + args[1:]
        return real_to(self, *args, **kwargs)

    torch.Tensor.to = to
    # the official load_encoder calls torch.load with torch < 2.6's default (weights_only=False);
    # under torch >= 2.6 the opts' pathlib.Path entries need allowing (our own file)
    import pathlib
    torch.serialization.add_safe_globals([pathlib.PosixPath])

    import models.stylegan3.model as sg3_model
    from models.stylegan3.networks_stylegan3 import Generator
    sg3_model.Generator = lambda **kwargs: Generator(**DECODER)


def rotation():
    t = np.radians(ROTATION_DEG)
    return np.array([[np.cos(t), np.sin(t), 0.1], [-np.sin(t), np.cos(t), 0.0], [0, 0, 1]],
                    np.float32)


def official_opts(net_kind, encoder_type):
    from inversion.options.e4e_train_options import e4eTrainOptions
    from inversion.options.train_options import TrainOptions
    cls = TrainOptions if net_kind == "pSp" else e4eTrainOptions
    opts = cls(encoder_type=encoder_type, output_size=DECODER["img_resolution"],
               dataset_type="ffhq_encode")
    return dataclasses.asdict(opts)


def jsonable_opts(opts):
    """opts for the manifest: Paths as strings, their keys listed in `path_opts`."""
    import pathlib
    paths = sorted(k for k, v in opts.items() if isinstance(v, pathlib.PurePath))
    return {k: (str(v) if k in paths else v) for k, v in opts.items()}, paths


def build_model(name, tmp):
    import importlib
    import pathlib

    import torch
    from models.stylegan3.networks_stylegan3 import Generator

    module, cls_name, encoder_type, seed = MODELS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    net_kind = "pSp" if cls_name == "pSp" else "e4e"
    opts = official_opts(net_kind, encoder_type)

    class Skeleton(cls):
        def load_weights(self):
            self.decoder = Generator(**DECODER)
            self.decoder.synthesis.input.transform.copy_(torch.from_numpy(rotation()))

    skeleton = Skeleton(types.SimpleNamespace(**opts))
    # restyle.py's rule reads full net keys (encoder.styles.*)
    tensors = common.tensor_entries(
        skeleton.encoder, prefix="encoder.",
        rule=lambda key, *rest: restyle_gen.weight_rule("encoder." + key, *rest))
    tensors.update(common.tensor_entries(skeleton.decoder, rule=sg3_gen.sg3_rule,
                                         prefix="decoder."))
    del skeleton
    plain, paths = jsonable_opts(opts)
    entry = {
        "seed": seed,
        "model": (f"{module}.{cls_name}(opts), opts.encoder_type='{encoder_type}', n_styles 16; "
                  f"decoder networks_stylegan3.Generator(**{DECODER})"),
        "container": {"state_dict": "<all keys in tensors>",
                      "latent_avg": "<extra_tensors['latent_avg']>", "opts": plain,
                      "global_step": 10, "best_val_loss": None},
        "path_opts": paths,
        "tensors": tensors,
        "extra_tensors": {"latent_avg": {"shape": [512], "dtype": "float32", "scale": 1.0,
                                         "offset": 0.0}},
    }
    state = common.build_tensors(entry)
    ckpt = {"state_dict": state, "opts": {k: (pathlib.Path(v) if k in paths else v)
                                         for k, v in plain.items()},
            "latent_avg": common.build_tensors(entry, "extra_tensors")["latent_avg"],
            "global_step": 10, "best_val_loss": None}
    path = os.path.join(tmp, f"{name}.pt")
    torch.save(ckpt, path)

    def load(dtype):
        from inversion.options.test_options import TestOptions
        from utils.inference_utils import load_encoder
        test_opts = TestOptions(checkpoint_path=pathlib.Path(path), n_iters_per_batch=ITERATIONS)
        net, o = load_encoder(pathlib.Path(path), test_opts=test_opts)
        for part in ("encoder", "decoder"):
            for key, value in getattr(net, part).state_dict().items():
                if key == "synthesis.input.transform":
                    continue
                if not torch.equal(value.reshape(-1), state[f"{part}.{key}"].reshape(-1)):
                    raise RuntimeError(f"{part}.{key} was not loaded from the checkpoint")
        net = net.to(dtype)
        net.latent_avg = net.latent_avg.to(dtype)
        return net, o

    return entry, load


def run_model(name, load, inputs, dtype):
    import torch
    from utils.inference_utils import get_average_image, run_on_batch

    net, opts = load(dtype)
    x = torch.from_numpy(inputs[f"{name}/x"]).to(dtype)
    y = torch.from_numpy(inputs[f"{name}/y"]).to(dtype)
    out = {}
    with torch.no_grad():
        out["codes"] = net.encoder(torch.cat([x, y], dim=1))
        if dtype == torch.float64:
            # the official StyleGAN3 synthesis runs in float32 only (ws.to(float32), float32
            # filters and dtype asserts): the float64 reference covers the encoder alone
            return {f"{name}/codes": common.to_numpy(out["codes"])}
        avg = get_average_image(net).to(dtype)
        images, latents = run_on_batch(x, net, opts, avg)
        if opts.resize_outputs:
            raise RuntimeError("expected the official default resize_outputs=False")
        out["avg_image"] = avg
        out["loop_images"] = torch.stack([torch.stack(images[i]) for i in range(BATCH)], 1)
        out["loop_latents"] = np.stack([np.stack(latents[i]) for i in range(BATCH)], 1)
    return {f"{name}/{k}": common.to_numpy(v) for k, v in out.items()}


def report(expected: dict, f64: dict):
    """The README's tolerance table: the encoder codes against their float64 run (restyle.py's
    rule), the StyleGAN3 outputs at SG3_RELATIVE_TOLERANCE of their largest magnitude."""
    print("\n| output | shape | max abs f32-f64 | suggested atol |\n|---|---|---|---|")
    for k in sorted(expected):
        a = np.asarray(expected[k], np.float64)
        scale = float(np.max(np.abs(a)))
        if k in f64:
            d = float(np.max(np.abs(a - np.asarray(f64[k], np.float64))))
            print(f"| {k} | {tuple(a.shape)} | {d:.2e} | {max(5 * d, 1e-6 * scale):.2e} |")
        else:
            print(f"| {k} | {tuple(a.shape)} | - | {SG3_RELATIVE_TOLERANCE * scale:.2e} |")


def generate(editing_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(editing_dir).activate()
    # map2style imports models/stylegan2 (EqualLinear), whose CUDA ops get their CPU stand-ins
    common.install_e4e_op_standin(editing_dir)
    # utils/common.py imports imageio / matplotlib at top level (video and plotting helpers)
    common.stub_missing_packages(["imageio", "wandb"])
    install_standins()
    tmp = tempfile.mkdtemp(prefix="parity_restyle_sg3_")
    manifest = {"official": {"repo": EDITING.repo, "commit": EDITING.commit}, "models": {}}
    inputs, expected, f64 = {}, {}, {}
    for name, (_, _, _, seed) in MODELS.items():
        entry, load = build_model(name, tmp)
        manifest["models"][name] = entry
        _, x, y = restyle_gen.inputs_for("ffhq_encode", seed * 1000 + 7)
        inputs.update({f"{name}/x": x, f"{name}/y": y})
        expected.update(run_model(name, load, inputs, torch.float32))
        f64.update(run_model(name, load, inputs, torch.float64))
        print(f"{name}: done", flush=True)
    for k, v in expected.items():
        if not np.all(np.isfinite(v)) or float(np.std(v)) < 1e-6:
            raise RuntimeError(f"{k}: degenerate output")
    report(expected, f64)
    return common.Fixture(inputs=inputs, expected=expected, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, "restyle_sg3",
                                    f"checkout of {EDITING.repo} at {EDITING.commit}")
    args = common.parse_args(parser)
    editing_dir = common.require_checkout(args.official, EDITING, args.allow_other_commit)
    return common.finish(generate(editing_dir), args)


if __name__ == "__main__":
    sys.exit(main())
