r"""Rebuilds tests/fixtures/stylegan2_ada_generator from an official StyleGAN2-ADA snapshot.

Official code: NVlabs/stylegan2-ada-pytorch at commit d72cc7d
(https://github.com/NVlabs/stylegan2-ada-pytorch), imported unchanged: training/networks.py,
torch_utils/persistence.py, legacy.py, and the snapshot-saving step of training/training_loop.py.
Its CUDA plugins are never built (common.disable_ada_plugins); on CPU tensors the official ops run
their reference path.

What it does, in the official order: builds G, D, G_ema and the AugmentPipe with the kwargs
train.py builds (map=8, --fp32: no fp16 layers, no clamping), fills in the synthetic weights, and
writes `network-snapshot.pkl` exactly as training/training_loop.py writes a snapshot (a dict of
deep-copied `.eval().requires_grad_(False).cpu()` modules, `pickle.dump`). Then
`legacy.load_network_pkl` reads that file back and the outputs of its `G_ema` are saved:
- `G.mapping(z, None)` and `G.mapping(z, None, truncation_psi=0.7)` -> W+;
- `G.synthesis(ws, noise_mode='const')` and `noise_mode='none'` -> images from W+;
- `G(z, None, truncation_psi=1 | 0.7, noise_mode='const')` -> images from z.

The pickle embeds NVIDIA's source code (NVIDIA Source Code License, non-commercial), so it is not
part of the committed fixture; it is written to a temporary folder, or where --keep-pickle says.
The project's tests write their own snapshot-format pickle (tests/support/ada_pickle_writer.py).

Run it (needs torch; a checkout of the official repository at the pinned commit):

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/official/stylegan2-ada-pytorch
    git -C /tmp/official/stylegan2-ada-pytorch checkout d72cc7d
    python tests/parity/generate/stylegan2_ada_generator.py \
        --official /tmp/official/stylegan2-ada-pytorch --out tests/fixtures/stylegan2_ada_generator

Add `--compare tests/fixtures/stylegan2_ada_generator` (with --out elsewhere) to check a rebuild
against the committed fixture.
"""
import copy
import json
import os
import pickle
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "stylegan2_ada_generator"
SEED = 1101
RESOLUTION = 64
# channels per block: min(channel_base // resolution, channel_max); D is payload only and gets a
# smaller channel_base than G (train.py would tie the two)
CHANNEL_BASE = 512
CHANNEL_MAX = 256
D_CHANNEL_BASE = 128
MBSTD_GROUP = 4
AUGMENT_P = 0.125
DATASET_SIZE = 1000
BATCH = 3
TRUNCATION_PSI = 0.7
PICKLE_NAME = "network-snapshot.pkl"
NOISE_STRENGTH = (0.1, 0.15)  # (scale, offset): strengths in [0.05, 0.25) (official init: 0)


