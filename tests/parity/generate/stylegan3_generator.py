"""Rebuilds tests/fixtures/stylegan3_generator from the official StyleGAN3 generator.

Official code, imported unchanged:
- NVlabs/stylegan3 at commit c233a919a6faee6e36a316ddd4eddababad1adf9
  (https://github.com/NVlabs/stylegan3): training/networks_stylegan3.py (the generator),
  training/networks_stylegan2.py (the snapshot's D), training/augment.py (its augment_pipe),
  legacy.py (load_network_pkl, to read the written snapshot back);
- yuval-alaluf/stylegan3-editing at commit 36ce2b4ddab7821586012c1d5fbf737a3ea1c355
  (https://github.com/yuval-alaluf/stylegan3-editing): models/stylegan3/networks_stylegan3.py,
  the same network whose SynthesisInput also takes a batch of transforms (N, 3, 3) in its
  `transform` buffer, as that repository sets it for unaligned inversion.

Their CUDA ops run on the CPU through the official reference paths (`filtered_lrelu`,
`bias_act` and `upfirdn2d` with CPU tensors take impl 'ref'); the plugin loaders are pinned off
on the harness side. torch_utils/ops/conv2d_gradfix.py imports `pkg_resources.parse_version`,
which recent setuptools no longer ship: a stand-in with packaging's `parse` is installed when
pkg_resources is missing. Nothing else is changed.

Three small generators with synthetic weights (tests/support/synth_weights.py; every magnitude
EMA, the input's affine, frequencies and phases non-trivial; the low-pass filters are the
official design, stored exactly):
- t: config T (conv_kernel 3, separable filters), 32 px, 14 layers, channels 16 -> 4;
- r: config R (conv_kernel 1, radially symmetric down-sampling filters, channel_base and
  channel_max doubled as train.py does), 64 px, 14 layers;
- c: a conditional T (c_dim 5, z_dim 24 != w_dim 32), 32 px, 8 layers, 3 mapping layers,
  margin 6, output_scale 0.5, conv_clamp 2 (the clamp is reached).
Each is written as the official training loop writes a snapshot (training/training_loop.py:
{G, D, G_ema, augment_pipe, training_set_kwargs} deep-copied, eval(), pickle.dump), and the
outputs come from the G_ema that legacy.load_network_pkl reads back from that file.

Outputs per generator p in (t, r, c): p_ws_z = G.mapping(z, c) (psi 1); p_ws_z_trunc (psi 0.7);
p_ws_z_trunc_cutoff (psi 0.6, cutoff 4); p_img_ws = G.synthesis(ws); p_img_z = G(z, c,
truncation_psi=0.7); p_img_ws_transform = G.synthesis(ws) with the transform buffer set to
`transform` (3, 3); p_img_ws_transform_batched = stylegan3-editing's synthesis with the buffer
set to `transforms` (N, 3, 3) (checked here against NVlabs' per image).

Run it (needs torch, scipy; checkouts at the pinned commits):

    git clone https://github.com/NVlabs/stylegan3 /tmp/official/stylegan3
    git -C /tmp/official/stylegan3 checkout c233a91
    git clone https://github.com/yuval-alaluf/stylegan3-editing /tmp/official/stylegan3-editing
    git -C /tmp/official/stylegan3-editing checkout 36ce2b4
    nice -n 10 python tests/parity/generate/stylegan3_generator.py \
        --official /tmp/official/stylegan3 --editing /tmp/official/stylegan3-editing \
        --out tests/fixtures/stylegan3_generator

With --compare tests/fixtures/stylegan3_generator, a rebuild is compared with the committed
arrays (the pickles are not byte-reproducible: torch's legacy storage keys are addresses).
"""
import copy
import importlib.util
import os
import pickle
import shutil
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "stylegan3_generator"
SG3 = common.Pin("NVlabs/stylegan3", "c233a919a6faee6e36a316ddd4eddababad1adf9",
                 "training/networks_stylegan3.py")
EDITING = common.Pin("yuval-alaluf/stylegan3-editing", "36ce2b4ddab7821586012c1d5fbf737a3ea1c355",
                     "models/stylegan3/networks_stylegan3.py")
