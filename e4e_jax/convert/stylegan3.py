"""Converts a StyleGAN3 generator (snapshot pickle or stylegan3-editing .pt) without running it.

    e4e-jax convert stylegan3 stylegan3-t-ffhq-1024x1024.pkl converted/sg3-t-ffhq
    e4e-jax convert stylegan3 sg3-r-ffhq-1024.pt converted/sg3-r-ffhq

Two kinds of file:

- NVIDIA network pickles (`network-snapshot-*.pkl` of NVlabs/stylegan3's train.py, the released
  `stylegan3-t-*.pkl` / `stylegan3-r-*.pkl`): read with the allow-list unpickler of
  `safe_pickle.py`, so the Python source they embed is never compiled or run and torch is not
  needed. `G_ema` is converted (what the official gen_images.py uses). Its hyper-parameters come
  from the pickled `init_kwargs`; the converter checks every tensor against them, every layer's
  pickled attributes (sizes, sampling rates, up / down factors, taps, padding, clamp) against
  the official arithmetic, and tells whether the embedded networks_stylegan3.py is the official
  file (NVlabs/stylegan3 c233a91, unchanged since the first release).
- stylegan3-editing generators (`.pt`: torch.save of the Generator's state_dict, with the
  `synthesis.input.transform` buffer; or an e4e3 / psp3 checkpoint, whose `decoder.*` entries are
  taken): read with `load_torch_file` (weights_only). The file has no hyper-parameters: they are
  inferred from the key names and shapes with the official defaults for the rest, and accepted
  only when every shape and every stored low-pass filter matches the official design for them.
  `--init-kwargs '{"output_scale": 0.5}'` sets what the file cannot tell (the official Generator
  keyword arguments, e.g. output_scale, conv_clamp, mapping_kwargs.lr_multiplier).

Writes a `stylegan3_generator` model directory for `e4e_jax.nets.stylegan3.load_stylegan3`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.convert.common import (
    DST_HELP,
    ConversionError,
    cli_main,
    conv_kernel,
    dense_kernel,
    f32,
    load_torch_file,
)
from e4e_jax.convert.pickle_scan import file_kind
from e4e_jax.convert.safe_pickle import (PersistentObject, UnsafePickleError,
                                         load_network_pickle)
from e4e_jax.convert.safe_pickle import find_generator as find_snapshot_generator
from e4e_jax.models.stylegan3_ops import layer_filters, synthesis_schedule

# The official constructors' defaults (training/networks_stylegan3.py at c233a91).
MAPPING_DEFAULTS = dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998)
SYNTHESIS_DEFAULTS = dict(channel_base=32768, channel_max=512, num_layers=14, num_critical=2,
                          first_cutoff=2, first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3,
                          margin_size=10, output_scale=0.25, num_fp16_res=4)
LAYER_DEFAULTS = dict(conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False,
                      conv_clamp=256, magnitude_ema_beta=0.999)
GENERATOR_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")

# sha256 of the official training/networks_stylegan3.py (the text the persistence module embeds:
# UTF-8, byte-order mark dropped, "\n" line ends). NVlabs/stylegan3 commits 8fb5177 (first
# release), 583f2bd and c233a91 all have this text.
OFFICIAL_SOURCE_SHA256 = "06082fb3e8929e477f58fb8bc78e7ecb9a9209eb01444272d1d153c85a6a89f7"
OFFICIAL_SOURCE = "NVlabs/stylegan3 training/networks_stylegan3.py (c233a91)"
# what a networks_stylegan3.py defines: a pickle whose source lacks these is something else
SOURCE_MARKERS = ("class SynthesisInput", "class SynthesisLayer", "def design_lowpass_filter",
                  "filtered_lrelu")

# class of every persistent object of the Generator, by its place in the tree
_CLASS_OF = (
    (re.compile(r"^$"), "Generator"),
    (re.compile(r"^mapping$"), "MappingNetwork"),
    (re.compile(r"^mapping\.(fc\d+|embed)$"), "FullyConnectedLayer"),
    (re.compile(r"^synthesis$"), "SynthesisNetwork"),
    (re.compile(r"^synthesis\.input$"), "SynthesisInput"),
    (re.compile(r"^synthesis\.L\d+_\d+_\d+$"), "SynthesisLayer"),
    (re.compile(r"^synthesis\.(input|L\d+_\d+_\d+)\.affine$"), "FullyConnectedLayer"),
)


def _plain(value: Any) -> Any:
    """init_kwargs as JSON values (EasyDict -> dict, numpy scalars / arrays -> Python values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


# ------------------------------------------------------------------------------ hyper-parameters

def generator_kwargs(init_kwargs: dict, what: str = "G_ema") -> dict:
    """The official Generator's init_kwargs with every default filled in:
    {z_dim, c_dim, w_dim, img_resolution, img_channels, mapping: {...}, synthesis: {...}}.
    ConversionError names a missing or unknown keyword (the official constructor would reject
    it too) and impossible values."""
    if not isinstance(init_kwargs, dict):
        raise ConversionError(f"{what}: init_kwargs is a {type(init_kwargs).__name__}, "
                              f"expected a dict.")
    kw = _plain(init_kwargs)
    missing = [k for k in GENERATOR_KEYS if k not in kw]
    if missing:
        raise ConversionError(f"{what}: init_kwargs lacks {missing} (found {sorted(kw)}); not a "
                              f"StyleGAN3 Generator.")
    mapping = dict(kw.get("mapping_kwargs") or {})
    synthesis = {k: v for k, v in kw.items() if k not in GENERATOR_KEYS + ("mapping_kwargs",)}
    unknown = sorted(set(mapping) - set(MAPPING_DEFAULTS))
    if unknown:
        raise ConversionError(f"{what}: unknown mapping_kwargs {unknown}; not the StyleGAN3 "
                              f"MappingNetwork (it takes {sorted(MAPPING_DEFAULTS)}).")
    unknown = sorted(set(synthesis) - set(SYNTHESIS_DEFAULTS) - set(LAYER_DEFAULTS))
    if unknown:
        raise ConversionError(f"{what}: unknown synthesis options {unknown}; not the StyleGAN3 "
                              f"SynthesisNetwork (a StyleGAN2 / ADA generator? use `e4e-jax "
                              f"convert stylegan2_ada`).")
    out = {k: int(kw[k]) for k in GENERATOR_KEYS}
    out["mapping"] = {**MAPPING_DEFAULTS, **mapping}
    out["synthesis"] = {**SYNTHESIS_DEFAULTS, **LAYER_DEFAULTS, **synthesis}
    for key in ("z_dim", "w_dim", "img_resolution", "img_channels"):
        if out[key] < 1:
            raise ConversionError(f"{what}: {key} must be >= 1, got {out[key]}.")
    if out["c_dim"] < 0 or int(out["mapping"]["num_layers"]) < 1:
        raise ConversionError(f"{what}: c_dim must be >= 0 and mapping num_layers >= 1, got "
                              f"{out['c_dim']} and {out['mapping']['num_layers']}.")
    return out


def config_from_kwargs(kw: dict, what: str = "G_ema") -> dict:
    """The model directory's config (Generator fields + metadata) from generator_kwargs."""
    m, syn = kw["mapping"], kw["synthesis"]
    s = syn
    config = dict(
        z_dim=kw["z_dim"], c_dim=kw["c_dim"], w_dim=kw["w_dim"],
        img_resolution=kw["img_resolution"], img_channels=kw["img_channels"],
        mapping_layers=int(m["num_layers"]), mapping_lr_multiplier=float(m["lr_multiplier"]),
        channel_base=int(s["channel_base"]), channel_max=int(s["channel_max"]),
        num_layers=int(s["num_layers"]), num_critical=int(s["num_critical"]),
        first_cutoff=float(s["first_cutoff"]), first_stopband=float(s["first_stopband"]),
        last_stopband_rel=float(s["last_stopband_rel"]), margin_size=int(s["margin_size"]),
        output_scale=float(s["output_scale"]), num_fp16_res=int(s["num_fp16_res"]),
        conv_kernel=int(s["conv_kernel"]), filter_size=int(s["filter_size"]),
        lrelu_upsampling=int(s["lrelu_upsampling"]),
        use_radial_filters=bool(s["use_radial_filters"]),
        conv_clamp=None if s["conv_clamp"] is None else float(s["conv_clamp"]),
    )
    try:
        _, layers = schedule_of(config)
    except ValueError as e:
        raise ConversionError(f"{what}: these hyper-parameters give no StyleGAN3 network: {e}")
    from e4e_jax.nets.stylegan3 import config_name
    config.update(
        num_ws=config["num_layers"] + 2, layer_names=[spec.name for spec in layers],
        config_name=config_name(config),
        # training-only values, kept for reference
        magnitude_ema_beta=syn["magnitude_ema_beta"], w_avg_beta=m["w_avg_beta"],
        computed_in="float32 (the official force_fp32 path; num_fp16_res only names the layers "
                    "the official code would run in fp16 on CUDA)")
    return config


def schedule_of(config: dict):
    return synthesis_schedule(
        config["img_resolution"], config["img_channels"], config["channel_base"],
        config["channel_max"], config["num_layers"], config["num_critical"],
        config["first_cutoff"], config["first_stopband"], config["last_stopband_rel"],
        config["margin_size"], config["num_fp16_res"], config["conv_kernel"],
        config["filter_size"], config["lrelu_upsampling"], config["use_radial_filters"],
        config["conv_clamp"])


def expected_shapes(config: dict) -> dict[str, tuple]:
    """Every key of the official Generator's state_dict for this config, with its shape."""
    input_spec, layers = schedule_of(config)
    w_dim, c_dim = config["w_dim"], config["c_dim"]
    shapes: dict[str, tuple] = {}
    c = input_spec.channels
    shapes.update({"synthesis.input.weight": (c, c), "synthesis.input.transform": (3, 3),
                   "synthesis.input.freqs": (c, 2), "synthesis.input.phases": (c,),
                   "synthesis.input.affine.weight": (4, w_dim),
                   "synthesis.input.affine.bias": (4,)})
    for s in layers:
        p = f"synthesis.{s.name}"
        k = s.conv_kernel
        shapes[f"{p}.weight"] = (s.out_channels, s.in_channels, k, k)
        shapes[f"{p}.bias"] = (s.out_channels,)
        shapes[f"{p}.magnitude_ema"] = ()
        if s.up_taps > 1:
            shapes[f"{p}.up_filter"] = (s.up_taps,)
        if s.down_taps > 1:
            shapes[f"{p}.down_filter"] = ((s.down_taps, s.down_taps) if s.down_radial
                                          else (s.down_taps,))
        shapes[f"{p}.affine.weight"] = (s.in_channels, w_dim)
        shapes[f"{p}.affine.bias"] = (s.in_channels,)
    if c_dim > 0:
        shapes["mapping.embed.weight"] = (w_dim, c_dim)
        shapes["mapping.embed.bias"] = (w_dim,)
    feats = [config["z_dim"] + (w_dim if c_dim > 0 else 0)] + [w_dim] * config["mapping_layers"]
    for i in range(config["mapping_layers"]):
        shapes[f"mapping.fc{i}.weight"] = (feats[i + 1], feats[i])
        shapes[f"mapping.fc{i}.bias"] = (feats[i + 1],)
    shapes["mapping.w_avg"] = (w_dim,)
    return shapes


def _mismatch(state: dict, shapes: dict, what: str) -> str | None:
    """One line naming missing, unexpected and mis-shaped keys (None when they match)."""
    found = {k: tuple(np.shape(v)) for k, v in state.items()}
    missing = [k for k in shapes if k not in found]
    unexpected = sorted(set(found) - set(shapes))
    wrong = [f"{k} {found[k]} (expected {tuple(shapes[k])})" for k in shapes
             if k in found and found[k] != tuple(shapes[k])]
    parts = []
    for word, names in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("wrong shapes", wrong)):
        if names:
            parts.append(f"{word} ({len(names)}): " + ", ".join(names[:8])
                         + (", ..." if len(names) > 8 else ""))
    return f"{what}: not the expected StyleGAN3 generator: " + "; ".join(parts) if parts else None


