"""Converts a rosinality-format StyleGAN2 checkpoint (the generator the official e4e uses).

    e4e-jax convert stylegan2 stylegan2-ffhq-config-f.pt converted/stylegan2-ffhq

The file is a dict with `g_ema` (the Generator state dict) and optionally `latent_avg`; the
checkpoints rosinality's train.py writes also hold `g`, `d`, `g_optim`, `d_optim`, `args` (an
argparse.Namespace) and `ada_aug_p`, which are read safely and ignored. Resolution, channel widths
and n_mlp are read off the keys and shapes.
"""
from __future__ import annotations

import math
import os
import sys

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
    load_torch_file,
)

DEFAULT_BLUR = [1, 3, 3, 1]
# what to re-save when a file carries a class the loader refuses (shown in the message)
KEEP = "{k: ckpt[k] for k in ('g_ema', 'latent_avg') if k in ckpt}"


def official_fir_kernel(taps=DEFAULT_BLUR, gain: float = 4.0) -> np.ndarray:
    k = np.asarray(taps, np.float32)
    k = np.outer(k, k)
    return k / k.sum() * gain


def expected_generator_shapes(resolution: int, channels, n_mlp: int, style_dim: int) -> dict:
    """Every key of the official Generator state dict at the given sizes, with its shape."""
    log_size = int(math.log2(resolution))
    shapes = {}
    for i in range(1, n_mlp + 1):
        shapes[f"style.{i}.weight"] = (style_dim, style_dim)
        shapes[f"style.{i}.bias"] = (style_dim,)
    c4 = channels[0]
    shapes["input.input"] = (1, c4, 4, 4)

    def styled(prefix, cin, cout, up):
        shapes[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            shapes[f"{prefix}.conv.blur.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)
        shapes[f"{prefix}.noise.weight"] = (1,)
        shapes[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix, cin, up):
        shapes[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            shapes[f"{prefix}.upsample.kernel"] = (4, 4)
        shapes[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)

    styled("conv1", c4, c4, False)
    to_rgb("to_rgb1", c4, False)
    cin = c4
    for j, cout in enumerate(channels[1:]):
        styled(f"convs.{2 * j}", cin, cout, True)
        styled(f"convs.{2 * j + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{j}", cout, True)
        cin = cout
    for i in range(2 * log_size - 3):
        r = 2 ** ((i + 5) // 2)
        shapes[f"noises.noise_{i}"] = (1, 1, r, r)
    return shapes


def infer_generator_sizes(state: dict, what: str = "generator") -> dict:
    """Resolution, widths, n_mlp and style_dim from the keys and shapes of a g_ema state dict."""
    for key in ("input.input", "conv1.conv.weight", "style.1.weight"):
        if key not in state:
            present = ", ".join(sorted(state)[:8])
            raise ConversionError(
                f"{what}: not a rosinality StyleGAN2 generator state dict (missing {key!r}; "
                f"found keys like: {present}{' ...' if len(state) > 8 else ''}).")
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in state:
        n_rgb += 1
    resolution = 2 ** (n_rgb + 2)
    channels = [int(np.shape(state["conv1.conv.weight"])[1])]
    for j in range(n_rgb):
        key = f"convs.{2 * j}.conv.weight"
        if key not in state:
            raise ConversionError(f"{what}: missing key {key!r} (to_rgbs.{j} exists).")
        channels.append(int(np.shape(state[key])[1]))
    style_dim = int(np.shape(state["style.1.weight"])[1])
    return dict(resolution=resolution, channels=channels, n_mlp=n_mlp, style_dim=style_dim)


def _infer_multiplier(resolution: int, channels) -> int | None:
    from e4e_jax.models.stylegan2 import official_channels
    for cm in (1, 2, 4):
        try:
            if list(official_channels(resolution, cm)) == list(channels):
                return cm
        except ValueError:
            return None
    return None


def check_latent_avg(latent_avg, style_dim: int, what: str = "latent_avg") -> np.ndarray | None:
    if latent_avg is None:
        return None
    latent_avg = f32(latent_avg).reshape(-1)
    if latent_avg.shape != (style_dim,):
        raise ConversionError(f"{what} has {latent_avg.size} values, expected {style_dim}.")
    return latent_avg


def convert_generator(state: dict, latent_avg=None, what: str = "generator",
                      expected_resolution: int | None = None):
    """Official g_ema state dict (numpy) -> (config, variables) of e4e_jax's Generator.

    `latent_avg` is accepted for symmetry with the file format and only validated; store it with
    the generator via LoadedGenerator(..., latent_avg=...).
    """
    sizes = infer_generator_sizes(state, what)
    if expected_resolution is not None and sizes["resolution"] != expected_resolution:
        raise ConversionError(
            f"{what}: the weights are a {sizes['resolution']}x{sizes['resolution']} generator, "
            f"but {expected_resolution} was expected (e.g. opts['stylegan_size']); a generator "
            f"with more layers shows up as unexpected keys such as "
            f"'convs.{2 * (int(math.log2(expected_resolution)) - 2)}' / 'to_rgbs."
            f"{int(math.log2(expected_resolution)) - 2}'.")
    shapes = expected_generator_shapes(sizes["resolution"], sizes["channels"], sizes["n_mlp"],
                                       sizes["style_dim"])
    check_keys(state, shapes, what)
    fir = official_fir_kernel()
    for key in shapes:
        if key.endswith((".blur.kernel", ".upsample.kernel")):
            if not np.allclose(np.asarray(state[key], np.float32), fir, atol=1e-6):
                raise ConversionError(
                    f"{what}: {key} is not the official [1, 3, 3, 1] FIR kernel; other blur "
                    f"kernels are not supported.")

    def styled(prefix):
        return {
            "kernel": conv_kernel(np.asarray(state[f"{prefix}.conv.weight"])[0]),
            "modulation": {"kernel": dense_kernel(state[f"{prefix}.conv.modulation.weight"]),
                           "bias": f32(state[f"{prefix}.conv.modulation.bias"])},
            "noise_strength": f32(state[f"{prefix}.noise.weight"]).reshape(()),
            "bias": f32(state[f"{prefix}.activate.bias"]),
        }

    def to_rgb(prefix):
        return {
            "kernel": conv_kernel(np.asarray(state[f"{prefix}.conv.weight"])[0]),
            "modulation": {"kernel": dense_kernel(state[f"{prefix}.conv.modulation.weight"]),
                           "bias": f32(state[f"{prefix}.conv.modulation.bias"])},
            "bias": f32(state[f"{prefix}.bias"]).reshape(-1),
        }

    n_rgb = len(sizes["channels"]) - 1
    params = {
        "mapping": {f"dense_{i}": {"kernel": dense_kernel(state[f"style.{i + 1}.weight"]),
                                   "bias": f32(state[f"style.{i + 1}.bias"])}
                    for i in range(sizes["n_mlp"])},
        "input": {"const": np.ascontiguousarray(
            np.transpose(f32(state["input.input"]), (0, 2, 3, 1)))},
        "conv1": styled("conv1"),
        "to_rgb1": to_rgb("to_rgb1"),
    }
    for j in range(2 * n_rgb):
        params[f"convs_{j}"] = styled(f"convs.{j}")
    for j in range(n_rgb):
        params[f"to_rgbs_{j}"] = to_rgb(f"to_rgbs.{j}")
    noises = {}
    for key in shapes:
        if key.startswith("noises."):
            noises[key[len("noises."):]] = np.ascontiguousarray(
                np.transpose(f32(state[key]), (0, 2, 3, 1)))
    config = dict(sizes, lr_mlp=0.01, blur_kernel=DEFAULT_BLUR,
                  channel_multiplier=_infer_multiplier(sizes["resolution"], sizes["channels"]))
    check_latent_avg(latent_avg, sizes["style_dim"], f"{what}: latent_avg")
    return config, {"params": params, "noises": noises}


def convert_checkpoint(ckpt, source: str | None = None):
    """A loaded rosinality checkpoint (dict) -> LoadedGenerator."""
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config
    if not isinstance(ckpt, dict):
        raise ConversionError(f"expected a dict with a 'g_ema' entry, got {type(ckpt).__name__}.")
    if "g_ema" not in ckpt:
        hint = ""
        if "state_dict" in ckpt and any(str(k).startswith("decoder.") for k in ckpt["state_dict"]):
            hint = " This looks like an e4e/pSp checkpoint: use `e4e-jax convert e4e`."
        elif "style.1.weight" in ckpt:
            hint = " This looks like a bare generator state dict; wrap it as {'g_ema': state}."
        raise ConversionError(f"no 'g_ema' entry (found: {sorted(map(str, ckpt))[:10]}).{hint}")
    config, variables = convert_generator(ckpt["g_ema"], what="g_ema")
    latent_avg = check_latent_avg(ckpt.get("latent_avg"), config["style_dim"])
    return LoadedGenerator(module_from_config(config), variables, config, latent_avg)


def run(args) -> str:
    from e4e_jax.nets.generator import save_generator
    ckpt = load_torch_file(args.src, keep=KEEP)
    g = convert_checkpoint(ckpt)
    path = save_generator(g, args.dst, source=os.path.abspath(args.src))
    return (f"wrote {path}: {g.resolution}x{g.resolution} generator, n_latent {g.n_latent}, "
            f"channels {list(g.module.channels)}, n_mlp {g.module.n_mlp}, latent_avg "
            f"{'yes' if g.latent_avg is not None else 'no'}")


def add_args(parser):
    parser.add_argument("src", help="rosinality-format checkpoint (.pt) with a 'g_ema' entry")
    parser.add_argument("dst", help=DST_HELP)


def main(argv=None) -> int:
    return cli_main(__doc__.splitlines()[0], add_args, run, argv,
                    module="stylegan2",
                    examples=['stylegan2-ffhq-config-f.pt converted/ffhq'])


if __name__ == "__main__":
    sys.exit(main())