SEED = 301
BATCH = 3
PSI, PSI_CUT, CUTOFF = 0.7, 0.6, 4
LICENSE_NAME = "LICENSE-NVIDIA.txt"

# official Generator kwargs (train.py spells them the same way: G_kwargs + common_kwargs)
CONFIGS = {
    "t": dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=32, img_channels=3,
              mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16,
              magnitude_ema_beta=0.5 ** (32 / (20 * 1e3))),
    "r": dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=64, img_channels=3,
              mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32,
              magnitude_ema_beta=0.5 ** (32 / (20 * 1e3)), conv_kernel=1,
              use_radial_filters=True),
    "c": dict(z_dim=24, w_dim=32, c_dim=5, img_resolution=32, img_channels=3,
              mapping_kwargs=dict(num_layers=3), channel_base=128, channel_max=16, num_layers=8,
              margin_size=6, output_scale=0.5, conv_clamp=2, magnitude_ema_beta=0.999),
}
D_KWARGS = dict(channel_base=64, channel_max=16, block_kwargs={}, mapping_kwargs={},
                epilogue_kwargs=dict(mbstd_group_size=4))
AUGMENT_KWARGS = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                      brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


def install_pkg_resources_standin():
    """conv2d_gradfix / grid_sample_gradfix only call pkg_resources.parse_version."""
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        import packaging.version
        module = types.ModuleType("pkg_resources")
        module.parse_version = packaging.version.parse
        sys.modules["pkg_resources"] = module


def disable_plugins():
    """On CPU tensors every op takes its reference path; make sure no CUDA build is tried."""
    from torch_utils import custom_ops
    from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

    def refuse(*args, **kwargs):
        raise RuntimeError("CUDA plugin builds are disabled in the parity generator")

    custom_ops.get_plugin = refuse
    for op in (bias_act, filtered_lrelu, upfirdn2d):
        op._init = lambda: False


# ------------------------------------------------------------------------------ weights

def sg3_rule(key, owner, attr, tensor):
    """(scale, offset) per tensor, from the owner's class (see the module docstring)."""
    cls = type(owner).__name__
    S3 = common.SQRT3
    if attr in ("up_filter", "down_filter", "resample_filter", "transform") or cls == "AugmentPipe":
        return common.fixed(tensor)
    if cls == "FullyConnectedLayer":
        lr = float(owner.bias_gain)
        if key.endswith("input.affine.weight"):
            return common.spec(0.3 * S3)        # official init 0: a real rotation / translation
        if key.endswith("input.affine.bias"):
            return common.spec(0.75, 0.25)      # around the official [1, 0, 0, 0]
        if attr == "weight":
            return common.spec(S3 / lr)
        if key.endswith("affine.bias"):
            return common.spec(0.1, 1.0)        # bias_init=1
        return common.spec(0.1 / lr)
    if cls == "SynthesisInput":
        if attr == "weight":
            return common.spec(S3)
        if attr == "freqs":                     # some beyond the band: damped amplitudes
            return common.spec(float(owner.bandwidth))
        if attr == "phases":
            return common.spec(0.5)
    if cls == "SynthesisLayer":
        if attr == "weight":
            return common.spec(S3)
        if attr == "bias":
            return common.spec(0.1)
        if attr == "magnitude_ema":
            return common.spec(0.75, 1.0)       # input gains rsqrt in (0.76, 2)
    if cls == "MappingNetwork" and attr == "w_avg":
        return common.spec(1.0)
    if cls in ("Conv2dLayer", "SynthesisBlock") or (cls == "DiscriminatorEpilogue"):
        return common.spec(S3 if attr == "weight" else 0.1)
    raise KeyError(f"no weight rule for {key} ({cls}.{attr}, shape {tuple(tensor.shape)})")


def prefixed(prefix, entries):
    return {prefix + k: v for k, v in entries.items()}


def stripped(prefix, tensors):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_exact(module, tensors):
    import torch
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)


# ------------------------------------------------------------------------------ generation