def convert_state(state: dict, config: dict, what: str = "G_ema") -> dict:
    """Official Generator state_dict (numpy) -> the Flax variables {params, buffers}.

    A pure re-layout: (out, in) dense weights -> (in, out) kernels, (out, in, k, k) conv
    weights -> HWIO, the input's channel-mixing weight transposed; buffers kept as they are.
    ConversionError (one line) when a key is missing, unexpected or mis-shaped."""
    message = _mismatch(state, expected_shapes(config), what)
    if message:
        raise ConversionError(message)
    _, layers = schedule_of(config)

    def dense(prefix):
        return {"kernel": dense_kernel(state[f"{prefix}.weight"]),
                "bias": f32(state[f"{prefix}.bias"]).reshape(-1)}

    mapping = {f"fc{i}": dense(f"mapping.fc{i}") for i in range(config["mapping_layers"])}
    if config["c_dim"] > 0:
        mapping["embed"] = dense("mapping.embed")
    synthesis = {"input": {"kernel": dense_kernel(state["synthesis.input.weight"]),
                           "affine": dense("synthesis.input.affine")}}
    buffers = {"mapping": {"w_avg": f32(state["mapping.w_avg"]).copy()},
               "synthesis": {"input": {
                   "freqs": f32(state["synthesis.input.freqs"]).copy(),
                   "phases": f32(state["synthesis.input.phases"]).copy(),
                   "transform": f32(state["synthesis.input.transform"]).copy()}}}
    for s in layers:
        p = f"synthesis.{s.name}"
        synthesis[s.name] = {"kernel": conv_kernel(state[f"{p}.weight"]),
                             "bias": f32(state[f"{p}.bias"]).copy(), "affine": dense(f"{p}.affine")}
        b = {"magnitude_ema": f32(state[f"{p}.magnitude_ema"]).reshape(())}
        for name in ("up_filter", "down_filter"):
            if f"{p}.{name}" in state:
                b[name] = f32(state[f"{p}.{name}"]).copy()
        buffers["synthesis"][s.name] = b
    return {"params": {"mapping": mapping, "synthesis": synthesis}, "buffers": buffers}


