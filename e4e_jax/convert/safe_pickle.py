"""Reads NVIDIA `torch_utils.persistence` pickles (StyleGAN2-ADA / StyleGAN3 snapshots) safely.

A `network-snapshot-*.pkl` embeds the Python source of its network classes and the official
loader `exec`s that source while unpickling, so opening a downloaded snapshot with it runs a
stranger's code. This module reads the same bytes with an unpickler that resolves only an
allow-list of globals, each to an inert stand-in that keeps data:

    torch_utils.persistence._reconstruct_persistent_obj  -> PersistentObject(class_name, state)
    torch._utils._rebuild_tensor_v2 / _rebuild_parameter -> numpy arrays
    torch.storage._load_from_bytes                       -> the storage's numbers (numpy)
    torch.<Dtype>Storage (inside a storage blob)         -> its dtype
    collections.OrderedDict, dnnlib.util.EasyDict        -> dict types
    builtins.set / frozenset (protocol < 4 sets)         -> themselves
    numpy scalar / numpy.dtype                           -> numpy scalars / dtypes (no objects)
    numpy.core.multiarray._reconstruct + numpy.ndarray,  -> numpy number arrays (StyleGAN3 layers
    numpy.core.numeric._frombuffer (protocol 5)             keep their sizes as small arrays)

Every other global (os.system, builtins.eval, the embedded classes, ...) is refused with an
UnsafePickleError naming it, before anything is called. The embedded source stays an inert
string. Neither torch nor the embedded modules are imported.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
from typing import Any

import numpy as np

from e4e_jax.convert.common import ConversionError


class UnsafePickleError(ConversionError):
    """The pickle refers to a global outside the allow-list (possibly code)."""


class PersistentObject:
    """What `_reconstruct_persistent_obj(meta)` stands for: the class name and the object's
    `__dict__`, with the embedded module source kept as text and never compiled."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict):
            raise ConversionError(f"persistent object metadata is a {type(meta).__name__}, "
                                  f"expected a dict.")
        if meta.get("type") != "class":
            raise ConversionError(f"unsupported persistent object type {meta.get('type')!r} "
                                  f"(only 'class' objects are read).")
        self.class_name = str(meta.get("class_name"))
        self.version = meta.get("version")
        self.module_src = meta.get("module_src")
        state = meta.get("state")
        self.state = state if isinstance(state, dict) else {}

    # torch.nn.Module's __dict__ layout
    @property
    def parameters(self) -> dict:
        return dict(self.state.get("_parameters") or {})

    @property
    def buffers(self) -> dict:
        return dict(self.state.get("_buffers") or {})

    @property
    def modules(self) -> dict:
        return dict(self.state.get("_modules") or {})

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """{key: array} as torch's `state_dict()` names them (parameters, then buffers, then
        children, recursively; non-persistent buffers are skipped)."""
        out = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, value in self.parameters.items():
            if value is not None:
                out[prefix + name] = value
        for name, value in self.buffers.items():
            if value is not None and name not in skip:
                out[prefix + name] = value
        for name, child in self.modules.items():
            if isinstance(child, PersistentObject):
                out.update(child.state_dict(f"{prefix}{name}."))
        return out

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"

    def __setstate__(self, state):
        # persistence pickles never BUILD on the reconstructed object
        raise UnsafePickleError("the pickle modifies a persistent object after building it "
                                "(refused).")


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# torch storage class name -> numpy dtype (bfloat16 is widened to float32 by hand)
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _check_dtype(dtype: np.dtype, what: str) -> np.dtype:
    if dtype.hasobject or dtype.kind not in "biufc":
        raise UnsafePickleError(f"{what}: numpy dtype {dtype!r} is not a plain number type "
                                f"(refused).")
    return dtype


def _numpy_dtype(obj, align=False, copy=False):
    # numpy pickles a dtype as dtype(str, align, copy) followed by __setstate__ (BUILD).
    return _check_dtype(np.dtype(str(obj)), "numpy.dtype")


def _numpy_scalar(dtype, data=b""):
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar with a non-bytes payload (refused).")
    _check_dtype(dtype, "numpy scalar")
    if len(data) != dtype.itemsize:
        raise ConversionError(f"numpy scalar of {dtype} has {len(data)} bytes.")
    return np.frombuffer(data, dtype)[0]


