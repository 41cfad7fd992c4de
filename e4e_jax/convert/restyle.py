"""Converts an official ReStyle checkpoint (ReStyle-pSp or ReStyle-e4e encoder + generator).

    e4e-jax convert restyle restyle_e4e_ffhq_encode.pt converted/restyle_e4e_ffhq_encode
    e4e-jax convert restyle encoder_only.pt converted/restyle --generator converted/ffhq

Official source: yuval-alaluf/restyle-encoder at commit 5e80276228cc5d9e0a39a16119210ee49ce2c975.
The file is the dict its coaches save (training/coach_restyle_psp.py, coach_restyle_e4e.py):
`state_dict` (`encoder.*` and `decoder.*` keys of models/psp.py pSp or models/e4e.py e4e),
`latent_avg` (one row per W+ layer, or a single (512,) row) and `opts` (a dict, or an
argparse.Namespace, which the weights-only loader allows): encoder_type (BackboneEncoder,
ResNetBackboneEncoder, ProgressiveBackboneEncoder, ResNetProgressiveBackboneEncoder),
output_size (the generator's resolution: n_styles = 2 log2(output_size) - 2), input_nc (6),
dataset_type (cars_encode: 192x256 inputs and rows 32:224 of the 256x256 outputs). Other entries
(optimizer, discriminator states, global_step, ...) are ignored. The released checkpoints
(restyle_{psp,e4e}_{ffhq,cars,church,horse,afhq_wild}_encode.pt, restyle_psp_toonify.pt) have
this form.

The generator is the file's `decoder.*` keys, or, with --generator DIR, a generator directory
(`e4e-jax convert stylegan2 ...`), which also replaces a decoder inside the file.

The output is the model directory `e4e_jax.load_encoder` reads (kind "e4e_inverter", the encoder
type in its config); `e4e_jax.restyle.invert(model, images)` runs the ReStyle iterations.
Mismatches are refused with one line each: the generator's size vs opts['output_size'], the
number of style heads vs n_styles, the first convolution's input channels vs opts['input_nc'].
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.convert import e4e as e4e_format
from e4e_jax.convert.common import (
    DST_HELP,
    ConversionError,
    check_keys,
    cli_main,
    conv_kernel,
    dense_kernel,
    f32,
    load_torch_file,
    strip_prefix,
)

KEEP = ("{'state_dict': ckpt['state_dict'], 'latent_avg': ckpt['latent_avg'], "
        "'opts': vars(ckpt['opts'])}")
FACE_POOL = e4e_format.FACE_POOL
INPUT_NC = 6
# ReStyle's pSp FPN encoders (models/encoders/fpn_encoders.py): 6-channel GradualStyleEncoder
FPN_TYPES = ("GradualStyleEncoder", "ResNetGradualStyleEncoder")

# ResNet-34 backbone: Flax module path -> (official module, layer kind)
_RESNET_RULES = [
    (r"conv1", "conv1", "conv"),
    (r"bn1", "bn1", "bn"),
    (r"prelu", "relu", "prelu"),          # the official attribute `relu` is a PReLU(64)
    (r"body/block_(\d+)/(conv[12])", r"body.\1.\2", "conv"),
    (r"body/block_(\d+)/(bn[12])", r"body.\1.\2", "bn"),
    (r"body/block_(\d+)/downsample_conv", r"body.\1.downsample.0", "conv"),
    (r"body/block_(\d+)/downsample_bn", r"body.\1.downsample.1", "bn"),
]
_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias",
           ("params", "scale"): "weight", ("params", "alpha"): "weight",
           ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _resnet_layout(shapes: Mapping[str, Any]) -> dict[str, tuple]:
    """{official key: (collection, flax path, kind, official shape)} of the ResNet-34 stem and
    body (top-level entries conv1, bn1, prelu, body of the variable tree)."""
    out = {}

    def walk(collection, node, path):
        for name, leaf in node.items():
            if isinstance(leaf, Mapping):
                walk(collection, leaf, path + (name,))
                continue
            joined = "/".join(path)
            for pattern, repl, kind in _RESNET_RULES:
                m = re.fullmatch(pattern, joined)
                if m:
                    break
            else:
                raise KeyError(f"no official name for Flax module {joined!r}")
            shape = tuple(leaf.shape)
            if kind == "conv" and name == "kernel":
                shape = (shape[3], shape[2], shape[0], shape[1])
            key = f"{m.expand(repl)}.{_LEAVES[(collection, name)]}"
            out[key] = (collection, path + (name,), kind, shape)

    for collection in ("params", "batch_stats"):
        walk(collection, {k: v for k, v in shapes.get(collection, {}).items()
                          if not k.startswith("styles_")}, ())
    return out


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def official_layout(variable_shapes: Mapping[str, Any], encoder_type: str) -> dict[str, tuple]:
    """{official key: (collection, flax path tuple, layer kind, official shape)} of a ReStyle
    encoder's variable tree ({'params', 'batch_stats'}, e.g. encoder_shapes(config)); kinds
    'conv', 'dense', 'se_fc', 'bn', 'prelu'."""
    from e4e_jax.models.restyle_encoders import is_resnet
    if not is_resnet(encoder_type):
        # input_layer / body / styles: the official names of e4e's IR-SE encoders
        return dict(e4e_format.official_layout(variable_shapes))
    heads = {c: {k: v for k, v in variable_shapes.get(c, {}).items() if k.startswith("styles_")}
             for c in ("params", "batch_stats")}
    layout = dict(e4e_format.official_layout(heads))
    layout.update(_resnet_layout(variable_shapes))
    return layout


def convert_restyle_encoder(state: Mapping[str, Any], config: Mapping[str, Any],
                            what: str = "encoder") -> dict:
    """Official ReStyle encoder state dict (keys without 'encoder.', numpy) -> {'params',
    'batch_stats'} for the encoder `config` describes. ConversionError naming missing,
    unexpected and mis-shaped keys; BatchNorm num_batches_tracked entries are dropped."""
    from e4e_jax.models.encoders import encoder_shapes
    layout = official_layout(encoder_shapes(config), config["encoder_type"])
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    check_keys(state, {k: v[3] for k, v in layout.items()}, what)
    variables: dict = {}
    for key, (collection, path, kind, _) in layout.items():
        value = np.asarray(state[key])
        if path[-1] == "kernel" and kind == "conv":
            value = conv_kernel(value)
        elif path[-1] == "kernel" and kind == "dense":
            value = dense_kernel(value)
        elif path[-1] == "kernel" and kind == "se_fc":
            value = dense_kernel(value[:, :, 0, 0])
        else:
            value = f32(value)
        _set(variables.setdefault(collection, {}), path, value)
    return variables


def _opts(ckpt: Mapping[str, Any]) -> dict:
    opts = ckpt["opts"]
    if not isinstance(opts, Mapping):
        opts = vars(opts) if hasattr(opts, "__dict__") else {}
    return dict(opts)


def restyle_config_from_opts(opts: Mapping[str, Any], encoder_state: Mapping[str, Any],
                             what: str = "checkpoint", n_styles: int | None = None) -> dict:
    """The e4e_jax encoder config of an official ReStyle checkpoint; ConversionError (one line)
    when opts and the weights disagree. n_styles: the StyleGAN3 generator's W+ rows (16 for
    stylegan3-editing's e4e3 / psp3, which ignore opts['output_size']); None: from
    opts['output_size'] (StyleGAN2: 2 log2(size) - 2)."""
    from e4e_jax.models.encoders import RESTYLE_ENCODER_TYPES, encoder_config
    from e4e_jax.models.restyle_encoders import is_resnet
    if "encoder_type" not in opts:
        raise ConversionError(f"{what}: opts has no 'encoder_type' entry (found: "
                              f"{', '.join(sorted(map(str, opts)))}).")
    encoder_type = opts["encoder_type"]
    if encoder_type in FPN_TYPES:
        raise ConversionError(
            f"{what}: opts['encoder_type'] = {encoder_type!r}, ReStyle's 6-channel FPN encoder, is "
            f"not supported; supported: {', '.join(RESTYLE_ENCODER_TYPES)}.")
    if encoder_type not in RESTYLE_ENCODER_TYPES:
        hint = (" This is an e4e / pSp checkpoint: use `e4e-jax convert e4e`."
                if "stylegan_size" in opts else "")
        raise ConversionError(f"{what}: opts['encoder_type'] = {encoder_type!r} is not a ReStyle "
                              f"encoder ({', '.join(RESTYLE_ENCODER_TYPES)}).{hint}")
    if n_styles is not None:
        size = None
    elif "output_size" not in opts:
        raise ConversionError(f"{what}: opts has no 'output_size' entry (the generator's "
                              f"resolution, official default 1024).")
    else:
        size = opts["output_size"]
        try:
            size = int(size)
            log = size.bit_length() - 1
            ok = size >= 8 and 2 ** log == size
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConversionError(f"{what}: opts['output_size'] = {size!r} is not a power of "
                                  f"two.")
        n_styles = 2 * log - 2
    # the first convolution says how many channels the encoder reads
    first = "conv1.weight" if is_resnet(encoder_type) else "input_layer.0.weight"
    other = "input_layer.0.weight" if is_resnet(encoder_type) else "conv1.weight"
    if first not in encoder_state:
        found = (f"; it has {other!r}: the weights are of the "
                 f"{'IR-SE-50' if is_resnet(encoder_type) else 'ResNet-34'} backbone"
                 if other in encoder_state else "")
        raise ConversionError(f"{what}: opts['encoder_type'] = {encoder_type!r} but the encoder "
                              f"has no {first!r}{found}.")
    channels = int(np.shape(encoder_state[first])[1])
    input_nc = int(opts.get("input_nc", INPUT_NC))
    if channels != input_nc:
        raise ConversionError(f"{what}: the encoder's first convolution ({first}) reads "
                              f"{channels} input channels but opts['input_nc'] = {input_nc}.")
    if channels != INPUT_NC:
        raise ConversionError(f"{what}: the encoder reads {channels} input channels; ReStyle "
                              f"encoders read {INPUT_NC} (the image and the current "
                              f"reconstruction).")
    heads = {int(m.group(1)) for k in encoder_state
             for m in [re.match(r"styles\.(\d+)\.", k)] if m}
    if len(heads) != n_styles and size is None:
        raise ConversionError(
            f"{what}: the encoder has {max(heads) + 1 if heads else 0} style heads (n_styles) but "
            f"the StyleGAN3 generator takes {n_styles} W+ rows (stylegan3-editing's encoders "
            f"have 16, for its 1024 px generators).")
    if len(heads) != n_styles:
        found = max(heads) + 1 if heads else 0
        fits = f", as for a {2 ** ((found + 2) // 2)}px generator" if found >= 2 else ""
        raise ConversionError(
            f"{what}: the encoder has {found} style heads (n_styles{fits}) but "
            f"opts['output_size'] = {size} implies {n_styles}.")
    dataset = str(opts.get("dataset_type", ""))
    input_size = e4e_format.CARS_INPUT_SIZE if "cars" in dataset else \
        e4e_format.DEFAULT_INPUT_SIZE
    return encoder_config(encoder_type, n_styles, input_size)


def _given_generator(path: str, size: int | None, what: str):
    """The generator directory given with --generator; size: the resolution opts['output_size']
    asks for (None: not checked, StyleGAN3)."""
    from e4e_jax.nets.generator import load_generator
    try:
        gen = load_generator(path)
    except (OSError, ValueError) as e:
        raise ConversionError(f"--generator {path!r}: {e}") from None
    if size is not None and gen.resolution != size:
        raise ConversionError(f"{what}: the generator in {path!r} is {gen.resolution}px but "
                              f"opts['output_size'] = {size} (stylegan size mismatch).")
    return gen


def is_stylegan3_state(decoder_state: Mapping[str, Any]) -> bool:
    """Whether decoder.* keys (prefix stripped) are a StyleGAN3 Generator's (stylegan3-editing's
    e4e3 / psp3) rather than rosinality's StyleGAN2."""
    return "mapping.fc0.weight" in decoder_state or any(
        k.startswith("synthesis.input.") for k in decoder_state)