def filter_deviation(state: dict, config: dict) -> float:
    """Largest |stored - designed| over the low-pass filters (the official design for this
    config, scipy on this machine)."""
    _, layers = schedule_of(config)
    worst = 0.0
    for s in layers:
        for name, designed in zip(("up_filter", "down_filter"), layer_filters(s)):
            key = f"synthesis.{s.name}.{name}"
            if designed is not None and key in state:
                stored = f32(state[key])
                if stored.shape != designed.shape:
                    return math.inf
                worst = max(worst, float(np.max(np.abs(stored - designed))))
    return worst


def _finish(state: dict, config: dict, what: str, extra: dict):
    from e4e_jax.nets.model_dir import check_tree
    from e4e_jax.nets.stylegan3 import LoadedStyleGAN3, expected_variables, module_from_config
    variables = convert_state(state, config, what)
    config = dict(config, **extra, filter_max_deviation_from_design=filter_deviation(state, config))
    module = module_from_config(config)
    check_tree(expected_variables(module), variables, f"{what}: converted generator")
    return LoadedStyleGAN3(module, variables, config)


# ------------------------------------------------------------------------------ snapshot pickles

def source_of(G: PersistentObject) -> str:
    """Which networks_stylegan3.py the pickle embeds: the official text, or a variant (the
    source is compared as text, never run). ConversionError when it is no networks_stylegan3.py.
    """
    src = G.module_src
    if not isinstance(src, str):
        raise ConversionError("the Generator embeds no module source (not a torch_utils."
                              "persistence snapshot).")
    text = src.lstrip("\ufeff").replace("\r\n", "\n")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() == OFFICIAL_SOURCE_SHA256:
        return f"official ({OFFICIAL_SOURCE})"
    if all(m in text for m in SOURCE_MARKERS):
        return (f"a modified networks_stylegan3.py (differs from {OFFICIAL_SOURCE}); converted "
                f"with the official semantics")
    raise ConversionError("the Generator's embedded source is not a networks_stylegan3.py (it "
                          "defines no SynthesisInput / SynthesisLayer); not a StyleGAN3 "
                          "generator.")


