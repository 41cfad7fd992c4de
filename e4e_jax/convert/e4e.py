"""Converts an official e4e or pSp checkpoint (encoder + StyleGAN2 decoder + latent_avg + opts).

    e4e-jax convert e4e e4e_ffhq_encode.pt converted/e4e_ffhq_encode

The file is the dict the official training coach saves: `state_dict` (`encoder.*` and `decoder.*`
keys of the pSp module), `latent_avg` (one row per W+ layer, or a single (512,) row in older pSp
files) and `opts` (encoder_type, stylegan_size, start_from_latent_avg, dataset_type, ...; a
dict, or an argparse.Namespace in some forks). Extra top-level entries of training checkpoints
(`global_step`, `best_val_loss`, `optimizer`, `discriminator_state_dict`,
`discriminator_optimizer_state_dict`) are ignored.

The output is one model directory (kind "e4e_inverter") that `e4e_jax.load_encoder` reads:
encoder variables (params + BatchNorm running statistics), latent_avg, a config, and the
generator as a nested generator directory `generator/` (`e4e_jax.load_generator(DIR/generator)`).

`convert_ir_backbone` converts the official `input_layer.*` / `body.*` keys of any IR / IR-SE
network (also the ArcFace Backbone of the identity loss).
"""
from __future__ import annotations

import math
import os
import re
import sys
from typing import Any, Mapping

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
    strip_prefix,
)

KIND = "e4e_inverter"
# what to re-save when a file carries a class the loader refuses (shown in the message)
KEEP = ("{'state_dict': ckpt['state_dict'], 'latent_avg': ckpt['latent_avg'], "
        "'opts': vars(ckpt['opts'])}")
# official dataset_type -> encoder input size (H, W) of its test transform
CARS_INPUT_SIZE = (192, 256)
DEFAULT_INPUT_SIZE = (256, 256)
FACE_POOL = 256
CARS_CROP_ROWS = (32, 224)

