"""Deterministic synthetic weights for the reference fixtures.

Every tensor of a reference checkpoint is

    value = offset + scale * u(key, shape, seed)

where u is uniform in [-1, 1), drawn from splitmix64 over a counter seeded by
crc32(key) and the fixture's seed.  Given a fixture's manifest.json
(key -> shape, dtype, scale, offset) anyone can rebuild the exact state dict
with numpy alone, on any platform and numpy version.

    from tests.support.synth_weights import build_state_dict
    state = build_state_dict(json.load(open("manifest.json")))

Integer tensors (BatchNorm's num_batches_tracked) are filled with `offset`.
"""
import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform(key: str, shape, seed: int = 0) -> np.ndarray:
    """Uniform [-1, 1) float64 array of `shape`, a pure function of (key, seed)."""
    n = int(np.prod(shape, dtype=np.int64))
    state = np.uint64(((zlib.crc32(key.encode()) & 0xFFFFFFFF) << 32) | (seed & 0xFFFFFFFF))
    with np.errstate(over="ignore"):
        z = state + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    return (2.0 * u - 1.0).reshape(tuple(shape))


def synth(key: str, shape, seed: int, scale: float, offset: float = 0.0, dtype: str = "float32") -> np.ndarray:
    if dtype.startswith("int"):
        return np.full(tuple(shape), int(offset), dtype=dtype)
    return (offset + scale * uniform(key, shape, seed)).astype(dtype)


def build_state_dict(manifest: dict) -> dict:
    """{key: numpy array} for every tensor listed in manifest["tensors"], in order."""
    seed = int(manifest["seed"])
    return {
        key: synth(key, spec["shape"], seed, spec.get("scale", 0.0), spec.get("offset", 0.0), spec.get("dtype", "float32"))
        for key, spec in manifest["tensors"].items()
    }


if __name__ == "__main__":  # self-check: fixed values that must never change
    v = uniform("decoder.style.1.weight", (4,), seed=1)
    print(v)