def is_stylegan3(generator) -> bool:
    """Whether a loaded generator is a StyleGAN3 one (LoadedStyleGAN3)."""
    from e4e_jax.nets.stylegan3 import LoadedStyleGAN3
    return isinstance(generator, LoadedStyleGAN3)


def with_identity_transform(generator):
    """A StyleGAN3 generator whose stored synthesis.input.transform is the identity: the
    official e4e3 / psp3 forward sets the identity before every aligned render (and their
    load_weights drop the stored buffer), so the converted model renders as they do."""
    from e4e_jax.models.stylegan3 import BUFFERS
    buffers = dict(generator.variables[BUFFERS])
    synthesis = dict(buffers["synthesis"])
    synthesis["input"] = {**synthesis["input"], "transform": np.eye(3, dtype=np.float32)}
    buffers["synthesis"] = synthesis
    return generator.replace(variables={**generator.variables, BUFFERS: buffers})


def _stylegan3_decoder(dec_state: Mapping[str, Any], what: str):
    from e4e_jax.convert.stylegan3 import convert_torch_state
    # the stored transform is whatever the last forward set (a batch of identities, or a
    # landmarks transform); the official loader drops it
    state = {k: v for k, v in dec_state.items() if k != "synthesis.input.transform"}
    gen, _ = convert_torch_state(state, f"{what}: decoder")
    return gen