# Flax module path (joined with '/') -> (official module prefix, layer kind)
_MODULE_RULES = [
    (r"input_layer/conv", "input_layer.0", "conv"),
    (r"input_layer/bn", "input_layer.1", "bn"),
    (r"input_layer/prelu", "input_layer.2", "prelu"),
    (r"body/block_(\d+)/shortcut_conv", r"body.\1.shortcut_layer.0", "conv"),
    (r"body/block_(\d+)/shortcut_bn", r"body.\1.shortcut_layer.1", "bn"),
    (r"body/block_(\d+)/bn1", r"body.\1.res_layer.0", "bn"),
    (r"body/block_(\d+)/conv1", r"body.\1.res_layer.1", "conv"),
    (r"body/block_(\d+)/prelu", r"body.\1.res_layer.2", "prelu"),
    (r"body/block_(\d+)/conv2", r"body.\1.res_layer.3", "conv"),
    (r"body/block_(\d+)/bn2", r"body.\1.res_layer.4", "bn"),
    (r"body/block_(\d+)/se/(fc[12])", r"body.\1.res_layer.5.\2", "se_fc"),
    (r"styles_(\d+)/convs_(\d+)", None, "conv"),  # convs.{2k}: LeakyReLUs sit at odd indices
    (r"styles_(\d+)/linear", r"styles.\1.linear", "dense"),
    (r"latlayer([12])", r"latlayer\1", "conv"),
    (r"linear", "linear", "dense"),
]
_LEAF_NAMES = {
    ("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
    ("params", "alpha"): "weight", ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def official_module(path: str) -> tuple[str, str]:
    """Flax module path -> (official state-dict prefix, layer kind)."""
    for pattern, repl, kind in _MODULE_RULES:
        m = re.fullmatch(pattern, path)
        if m:
            if repl is None:
                return f"styles.{m.group(1)}.convs.{2 * int(m.group(2))}", kind
            return m.expand(repl), kind
    raise KeyError(f"no official name for Flax module {path!r}")


def _official_shape(kind: str, leaf: str, shape: tuple) -> tuple:
    if leaf == "kernel" and kind == "conv":
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if leaf == "kernel" and kind == "dense":
        return (shape[1], shape[0])
    if leaf == "kernel" and kind == "se_fc":
        return (shape[1], shape[0], 1, 1)
    return tuple(shape)


def _to_flax(kind: str, leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and kind == "conv":
        return conv_kernel(value)
    if leaf == "kernel" and kind == "dense":
        return dense_kernel(value)
    if leaf == "kernel" and kind == "se_fc":
        return dense_kernel(np.asarray(value)[:, :, 0, 0])
    return f32(value)


def official_layout(variable_shapes: Mapping[str, Any]) -> dict[str, tuple]:
    """{official key: (collection, flax path tuple, layer kind, official shape)} of a variable tree
    ({'params': ..., 'batch_stats': ...}) of an IR backbone or an encoder."""
    out = {}

    def walk(collection, node, path):
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(collection, v, path + (k,))
                continue
            prefix, kind = official_module("/".join(path))
            key = f"{prefix}.{_LEAF_NAMES[(collection, k)]}"
            out[key] = (collection, path + (k,), kind, _official_shape(kind, k, tuple(v.shape)))

    for collection in ("params", "batch_stats"):
        walk(collection, variable_shapes.get(collection, {}), ())
    return out


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def convert_modules(state: Mapping[str, Any], variable_shapes: Mapping[str, Any],
                    what: str) -> dict:
    """Official state dict (numpy) -> Flax variables shaped like `variable_shapes`.

    BatchNorm `num_batches_tracked` entries are accepted and dropped (momentum is fixed).
    """
    layout = official_layout(variable_shapes)
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    check_keys(state, {k: v[3] for k, v in layout.items()}, what)
    variables: dict = {}
    for key, (collection, path, kind, _) in layout.items():
        _set(variables.setdefault(collection, {}), path, _to_flax(kind, path[-1],
                                                                   np.asarray(state[key])))
    return variables


def convert_ir_backbone(state: Mapping[str, Any], num_layers: int = 50, mode: str = "ir_se",
                        what: str = "IR backbone") -> dict:
    """Official `input_layer.*` + `body.*` keys -> {'params', 'batch_stats'} with top-level
    entries `input_layer` and `body` (models/irse.py IRInputLayer / IRBody at official widths).
    Other keys of `state` are ignored."""
    import jax
    import jax.numpy as jnp

    from e4e_jax.models.irse import IRBody, IRInputLayer

    def init(x):
        v1 = IRInputLayer(64).init(jax.random.PRNGKey(0), x)
        y = jax.eval_shape(lambda v, x: IRInputLayer(64).apply(v, x), v1, x)
        v2 = IRBody(num_layers, mode).init(jax.random.PRNGKey(0), jnp.zeros(y.shape, y.dtype))
        return {c: {"input_layer": v1[c], "body": v2[c]} for c in ("params", "batch_stats")}

    shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.float32))
    sub = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
    return convert_modules(sub, shapes, what)


def _opt(opts: Mapping[str, Any], name: str, what: str):
    if name not in opts:
        raise ConversionError(f"{what}: opts has no {name!r} entry (found: "
                              f"{', '.join(sorted(map(str, opts)))}).")
    return opts[name]


def encoder_config_from_opts(opts: Mapping[str, Any], encoder_state: Mapping[str, Any],
                             what: str = "checkpoint") -> dict:
    """The e4e_jax encoder config of an official checkpoint (pSp always builds IR-SE-50)."""
    from e4e_jax.models.encoders import ENCODER_TYPES, encoder_config
    encoder_type = _opt(opts, "encoder_type", what)
    if encoder_type not in ENCODER_TYPES:
        raise ConversionError(f"{what}: opts['encoder_type'] = {encoder_type!r} is not one of "
                              f"{', '.join(ENCODER_TYPES)}.")
    size = _opt(opts, "stylegan_size", what)
    try:
        size = int(size)
        log = int(math.log2(size))
        ok = size >= 8 and 2 ** log == size
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConversionError(f"{what}: opts['stylegan_size'] = {size!r} is not a power of two.")
    n_styles = 2 * log - 2
    if encoder_type != "SingleStyleCodeEncoder":
        heads = {int(m.group(1)) for k in encoder_state
                 for m in [re.match(r"styles\.(\d+)\.", k)] if m}
        if heads and len(heads) != n_styles:
            found = max(heads) + 1
            official = (f"unexpected key 'styles.{n_styles}'" if found > n_styles
                        else f"missing key 'styles.{found}'")
            raise ConversionError(
                f"{what}: the encoder has {found} style heads (styles.0 .. styles.{found - 1}, "
                f"a {2 ** ((found + 2) // 2)}px generator) but opts['stylegan_size'] = {size} "
                f"implies {n_styles}; the file is inconsistent (the official loader reports "
                f"this as {official}).")
    dataset = str(opts.get("dataset_type", ""))
    input_size = CARS_INPUT_SIZE if "cars" in dataset else DEFAULT_INPUT_SIZE
    return encoder_config(encoder_type, n_styles, input_size, 50, "ir_se")


def convert_encoder(state: Mapping[str, Any], config: Mapping[str, Any],
                    what: str = "encoder") -> dict:
    """Official encoder state dict (keys without 'encoder.') -> {'params', 'batch_stats'}."""
    from e4e_jax.models.encoders import encoder_shapes
    return convert_modules(state, encoder_shapes(config), what)


def convert_discriminator(state: Mapping[str, Any], what: str = "discriminator") -> tuple[dict,
                                                                                          dict]:
    """LatentCodesDiscriminator state dict (`discriminator_state_dict` of a training checkpoint:
    mlp.{0,2,4,6}.weight / bias) -> (config {'style_dim', 'n_mlp'}, variables {'params'})."""
    n_mlp = 0
    while f"mlp.{2 * n_mlp}.weight" in state:
        n_mlp += 1
    if n_mlp < 1:
        raise ConversionError(f"{what}: no mlp.0.weight; not a LatentCodesDiscriminator state "
                              f"dict (found: {', '.join(sorted(state)[:8])}).")
    style_dim = int(np.shape(state["mlp.0.weight"])[1])
    expected = {}
    for i in range(n_mlp):
        out = style_dim if i < n_mlp - 1 else 1
        expected[f"mlp.{2 * i}.weight"] = (out, style_dim)
        expected[f"mlp.{2 * i}.bias"] = (out,)
    check_keys(state, expected, what)
    params = {f"dense_{i}": {"kernel": dense_kernel(state[f"mlp.{2 * i}.weight"]),
                             "bias": f32(state[f"mlp.{2 * i}.bias"])} for i in range(n_mlp)}
    return {"style_dim": style_dim, "n_mlp": n_mlp}, {"params": params}


def latent_avg_rows(latent_avg: Any, n_latent: int, style_dim: int, what: str) -> np.ndarray:
    """(n_latent, style_dim) rows added to the codes (a single row is repeated, as official)."""
    a = f32(latent_avg)
    if a.shape == (style_dim,) or a.shape == (1, style_dim):
        return np.ascontiguousarray(np.broadcast_to(a.reshape(1, style_dim), (n_latent, style_dim)))
    if a.shape != (n_latent, style_dim):
        raise ConversionError(f"{what}: latent_avg has shape {a.shape}, expected ({n_latent}, "
                              f"{style_dim}) (one row per W+ layer) or ({style_dim},).")
    return a


def convert_e4e(ckpt: Mapping[str, Any], what: str = "checkpoint") -> dict:
    """A loaded official e4e/pSp checkpoint (numpy arrays) -> everything the directory holds:
    {'config', 'encoder_variables', 'generator_config', 'generator_variables', 'latent_avg'}."""
    from e4e_jax.convert.stylegan2 import convert_generator
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{what}: expected a dict with 'state_dict', 'latent_avg' and "
                              f"'opts', got {type(ckpt).__name__}.")
    for entry in ("state_dict", "opts"):
        if entry not in ckpt:
            hint = ""
            if "g_ema" in ckpt:
                hint = " This is a StyleGAN2 generator file: use `e4e-jax convert stylegan2`."
            elif any(str(k).startswith(("encoder.", "decoder.")) for k in ckpt):
                hint = " It looks like a bare pSp state dict; e4e files also carry 'opts'."
            raise ConversionError(f"{what}: no {entry!r} entry (found: "
                                  f"{', '.join(sorted(map(str, ckpt))[:10])}).{hint}")
    state = ckpt["state_dict"]
    opts = ckpt["opts"]
    if not isinstance(opts, Mapping):
        opts = vars(opts) if hasattr(opts, "__dict__") else {}
    other = sorted(k for k in state if not k.startswith(("encoder.", "decoder.")))
    if other:
        raise ConversionError(f"{what}: unexpected keys outside encoder.* / decoder.* "
                              f"({len(other)}): {', '.join(other[:10])}")
    enc_state = strip_prefix(state, "encoder.")
    dec_state = strip_prefix(state, "decoder.")
    if not enc_state:
        raise ConversionError(f"{what}: the state_dict has no encoder.* keys.")
    if not dec_state:
        raise ConversionError(f"{what}: the state_dict has no decoder.* keys.")
    config = encoder_config_from_opts(opts, enc_state, what)
    size = int(opts["stylegan_size"])
    try:
        gen_config, gen_variables = convert_generator(dec_state, what=f"{what}: decoder",
                                                      expected_resolution=size)
    except ConversionError as e:
        raise ConversionError(f"{e}\n  (opts['stylegan_size'] = {size})") from None
    enc_variables = convert_encoder(enc_state, config, f"{what}: encoder")
    n_latent = config["n_styles"]
    start = bool(opts.get("start_from_latent_avg", False))
    latent_avg = None
    if ckpt.get("latent_avg") is not None:
        latent_avg = latent_avg_rows(ckpt["latent_avg"], n_latent, gen_config["style_dim"], what)
    elif start:
        raise ConversionError(
            f"{what}: opts['start_from_latent_avg'] is True but the file has no latent_avg (the "
            f"official loader would draw a new random mean of 10,000 mapped z at every load).")
    dataset = str(opts.get("dataset_type", ""))
    full = dict(
        encoder=config,
        start_from_latent_avg=start,
        dataset_type=dataset,
        stylegan_size=size,
        n_latent=n_latent,
        face_pool=FACE_POOL,
        crop_rows=list(CARS_CROP_ROWS) if "cars" in dataset else None,
    )
    return dict(config=full, encoder_variables=enc_variables, generator_config=gen_config,
                generator_variables=gen_variables, latent_avg=latent_avg)