def official_kwargs(resolution, channel_base, channel_max, d_channel_base=None, mbstd_group=MBSTD_GROUP,
                    dataset_size=DATASET_SIZE):
    """(training_set_kwargs, G_kwargs, D_kwargs, augment_kwargs, common_kwargs) as train.py builds
    them for `--cfg` with map=8 and `--fp32` (num_fp16_res 0, conv_clamp None) and the default
    'bgc' augmentation; the assignment order is train.py's, which fixes the key order of the
    networks' init_kwargs recorded in the manifest."""
    import dnnlib

    training_set = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset",
                                   path=f"datasets/synthetic-{resolution}x{resolution}.zip", use_labels=True,
                                   max_size=None, xflip=False)
    training_set.resolution = resolution
    training_set.use_labels = False
    training_set.max_size = dataset_size
    g_kwargs = dnnlib.EasyDict(class_name="training.networks.Generator", z_dim=512, w_dim=512,
                               mapping_kwargs=dnnlib.EasyDict(), synthesis_kwargs=dnnlib.EasyDict())
    d_kwargs = dnnlib.EasyDict(class_name="training.networks.Discriminator", block_kwargs=dnnlib.EasyDict(),
                               mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    g_kwargs.synthesis_kwargs.channel_base = channel_base
    d_kwargs.channel_base = d_channel_base if d_channel_base is not None else channel_base
    g_kwargs.synthesis_kwargs.channel_max = d_kwargs.channel_max = channel_max
    g_kwargs.mapping_kwargs.num_layers = 8
    g_kwargs.synthesis_kwargs.num_fp16_res = d_kwargs.num_fp16_res = 0
    g_kwargs.synthesis_kwargs.conv_clamp = d_kwargs.conv_clamp = None
    d_kwargs.epilogue_kwargs.mbstd_group_size = mbstd_group
    augment = dnnlib.EasyDict(class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1, scale=1,
                              rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1,
                              saturation=1)
    common_kwargs = dict(c_dim=0, img_resolution=resolution, img_channels=3)
    return training_set, g_kwargs, d_kwargs, augment, common_kwargs


def ada_weight_rule(key, owner, attr, tensor):
    """(scale, offset) for StyleGAN2-ADA layers: raw unit-variance weights (the layers scale them
    at run time), the mapping network divided by its lr_multiplier like the official init,
    style (affine) biases around 1, non-zero noise strengths, fixed FIR filters."""
    cls = type(owner).__name__
    if attr == "resample_filter" or cls == "AugmentPipe":
        return common.fixed(tensor)
    if cls == "FullyConnectedLayer":
        lr_multiplier = float(owner.bias_gain)  # the layer keeps its lr_multiplier as bias_gain
        if attr == "weight":
            return common.spec(common.SQRT3 / lr_multiplier)
        if key.endswith("affine.bias"):  # bias_init=1 of the style affines
            return common.spec(0.1, 1.0)
        return common.spec(0.1 / lr_multiplier)
    if cls in ("SynthesisLayer", "ToRGBLayer", "Conv2dLayer"):
        if attr == "noise_strength":
            return common.spec(*NOISE_STRENGTH)
        return common.spec({"weight": common.SQRT3, "bias": 0.1, "noise_const": common.SQRT3}[attr])
    if cls == "SynthesisBlock" and attr == "const":
        return common.spec(common.SQRT3)
    if cls == "MappingNetwork" and attr == "w_avg":
        return common.spec(1.0)  # synthetic, not a mean of W
    raise KeyError(f"no weight rule for {key} ({cls}.{attr}, shape {tuple(tensor.shape)})")


def enter_ada_tree(ada_dir: str) -> common.OfficialTree:
    """The ADA tree, ready to use: click (legacy.py's command-line decorators) and requests
    (dnnlib's downloader) stubbed when absent, CUDA plugin builds disabled. Returns the entered
    tree (leave it with __exit__ or keep it)."""
    tree = common.OfficialTree(ada_dir).__enter__()
    common.stub_missing_packages(["click", "requests"])
    common.disable_ada_plugins()
    return tree


def load_exactly(module, tensors: dict):
    """load_state_dict(strict=True), after checking the key sets match exactly."""
    import torch

    own = module.state_dict()
    if set(own) != set(tensors):
        raise RuntimeError(f"key mismatch: missing {sorted(set(own) - set(tensors))[:5]}, "
                           f"unexpected {sorted(set(tensors) - set(own))[:5]}")
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)


def strip_prefix(prefix: str, tensors: dict) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items()}