def convert_restyle(ckpt: Mapping[str, Any], what: str = "checkpoint",
                    generator: str | None = None) -> dict:
    """A loaded official ReStyle checkpoint (numpy arrays) -> {'config', 'encoder_variables',
    'generator', 'latent_avg'} (generator: a LoadedGenerator, or a LoadedStyleGAN3 with the
    identity transform for stylegan3-editing's files; from `generator`, a generator directory,
    when given, else from the file's decoder.* keys)."""
    from e4e_jax.convert.stylegan2 import convert_generator, infer_generator_sizes
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{what}: expected a dict with 'state_dict', 'latent_avg' and "
                              f"'opts', got {type(ckpt).__name__}.")
    for entry in ("state_dict", "opts"):
        if entry not in ckpt:
            hint = (" This is a StyleGAN2 generator file: use `e4e-jax convert stylegan2`."
                    if "g_ema" in ckpt else "")
            raise ConversionError(f"{what}: no {entry!r} entry (found: "
                                  f"{', '.join(sorted(map(str, ckpt))[:10])}).{hint}")
    state = ckpt["state_dict"]
    opts = _opts(ckpt)
    other = sorted(k for k in state if not k.startswith(("encoder.", "decoder.")))
    if other:
        raise ConversionError(f"{what}: unexpected keys outside encoder.* / decoder.* "
                              f"({len(other)}): {', '.join(other[:10])}")
    enc_state = strip_prefix(state, "encoder.")
    dec_state = strip_prefix(state, "decoder.")
    if not enc_state:
        raise ConversionError(f"{what}: the state_dict has no encoder.* keys.")
    if ckpt.get("latent_avg") is None:
        raise ConversionError(f"{what}: the file has no latent_avg; ReStyle starts every image "
                              f"from it (the official forward adds it at the first iteration).")
    gen = None
    if generator is not None:
        gen = _given_generator(generator, None, what)
    elif dec_state and is_stylegan3_state(dec_state):
        gen = _stylegan3_decoder(dec_state, what)
    sg3 = gen is not None and is_stylegan3(gen)
    config = restyle_config_from_opts(opts, enc_state, what,
                                      n_styles=gen.n_latent if sg3 else None)
    if sg3:
        gen = with_identity_transform(gen)
        size = gen.resolution
    else:
        size = int(opts["output_size"])
    if gen is not None and not sg3 and gen.resolution != size:
        raise ConversionError(f"{what}: the generator in {generator!r} is {gen.resolution}px "
                              f"but opts['output_size'] = {size} (stylegan size mismatch).")
    if gen is None and not dec_state:
        raise ConversionError(f"{what}: the state_dict has no decoder.* keys; pass the generator "
                              f"the encoder was trained with as --generator DIR (converted with "
                              f"`e4e-jax convert stylegan2`, or `e4e-jax convert stylegan3` for "
                              f"stylegan3-editing's encoders).")
    if gen is None:
        found = infer_generator_sizes(dec_state, f"{what}: decoder")["resolution"]
        if found != size:
            raise ConversionError(f"{what}: the decoder is a {found}px generator but "
                                  f"opts['output_size'] = {size} (stylegan size mismatch).")
        gen_config, gen_variables = convert_generator(dec_state, what=f"{what}: decoder",
                                                      expected_resolution=size)
        gen = LoadedGenerator(module_from_config(gen_config), gen_variables, gen_config)
    latent_avg = e4e_format.latent_avg_rows(ckpt["latent_avg"], config["n_styles"],
                                            gen.style_dim, what)
    if gen.latent_avg is None:
        gen = LoadedGenerator(gen.module, gen.variables, gen.config, latent_avg[0])
    enc_variables = convert_restyle_encoder(enc_state, config, f"{what}: encoder")
    dataset = str(opts.get("dataset_type", ""))
    full = dict(encoder=config, dataset_type=dataset, stylegan_size=size,
                n_latent=config["n_styles"], face_pool=FACE_POOL,
                crop_rows=list(e4e_format.CARS_CROP_ROWS) if "cars" in dataset else None,
                restyle_iterations=int(opts.get("n_iters_per_batch", 5)),
                generator_kind="stylegan3" if sg3 else "stylegan2")
    return dict(config=full, encoder_variables=enc_variables, generator=gen,
                latent_avg=latent_avg)