def _walk(obj: PersistentObject, path: str = ""):
    yield path, obj
    for name, child in obj.modules.items():
        if isinstance(child, PersistentObject):
            yield from _walk(child, f"{path}.{name}" if path else name)
        elif child is not None:
            raise ConversionError(f"{path or 'G_ema'}.{name} is a {type(child).__name__}, not a "
                                  f"persistent network module.")


def check_classes(G: PersistentObject, what: str) -> None:
    """Every persistent object of the tree is the official class for its place."""
    synthesis = G.modules.get("synthesis")
    if isinstance(synthesis, PersistentObject) and any(
            re.fullmatch(r"b\d+", k) for k in synthesis.modules):
        raise ConversionError(f"{what}: this is a StyleGAN2 / StyleGAN2-ADA generator (synthesis "
                              f"blocks b4, b8, ...), not StyleGAN3; convert it with `e4e-jax "
                              f"convert stylegan2_ada`.")
    for path, obj in _walk(G):
        want = next((cls for pattern, cls in _CLASS_OF if pattern.match(path)), None)
        if want is None or obj.class_name != want:
            raise ConversionError(
                f"{what}: unknown class {obj.class_name!r} at {path or 'the root'}"
                + (f" (expected {want})" if want else " (no such module in the official "
                   "StyleGAN3 Generator)") + "; not an official StyleGAN3 generator.")


