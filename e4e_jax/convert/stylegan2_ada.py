"""Converts a StyleGAN2-ADA network snapshot pickle without executing anything in it.

    e4e-jax convert stylegan2_ada network-snapshot-025000.pkl converted/ada-generator

Reads NVIDIA `network-snapshot-*.pkl` files (NVlabs/stylegan2-ada-pytorch; stylegan3 writes the
same format for its StyleGAN2 configs) with the allow-list unpickler of `_safe_pickle.py`: the
Python source those pickles embed is never compiled or run, and torch is not needed. Takes
`G_ema` (the generator the official generate.py uses, not the training-time `G`), rebuilds its
hyper-parameters from the pickled `init_kwargs`, checks every tensor against them, and writes a
generator directory for `e4e_jax.load_generator` (config variant "ada", `latent_avg` = the
mapping's `w_avg`).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.convert.common import (
    DST_HELP,
    ConversionError,
    check_keys,
    cli_main,
    conv_kernel,
    dense_kernel,
    f32,
)
from e4e_jax.convert.safe_pickle import (PersistentObject, UnsafePickleError,
                                         load_network_pickle)
from e4e_jax.convert.safe_pickle import find_generator as find_snapshot_generator

DEFAULT_FILTER = [1, 3, 3, 1]

# The ADA constructors' defaults (training/networks.py) and the values this converter supports.
MAPPING_DEFAULTS = dict(num_layers=8, embed_features=None, layer_features=None,
                        activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995)
SYNTHESIS_DEFAULTS = dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
                          architecture="skip", resample_filter=DEFAULT_FILTER,
                          fp16_channels_last=False, use_noise=True, activation="lrelu",
                          kernel_size=3)
# Options that change memory layout or kernel choice only (stylegan3's networks_stylegan2 adds
# fused_modconv_default): the float32 result is the same.
IGNORED_SYNTHESIS = ("fp16_channels_last", "fused_modconv_default")
GENERATOR_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                  "mapping_kwargs", "synthesis_kwargs")


def _plain(value: Any) -> Any:
    """init_kwargs as JSON values (EasyDict -> dict, numpy scalars -> Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def generator_kwargs(init_kwargs: dict, what: str = "G_ema") -> dict:
    """The Generator's init_kwargs with every default filled in; unsupported values refused."""
    if not isinstance(init_kwargs, dict):
        raise ConversionError(f"{what}: init_kwargs is a {type(init_kwargs).__name__}, "
                              f"expected a dict.")
    kw = _plain(init_kwargs)
    for key in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if key not in kw:
            raise ConversionError(f"{what}: init_kwargs lacks {key!r} (found "
                                  f"{sorted(kw)}); not a StyleGAN2-ADA Generator.")
    # stylegan3's networks_stylegan2.Generator takes the synthesis options as **kwargs.
    synthesis = dict(kw.get("synthesis_kwargs") or {})
    synthesis.update({k: v for k, v in kw.items() if k not in GENERATOR_KEYS})
    mapping = dict(kw.get("mapping_kwargs") or {})
    unknown = sorted(set(mapping) - set(MAPPING_DEFAULTS))
    if unknown:
        raise ConversionError(f"{what}: unknown mapping_kwargs {unknown}; not a StyleGAN2-ADA "
                              f"MappingNetwork.")
    unknown = sorted(set(synthesis) - set(SYNTHESIS_DEFAULTS) - set(IGNORED_SYNTHESIS))
    if unknown:
        raise ConversionError(f"{what}: unknown synthesis_kwargs {unknown}; not a StyleGAN2-ADA "
                              f"SynthesisNetwork (StyleGAN3 'alias-free' generators are a "
                              f"different network: convert them with `e4e-jax convert "
                              f"stylegan3`).")
    mapping = {**MAPPING_DEFAULTS, **mapping}
    synthesis = {**SYNTHESIS_DEFAULTS, **synthesis}

    res = int(kw["img_resolution"])
    if res < 8 or res & (res - 1):
        raise ConversionError(f"{what}: img_resolution must be a power of two >= 8, got {res}.")
    checks = [
        (synthesis["architecture"] == "skip", "architecture", synthesis["architecture"],
         "'skip' (the StyleGAN2 generator; 'orig' and 'resnet' are not supported)"),
        (list(synthesis["resample_filter"]) == DEFAULT_FILTER, "resample_filter",
         synthesis["resample_filter"], str(DEFAULT_FILTER)),
        (synthesis["activation"] == "lrelu", "synthesis activation", synthesis["activation"],
         "'lrelu'"),
        (mapping["activation"] == "lrelu", "mapping activation", mapping["activation"],
         "'lrelu'"),
        (int(synthesis["kernel_size"]) == 3, "kernel_size", synthesis["kernel_size"], "3"),
        (int(kw["z_dim"]) > 0, "z_dim", kw["z_dim"], "> 0"),
        (int(mapping["num_layers"]) >= 1, "mapping num_layers", mapping["num_layers"], ">= 1"),
    ]
    for ok, name, value, want in checks:
        if not ok:
            raise ConversionError(f"{what}: unsupported {name} {value!r}; supported: {want}.")
    return dict(z_dim=int(kw["z_dim"]), c_dim=int(kw["c_dim"]), w_dim=int(kw["w_dim"]),
                img_resolution=res, img_channels=int(kw["img_channels"]), mapping=mapping,
                synthesis=synthesis, init_kwargs=kw)


def block_resolutions(resolution: int) -> list[int]:
    return [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]


def channels_for(kw: dict) -> list[int]:
    """ADA's width per block: min(channel_base // res, channel_max)."""
    s = kw["synthesis"]
    return [min(int(s["channel_base"]) // r, int(s["channel_max"]))
            for r in block_resolutions(kw["img_resolution"])]


def _mapping_widths(kw: dict) -> tuple[int, int, list[int]]:
    m = kw["mapping"]
    w_dim, c_dim = kw["w_dim"], kw["c_dim"]
    embed = 0 if c_dim == 0 else int(m["embed_features"] or w_dim)
    hidden = int(m["layer_features"] or w_dim)
    n = int(m["num_layers"])
    return embed, hidden, [kw["z_dim"] + embed] + [hidden] * (n - 1) + [w_dim]


def expected_ada_shapes(kw: dict) -> dict[str, tuple]:
    """Every key of the ADA Generator's state_dict at these init_kwargs, with its shape."""
    shapes: dict[str, tuple] = {}
    w_dim, c_dim = kw["w_dim"], kw["c_dim"]
    embed, _, feats = _mapping_widths(kw)
    if c_dim > 0:
        shapes["mapping.embed.weight"] = (embed, c_dim)
        shapes["mapping.embed.bias"] = (embed,)
    for i in range(len(feats) - 1):
        shapes[f"mapping.fc{i}.weight"] = (feats[i + 1], feats[i])
        shapes[f"mapping.fc{i}.bias"] = (feats[i + 1],)
    if kw["mapping"]["w_avg_beta"] is not None:
        shapes["mapping.w_avg"] = (w_dim,)
    use_noise = bool(kw["synthesis"]["use_noise"])

    def layer(prefix, cin, cout, res):
        shapes[f"{prefix}.weight"] = (cout, cin, 3, 3)
        shapes[f"{prefix}.bias"] = (cout,)
        shapes[f"{prefix}.resample_filter"] = (4, 4)
        shapes[f"{prefix}.affine.weight"] = (cin, w_dim)
        shapes[f"{prefix}.affine.bias"] = (cin,)
        if use_noise:
            shapes[f"{prefix}.noise_const"] = (res, res)
            shapes[f"{prefix}.noise_strength"] = ()

    chans = channels_for(kw)
    for i, res in enumerate(block_resolutions(kw["img_resolution"])):
        b = f"synthesis.b{res}"
        cout = chans[i]
        shapes[f"{b}.resample_filter"] = (4, 4)
        if i == 0:
            shapes[f"{b}.const"] = (cout, 4, 4)
        else:
            layer(f"{b}.conv0", chans[i - 1], cout, res)
        layer(f"{b}.conv1", cout, cout, res)
        shapes[f"{b}.torgb.weight"] = (kw["img_channels"], cout, 1, 1)
        shapes[f"{b}.torgb.bias"] = (kw["img_channels"],)
        shapes[f"{b}.torgb.affine.weight"] = (cout, w_dim)
        shapes[f"{b}.torgb.affine.bias"] = (cout,)
    return shapes


def _setup_filter(taps) -> np.ndarray:
    k = np.asarray(taps, np.float32)
    k = np.outer(k, k)
    return k / k.sum()


def convert_ada_generator(state: dict, init_kwargs: dict, what: str = "G_ema"):
    """ADA Generator state_dict (numpy) + its init_kwargs -> (config, variables, latent_avg)."""
    kw = generator_kwargs(init_kwargs, what)
    shapes = expected_ada_shapes(kw)
    check_keys(state, shapes, what)
    fir = _setup_filter(DEFAULT_FILTER)
    for key in shapes:
        if key.endswith("resample_filter") and not np.allclose(f32(state[key]), fir, atol=1e-7):
            raise ConversionError(f"{what}: {key} is not setup_filter([1, 3, 3, 1]); the "
                                  f"pickled buffer disagrees with init_kwargs.")
    use_noise = bool(kw["synthesis"]["use_noise"])

    def layer(prefix):
        cout = np.shape(state[f"{prefix}.weight"])[0]
        return {
            "kernel": conv_kernel(state[f"{prefix}.weight"]),
            "modulation": {"kernel": dense_kernel(state[f"{prefix}.affine.weight"]),
                           "bias": f32(state[f"{prefix}.affine.bias"])},
            # use_noise=False is exactly zero strength (x + 0 * noise == x).
            "noise_strength": (f32(state[f"{prefix}.noise_strength"]).reshape(())
                               if use_noise else np.zeros((), np.float32)),
            "bias": f32(state[f"{prefix}.bias"]).reshape(cout),
        }

    def to_rgb(prefix):
        return {
            "kernel": conv_kernel(state[f"{prefix}.weight"]),
            "modulation": {"kernel": dense_kernel(state[f"{prefix}.affine.weight"]),
                           "bias": f32(state[f"{prefix}.affine.bias"])},
            "bias": f32(state[f"{prefix}.bias"]).reshape(-1),
        }

    embed, hidden, feats = _mapping_widths(kw)
    mapping = {f"dense_{i}": {"kernel": dense_kernel(state[f"mapping.fc{i}.weight"]),
                              "bias": f32(state[f"mapping.fc{i}.bias"])}
               for i in range(len(feats) - 1)}
    if kw["c_dim"] > 0:
        mapping["embed"] = {"kernel": dense_kernel(state["mapping.embed.weight"]),
                            "bias": f32(state["mapping.embed.bias"])}
    resolutions = block_resolutions(kw["img_resolution"])
    params = {
        "mapping": mapping,
        "input": {"const": np.ascontiguousarray(
            np.transpose(f32(state["synthesis.b4.const"]), (1, 2, 0))[None])},
        "conv1": layer("synthesis.b4.conv1"),
        "to_rgb1": to_rgb("synthesis.b4.torgb"),
    }
    # The rosinality layer order: convs_{2j} / convs_{2j+1} / to_rgbs_{j} are block 8 * 2**j.
    layer_names = ["synthesis.b4.conv1"]
    for j, res in enumerate(resolutions[1:]):
        params[f"convs_{2 * j}"] = layer(f"synthesis.b{res}.conv0")
        params[f"convs_{2 * j + 1}"] = layer(f"synthesis.b{res}.conv1")
        params[f"to_rgbs_{j}"] = to_rgb(f"synthesis.b{res}.torgb")
        layer_names += [f"synthesis.b{res}.conv0", f"synthesis.b{res}.conv1"]
    noises = {}
    for i, name in enumerate(layer_names):
        res = int(name.split(".")[1][1:])
        value = (f32(state[f"{name}.noise_const"]) if use_noise
                 else np.zeros((res, res), np.float32))
        noises[f"noise_{i}"] = np.ascontiguousarray(value[None, :, :, None])

    s = kw["synthesis"]
    conv_clamp = None if s["conv_clamp"] is None else float(s["conv_clamp"])
    config = dict(
        resolution=kw["img_resolution"], channels=channels_for(kw), style_dim=kw["w_dim"],
        n_mlp=int(kw["mapping"]["num_layers"]), lr_mlp=float(kw["mapping"]["lr_multiplier"]),
        blur_kernel=list(DEFAULT_FILTER), variant="ada", conv_clamp=conv_clamp,
        z_dim=kw["z_dim"], c_dim=kw["c_dim"], layer_features=hidden,
        embed_features=embed if kw["c_dim"] > 0 else None, img_channels=kw["img_channels"],
        # metadata (not module fields)
        ada=dict(init_kwargs=kw["init_kwargs"], num_fp16_res=int(s["num_fp16_res"]),
                 channel_base=int(s["channel_base"]), channel_max=int(s["channel_max"]),
                 use_noise=use_noise, w_avg_beta=kw["mapping"]["w_avg_beta"],
                 computed_in="float32 (the official force_fp32 path; conv_clamp applied "
                             "wherever it is set)"),
    )
    latent_avg = f32(state["mapping.w_avg"]).copy() if "mapping.w_avg" in state else None
    return config, {"params": params, "noises": noises}, latent_avg


def _is_stylegan3(G: PersistentObject) -> bool:
    """A StyleGAN3 Generator: its synthesis network starts with a SynthesisInput and has
    L<i>_<size>_<channels> layers instead of blocks b4, b8, ..."""
    synthesis = G.modules.get("synthesis")
    if not isinstance(synthesis, PersistentObject):
        return False
    return "input" in synthesis.modules or any(k.startswith("L0_") for k in synthesis.modules)


def _check_attributes(G: PersistentObject, kw: dict, what: str) -> None:
    """The official loader restores each layer's __dict__, not its constructor: refuse a pickle
    whose layer attributes disagree with the init_kwargs we rebuild from."""
    mapping = G.modules.get("mapping")
    synthesis = G.modules.get("synthesis")
    if not isinstance(mapping, PersistentObject) or not isinstance(synthesis, PersistentObject):
        raise ConversionError(f"{what}: a Generator without mapping / synthesis submodules.")
    if _is_stylegan3(G):
        raise ConversionError(f"{what}: this is a StyleGAN3 (alias-free) generator, a different "
                              f"network from StyleGAN2: convert it with `e4e-jax convert "
                              f"stylegan3`.")
    lr = float(kw["mapping"]["lr_multiplier"])
    problems = []
    fc0 = mapping.modules.get("fc0")
    if isinstance(fc0, PersistentObject) and "bias_gain" in fc0.state:
        if not np.isclose(float(fc0.state["bias_gain"]), lr):
            problems.append(f"mapping.fc0.bias_gain={fc0.state['bias_gain']} but "
                            f"lr_multiplier={lr}")
    clamp = kw["synthesis"]["conv_clamp"]
    for bname, block in synthesis.modules.items():
        if not isinstance(block, PersistentObject):
            continue
        for lname, lay in block.modules.items():
            if isinstance(lay, PersistentObject) and "conv_clamp" in lay.state:
                if lay.state["conv_clamp"] != clamp:
                    problems.append(f"synthesis.{bname}.{lname}.conv_clamp="
                                    f"{lay.state['conv_clamp']} but init_kwargs conv_clamp="
                                    f"{clamp}")
    num_ws = G.state.get("num_ws")
    n_latent = 2 * int(math.log2(kw["img_resolution"])) - 2
    if num_ws is not None and int(num_ws) != n_latent:
        problems.append(f"num_ws={num_ws}, expected {n_latent}")
    if problems:
        raise ConversionError(f"{what}: the pickled layers disagree with its init_kwargs: "
                              + "; ".join(problems[:5]))


def find_generator(obj: Any, what: str = "snapshot") -> PersistentObject:
    """`G_ema` of a StyleGAN2-ADA snapshot dict (or a pickled Generator on its own)."""
    return find_snapshot_generator(obj, what, family="StyleGAN2-ADA")


def convert_snapshot(obj: Any, what: str = "snapshot"):
    """A snapshot read by `read_snapshot` -> LoadedGenerator of its G_ema."""
    from e4e_jax.nets.generator import LoadedGenerator, expected_variables, module_from_config
    from e4e_jax.nets.model_dir import check_tree
    G = find_generator(obj, what)
    if _is_stylegan3(G):  # before its init_kwargs, which StyleGAN2 options do not describe
        _check_attributes(G, {}, f"{what}['G_ema']")
    kw = generator_kwargs(G.init_kwargs, f"{what}['G_ema']")
    _check_attributes(G, kw, f"{what}['G_ema']")
    config, variables, latent_avg = convert_ada_generator(G.state_dict(), G.init_kwargs,
                                                          f"{what}['G_ema']")
    module = module_from_config(config)
    check_tree(expected_variables(module), variables, f"{what}: converted G_ema")
    return LoadedGenerator(module, variables, config, latent_avg)


def read_snapshot(path: str) -> Any:
    """The snapshot's objects through the allow-list unpickler (nothing in it is executed)."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path!r} does not exist or is not a file.")
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == b"PK":
            raise ConversionError(
                f"{path!r} is a zip-format torch.save checkpoint, not a StyleGAN2-ADA network "
                f"pickle; for rosinality StyleGAN2 checkpoints use `e4e-jax convert stylegan2`.")
        f.seek(0)
        try:
            return load_network_pickle(f)
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path!r}: {e}") from None
        except ConversionError as e:
            raise ConversionError(f"{path!r}: {e}") from None


def run(args) -> str:
    from e4e_jax.nets.generator import save_generator
    g = convert_snapshot(read_snapshot(args.src), what=os.path.basename(args.src))
    path = save_generator(g, args.dst, source=os.path.abspath(args.src))
    c = g.config
    return (f"wrote {path}: StyleGAN2-ADA G_ema, {g.resolution}x{g.resolution}, n_latent "
            f"{g.n_latent}, channels {c['channels']}, z_dim {c['z_dim']}, c_dim {c['c_dim']}, "
            f"conv_clamp {c['conv_clamp']}, latent_avg (w_avg) "
            f"{'yes' if g.latent_avg is not None else 'no'}")


def add_args(parser):
    parser.add_argument("src", help="StyleGAN2-ADA network snapshot (network-snapshot-*.pkl)")
    parser.add_argument("dst", help=DST_HELP)


def main(argv=None) -> int:
    return cli_main(__doc__.splitlines()[0], add_args, run, argv,
                    module="stylegan2_ada",
                    examples=['network-snapshot-000000.pkl converted/ada'])


if __name__ == "__main__":
    sys.exit(main())
