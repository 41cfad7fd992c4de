"""Writes StyleGAN2-ADA-format network snapshot pickles for the tests, without torch.

The layout follows tests/fixtures/stylegan2_ada_generator/README.md: a dict
{training_set_kwargs, G, D, G_ema, augment_pipe}; every network and submodule a
`torch_utils.persistence` object, i.e. `_reconstruct_persistent_obj(meta)` with meta =
{type, version, module_src, class_name, state}, `state` being the torch.nn.Module __dict__
(parameters, buffers, child modules, hook containers, plain attributes, _init_args /
_init_kwargs); parameters as `torch._utils._rebuild_parameter(_rebuild_tensor_v2(storage, ...))`
and every storage as `torch.storage._load_from_bytes(<legacy torch.save bytes>)`. The module
source is a placeholder string (real snapshots embed NVIDIA's source, which is not reproduced
here); callers may pass their own to check that it is never run.

The globals are written as opcodes by a pure-Python pickler, so neither torch nor the modules the
globals name are needed to write (or read back) the file.
"""
from __future__ import annotations

import collections
import io
import json
import math
import pickle
import struct
import sys

import numpy as np

from tests.support.synth_weights import synth

PLACEHOLDER_SOURCE = ("# Placeholder for the module source a real network snapshot embeds "
                      "(not reproduced in this project).\n")
FIXTURE = "stylegan2_ada_generator"
SQRT3 = math.sqrt(3.0)


class Global:
    """A reference to module.name, written as a GLOBAL / STACK_GLOBAL opcode."""
    _cache: dict = {}

    def __new__(cls, module: str, name: str):
        key = (module, name)
        if key not in cls._cache:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._cache[key] = obj
        return cls._cache[key]

    def __call__(self, *args):  # pickle's save_reduce only accepts callables
        raise TypeError(f"{self.module}.{self.name} is a reference, not a function.")


class Tensor:
    def __init__(self, array, parameter: bool):
        self.array = np.asarray(array).copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        self.parameter = parameter


class _Storage:
    def __init__(self, array):
        self.array = array


class _StorageRef:
    def __init__(self, array, key):
        self.array, self.key = array, key


class Persistent:
    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name, self.state, self.module_src = class_name, state, module_src


class Call:
    """`func(*args)` at load time, func a Global: how tests write hostile or old-style pickles."""

    def __init__(self, func: Global, args: tuple):
        self.func, self.args = func, tuple(args)


class EasyDict(dict):
    """Written as dnnlib.util.EasyDict (NEWOBJ + SETITEMS), like train.py's kwargs."""


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage"}
REBUILD_PARAMETER = Global("torch._utils", "_rebuild_parameter")
REBUILD_TENSOR = Global("torch._utils", "_rebuild_tensor_v2")
LOAD_FROM_BYTES = Global("torch.storage", "_load_from_bytes")
RECONSTRUCT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")


def _save_global_marker(self, obj: Global):
    if self.proto >= 4:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
    else:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
    self.memoize(obj)


def _save_easydict(self, obj: EasyDict):
    self.save(Global("dnnlib.util", "EasyDict"))
    self.save(())
    self.write(pickle.NEWOBJ)
    self.memoize(obj)
    self._batch_setitems(iter(obj.items()))