def _attr(obj: PersistentObject, name: str):
    value = obj.state.get(name)
    return _plain(value)


def check_attributes(G: PersistentObject, config: dict, what: str) -> None:
    """The official unpickler restores each layer's __dict__, not its constructor call: refuse a
    pickle whose layers' attributes disagree with the network rebuilt from init_kwargs."""
    input_spec, layers = schedule_of(config)
    syn = G.modules["synthesis"]
    problems = []

    def compare(where, obj, name, want):
        if name not in obj.state:
            return
        got = _attr(obj, name)
        if isinstance(want, float) or isinstance(got, float):
            ok = got is not None and want is not None and np.isclose(float(got), float(want),
                                                                     rtol=1e-9, atol=0)
        else:
            ok = got == want
        if not ok:
            problems.append(f"{where}.{name}={got!r} (init_kwargs give {want!r})")

    names = _attr(syn, "layer_names")
    want_names = [s.name for s in layers]
    if names is not None and list(names) != want_names:
        problems.append(f"synthesis.layer_names={names} (init_kwargs give {want_names})")
    compare("synthesis", syn, "num_ws", config["num_ws"])
    compare("synthesis", syn, "output_scale", config["output_scale"])
    compare("synthesis", syn, "img_resolution", config["img_resolution"])
    mapping = G.modules["mapping"]
    compare("mapping", mapping, "num_ws", config["num_ws"])
    compare("mapping", mapping, "num_layers", config["mapping_layers"])
    for name, fc in mapping.modules.items():
        if isinstance(fc, PersistentObject) and name.startswith("fc"):
            compare(f"mapping.{name}", fc, "bias_gain", config["mapping_lr_multiplier"])
    inp = syn.modules.get("input")
    if isinstance(inp, PersistentObject):
        compare("synthesis.input", inp, "channels", input_spec.channels)
        compare("synthesis.input", inp, "size", [input_spec.size] * 2)
        compare("synthesis.input", inp, "sampling_rate", input_spec.sampling_rate)
        compare("synthesis.input", inp, "bandwidth", input_spec.bandwidth)
    for s in layers:
        lay = syn.modules.get(s.name)
        if not isinstance(lay, PersistentObject):
            continue  # the key check names it
        where = f"synthesis.{s.name}"
        for name in ("is_torgb", "is_critically_sampled", "in_channels", "out_channels",
                     "in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "conv_kernel",
                     "up_factor", "down_factor", "up_taps", "down_taps", "down_radial"):
            compare(where, lay, name, getattr(s, name))
        for name in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width",
                     "conv_clamp"):
            compare(where, lay, name, getattr(s, name))
        compare(where, lay, "in_size", [s.in_size] * 2)
        compare(where, lay, "out_size", [s.out_size] * 2)
        compare(where, lay, "padding", list(s.padding))
    if problems:
        raise ConversionError(f"{what}: the pickled layers disagree with its init_kwargs: "
                              + "; ".join(problems[:5]))


