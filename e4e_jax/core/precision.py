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
      - the generator layers below the top `low_precision_res` resolutions (below);
      - BatchNorm statistics and rsqrt, the unit / l2 normalisations of LPIPS, ArcFace, MoCo
        (sums of squares over 512-2048 channels lose digits in bfloat16);
      - the encoders' W+ output, the latent discriminator, the W pools, softplus / R1 (a second
        derivative) and every loss reduction (means over the batch and the pixels).
precision: None (JAX's default, which on GPUs / TPUs may be TF32 / one bfloat16 pass), "default",
    "high" or "highest" (float32-exact; what the parity tests use). Passed to every
    `conv_general_dilated` and `dot_general` of every network, including the fixed resize
    matrices of e4e_jax.core.ops (which use "highest" when the policy says None, to stay exact).
low_precision_res: how many of the generators' top resolutions compute in the reduced dtype
    (the official StyleGAN2-ADA / StyleGAN3 `num_fp16_res`). None (default): the official
    split, `DEFAULT_LOW_PRECISION_RES` = 4 (StyleGAN3: the generator's own num_fp16_res); 0: no
    generator layer; a large value (e.g. 32): every layer the official code can run in fp16
    (StyleGAN2: all but the 4x4 ones; StyleGAN3: all but the input).
    The lower resolutions keep float32 whatever the dtype: bfloat16 in every StyleGAN2 layer
    gives 23.5 dB reconstruction PSNR against float32 on the e4e fixture, the default split
    over 30 dB (benchmarks/RESULTS.md, "dtype policy"). Only the generators read it. The
    IR-SE encoders (e4e, pSp, ReStyle's IR-SE ones) have their own split (models/encoders.py,
    `float32_stages`, default DEFAULT_FLOAT32_STAGES): input layer and IR-SE third stage in
    float32, e4e inversion 32.1 dB against float32 on that fixture instead of 22.9 with every
    layer in bfloat16. The loss networks compute in `dtype` throughout.
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
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PRECISIONS = {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}
REMATS = ("none", "blocks")
# official StyleGAN2-ADA train.py / StyleGAN3 train.py: num_fp16_res = 4 ("enable
# mixed-precision training"), with conv_clamp = 256 against fp16 overflow; bfloat16 has
# float32's exponent range, so the clamp is not needed for it (a generator keeps the conv_clamp
# its checkpoint sets, in every dtype, as the official code does)
DEFAULT_LOW_PRECISION_RES = 4
FLOAT32_PARTS = ("mapping", "modulation", "demodulation", "to_rgb skip",
                 "generator layers below the top low_precision_res resolutions",
                 "encoder input layer, IR-SE third stage, BatchNorm outputs, SE gates and "
                 "residual sums",
                 "batchnorm statistics",
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


def check_low_precision_res(low_precision_res: Any) -> int | None:
    """None or an integer >= 0 (see the module docstring) -> itself; ValueError otherwise."""
    k = low_precision_res
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"low_precision_res must be None (the official split, "
                         f"{DEFAULT_LOW_PRECISION_RES}) or an integer >= 0, got {k!r}.")
    return int(k)


def low_precision_from(resolution: int, low_precision_res: int | None) -> int:
    """The lowest resolution whose StyleGAN2 layers compute in the reduced dtype, for a
    generator of output `resolution` (a power of two): StyleGAN2-ADA's SynthesisNetwork
    fp16_resolution = max(2 ** (log2 R + 1 - k), 8), k = low_precision_res (None:
    DEFAULT_LOW_PRECISION_RES): the top k resolutions, never the 4x4 layers (the official
    code keeps them in float32 whatever num_fp16_res). k = 0 gives 2 * resolution (no layer)."""
    k = check_low_precision_res(low_precision_res)
    k = DEFAULT_LOW_PRECISION_RES if k is None else k
    log = int(round(np.log2(resolution)))
    return max(2 ** max(log + 1 - k, 0), 8)


@dataclasses.dataclass(frozen=True)
class Policy:
    """dtype ("float32" | "bfloat16"), precision (None | "default" | "high" | "highest"),
    remat ("none" | "blocks"), low_precision_res (None | int >= 0: the generators' layers in
    `dtype`); validated on construction (ValueError naming the choices)."""
    dtype: str = "float32"
    precision: str | None = None
    remat: str = "none"
    low_precision_res: int | None = None

    def __post_init__(self):
        compute_dtype(self.dtype)
        lax_precision(self.precision)
        check_remat(self.remat)
        check_low_precision_res(self.low_precision_res)

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
