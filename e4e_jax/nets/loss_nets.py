"""Loaders of the frozen loss networks: LPIPS, ArcFace IR-SE-50 (identity) and MoCo v2 ResNet-50.

    lp = e4e_jax.load_lpips("weights/lpips_alex")        # `e4e-jax convert lpips` output
    d = lp(x, y)                                         # (N,) LPIPS per pair; .mean() = official
    maps = lp.features(x)                                # five unit-normalised NHWC maps

    arc = e4e_jax.load_arcface("weights/arcface")        # `e4e-jax convert arcface` output
    moco = e4e_jax.load_moco("weights/moco")             # `e4e-jax convert moco` output
    f = arc.features(images)                             # (N, 512), l2-normalised
    loss, improvement, sims = arc.loss(y_hat, y, x)      # IDLoss.forward's values

Images are NHWC float32 in [-1, 1] (numpy or jax). Every object is the package's one shape of a
network bound to its weights (e4e_jax.nets.base.BoundNet: `.module`, `.variables`, pure `apply`,
compiled `run`, `with_policy`) and exposes `.net` (a `e4e_jax.losses.LossNet`) for use inside a
jitted training step or inversion.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from e4e_jax.core.precision import module_kwargs
from e4e_jax.models.arcface import IMAGE_SIZE, ArcFace
from e4e_jax.models.lpips import LPIPS, NETS, check_input_size
from e4e_jax.models.resnet import MocoFeatures
from e4e_jax.nets.base import BoundNet
from e4e_jax.nets.model_dir import ModelDirError, check_tree, load_model_dir

LPIPS_KIND = "lpips"
ARCFACE_KIND = "arcface_ir_se50"
MOCO_KIND = "moco_resnet50"

__all__ = ["load_lpips", "load_arcface", "load_moco", "LoadedLPIPS", "LoadedSimilarityNet",
           "similarity_loss"]


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


def similarity_loss(net: BoundNet, y_hat: jax.Array, y: jax.Array, x: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """IDLoss / MocoLoss.forward (criteria/id_loss.py, criteria/moco_loss.py): (loss,
    sim_improvement, sims (N, 3)) for NHWC images in [-1, 1] and `net` (a LossNet) returning
    unit features. The training's "id" term (e4e_jax.losses re-exports it) and the loaded
    networks' `loss` verb. ValueError on unequal image shapes.

    loss = mean(1 - <f(y_hat), f(y)>) with f(y) a constant; sim_improvement =
    mean(<f(y_hat), f(y)> - <f(y), f(x)>); sims rows = [diff_target, diff_input, diff_views].
    """
    for a, b in ((y_hat, y), (y, x)):
        if a.shape != b.shape:
            raise ValueError(f"similarity_loss: images must have equal shapes, got {a.shape} "
                             f"and {b.shape}.")
    n = y_hat.shape[0]
    f_hat = net(y_hat)
    # y and x only need values: one pass without a backward
    f_yx = jax.lax.stop_gradient(net(jnp.concatenate([y, x], axis=0)))
    f_y, f_x = f_yx[:n], f_yx[n:]
    diff_target = jnp.sum(f_hat * f_y, axis=-1)
    diff_input = jnp.sum(f_hat * f_x, axis=-1)
    diff_views = jnp.sum(f_y * f_x, axis=-1)
    loss = jnp.mean(1.0 - diff_target)
    improvement = jax.lax.stop_gradient(jnp.mean(diff_target - diff_views))
    sims = jax.lax.stop_gradient(jnp.stack([diff_target, diff_input, diff_views], axis=-1))
    return loss, improvement, sims


def _check_variables(module, variables, example_args, path: str, what: str) -> None:
    if variables is None:
        raise ModelDirError(f"{path!r} has no variables.msgpack; the conversion did not finish. "
                            f"Run the converter again.")
    expected = jax.eval_shape(module.init, jax.random.key(0), *example_args)
    check_tree(expected, variables, f"{what} in {path!r}")


class LoadedLPIPS(BoundNet):
    """LPIPS v0.1 with its variables (a `BoundNet`): `lp(x, y)` -> (N,) distances,
    `lp.features(x)`, `lp.loss(x, y)` -> scalar, all compiled on the own variables; `lp.net`
    (a LossNet) for a training step or an inversion's jit; `lp.apply(variables, x, y)` pure.
    Reproduces the `lpips` package's LPIPS(net=..., version="0.1") forward."""

    tree_meta = ("config",)

    def __init__(self, module: LPIPS, variables: Mapping[str, Any], config: Mapping | None = None):
        super().__init__(module, jax.tree_util.tree_map(jnp.asarray, dict(variables)),
                         config=dict(config or {"net": module.net}))

    @property
    def net_type(self) -> str:
        return self.module.net

    @property
    def net(self) -> BoundNet:
        """The module and variables as a LossNet: `net(x, y)` distances, `net(x,
        method="features")` the unit-normalised feature maps, inside a caller's jit."""
        return BoundNet(self.module, self.variables)

    def _checked(self, x, what: str) -> jax.Array:
        x = as_images(x, what)
        check_input_size(self.module.net, x.shape[1:3])
        return x

    def __call__(self, x, y) -> jax.Array:
        """(N,) LPIPS of each pair of NHWC images in [-1, 1]; ValueError on unequal shapes,
        non-float images or images too small for the net."""
        x, y = as_images(x, "LPIPS"), as_images(y, "LPIPS")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS compares images of equal shape, got {x.shape} and {y.shape}.")
        check_input_size(self.module.net, x.shape[1:3])
        return self.run("apply", x, y)

    def loss(self, x, y) -> jax.Array:
        """The official batch value: sum over pairs divided by the batch size."""
        return jnp.mean(self(x, y))

    def features(self, x) -> list[jax.Array]:
        """The five (alex, vgg) unit-normalised NHWC feature maps of images in [-1, 1]."""
        return self.run("apply", self._checked(x, "LPIPS.features"), method="features")

    def __repr__(self) -> str:
        return f"LoadedLPIPS(net={self.module.net!r})"