def find_generator(obj: Any, what: str = "snapshot") -> PersistentObject:
    """`G_ema` of a StyleGAN3 snapshot dict (or a pickled Generator on its own)."""
    return find_snapshot_generator(obj, what, family="StyleGAN3")


def convert_snapshot(obj: Any, what: str = "snapshot"):
    """A snapshot read by `read_snapshot` -> LoadedStyleGAN3 of its G_ema."""
    G = find_generator(obj, what)
    what = f"{what}['G_ema']"
    check_classes(G, what)
    source = source_of(G)
    kw = generator_kwargs(G.init_kwargs, what)
    config = config_from_kwargs(kw, what)
    check_attributes(G, config, what)
    state = G.state_dict()
    return _finish(state, config, what, dict(source_code=source, init_kwargs=_plain(
        G.init_kwargs), origin="NVIDIA network pickle (G_ema)"))


def read_snapshot(path: str) -> Any:
    """The snapshot's objects through the allow-list unpickler (nothing in it is executed)."""
    try:
        return load_network_pickle(path)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path!r}: {e}") from None
    except ConversionError as e:
        raise ConversionError(f"{path!r}: {e}") from None


# ------------------------------------------------------------------------------ .pt state dicts

_LAYER_KEY = re.compile(r"^synthesis\.L(\d+)_(\d+)_(\d+)\.weight$")


