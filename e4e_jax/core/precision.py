"""The numeric policy of every network: compute dtype, matmul / convolution precision, remat.

One `Policy` is built from the config (`dtype`, `precision`, `remat`) or from the loaders'
arguments and handed to the modules as two plain fields, `dtype` and `precision` (the Flax
convention: `nn.Conv(dtype=..., precision=...)`), so a module never decides either itself.

    policy = Policy(dtype="bfloat16", precision="highest", remat="blocks")
    gen = load_generator(path, **policy.loader_kwargs())

dtype: "float32" (default: bit-identical to the code before this option existed) or "bfloat16".
    Parameters, optimizer states, batch statistics, W / W+ codes and images stay float32;
    activations and the convolutions / matmuls of the large networks run in the compute dtype.
    These parts always compute in float32 (`FLOAT32_PARTS`), because bfloat16's 8-bit mantissa
    is not enough there:
      - the StyleGAN2 mapping network, the styles (modulation) and the demodulation factors:
        per-sample scales of every convolution, an error there scales a whole layer;
      - the ToRGB skip image (3 channels, accumulated over 9 resolutions; costs nothing);
      - BatchNorm statistics and rsqrt, the unit / l2 normalisations of LPIPS, ArcFace, MoCo
        (sums of squares over 512-2048 channels lose digits in bfloat16);
      - the encoders' W+ output, the latent discriminator, the W pools, softplus / R1 (a second
        derivative) and every loss reduction (means over the batch and the pixels).
precision: None (JAX's default, which on GPUs / TPUs may be TF32 / one bfloat16 pass), "default",
    "high" or "highest" (float32-exact; what the parity tests use). Passed to every
    `conv_general_dilated` and `dot_general` of every network, including the fixed resize
    matrices of e4e_jax.core.ops (which use "highest" when the policy says None, to stay exact).
remat: "none" or "blocks" (training step: the synthesis network runs one image at a time as a
    rematerialised scan over the batch, each generator layer and each encoder unit is
    recomputed in the backward pass; `Generator.per_image_from`). XLA's estimate for the FFHQ
    step at 1024 px batch 8 drops from 23.1 GiB to 10.7 GiB (float32) / 9.6 GiB (bfloat16).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PRECISIONS = {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}
REMATS = ("none", "blocks")
FLOAT32_PARTS = ("mapping", "modulation", "demodulation", "to_rgb skip", "batchnorm statistics",
                 "unit/l2 normalisation", "encoder W+ output", "latent discriminator", "W pool",
                 "softplus / R1", "loss reductions")


def compute_dtype(dtype: Any) -> Any:
    """"float32" / "bfloat16" / a numpy dtype / None (float32) -> the jnp dtype."""
    if dtype is None:
        return jnp.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}.")
        return DTYPES[dtype]
    d = jnp.dtype(dtype)
    if d not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"dtype must be float32 or bfloat16, got {d}.")
    return d.type


def lax_precision(precision: Any) -> jax.lax.Precision | None:
    """None / "default" / "high" / "highest" / a jax.lax.Precision -> what lax takes."""
    if precision is None or isinstance(precision, jax.lax.Precision):
        return precision
    if isinstance(precision, str) and precision.lower() in PRECISIONS:
        return PRECISIONS[precision.lower()]
    raise ValueError(f"precision must be None or one of {tuple(PRECISIONS)}, got {precision!r}.")


def check_remat(remat: str) -> str:
    if remat not in REMATS:
        raise ValueError(f"remat must be one of {REMATS}, got {remat!r}.")
    return remat


@dataclasses.dataclass(frozen=True)
class Policy:
    """dtype ("float32" | "bfloat16"), precision (None | "default" | "high" | "highest"),
    remat ("none" | "blocks"); validated on construction (ValueError naming the choices)."""
    dtype: str = "float32"
    precision: str | None = None
    remat: str = "none"

    def __post_init__(self):
        compute_dtype(self.dtype)
        lax_precision(self.precision)
        check_remat(self.remat)

    @property
    def compute_dtype(self):
        return compute_dtype(self.dtype)

    @property
    def lax_precision(self):
        return lax_precision(self.precision)

    def module_kwargs(self) -> dict:
        """Fields for the Flax modules (`dtype` None keeps the unchanged float32 path)."""
        dtype = None if self.dtype == "float32" else self.compute_dtype
        return {"dtype": dtype, "precision": self.lax_precision}

    def loader_kwargs(self) -> dict:
        return {"dtype": self.dtype, "precision": self.precision}

    @classmethod
    def from_config(cls, config) -> "Policy":
        get = (config.get if hasattr(config, "get") else lambda k, d: getattr(config, k, d))
        return cls(dtype=get("dtype", "float32") or "float32", precision=get("precision", None),
                   remat=get("remat", "none") or "none")


def module_kwargs(dtype: Any = None, precision: Any = None) -> dict:
    """The loaders' (dtype, precision) arguments as module fields, validated."""
    d = None if dtype is None else compute_dtype(dtype)
    if d is not None and jnp.dtype(d) == jnp.float32:
        d = None
    return {"dtype": d, "precision": lax_precision(precision)}