def write_snapshot(manifest: dict, kwargs, path: str):
    """G, D, G_ema, augment_pipe built as training/training_loop.py builds them, with the
    synthetic weights, saved the way its "Save network snapshot" step saves them."""
    import dnnlib
    import torch

    training_set, g_kwargs, d_kwargs, augment_kwargs, common_kwargs = kwargs
    G = dnnlib.util.construct_class_by_name(**g_kwargs, **common_kwargs).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**d_kwargs, **common_kwargs).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False)
    augment_pipe.p.copy_(torch.as_tensor(AUGMENT_P))

    g_ema_tensors = common.build_tensors(manifest)
    load_exactly(G_ema, g_ema_tensors)
    # G: its own parameters, buffers equal to G_ema's (the training loop copies them over)
    load_exactly(G, {**g_ema_tensors, **strip_prefix("G.", common.build_tensors(manifest, "G_tensors"))})
    load_exactly(D, strip_prefix("D.", common.build_tensors(manifest, "D_tensors")))

    snapshot = dict(training_set_kwargs=dict(training_set))
    for name, module in [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", augment_pipe)]:
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with open(path, "wb") as f:
        pickle.dump(snapshot, f)


def generate(ada_dir: str, keep_pickle: str | None) -> common.Fixture:
    import torch

    enter_ada_tree(ada_dir)
    import dnnlib
    import legacy

    kwargs = official_kwargs(RESOLUTION, CHANNEL_BASE, CHANNEL_MAX, D_CHANNEL_BASE)
    training_set, g_kwargs, d_kwargs, augment_kwargs, common_kwargs = kwargs
    G0 = dnnlib.util.construct_class_by_name(**g_kwargs, **common_kwargs).eval()
    D0 = dnnlib.util.construct_class_by_name(**d_kwargs, **common_kwargs).eval()
    g_entries = common.tensor_entries(G0, rule=ada_weight_rule)
    g_parameters = [name for name, _ in G0.named_parameters()]
    g_init = json.loads(json.dumps(G0.init_kwargs))
    manifest = {
        "seed": SEED,
        "model": (f"training/networks.py Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution={RESOLUTION}, "
                  f"img_channels=3, mapping_kwargs={{'num_layers': 8}}, synthesis_kwargs={{'channel_base': "
                  f"{CHANNEL_BASE}, 'channel_max': {CHANNEL_MAX}, 'num_fp16_res': 0, 'conv_clamp': None}}) "
                  f"(the G_ema of the snapshot)"),
        "container": {
            "file": PICKLE_NAME,
            "format": "pickle.dump(snapshot_data) of training/training_loop.py; each network a "
                      "torch_utils.persistence object (class source embedded, see README)",
            "training_set_kwargs": dict(training_set),
            "G": {"class": "Generator", "init_kwargs": g_init,
                  "state": "parameters: <G_tensors without the 'G.' prefix>; buffers: as G_ema"},
            "D": {"class": "Discriminator", "init_kwargs": json.loads(json.dumps(D0.init_kwargs)),
                  "state": "<D_tensors without the 'D.' prefix>"},
            "G_ema": {"class": "Generator", "init_kwargs": g_init, "state": "<all keys in tensors>"},
            "augment_pipe": {"class": "AugmentPipe",
                             "init_kwargs": {k: v for k, v in augment_kwargs.items() if k != "class_name"},
                             "state": f"p = {AUGMENT_P}; Hz_geom, Hz_fbank as the constructor builds them"},
        },
        "tensors": g_entries,
        # the snapshot's G (parameters only) and D: other draws than G_ema's thanks to the prefix
        "G_tensors": {"G." + k: g_entries[k] for k in g_parameters},
        "D_tensors": {"D." + k: v for k, v in common.tensor_entries(D0, rule=ada_weight_rule).items()},
    }
    num_ws = G0.num_ws
    del G0, D0

    pickle_path = os.path.join(tempfile.mkdtemp(prefix="parity_ada_"), PICKLE_NAME)
    write_snapshot(manifest, kwargs, pickle_path)
    if keep_pickle:
        shutil.copyfile(pickle_path, keep_pickle)

    inputs = {
        "z": common.gaussian("z", (BATCH, 512), SEED),
        "ws": common.gaussian("ws", (BATCH, num_ws, 512), SEED),
        "truncation_psi": np.float32(TRUNCATION_PSI),
    }
    with open(pickle_path, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"]
    z, ws = torch.from_numpy(inputs["z"]), torch.from_numpy(inputs["ws"])
    psi = float(inputs["truncation_psi"])  # the stored float32 value, as a test feeds it
    out = {}
    with torch.no_grad():
        out["ws_z"] = G.mapping(z, None)
        out["ws_z_trunc"] = G.mapping(z, None, truncation_psi=psi)
        out["img_ws_const"] = G.synthesis(ws, noise_mode="const")
        out["img_ws_none"] = G.synthesis(ws, noise_mode="none")
        out["img_z_const"] = G(z, None, truncation_psi=1, noise_mode="const")
        out["img_z_trunc_const"] = G(z, None, truncation_psi=psi, noise_mode="const")
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, FAMILY, "checkout of NVlabs/stylegan2-ada-pytorch at d72cc7d",
                                    default_isa="native")
    parser.add_argument("--keep-pickle", default=None,
                        help="also copy the snapshot pickle here (it embeds NVIDIA-licensed source: "
                             "do not commit it)")
    args = common.parse_args(parser)
    ada_dir = common.require_checkout(args.official, common.ADA, args.allow_other_commit)
    return common.finish(generate(ada_dir, args.keep_pickle), args)


if __name__ == "__main__":
    sys.exit(main())