def build_snapshot(name, kw, manifest, path):
    """G, D, G_ema, augment_pipe as training_loop.py builds them, synthetic weights, and the
    snapshot written as training_loop.py writes it."""
    import torch
    import dnnlib
    from training import augment, networks_stylegan2, networks_stylegan3

    G = networks_stylegan3.Generator(**kw).train().requires_grad_(False)
    D = networks_stylegan2.Discriminator(c_dim=kw["c_dim"], img_resolution=kw["img_resolution"],
                                         img_channels=kw["img_channels"], **D_KWARGS)
    D = D.train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = augment.AugmentPipe(**AUGMENT_KWARGS).train().requires_grad_(False)
    augment_pipe.p.copy_(torch.as_tensor(0.2))

    p = f"{name}/"
    manifest["tensors"].update(prefixed(p, common.tensor_entries(G_ema, rule=sg3_rule)))
    g_params = {k: v for k, v in common.tensor_entries(G, rule=sg3_rule).items()
                if k in dict(G.named_parameters())}
    manifest["G_tensors"].update(prefixed(p + "G.", g_params))
    manifest["D_tensors"].update(prefixed(p + "D.", common.tensor_entries(D, rule=sg3_rule)))
    ema = stripped(p, common.build_tensors(manifest))
    load_exact(G_ema, ema)
    load_exact(G, {**ema, **stripped(p + "G.", common.build_tensors(manifest, "G_tensors"))})
    load_exact(D, stripped(p + "D.", common.build_tensors(manifest, "D_tensors")))

    training_set_kwargs = dnnlib.EasyDict(
        class_name="training.dataset.ImageFolderDataset", path=f"datasets/synthetic-{name}.zip",
        use_labels=kw["c_dim"] > 0, max_size=1000, xflip=False,
        resolution=kw["img_resolution"], random_seed=0)
    # --- training/training_loop.py, "Save network snapshot" (num_gpus == 1) ---
    snapshot_data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                         training_set_kwargs=dict(training_set_kwargs))
    for key, value in snapshot_data.items():
        if isinstance(value, torch.nn.Module):
            value = copy.deepcopy(value).eval().requires_grad_(False)
            snapshot_data[key] = value.cpu()
        del value
    with open(path, "wb") as f:
        pickle.dump(snapshot_data, f)


def transforms_of(seed):
    """A user transform and a batch of them, built as stylegan3-editing builds them:
    inverse(make_transform(translate, angle)) (utils/common.py), in float32."""
    def make(translate, angle):
        m = np.eye(3)
        s, c = np.sin(angle / 360.0 * np.pi * 2), np.cos(angle / 360.0 * np.pi * 2)
        m[0][0], m[0][1], m[0][2] = c, s, translate[0]
        m[1][0], m[1][1], m[1][2] = -s, c, translate[1]
        return np.linalg.inv(m).astype(np.float32)
    one = make((0.12, -0.08), 17.0)
    batch = np.stack([make((-0.2, 0.05), -25.0), make((0.0, 0.0), 0.0),
                      make((0.3, 0.25), 40.0)])
    return one, batch


def run_generator(name, kw, pkl, editing_tree, inputs, expected):
    import torch
    import legacy

    with open(pkl, "rb") as f:
        G = legacy.load_network_pkl(f)["G_ema"].eval()
    p = name + "_"
    z = torch.from_numpy(inputs[p + "z"])
    c = torch.from_numpy(inputs[p + "c"]) if kw["c_dim"] else None
    ws = torch.from_numpy(inputs[p + "ws"])
    transform = torch.from_numpy(inputs["transform"])
    transforms = torch.from_numpy(inputs["transforms"])
    with torch.no_grad():
        expected[p + "ws_z"] = G.mapping(z, c)
        expected[p + "ws_z_trunc"] = G.mapping(z, c, truncation_psi=PSI)
        expected[p + "ws_z_trunc_cutoff"] = G.mapping(z, c, truncation_psi=PSI_CUT,
                                                      truncation_cutoff=CUTOFF)
        expected[p + "img_ws"] = G.synthesis(ws)
        expected[p + "img_z"] = G(z, c, truncation_psi=PSI)
        G.synthesis.input.transform.copy_(transform)
        expected[p + "img_ws_transform"] = G.synthesis(ws)
        per_image = []
        for i in range(BATCH):
            G.synthesis.input.transform.copy_(transforms[i])
            per_image.append(G.synthesis(ws[i:i + 1]))
        G.synthesis.input.transform.copy_(torch.eye(3))
        state = G.state_dict()
    with editing_tree:
        from models.stylegan3.networks_stylegan3 import Generator as EditingGenerator
        disable_plugins()
        Ge = EditingGenerator(**kw).eval().requires_grad_(False)
        load_exact(Ge, state)
        with torch.no_grad():
            Ge.synthesis.input.transform = transforms  # how stylegan3-editing sets a batch
            expected[p + "img_ws_transform_batched"] = Ge.synthesis(ws)
    diff = float((expected[p + "img_ws_transform_batched"] - torch.cat(per_image)).abs().max())
    print(f"  {name}: batched transform (stylegan3-editing) vs NVlabs per image: max |diff| "
          f"{diff:.3e}")
    assert diff < 1e-4, diff


