"""Throughput of the evaluation metrics and the cost of one Ranger step.

    python benchmarks/metrics.py                         # batch 16, 256px, 64 images
    python benchmarks/metrics.py --batch 32 --images 256 --inception weights/fid_inception

Cases (full-size networks with random weights unless a converted directory is given; float32):
- FID Inception-v3 pool3 features of 256x256 images (resized to 299 inside), images / s;
- SWD descriptors (Laplacian pyramid + 128 7x7 patches per level and image), images / s;
- the sliced Wasserstein distance of one pyramid level for 1,000 images (128,000 descriptors);
- one jitted Ranger update of a 1M-parameter pytree.
Prints the device, the load average, the compile time (first call) and the median time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax

from e4e_jax.evaluation import metrics
from e4e_jax.core.optim import ranger


def timed(fn, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--inception", default=None, help="converted FID Inception directory")
    args = p.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"load average {os.getloadavg()[0]:.1f}, batch {args.batch}, {args.size}px")
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (args.images, args.size, args.size, 3)).astype(np.float32)

    if args.inception:
        inception = metrics.load_inception(args.inception)
    else:
        from e4e_jax.models.inception import FIDInceptionV3
        v = FIDInceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
        inception = metrics.LoadedInception(v)
    first, med = timed(lambda: inception.features(images[:args.batch], batch_size=args.batch),
                       args.repeats)
    print(f"FID Inception features: compile+first {first:.1f} s, {args.batch / med:.1f} images/s")

    first, med = timed(lambda: metrics.SWDDescriptors(batch_size=args.batch).add(
        images[:args.batch]).count, args.repeats)
    print(f"SWD descriptors:        compile+first {first:.1f} s, {args.batch / med:.1f} images/s")

    desc = rng.normal(size=(128_000, 147)).astype(np.float32)
    key = jax.random.key(0)
    first, med = timed(lambda: metrics.sliced_wasserstein(desc, desc + 0.1, key), 1)
    print(f"SWD of one level, 1,000 images: {med:.1f} s "
          f"(sort on {'numpy' if jax.default_backend() == 'cpu' else 'device'})")

    params = {"conv": {"kernel": jnp.ones((3, 3, 256, 256))},
              "dense": {"kernel": jnp.ones((512, 512)), "bias": jnp.zeros(512)}}
    opt = ranger(1e-4)
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    grads = jax.tree.map(jnp.ones_like, params)
    first, med = timed(lambda: step(params, state, grads), args.repeats)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"Ranger step ({n / 1e6:.2f}M params): compile+first {first:.1f} s, {med * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