def write_restyle_dir(converted: Mapping[str, Any], dst: str, source: str | None = None) -> str:
    """Writes the output of convert_restyle as a model directory (e4e_jax.load_encoder)."""
    from e4e_jax.nets.encoder import save_inverter
    cfg = converted["config"]
    # the official forward always adds latent_avg at the first iteration
    return save_inverter(dst, cfg["encoder"], converted["encoder_variables"],
                         converted["generator"], converted["latent_avg"],
                         start_from_latent_avg=True, crop_rows=cfg["crop_rows"],
                         face_pool=cfg["face_pool"],
                         extra_config={"dataset_type": cfg["dataset_type"],
                                       "stylegan_size": cfg["stylegan_size"],
                                       "generator_kind": cfg["generator_kind"],
                                       "restyle_iterations": cfg["restyle_iterations"]},
                         source=source)


def run(args) -> str:
    ckpt = load_torch_file(args.src, keep=KEEP)
    converted = convert_restyle(ckpt, what=os.path.basename(args.src), generator=args.generator)
    path = write_restyle_dir(converted, args.dst, source=os.path.abspath(args.src))
    cfg = converted["config"]
    enc = cfg["encoder"]
    return (f"wrote {path}: {enc['encoder_type']} (ReStyle) for {enc['input_size'][0]}x"
            f"{enc['input_size'][1]} inputs, {enc['n_styles']} W+ rows, "
            f"{'StyleGAN3 (identity transform) ' if cfg['generator_kind'] == 'stylegan3' else ''}"
            f"generator {cfg['stylegan_size']}px"
            f"{' from ' + args.generator if args.generator else ''}"
            f"{', output rows %d:%d' % tuple(cfg['crop_rows']) if cfg['crop_rows'] else ''}")


def add_args(parser):
    parser.add_argument("src", help="official ReStyle checkpoint (.pt)")
    parser.add_argument("dst", help=DST_HELP)
    parser.add_argument("--generator", default=None, metavar="DIR",
                        help="generator directory (`e4e-jax convert stylegan2`) to use instead of "
                             "the file's decoder.* keys (needed when the file has none)")


def main(argv=None) -> int:
    return cli_main(__doc__.splitlines()[0], add_args, run, argv, module="restyle",
                    examples=["restyle_e4e_ffhq_encode.pt converted/restyle_e4e_ffhq_encode",
                              "encoder_only.pt converted/restyle --generator converted/ffhq"])


if __name__ == "__main__":
    sys.exit(main())