def write_e4e_dir(converted: Mapping[str, Any], dst: str, source: str | None = None) -> str:
    """Writes the output of convert_e4e as an e4e_inverter model directory."""
    from e4e_jax.nets.encoder import save_inverter
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config
    gen = LoadedGenerator(module_from_config(converted["generator_config"]),
                          converted["generator_variables"], converted["generator_config"],
                          None if converted["latent_avg"] is None
                          else converted["latent_avg"][0])
    cfg = converted["config"]
    return save_inverter(dst, cfg["encoder"], converted["encoder_variables"], gen,
                         converted["latent_avg"],
                         start_from_latent_avg=cfg["start_from_latent_avg"],
                         crop_rows=cfg["crop_rows"], face_pool=cfg["face_pool"],
                         extra_config={"dataset_type": cfg["dataset_type"],
                                       "stylegan_size": cfg["stylegan_size"]},
                         source=source)


def run(args) -> str:
    ckpt = load_torch_file(args.src, keep=KEEP)
    converted = convert_e4e(ckpt, what=os.path.basename(args.src))
    path = write_e4e_dir(converted, args.dst, source=os.path.abspath(args.src))
    cfg = converted["config"]
    enc = cfg["encoder"]
    return (f"wrote {path}: {enc['encoder_type']} for {enc['input_size'][0]}x"
            f"{enc['input_size'][1]} inputs, {enc['n_styles']} W+ rows, generator "
            f"{cfg['stylegan_size']}px, latent_avg "
            f"{'added' if cfg['start_from_latent_avg'] else 'not added'}"
            f"{', output rows %d:%d' % tuple(cfg['crop_rows']) if cfg['crop_rows'] else ''}")


def add_args(parser):
    parser.add_argument("src", help="official e4e / pSp checkpoint (.pt)")
    parser.add_argument("dst", help=DST_HELP)


def main(argv=None) -> int:
    return cli_main(__doc__.splitlines()[0], add_args, run, argv,
                    module="e4e",
                    examples=['e4e_ffhq_encode.pt converted/e4e_ffhq_encode'])


if __name__ == "__main__":
    sys.exit(main())