def find_state_dict(obj: Any, what: str) -> dict:
    """The Generator state_dict of a stylegan3-editing file: the file itself, or the `decoder.*`
    entries of an e4e3 / psp3 checkpoint's `state_dict`."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        inner = obj["state_dict"]
        state = {k[len("decoder."):]: v for k, v in inner.items() if k.startswith("decoder.")}
        if not state:
            raise ConversionError(f"{what}: its state_dict has no 'decoder.*' entries (found "
                                  f"e.g. {sorted(inner)[:5]}); not a stylegan3-editing file.")
        return state
    if isinstance(obj, dict) and obj and all(isinstance(v, (np.ndarray, np.generic))
                                             for v in obj.values()):
        if not any(k.startswith("synthesis.input.") for k in obj):
            hint = (" (a StyleGAN2 generator: `e4e-jax convert stylegan2`)"
                    if any(k.startswith(("convs.", "to_rgbs.", "g_ema")) for k in obj) else "")
            raise ConversionError(f"{what}: no 'synthesis.input.*' keys; not a StyleGAN3 "
                                  f"generator state dict{hint}.")
        return dict(obj)
    found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ConversionError(f"{what}: expected a StyleGAN3 Generator state dict (torch.save("
                          f"G.state_dict())), found {found}.")


def _merge_overrides(kw: dict, overrides: dict) -> dict:
    kw = json.loads(json.dumps(kw))
    for key, value in overrides.items():
        if key == "mapping_kwargs":
            kw.setdefault("mapping_kwargs", {}).update(value)
        else:
            kw[key] = value
    return kw


def infer_kwargs(state: dict, what: str, overrides: dict | None = None) -> dict:
    """The official Generator kwargs of a bare state dict: sizes from the key names and shapes,
    channel_base / channel_max solved from the layer widths, the rest the official defaults
    (`overrides` wins). Raises ConversionError unless the result reproduces every key, shape and
    stored filter."""
    overrides = dict(overrides or {})
    shape = lambda k: tuple(np.shape(state[k]))  # noqa: E731
    if "mapping.fc0.weight" not in state:
        raise ConversionError(f"{what}: no mapping.fc0.weight; not a StyleGAN3 generator.")
    w_dim = shape("mapping.fc0.weight")[0]
    c_dim = shape("mapping.embed.weight")[1] if "mapping.embed.weight" in state else 0
    n_map = len([k for k in state if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    layers = sorted((int(m.group(1)), int(m.group(2)), int(m.group(3)), k)
                    for k in state for m in [_LAYER_KEY.match(k)] if m)
    if not layers:
        raise ConversionError(f"{what}: no synthesis.L<i>_<size>_<channels> layers; not a "
                              f"StyleGAN3 generator.")
    num_layers, res, img_channels, _ = layers[-1]
    widths = [ch for _, _, ch, _ in layers]
    kernel = shape(layers[0][3])[-1]
    radial = any(np.ndim(v) == 2 for k, v in state.items() if k.endswith(".down_filter"))
    kw = {"z_dim": shape("mapping.fc0.weight")[1] - (w_dim if c_dim else 0), "c_dim": c_dim,
          "w_dim": w_dim, "img_resolution": res, "img_channels": img_channels,
          "mapping_kwargs": {"num_layers": n_map}, "num_layers": num_layers,
          "conv_kernel": kernel, "use_radial_filters": radial}
    kw = _merge_overrides(kw, overrides)
    config0 = config_from_kwargs(generator_kwargs(kw, what), what)
    input_spec, specs = schedule_of(config0)
    # margin_size: layer 0's size is its sampling rate plus the margin on both sides
    margin = (layers[0][1] - input_spec.sampling_rate) / 2
    if "margin_size" not in overrides and margin >= 0 and margin == int(margin):
        kw["margin_size"] = int(margin)
    # channel_base / channel_max: the official widths are rint(min(base / 2 / cutoff, max))
    cmax = max(widths[:-1])
    cutoffs = [spec.out_cutoff for spec in specs[:-1]]  # layer i's width uses its cutoff
    candidates = [2 ** p for p in range(4, 22)]  # powers of two first: train.py's --cbase
    candidates += sorted({int(round(w * 2 * f)) for w, f in zip(widths, cutoffs) if w < cmax})
    if "channel_base" in overrides:
        candidates = [int(overrides["channel_base"])]
    if "channel_max" in overrides:
        cmax = int(overrides["channel_max"])
    chosen = None
    for cb in candidates:
        got = [int(np.rint(min(cb / 2 / f, cmax))) for f in cutoffs]
        if got == widths[:-1]:
            chosen = cb
            break
    if chosen is None:
        raise ConversionError(f"{what}: no channel_base reproduces the layer widths {widths}; "
                              f"pass the generator's options with --init-kwargs.")
    kw = _merge_overrides(kw, {"channel_base": chosen, "channel_max": cmax})
    kw = _merge_overrides(kw, overrides)
    config = config_from_kwargs(generator_kwargs(kw, what), what)
    problem = _mismatch({k: v for k, v in state.items() if k != "synthesis.input.transform"},
                        {k: v for k, v in expected_shapes(config).items()
                         if k != "synthesis.input.transform"}, what)
    if problem:
        raise ConversionError(problem + " (the hyper-parameters were inferred from the shapes; "
                                        "pass the generator's options with --init-kwargs)")
    deviation = filter_deviation(state, config)
    if deviation > 1e-5:
        raise ConversionError(f"{what}: the stored low-pass filters differ from the official "
                              f"design for the inferred hyper-parameters by up to {deviation:.3g}"
                              f"; pass the generator's options (first_cutoff, first_stopband, "
                              f"last_stopband_rel, filter_size, lrelu_upsampling, ...) with "
                              f"--init-kwargs.")
    return kw


def convert_torch_state(state: dict, what: str = "state dict", overrides: dict | None = None):
    """A stylegan3-editing Generator state dict (numpy) -> LoadedStyleGAN3, plus a note."""
    state = dict(state)
    note = ""
    transform = state.get("synthesis.input.transform")
    if transform is None or np.shape(transform) != (3, 3):
        # stylegan3-editing's own loader drops a transform of another shape (a batch of
        # per-image transforms saved by accident) and keeps the identity
        note = (f"; synthesis.input.transform of shape {np.shape(transform)} replaced by the "
                f"identity" if transform is not None else "; no synthesis.input.transform: "
                                                          "identity")
        state["synthesis.input.transform"] = np.eye(3, dtype=np.float32)
    kw = infer_kwargs(state, what, overrides)
    config = config_from_kwargs(generator_kwargs(kw, what), what)
    gen = _finish(state, config, what, dict(init_kwargs=kw, origin=(
        "stylegan3-editing state dict; hyper-parameters inferred from its shapes and filters")))
    return gen, note


# ------------------------------------------------------------------------------ command line

def run(args) -> str:
    from e4e_jax.nets.stylegan3 import save_stylegan3
    if not os.path.isfile(args.src):
        raise ConversionError(f"{args.src!r} does not exist or is not a file.")
    overrides = None
    if args.init_kwargs:
        try:
            overrides = json.loads(args.init_kwargs)
        except json.JSONDecodeError as e:
            raise ConversionError(f"--init-kwargs is not JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise ConversionError("--init-kwargs must be a JSON object, e.g. "
                                  "'{\"output_scale\": 0.25}'.")
    kind = file_kind(args.src)
    name = os.path.basename(args.src)
    if kind == "pickle":
        if overrides:
            raise ConversionError("--init-kwargs applies to .pt state dicts; a network pickle "
                                  "carries its own hyper-parameters.")
        gen, note = convert_snapshot(read_snapshot(args.src), what=name), ""
    elif kind in ("zip", "legacy"):
        obj = load_torch_file(args.src, keep="G.state_dict()")
        gen, note = convert_torch_state(find_state_dict(obj, name), name, overrides)
    else:
        raise ConversionError(f"{args.src!r} is neither a network pickle nor a torch.save file "
                              f"(truncated download, or another kind of file).")
    path = save_stylegan3(gen, args.dst, source=os.path.abspath(args.src))
    c = gen.config
    source = c.get("source_code", "not embedded (.pt)")
    return (f"wrote {path}: StyleGAN3-{gen.config_name} generator, {gen.resolution}x"
            f"{gen.resolution}, n_latent {gen.n_latent}, z_dim {gen.z_dim}, w_dim {gen.w_dim}, "
            f"c_dim {gen.c_dim}, {c['num_layers'] + 1} layers, channel_base "
            f"{c['channel_base']}, channel_max {c['channel_max']}; source code: {source}{note}")


def add_args(parser):
    parser.add_argument("src", help="StyleGAN3 network pickle (network-snapshot-*.pkl, "
                                    "stylegan3-t/r-*.pkl) or stylegan3-editing generator (.pt)")
    parser.add_argument("dst", help=DST_HELP)
    parser.add_argument("--init-kwargs", default=None, metavar="JSON",
                        help="for .pt state dicts: official Generator keyword arguments the "
                             "file cannot tell, e.g. '{\"output_scale\": 0.25, "
                             "\"mapping_kwargs\": {\"lr_multiplier\": 0.01}}'")


def main(argv=None) -> int:
    return cli_main(__doc__.splitlines()[0], add_args, run, argv, module="stylegan3",
                    examples=["stylegan3-t-ffhq-1024x1024.pkl converted/sg3-t",
                              "sg3-r-ffhq-1024.pt converted/sg3-r"])


if __name__ == "__main__":
    sys.exit(main())