def _storage_array(raw: bytes, dtype) -> np.ndarray:
    if dtype == "bfloat16":
        half = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return half.view(np.float32)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)


class _StorageBlobUnpickler(pickle.Unpickler):
    """The pickles inside one legacy (non-zip) torch.save blob of a storage."""

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise UnsafePickleError(f"refused global {module}.{name} inside a tensor storage blob "
                                f"(only torch.<Dtype>Storage is allowed there).")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ConversionError(f"unexpected persistent id in a tensor storage: {pid!r:.200}")
        _, storage_type, key, _location, numel = pid[:5]
        return ("storage", storage_type, str(key), int(numel))


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def load_storage_bytes(blob: bytes) -> np.ndarray:
    """The numbers of one storage from its legacy torch.save bytes (`_load_from_bytes`)."""
    if not isinstance(blob, (bytes, bytearray)):
        raise ConversionError(f"storage payload is a {type(blob).__name__}, expected bytes.")
    f = io.BytesIO(bytes(blob))

    def next_pickle():
        return _StorageBlobUnpickler(f).load()

    try:
        magic = next_pickle()
        if magic != _LEGACY_MAGIC:
            raise ConversionError("a tensor storage blob does not start with torch's legacy "
                                  "magic number (corrupt file or a format this reader does not "
                                  "know).")
        if next_pickle() != _LEGACY_PROTOCOL:
            raise ConversionError("a tensor storage blob has an unknown legacy protocol version.")
        next_pickle()  # sys_info: endianness and type sizes of the writer
        ref = next_pickle()
        keys = next_pickle()
    except (pickle.UnpicklingError, EOFError, struct.error) as e:
        raise ConversionError(f"corrupt tensor storage blob: {type(e).__name__}: {e}") from e
    if not (isinstance(ref, tuple) and ref[:1] == ("storage",)):
        raise ConversionError("a tensor storage blob does not hold a storage.")
    _, storage_type, key, numel = ref
    arrays = {}
    for k in keys:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError("tensor storage blob is truncated (no element count).")
        (count,) = struct.unpack("<q", head)
        dtype = storage_type.dtype
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        raw = f.read(count * itemsize)
        if count < 0 or len(raw) != count * itemsize:
            raise ConversionError(f"tensor storage blob is truncated: {count} elements "
                                  f"announced, {len(raw) // itemsize} present.")
        arrays[str(k)] = _storage_array(raw, dtype)
    if key not in arrays:
        raise ConversionError(f"tensor storage blob lacks the data of its storage {key!r}.")
    data = arrays[key]
    if data.size < numel:
        raise ConversionError(f"tensor storage holds {data.size} elements, {numel} announced.")
    return data


class _NdarrayClass:
    """Stands for `numpy.ndarray` in a pickle: only `_reconstruct` takes it."""


_NDARRAY = _NdarrayClass()


