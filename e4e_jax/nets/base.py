"""The one shape of a network bound to its weights: a Flax module, its variables and a policy.

    net = BoundNet(module, variables)          # = e4e_jax.losses.LossNet(module, variables)
    y = net.apply(variables, x)                # pure: module.apply, for use inside a caller's jit
    y = net(x)                                 # pure, on the net's own variables (traceable)
    y = net.run("apply", x)                    # the same, compiled (one program per module,
                                               #   verb, static options and input shapes)
    net16 = net.with_policy("bfloat16", "highest")   # same weights, another numeric policy

Every loaded network of the package is this shape: `LoadedGenerator` (nets/generator.py),
`Inverter` (nets/encoder.py: encoder + generator + latent_avg), `LoadedLPIPS` and
`LoadedSimilarityNet` (ArcFace, MoCo; nets/loss_nets.py) and `LoadedInception` (nets/inception.py).
Each adds its own verbs (`g.synthesis`, `inv.encode`, `lp.features`, ...), which are thin
spellings of these: a pure method taking the variables first (`g.synthesize(variables, w)`,
`inv.apply_encode(variables, x)`) and its compiled form through `run`.

A BoundNet is a pytree, like a `flax.struct.PyTreeNode`: the fields a class lists in `tree_leaves`
(the variables, latent_avg, child nets) are traced when the object is passed into `jax.jit`; those
in `tree_static` (the module, which carries the dtype / precision / remat policy, and other
hashable settings) are part of the compiled program's key; those in `tree_meta` (configs,
metadata) travel with the object but never select or key a program, so a PTI-tuned generator,
whose config records its tuning, reuses the original generator's programs. Objects are immutable:
`replace(**fields)` and `with_policy(...)` return new ones.

`Runtime` is the inference runtime of batch-in, batch-out verbs (the Inverter's encode and
invert): a mesh over the local devices with the training's axis name "data", fixed-shape padding
of the batch to a multiple of the device count, and on a single CPU device one image at a time
inside the compiled program (XLA's CPU convolutions run 20-40% faster per image that way).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from e4e_jax.core.precision import module_kwargs

__all__ = ["BoundNet", "Runtime", "split_options", "DATA_AXIS"]

DATA_AXIS = "data"  # the mesh axis a batch is split over, as in training (train/setup.py)


class _Carried:
    """Metadata carried through pytree operations that never keys a compiled program: two nets
    differing only in their `tree_meta` fields share every program."""

    __slots__ = ("values",)

    def __init__(self, values: tuple):
        self.values = values

    def __eq__(self, other) -> bool:
        return isinstance(other, _Carried)

    def __hash__(self) -> int:
        return 0


def _is_static_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, tuple) and all(_is_static_value(v) for v in value)


def split_options(options: dict) -> tuple[tuple, dict]:
    """(static, dynamic) keyword options of a compiled verb: None, str, bool, int, float and
    tuples of those select code paths and key the program; anything else (arrays, lists of
    arrays, random keys) is traced."""
    static = tuple(sorted((k, v) for k, v in options.items() if _is_static_value(v)))
    dynamic = {k: v for k, v in options.items() if not _is_static_value(v)}
    return static, dynamic


def _run(net, args: tuple, dynamic: dict, *, verb: str, static: tuple,
         per_sample: bool = False, on_trace: Callable[[], None] | None = None):
    """`getattr(net, verb)(net.variables, *args, **options)`; with per_sample, over the batch
    args[0] one item at a time (lax.map; valid where samples are independent, e.g. BatchNorm on
    running statistics)."""
    if on_trace is not None:
        on_trace()
    fn = getattr(net, verb)
    options = dict(static, **dynamic)

    def call(*xs):
        return fn(net.variables, *xs, **options)

    if not per_sample or args[0].shape[0] == 1:
        return call(*args)
    rest = args[1:]
    return jax.lax.map(lambda x: jax.tree_util.tree_map(lambda t: t[0], call(x[None], *rest)),
                       args[0])


_STATIC_ARGS = ("verb", "static", "per_sample", "on_trace")
# The compiled form of every net's verbs outside a Runtime; programs are keyed by the net's
# module and static fields (never by object identity), so same-shaped nets share them.
_compiled = jax.jit(_run, static_argnames=_STATIC_ARGS)


class BoundNet:
    """A Flax module bound to its variables (the module is static, the variables are leaves).

    BoundNet(module, variables) is also `e4e_jax.losses.LossNet`: the frozen networks a jitted
    training step takes as arguments. Subclasses declare further fields in `tree_leaves`,
    `tree_static` and `tree_meta` (see the module docstring) and pass them to
    `BoundNet.__init__` as keywords.

    Verbs shared by every net:
      apply(variables, *args, method=None, **kwargs): `module.apply`, pure (inside a jit).
      __call__(*args, **kwargs): apply on the net's own variables (pure; the classes of loaded
        networks replace it by their checked, compiled convenience, e.g. LPIPS distances).
      run(verb, *args, **kwargs): the pure method `verb` (variables first) on the own
        variables, compiled; keyword options split as `split_options` says.
      lower(verb, *args, **kwargs): (jax.stages.Lowered, arguments) of that program, for
        compile-time and memory measurements: `lowered.compile()(*arguments)` runs it.
      with_policy(dtype, precision, remat): the same weights under another numeric policy.
      replace(**fields): a copy with some fields replaced (no validation).
    """

    tree_leaves: ClassVar[tuple[str, ...]] = ("variables",)
    tree_static: ClassVar[tuple[str, ...]] = ("module",)
    tree_meta: ClassVar[tuple[str, ...]] = ()

    def __init__(self, module: Any, variables: Any, **fields: Any):
        names = set(self.tree_leaves) | set(self.tree_static) | set(self.tree_meta)
        unknown = sorted(set(fields) - names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}; its fields are "
                            f"{sorted(names)}.")
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "variables", variables)
        for name in names - {"module", "variables"}:
            object.__setattr__(self, name, fields.get(name))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _register(cls)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use .replace({name}=...) "
                             f"(or with_policy / with_generator) for a changed copy.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.module).__name__})"

    # ---- pytree protocol
    def _fields(self, names: tuple[str, ...]) -> tuple:
        return tuple(getattr(self, n) for n in names)

    def _flatten_with_keys(self):
        children = [(jax.tree_util.GetAttrKey(n), getattr(self, n)) for n in self.tree_leaves]
        return children, (self._fields(self.tree_static), _Carried(self._fields(self.tree_meta)))

    def _flatten(self):
        return (self._fields(self.tree_leaves),
                (self._fields(self.tree_static), _Carried(self._fields(self.tree_meta))))

    @classmethod
    def _unflatten(cls, aux, children):
        static, meta = aux
        obj = object.__new__(cls)
        for names, values in ((cls.tree_leaves, children), (cls.tree_static, static),
                              (cls.tree_meta, meta.values)):
            for name, value in zip(names, values):
                object.__setattr__(obj, name, value)
        return obj

    def replace(self, **fields: Any) -> "BoundNet":
        """A copy with `fields` replaced; TypeError for a name that is not a field."""
        names = set(self.tree_leaves) | set(self.tree_static) | set(self.tree_meta)
        unknown = sorted(set(fields) - names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}.")
        obj = object.__new__(type(self))
        for name in names:
            object.__setattr__(obj, name, fields[name] if name in fields else getattr(self, name))
        return obj

    # ---- the shared verbs
    def apply(self, variables: Any, *args: Any, method: Any = None, **kwargs: Any) -> Any:
        """module.apply(variables, *args, method=method, **kwargs): pure, for a caller's jit."""
        return self.module.apply(variables, *args, method=method, **kwargs)

    def __call__(self, *args: Any, method: Any = None, **kwargs: Any) -> Any:
        """apply on the net's own variables (traced when the net is a jit argument)."""
        return self.apply(self.variables, *args, method=method, **kwargs)

    def run(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        """The pure method `verb` (variables first) on the own variables, compiled once per
        module, verb, static options and input shapes."""
        static, dynamic = split_options(kwargs)
        return _compiled(self, args, dynamic, verb=verb, static=static)

    def lower(self, verb: str, *args: Any, **kwargs: Any) -> tuple[Any, tuple]:
        """(jax.stages.Lowered, arguments) of `run(verb, ...)`'s program."""
        static, dynamic = split_options(kwargs)
        call_args = (self, args, dynamic)
        return _compiled.lower(*call_args, verb=verb, static=static), call_args

    @property
    def policy(self) -> dict:
        """{"dtype": compute dtype or None (float32), "precision": lax precision or None}."""
        return {"dtype": getattr(self.module, "dtype", None),
                "precision": getattr(self.module, "precision", None)}

    def with_policy(self, dtype: Any = None, precision: Any = None,
                    remat: bool = False) -> "BoundNet":
        """The same net (shared variables) computing in another compute dtype (None /
        "float32" / "bfloat16"), precision (None / "default" / "high" / "highest") or, for
        modules with a `remat` field, rematerialised in the backward pass
        (e4e_jax.core.precision). ValueError on unknown values or remat=True without the field."""
        kwargs = module_kwargs(dtype, precision)
        if "remat" in {f.name for f in dataclasses.fields(self.module)}:
            kwargs["remat"] = bool(remat)
        elif remat:
            raise ValueError(f"{type(self).__name__} ({type(self.module).__name__}) has no remat "
                             f"option.")
        return self.replace(module=self.module.clone(**kwargs))


def _register(cls: type) -> None:
    jax.tree_util.register_pytree_with_keys(cls, cls._flatten_with_keys, cls._unflatten,
                                            cls._flatten)


_register(BoundNet)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Runs a net's batch verb over the local devices (see the module docstring).

    devices: the local devices; with more than one, the batch is split over a mesh axis "data"
    and the net replicated. scan_batch: one item at a time inside the compiled program (default:
    a single CPU device). Each Runtime owns its compiled programs, so `compilations` counts what
    one loaded model compiled (the encode command reports it).
    """

    devices: tuple
    scan_batch: bool
    _traces: list = dataclasses.field(default_factory=lambda: [0], compare=False, repr=False)
    _program: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_program", jax.jit(_run, static_argnames=_STATIC_ARGS))

    @classmethod
    def local(cls, scan_batch: bool | None = None) -> "Runtime":
        """The runtime of this process's devices; scan_batch None: one CPU device only."""
        devices = tuple(jax.local_devices())
        if scan_batch is None:
            scan_batch = devices[0].platform == "cpu" and len(devices) == 1
        return cls(devices, bool(scan_batch))

    @property
    def mesh(self) -> jax.sharding.Mesh | None:
        """Mesh over the devices with axis "data" (None on one device)."""
        if len(self.devices) == 1:
            return None
        import numpy as np
        return jax.sharding.Mesh(np.asarray(self.devices), (DATA_AXIS,))

    @property
    def compilations(self) -> int:
        """Programs compiled through this runtime so far."""
        return self._traces[0]

    def _count(self) -> None:
        self._traces[0] += 1

    def _place(self, net: BoundNet, batch: jax.Array) -> tuple[BoundNet, jax.Array, int]:
        """Pads the batch with zero rows to a multiple of the device count and, on several
        devices, splits it over "data" and replicates the net. Returns (net, batch, n)."""
        n = batch.shape[0]
        pad = (-n) % len(self.devices)
        if pad:
            batch = jnp.concatenate([batch, jnp.zeros((pad,) + batch.shape[1:], batch.dtype)])
        mesh = self.mesh
        if mesh is not None:
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P
            batch = jax.device_put(batch, NamedSharding(mesh, P(DATA_AXIS)))
            net = jax.device_put(net, NamedSharding(mesh, P()))
        return net, batch, n

    def run(self, net: BoundNet, verb: str, batch: jax.Array, **kwargs: Any) -> Any:
        """`getattr(net, verb)(net.variables, batch, **kwargs)` compiled; outputs keep the batch's
        first n rows (padding dropped)."""
        net, batch, n = self._place(net, batch)
        static, dynamic = split_options(kwargs)
        out = self._program(net, (batch,), dynamic, verb=verb, static=static,
                            per_sample=self.scan_batch, on_trace=self._count)
        return jax.tree_util.tree_map(lambda t: t[:n], out)

    def lower(self, net: BoundNet, verb: str, batch: jax.Array, **kwargs: Any
              ) -> tuple[Any, tuple]:
        """(jax.stages.Lowered, arguments) of `run(net, verb, batch, ...)`'s program."""
        net, batch, _ = self._place(net, batch)
        static, dynamic = split_options(kwargs)
        call_args = (net, (batch,), dynamic)
        return self._program.lower(*call_args, verb=verb, static=static,
                                   per_sample=self.scan_batch, on_trace=self._count), call_args
