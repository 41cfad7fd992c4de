"""Loaders of the frozen loss networks: LPIPS, ArcFace IR-SE-50 (identity) and MoCo v2 ResNet-50.

    lp = e4e_jax.load_lpips("weights/lpips_alex")        # `e4e-jax convert lpips` output
    d = lp(x, y)                                         # (N,) LPIPS per pair; .mean() = official
    maps = lp.features(x)                                # five unit-normalised NHWC maps

    arc = e4e_jax.load_arcface("weights/arcface")        # `e4e-jax convert arcface` output
    moco = e4e_jax.load_moco("weights/moco")             # `e4e-jax convert moco` output
    f = arc.features(images)                             # (N, 512), l2-normalised
    loss, improvement, sims = arc.loss(y_hat, y, x)      # IDLoss.forward's values

Images are NHWC float32 in [-1, 1] (numpy or jax). Every object also exposes `.module`,
`.variables` and `.net` (a `e4e_jax.losses.LossNet`) for use inside a jitted training step.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from e4e_jax.core.precision import module_kwargs
from e4e_jax.losses import LossNet, similarity_loss
from e4e_jax.losses.checks import check_lpips_size
from e4e_jax.models.arcface import IMAGE_SIZE, ArcFace
from e4e_jax.models.lpips import LPIPS, NETS
from e4e_jax.models.resnet import MocoFeatures
from e4e_jax.nets.model_dir import ModelDirError, check_tree, load_model_dir

LPIPS_KIND = "lpips"
ARCFACE_KIND = "arcface_ir_se50"
MOCO_KIND = "moco_resnet50"

__all__ = ["load_lpips", "load_arcface", "load_moco", "LoadedLPIPS", "LoadedSimilarityNet"]


def as_images(x: Any, what: str) -> jax.Array:
    """A (N, H, W, 3) float32 array, or a ValueError naming the problem."""
    x = jnp.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3:
        hint = " (NCHW? transpose to NHWC)" if x.ndim == 4 and x.shape[1] == 3 else ""
        raise ValueError(f"{what} takes NHWC RGB images (N, H, W, 3), got shape {x.shape}{hint}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{what} takes float images in [-1, 1], got dtype {x.dtype} "
                         f"(convert uint8 with x / 127.5 - 1).")
    return x.astype(jnp.float32)


def _check_variables(module, variables, example_args, path: str, what: str) -> None:
    if variables is None:
        raise ModelDirError(f"{path!r} has no variables.msgpack; the conversion did not finish. "
                            f"Run the converter again.")
    expected = jax.eval_shape(module.init, jax.random.key(0), *example_args)
    check_tree(expected, variables, f"{what} in {path!r}")


class LoadedLPIPS:
    """LPIPS v0.1: `lp(x, y)` -> (N,) distances, `lp.features(x)`, `lp.loss(x, y)` -> scalar."""

    def __init__(self, module: LPIPS, variables: Mapping[str, Any], config: Mapping | None = None):
        self.module = module
        self.variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
        self.config = dict(config or {"net": module.net})
        self._distance = jax.jit(lambda v, a, b: module.apply(v, a, b))
        self._features = jax.jit(lambda v, a: module.apply(v, a, method="features"))

    @property
    def net_type(self) -> str:
        return self.module.net

    @property
    def net(self) -> LossNet:
        return LossNet(self.module, self.variables)

    def __call__(self, x, y) -> jax.Array:
        x, y = as_images(x, "LPIPS"), as_images(y, "LPIPS")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS compares images of equal shape, got {x.shape} and {y.shape}.")
        check_lpips_size(self.module.net, x.shape[1:3])
        return self._distance(self.variables, x, y)

    def loss(self, x, y) -> jax.Array:
        """The official batch value: sum over pairs divided by the batch size."""
        return jnp.mean(self(x, y))

    def features(self, x) -> list[jax.Array]:
        x = as_images(x, "LPIPS.features")
        check_lpips_size(self.module.net, x.shape[1:3])
        return self._features(self.variables, x)

    def __repr__(self) -> str:
        return f"LoadedLPIPS(net={self.module.net!r})"


class LoadedSimilarityNet:
    """ArcFace or MoCo: `features(images)` -> (N, D) unit vectors, `loss(y_hat, y, x)`."""

    def __init__(self, module, variables: Mapping[str, Any], kind: str,
                 config: Mapping | None = None):
        self.module = module
        self.variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
        self.kind = kind
        self.config = dict(config or {})
        self._features = jax.jit(lambda v, a: module.apply(v, a))
        self._loss = jax.jit(lambda n, a, b, c: similarity_loss(n, a, b, c))

    @property
    def net(self) -> LossNet:
        return LossNet(self.module, self.variables)

    def _images(self, x, what: str) -> jax.Array:
        x = as_images(x, what)
        if self.kind == ARCFACE_KIND and x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{what}: the identity loss takes 256x256 aligned faces (it crops "
                             f"rows 35:223, columns 32:220), got {x.shape[1]}x{x.shape[2]}.")
        return x

    def features(self, images) -> jax.Array:
        return self._features(self.variables, self._images(images, f"{self.kind} features"))

    def loss(self, y_hat, y, x) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(loss, similarity improvement, per-sample [diff_target, diff_input, diff_views])."""
        what = f"{self.kind} loss"
        y_hat, y, x = self._images(y_hat, what), self._images(y, what), self._images(x, what)
        if not (y_hat.shape == y.shape == x.shape):
            raise ValueError(f"{what}: y_hat, y and x must have equal shapes, got {y_hat.shape}, "
                             f"{y.shape}, {x.shape}.")
        return self._loss(self.net, y_hat, y, x)

    def __repr__(self) -> str:
        return f"LoadedSimilarityNet(kind={self.kind!r})"