def generate(sg3_dir, editing_dir, out_dir):
    install_pkg_resources_standin()
    official = common.OfficialTree(sg3_dir)
    editing = common.OfficialTree(editing_dir)
    official.activate()
    common.stub_missing_packages(["click"])
    disable_plugins()
    manifest = {"seed": SEED, "configs": {}, "tensors": {}, "G_tensors": {}, "D_tensors": {}}
    inputs, expected = {}, {}
    one, batch = transforms_of(SEED)
    inputs["transform"], inputs["transforms"] = one, batch
    os.makedirs(out_dir, exist_ok=True)
    for name, kw in CONFIGS.items():
        pkl = os.path.join(out_dir, f"network-snapshot-{name}.pkl")
        build_snapshot(name, kw, manifest, pkl)
        num_ws = kw.get("num_layers", 14) + 2
        p = name + "_"
        inputs[p + "z"] = common.gaussian(p + "z", (BATCH, kw["z_dim"]), SEED)
        if kw["c_dim"]:
            inputs[p + "c"] = np.eye(kw["c_dim"], dtype=np.float32)[[0, 3, 4]]
        inputs[p + "ws"] = common.gaussian(p + "ws", (BATCH, num_ws, kw["w_dim"]), SEED)
        manifest["configs"][name] = {
            "init_kwargs": kw, "snapshot": os.path.basename(pkl), "num_ws": num_ws,
            "D_init_kwargs": dict(c_dim=kw["c_dim"], img_resolution=kw["img_resolution"],
                                  img_channels=kw["img_channels"], **D_KWARGS),
            "augment_kwargs": AUGMENT_KWARGS}
        run_generator(name, kw, pkl, editing, inputs, expected)
    inputs.update({"truncation_psi": np.float32(PSI), "truncation_psi_cutoff": np.float32(
        PSI_CUT), "truncation_cutoff": np.int64(CUTOFF)})
    manifest["official"] = {"NVlabs/stylegan3": SG3.commit, "stylegan3-editing": EDITING.commit}
    shutil.copyfile(os.path.join(sg3_dir, "LICENSE.txt"), os.path.join(out_dir, LICENSE_NAME))
    return common.Fixture(inputs=inputs, expected=expected, manifest=manifest)


def main():
    parser = common.argument_parser(__doc__, FAMILY, "checkout of NVlabs/stylegan3")
    parser.add_argument("--editing", required=True, help="checkout of yuval-alaluf/"
                                                          "stylegan3-editing")
    args = common.parse_args(parser)
    sg3 = common.require_checkout(args.official, SG3, args.allow_other_commit)
    editing = common.require_checkout(args.editing, EDITING, args.allow_other_commit)
    fixture = generate(sg3, editing, args.out)
    for key, value in sorted(fixture.expected.items()):
        v = common.to_numpy(value)
        print(f"  {key}: {tuple(v.shape)} |max| {np.abs(v).max():.4g} std {v.std():.4g}")
    return common.finish(fixture, args)


if __name__ == "__main__":
    sys.exit(main())