class SnapshotPickler(pickle._Pickler):  # the pure-Python pickler: its save_* can be extended
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = _save_global_marker
    dispatch[EasyDict] = _save_easydict

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            a = obj.array
            if obj.parameter:
                return REBUILD_PARAMETER, (Tensor(a, False), False, collections.OrderedDict())
            stride = tuple(s // a.itemsize for s in a.strides)
            return REBUILD_TENSOR, (_Storage(a.reshape(-1)), 0, tuple(a.shape), stride, False,
                                    collections.OrderedDict())
        if isinstance(obj, _Storage):
            return LOAD_FROM_BYTES, (legacy_storage_bytes(obj.array),)
        if isinstance(obj, Call):
            return obj.func, obj.args
        if isinstance(obj, Persistent):
            meta = {"type": "class", "version": 6, "module_src": obj.module_src,
                    "class_name": obj.class_name, "state": obj.state}
            return RECONSTRUCT, (meta,)
        return NotImplemented


class _LegacyPickler(SnapshotPickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            name = _STORAGE_NAMES[obj.array.dtype]
            return ("storage", Global("torch", name), obj.key, "cpu", obj.array.size, None)
        return None


def legacy_storage_bytes(array: np.ndarray) -> bytes:
    """One storage as torch's legacy (non-zip) torch.save writes it."""
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001,
                {"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        _LegacyPickler(buf, protocol=2).dump(obj)
    key = str(id(array))  # torch uses the storage's address as its key
    _LegacyPickler(buf, protocol=2).dump(_StorageRef(array, key))
    _LegacyPickler(buf, protocol=2).dump([key])
    buf.write(struct.pack("<q", array.size))
    buf.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return buf.getvalue()


# ------------------------------------------------------------------------------ module states

_HOOKS_BEFORE = ("_backward_pre_hooks", "_backward_hooks")
_HOOKS_AFTER = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
                "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                "_load_state_dict_post_hooks")


def module_state(parameters: dict, buffers: dict, modules: dict, attrs: dict,
                 init_args=(), init_kwargs=None) -> dict:
    """A torch.nn.Module __dict__ in torch 2.x's key order."""
    state = {"training": False,
             "_parameters": {k: Tensor(v, True) for k, v in parameters.items()},
             "_buffers": {k: Tensor(v, False) for k, v in buffers.items()},
             "_non_persistent_buffers_set": set()}
    for k in _HOOKS_BEFORE:
        state[k] = collections.OrderedDict()
    state["_is_full_backward_hook"] = None
    for k in _HOOKS_AFTER:
        state[k] = collections.OrderedDict()
    state["_modules"] = modules
    state.update(attrs)
    state["_init_args"] = tuple(init_args)
    state["_init_kwargs"] = dict(init_kwargs or {})
    return state


_BUFFER_NAMES = ("resample_filter", "noise_const", "w_avg", "p", "Hz_geom", "Hz_fbank")


def _split(state: dict) -> tuple[dict, dict, dict]:
    """Top-level parameters, buffers and children (in key order) of a flat state dict."""
    params, buffers, children = {}, {}, {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if rest:
            children.setdefault(head, {})[rest] = value
        elif head in _BUFFER_NAMES:
            buffers[head] = value
        else:
            params[head] = value
    return params, buffers, children


def _full_kwargs(init_kwargs: dict) -> dict:
    kw = json.loads(json.dumps(init_kwargs))
    m = {"num_layers": 8, "embed_features": None, "layer_features": None, "lr_multiplier": 0.01,
         "w_avg_beta": 0.995, **kw.get("mapping_kwargs", {})}
    s = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0, "conv_clamp": None,
         "use_noise": True, **kw.get("synthesis_kwargs", {})}
    return dict(kw, mapping=m, synthesis=s)


def generator_object(state: dict, init_kwargs: dict, module_src: str = PLACEHOLDER_SOURCE,
                     parameters: dict | None = None) -> Persistent:
    """The persistent Generator tree of a flat G state dict (`parameters` replaces the values of
    the parameters, e.g. for the training-time G whose buffers are G_ema's)."""
    if parameters is not None:
        state = {k: parameters.get(k, v) for k, v in state.items()}
    kw = _full_kwargs(init_kwargs)
    m, s = kw["mapping"], kw["synthesis"]
    w_dim, res = kw["w_dim"], kw["img_resolution"]
    log2 = int(math.log2(res))
    blocks = [2 ** i for i in range(2, log2 + 1)]
    num_ws = 2 * log2 - 2
    lrelu_gain = np.float64(math.sqrt(2.0))

    def P(name, st, attrs, args=(), kwargs=None):
        params, buffers, children = _split(st)
        return Persistent(name, module_state(params, buffers, children, attrs, args, kwargs),
                          module_src)

    def fc(st, act="linear", lr=1.0, kwargs=None):
        out_f, in_f = st["weight"].shape
        return P("FullyConnectedLayer", st, {
            "activation": act, "weight_gain": np.float64(lr / np.sqrt(in_f)),
            "bias_gain": lr if lr != 1 else 1}, (in_f, out_f), kwargs)

    def layer(st, r, up):
        _, _, ch = _split(st)
        obj = P("SynthesisLayer", {k: v for k, v in st.items() if not k.startswith("affine.")},
                {"resolution": r, "up": up, "use_noise": bool(s["use_noise"]),
                 "activation": "lrelu", "conv_clamp": s["conv_clamp"], "padding": 1,
                 "act_gain": lrelu_gain},
                (st["weight"].shape[1], st["weight"].shape[0]),
                {"w_dim": w_dim, "resolution": r, "conv_clamp": s["conv_clamp"]})
        obj.state["_modules"]["affine"] = fc(ch["affine"], kwargs={"bias_init": 1})
        return obj

    def torgb(st):
        _, _, ch = _split(st)
        cin = st["weight"].shape[1]
        obj = P("ToRGBLayer", {k: v for k, v in st.items() if not k.startswith("affine.")},
                {"conv_clamp": s["conv_clamp"], "weight_gain": np.float64(1 / np.sqrt(cin))},
                (cin, st["weight"].shape[0]), {"w_dim": w_dim, "conv_clamp": s["conv_clamp"]})
        obj.state["_modules"]["affine"] = fc(ch["affine"], kwargs={"bias_init": 1})
        return obj

    _, _, top = _split(state)
    _, _, syn_children = _split(top["synthesis"])
    block_objs = {}
    for r in blocks:
        bst = syn_children[f"b{r}"]
        p, b, ch = _split(bst)
        cout = (bst["const"] if r == 4 else bst["conv1.weight"]).shape[0]
        cin = 0 if r == 4 else bst["conv0.weight"].shape[1]
        obj = Persistent("SynthesisBlock", module_state(p, b, {}, {
            "in_channels": cin, "w_dim": w_dim, "resolution": r,
            "img_channels": kw["img_channels"], "is_last": r == res, "architecture": "skip",
            "use_fp16": r >= max(2 ** (log2 + 1 - s["num_fp16_res"]), 8),
            "channels_last": False, "num_conv": 1 if r == 4 else 2, "num_torgb": 1},
            (cin, cout), {"w_dim": w_dim, "resolution": r, "img_channels": kw["img_channels"],
                          "is_last": r == res, "use_fp16": False,
                          "conv_clamp": s["conv_clamp"]}), module_src)
        if r > 4:
            obj.state["_modules"]["conv0"] = layer(ch["conv0"], r, 2)
        obj.state["_modules"]["conv1"] = layer(ch["conv1"], r, 1)
        obj.state["_modules"]["torgb"] = torgb(ch["torgb"])
        block_objs[f"b{r}"] = obj
    synthesis = Persistent("SynthesisNetwork", module_state({}, {}, block_objs, {
        "w_dim": w_dim, "img_resolution": res, "img_resolution_log2": log2,
        "img_channels": kw["img_channels"], "block_resolutions": blocks, "num_ws": num_ws},
        (), dict(w_dim=w_dim, img_resolution=res, img_channels=kw["img_channels"],
                 **init_kwargs.get("synthesis_kwargs", {}))), module_src)

    p, b, ch = _split(top["mapping"])
    map_children = {}
    for name, st in ch.items():
        lr = float(m["lr_multiplier"])
        map_children[name] = (fc(st) if name == "embed" else
                              fc(st, "lrelu", lr, {"activation": "lrelu", "lr_multiplier": lr}))
    mapping = Persistent("MappingNetwork", module_state(p, b, map_children, {
        "z_dim": kw["z_dim"], "c_dim": kw["c_dim"], "w_dim": w_dim, "num_ws": num_ws,
        "num_layers": m["num_layers"], "w_avg_beta": m["w_avg_beta"]}, (),
        dict(z_dim=kw["z_dim"], c_dim=kw["c_dim"], w_dim=w_dim, num_ws=num_ws,
             **init_kwargs.get("mapping_kwargs", {}))), module_src)

    g_kwargs = dict(init_kwargs)
    for k in ("mapping_kwargs", "synthesis_kwargs"):
        if k in g_kwargs:
            g_kwargs[k] = EasyDict(g_kwargs[k])
    return Persistent("Generator", module_state({}, {}, {"synthesis": synthesis,
                                                         "mapping": mapping}, {
        "z_dim": kw["z_dim"], "c_dim": kw["c_dim"], "w_dim": w_dim, "img_resolution": res,
        "img_channels": kw["img_channels"], "num_ws": num_ws}, (), g_kwargs), module_src)


def _d_class(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "b4":
        return "DiscriminatorEpilogue"
    if "." not in path and last.startswith("b"):
        return "DiscriminatorBlock"
    if last in ("fc", "out", "embed") or last.startswith("fc"):
        return "FullyConnectedLayer"
    return "Conv2dLayer"


def discriminator_object(state: dict, init_kwargs: dict,
                         module_src: str = PLACEHOLDER_SOURCE) -> Persistent:
    """A persistent Discriminator tree from its flat state dict (payload only: never read)."""

    def build(st, path):
        p, b, ch = _split(st)
        children = {name: build(sub, f"{path}.{name}" if path else name)
                    for name, sub in ch.items()}
        if path == "b4":
            children["mbstd"] = Persistent("MinibatchStdLayer", module_state(
                {}, {}, {}, {"group_size": 4, "num_channels": 1}, (),
                {"group_size": 4, "num_channels": 1}), module_src)
        return Persistent(_d_class(path) if path else "Discriminator",
                          module_state(p, b, children, {}, (), {}), module_src)

    obj = build(state, "")
    obj.state["_init_kwargs"] = {k: EasyDict(v) if isinstance(v, dict) else v
                                 for k, v in init_kwargs.items()}
    return obj


def augment_pipe_object(init_kwargs: dict, module_src: str = PLACEHOLDER_SOURCE) -> Persistent:
    buffers = {"p": np.float32(0.125).reshape(()),
               "Hz_geom": np.linspace(-0.1, 0.1, 12, dtype=np.float32),
               "Hz_fbank": np.zeros((4, 43), np.float32)}
    attrs = {k: float(v) for k, v in init_kwargs.items()}
    return Persistent("AugmentPipe", module_state({}, buffers, {}, attrs, (), init_kwargs),
                      module_src)


def write_snapshot(path: str, g_ema_state: dict, init_kwargs: dict, *, g_parameters=None,
                   d_state=None, d_init_kwargs=None, training_set_kwargs=None,
                   augment_kwargs=None, module_src: str = PLACEHOLDER_SOURCE,
                   protocol: int = 4) -> str:
    """Writes {training_set_kwargs, G, D, G_ema, augment_pipe} as training_loop.py does."""
    snapshot = {"training_set_kwargs": dict(training_set_kwargs or {}),
                "G": generator_object(g_ema_state, init_kwargs, module_src, g_parameters),
                "D": discriminator_object(d_state or {}, d_init_kwargs or {}, module_src),
                "G_ema": generator_object(g_ema_state, init_kwargs, module_src),
                "augment_pipe": augment_pipe_object(augment_kwargs or {"xflip": 1}, module_src)}
    with open(path, "wb") as f:
        SnapshotPickler(f, protocol=protocol).dump(snapshot)
    return path


def dumps(obj, protocol: int = 4) -> bytes:
    """Any object (with the markers above inside) as pickle bytes."""
    buf = io.BytesIO()
    SnapshotPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def write_fixture_snapshot(path: str, fixture, protocol: int = 4) -> str:
    """The fixture's snapshot rebuilt from its manifest (same structure, placeholder source)."""
    man = fixture.manifest
    cont = man["container"]
    seed = man["seed"]

    def build(tensors, prefix):
        return {k[len(prefix):]: synth(k, v["shape"], seed, v.get("scale", 0.0),
                                       v.get("offset", 0.0), v.get("dtype", "float32"))
                for k, v in tensors.items()}

    g_params = build(man["G_tensors"], "G.")
    d_state = build(man["D_tensors"], "D.")
    for key, spec in man["D_tensors"].items():
        if "value" in spec:
            d_state[key[2:]] = np.asarray(spec["value"], spec["dtype"]).reshape(spec["shape"])
    return write_snapshot(path, fixture.state, cont["G_ema"]["init_kwargs"],
                          g_parameters=g_params, d_state=d_state,
                          d_init_kwargs=cont["D"]["init_kwargs"],
                          training_set_kwargs=cont["training_set_kwargs"],
                          augment_kwargs=cont["augment_pipe"]["init_kwargs"], protocol=protocol)


# ------------------------------------------------------------------------- tiny test generators

def tiny_init_kwargs(resolution=16, w_dim=32, z_dim=None, c_dim=0, num_layers=2,
                     channel_base=128, channel_max=16, conv_clamp=None, img_channels=3,
                     **extra) -> dict:
    mapping = {"num_layers": num_layers}
    synthesis = {"channel_base": channel_base, "channel_max": channel_max, "num_fp16_res": 0,
                 "conv_clamp": conv_clamp}
    for k, v in extra.items():
        (mapping if k in ("embed_features", "layer_features", "lr_multiplier", "w_avg_beta")
         else synthesis)[k] = v
    return {"z_dim": z_dim or w_dim, "w_dim": w_dim, "mapping_kwargs": mapping,
            "synthesis_kwargs": synthesis, "c_dim": c_dim, "img_resolution": resolution,
            "img_channels": img_channels}


def synthetic_generator_state(init_kwargs: dict, seed: int = 7) -> dict:
    """A G_ema state dict for these init_kwargs with the fixture's weight scales."""
    kw = _full_kwargs(init_kwargs)
    m, s = kw["mapping"], kw["synthesis"]
    w_dim, res, lr = kw["w_dim"], kw["img_resolution"], float(m["lr_multiplier"])
    blocks = [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    ch = {r: min(s["channel_base"] // r, s["channel_max"]) for r in blocks}
    fir = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64
    out = {}

    def put(key, shape, scale, offset=0.0):
        out[key] = synth(key, shape, seed, scale, offset)

    def layer(prefix, cin, cout, r):
        put(f"{prefix}.weight", (cout, cin, 3, 3), SQRT3)
        if s["use_noise"]:
            put(f"{prefix}.noise_strength", (), 0.1, 0.15)
        put(f"{prefix}.bias", (cout,), 0.1)
        out[f"{prefix}.resample_filter"] = fir
        if s["use_noise"]:
            put(f"{prefix}.noise_const", (r, r), SQRT3)
        put(f"{prefix}.affine.weight", (cin, w_dim), SQRT3)
        put(f"{prefix}.affine.bias", (cin,), 0.1, 1.0)

    for i, r in enumerate(blocks):
        b = f"synthesis.b{r}"
        if r == 4:
            put(f"{b}.const", (ch[4], 4, 4), SQRT3)
        out[f"{b}.resample_filter"] = fir
        if r > 4:
            layer(f"{b}.conv0", ch[r // 2], ch[r], r)
        layer(f"{b}.conv1", ch[r], ch[r], r)
        put(f"{b}.torgb.weight", (kw["img_channels"], ch[r], 1, 1), SQRT3)
        put(f"{b}.torgb.bias", (kw["img_channels"],), 0.1)
        put(f"{b}.torgb.affine.weight", (ch[r], w_dim), SQRT3)
        put(f"{b}.torgb.affine.bias", (ch[r],), 0.1, 1.0)
    if m["w_avg_beta"] is not None:
        put("mapping.w_avg", (w_dim,), 1.0)
    embed = 0
    if kw["c_dim"]:
        embed = m["embed_features"] or w_dim
        put("mapping.embed.weight", (embed, kw["c_dim"]), SQRT3)
        put("mapping.embed.bias", (embed,), 0.1)
    hidden = m["layer_features"] or w_dim
    feats = [kw["z_dim"] + embed] + [hidden] * (m["num_layers"] - 1) + [w_dim]
    for i in range(m["num_layers"]):
        put(f"mapping.fc{i}.weight", (feats[i + 1], feats[i]), SQRT3 / lr)
        put(f"mapping.fc{i}.bias", (feats[i + 1],), 0.1 / lr)
    return out


if __name__ == "__main__":  # python -m tests.support.ada_pickle_writer OUT.pkl: the fixture's snapshot
    import tests.support.fixtures as fixture_utils
    print(write_fixture_snapshot(sys.argv[1], fixture_utils.load_fixture(FIXTURE)))