def load_lpips(path: str, dtype: Any = None, precision: Any = None) -> LoadedLPIPS:
    """Reads a directory written by `e4e-jax convert lpips`.

    dtype (None / "float32" / "bfloat16") and precision (None / "default" / "high" / "highest"):
    the numeric policy of every convolution (e4e_jax.core.precision); ValueError otherwise."""
    policy = module_kwargs(dtype, precision)
    md = load_model_dir(path, LPIPS_KIND)
    net = md.config.get("net")
    if net not in NETS:
        raise ModelDirError(f"{path!r}: config net must be one of {NETS}, found {net!r}.")
    module = LPIPS(net, **policy)
    probe = jnp.zeros((1, 64, 64, 3), jnp.float32)
    _check_variables(module, md.variables, (probe, probe), path, f"LPIPS ({net})")
    return LoadedLPIPS(module, md.variables, md.config)


def arcface_module(config: Mapping[str, Any], path: str = "<config>", dtype: Any = None,
                   precision: Any = None) -> ArcFace:
    try:
        units = config.get("units")
        return ArcFace(num_layers=int(config.get("num_layers", 50)),
                       mode=str(config.get("mode", "ir_se")),
                       widths=tuple(int(w) for w in config.get("widths", (64, 128, 256, 512))),
                       units=None if units is None else tuple(int(u) for u in units),
                       embedding_dim=int(config.get("embedding_dim", 512)),
                       affine=bool(config.get("affine", True)),
                       **module_kwargs(dtype, precision))
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{path!r}: invalid ArcFace config {dict(config)}: {e}") from e


def moco_module(config: Mapping[str, Any], path: str = "<config>", dtype: Any = None,
                precision: Any = None) -> MocoFeatures:
    try:
        return MocoFeatures(blocks=tuple(int(b) for b in config.get("blocks", (3, 4, 6, 3))),
                            widths=tuple(int(w) for w in config.get("widths", (64, 128, 256, 512))),
                            stem_width=int(config.get("stem_width", 64)),
                            input_size=int(config.get("input_size", 224)),
                            **module_kwargs(dtype, precision))
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{path!r}: invalid MoCo config {dict(config)}: {e}") from e


def load_arcface(path: str, dtype: Any = None, precision: Any = None) -> LoadedSimilarityNet:
    """Reads a directory written by `e4e-jax convert arcface` (dtype / precision: as
    load_lpips)."""
    module_kwargs(dtype, precision)
    md = load_model_dir(path, ARCFACE_KIND)
    module = arcface_module(md.config, path, dtype, precision)
    if module.mode not in ("ir", "ir_se"):
        raise ModelDirError(f"{path!r}: ArcFace mode must be 'ir' or 'ir_se', found "
                            f"{module.mode!r}.")
    _check_variables(module, md.variables,
                     (jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32),), path, "ArcFace")
    return LoadedSimilarityNet(module, md.variables, ARCFACE_KIND, md.config)


def load_moco(path: str, dtype: Any = None, precision: Any = None) -> LoadedSimilarityNet:
    """Reads a directory written by `e4e-jax convert moco` (dtype / precision: as
    load_lpips)."""
    module_kwargs(dtype, precision)
    md = load_model_dir(path, MOCO_KIND)
    module = moco_module(md.config, path, dtype, precision)
    _check_variables(module, md.variables,
                     (jnp.zeros((1, module.input_size, module.input_size, 3), jnp.float32),),
                     path, "MoCo ResNet-50")
    return LoadedSimilarityNet(module, md.variables, MOCO_KIND, md.config)