class PickledArray(np.ndarray):
    """A numpy array being rebuilt by `_reconstruct` + BUILD (how numpy pickles an ndarray, e.g.
    a StyleGAN3 layer's `in_size`). Its `__setstate__` accepts only a plain number array: dtype
    checked by `_check_dtype`, data given as bytes (object arrays pickle a list instead)."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("numpy array with an unexpected pickled state (refused).")
        shape, dtype, _fortran, data = state[-4:]
        if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
            raise UnsafePickleError("numpy array whose pickled state is not a number dtype with "
                                    "a bytes payload (refused).")
        _check_dtype(dtype, "numpy array")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ConversionError(f"numpy array with an invalid shape {shape!r:.100}.")
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ConversionError(f"numpy array of shape {shape} and dtype {dtype} has "
                                  f"{len(data)} bytes of data.")
        super().__setstate__(state)


def _numpy_reconstruct(subtype, shape, dtype_code):
    # numpy pickles an ndarray as _reconstruct(ndarray, (0,), b'b') followed by BUILD
    if subtype is not _NDARRAY:
        raise UnsafePickleError("numpy _reconstruct of something other than numpy.ndarray "
                                "(refused).")
    return PickledArray((0,), np.uint8)


def _numpy_frombuffer(buf, dtype, shape, order="C"):
    # protocol 5 pickles a contiguous ndarray as _frombuffer(PickleBuffer, dtype, shape, order)
    if not isinstance(dtype, np.dtype) or not isinstance(buf, (bytes, bytearray)):
        raise UnsafePickleError("numpy _frombuffer with a non-number dtype or a non-bytes "
                                "payload (refused).")
    _check_dtype(dtype, "numpy array")
    shape = tuple(int(d) for d in shape)
    if len(buf) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ConversionError(f"numpy array of shape {shape} and dtype {dtype} has {len(buf)} "
                              f"bytes of data.")
    return np.frombuffer(bytes(buf), dtype).reshape(shape, order="F" if order == "F" else "C")


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                   backward_hooks=None, metadata=None) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2` on a numpy storage: a bounds-checked strided copy."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ConversionError("a tensor refers to something that is not a storage.")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise ConversionError(f"invalid tensor geometry: size {size}, stride {stride}, "
                              f"offset {offset}.")
    n = int(np.prod(size, dtype=np.int64))
    if n == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= storage.size:
        raise ConversionError(f"tensor of size {size} (stride {stride}, offset {offset}) reads "
                              f"past the end of its storage of {storage.size} elements.")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * item for s in stride],
                                           writeable=False)
    return np.array(view)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, np.ndarray):
        raise ConversionError("a parameter wraps something that is not a tensor.")
    return data


def _reconstruct_persistent_obj(meta):
    return PersistentObject(meta)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): load_storage_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # protocol < 4 writes sets (a module's _non_persistent_buffers_set) as set([...]) calls;
    # protocol 2 spells the module __builtin__
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-list above; anything else raises UnsafePickleError."""

    def find_class(self, module, name):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: it is not on the allow-list of a "
                f"StyleGAN network snapshot (persistence objects, tensors, OrderedDict, "
                f"EasyDict, numpy numbers and number arrays). Nothing from the file was "
                f"executed. Snapshots written by NVlabs' stylegan2-ada-pytorch / stylegan3 "
                f"need nothing else: a "
                f"TensorFlow-era pickle (dnnlib.tflib.*) must first be converted with NVlabs' "
                f"legacy.py in an environment you trust (it writes this format); other "
                f"files are not network snapshots (rosinality .pt checkpoints go to "
                f"`e4e-jax convert stylegan2`).")
        return target

    def persistent_load(self, pid):
        raise ConversionError(f"unexpected persistent id {pid!r:.100} in a network pickle "
                              f"(zip-format torch.save files are read by torch.load instead).")


def load_network_pickle(path_or_file) -> Any:
    """Unpickles a StyleGAN2-ADA / StyleGAN3 snapshot with the allow-list; returns the top-level
    object (a dict of PersistentObject networks and plain values)."""
    if isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__"):
        with open(path_or_file, "rb") as f:
            return load_network_pickle(f)
    try:
        return RestrictedUnpickler(path_or_file).load()
    except (UnsafePickleError, ConversionError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, MemoryError, RecursionError) as e:
        raise ConversionError(f"not a readable network pickle: {type(e).__name__}: "
                              f"{str(e)[:200]}") from e


def find_generator(obj: Any, what: str = "snapshot", family: str = "StyleGAN2-ADA"
                   ) -> PersistentObject:
    """`G_ema` of a network snapshot dict as NVIDIA's training loops pickle it (or a pickled
    Generator on its own); ConversionError naming what was found instead. `family` names the
    snapshot kind in the messages."""
    if isinstance(obj, PersistentObject):
        if obj.class_name != "Generator":
            raise ConversionError(f"{what}: the pickle holds a {obj.class_name}, not a "
                                  f"Generator.")
        return obj
    if not isinstance(obj, dict):
        raise ConversionError(f"{what}: expected a snapshot dict with 'G_ema', got a "
                              f"{type(obj).__name__} (a TensorFlow-era (G, D, Gs) tuple is not "
                              f"a {family} snapshot).")
    if "G_ema" not in obj:
        raise ConversionError(f"{what}: no 'G_ema' entry (found: {sorted(map(str, obj))}); a "
                              f"{family} network snapshot holds G, D and G_ema.")
    G = obj["G_ema"]
    if not isinstance(G, PersistentObject) or G.class_name != "Generator":
        raise ConversionError(f"{what}: 'G_ema' is {G!r}, not a persistent Generator.")
    return G