class LoadedSimilarityNet(BoundNet):
    """ArcFace or MoCo with its variables (a `BoundNet`): `features(images)` -> (N, D) unit
    vectors, `loss(y_hat, y, x)` -> IDLoss / MocoLoss.forward's values, both compiled; `net`
    (a LossNet) for a training step. kind: "arcface_ir_se50" or "moco_resnet50"."""

    tree_static = ("module", "kind")
    tree_meta = ("config",)

    def __init__(self, module, variables: Mapping[str, Any], kind: str,
                 config: Mapping | None = None):
        super().__init__(module, jax.tree_util.tree_map(jnp.asarray, dict(variables)),
                         kind=kind, config=dict(config or {}))

    @property
    def net(self) -> BoundNet:
        """The module and variables as a LossNet: `net(images)` -> unit features in a jit."""
        return BoundNet(self.module, self.variables)

    def apply_loss(self, variables, y_hat, y, x) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Pure: e4e_jax.losses.similarity_loss of the net with `variables`."""
        return similarity_loss(BoundNet(self.module, variables), y_hat, y, x)

    def apply_similarity(self, variables, a, b) -> jax.Array:
        """Pure: (N,) <f(a), f(b)>, the cosine similarity of each pair's unit features."""
        return jnp.sum(self.module.apply(variables, a) * self.module.apply(variables, b), axis=-1)

    def _images(self, x, what: str) -> jax.Array:
        x = as_images(x, what)
        if self.kind == ARCFACE_KIND and x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{what}: the identity loss takes 256x256 aligned faces (it crops "
                             f"rows 35:223, columns 32:220), got {x.shape[1]}x{x.shape[2]}.")
        return x

    def features(self, images) -> jax.Array:
        """(N, D) float32 l2-normalised features of NHWC images in [-1, 1]."""
        return self.run("apply", self._images(images, f"{self.kind} features"))

    def similarity(self, a, b) -> jax.Array:
        """(N,) cosine similarity of the features of each pair of NHWC images in [-1, 1]."""
        what = f"{self.kind} similarity"
        return self.run("apply_similarity", self._images(a, what), self._images(b, what))

    def loss(self, y_hat, y, x) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(loss, similarity improvement, per-sample [diff_target, diff_input, diff_views])."""
        what = f"{self.kind} loss"
        y_hat, y, x = self._images(y_hat, what), self._images(y, what), self._images(x, what)
        if not (y_hat.shape == y.shape == x.shape):
            raise ValueError(f"{what}: y_hat, y and x must have equal shapes, got {y_hat.shape}, "
                             f"{y.shape}, {x.shape}.")
        return self.run("apply_loss", y_hat, y, x)

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
