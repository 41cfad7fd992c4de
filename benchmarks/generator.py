"""Synthesis throughput of the StyleGAN2 generator: images/s and compile time.

    python benchmarks/generator.py                      # 256 and 1024, batch 1 and 8
    python benchmarks/generator.py --resolutions 1024 --batches 1 4 --repeats 3

Official widths (channel multiplier 2), random weights, 'const' noise, float32. Prints the device,
the thread count and, per case, the compile time (first call) and the median steady-state time.
Compare with the official PyTorch numbers in the README (same machine class, same batch).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402


def bench(resolution: int, batch: int, repeats: int, noise: str) -> dict:
    from e4e_jax.nets.generator import init_generator
    g = init_generator(jax.random.key(0), resolution, channel_multiplier=2, with_latent_avg=False)
    w_plus = jax.random.normal(jax.random.key(1), (batch, g.n_latent, 512))
    rng = jax.random.key(2) if noise == "random" else None
    lowered, args = g.lower("synthesize", w_plus, noise=noise, rng=rng)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    compiled(*args).block_until_ready()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled(*args).block_until_ready()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return dict(resolution=resolution, batch=batch, compile_s=compile_s, step_s=step,
                s_per_image=step / batch, images_per_s=batch / step)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--noise", default="const", choices=["const", "random", "none"])
    args = p.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
          f"cpu threads visible: {os.cpu_count()}, jax {jax.__version__}, load avg "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'res':>5} {'batch':>5} {'compile s':>10} {'step s':>8} {'s/image':>8} {'images/s':>9}")
    for r in args.resolutions:
        for b in args.batches:
            m = bench(r, b, args.repeats, args.noise)
            print(f"{r:>5} {b:>5} {m['compile_s']:>10.2f} {m['step_s']:>8.3f} "
                  f"{m['s_per_image']:>8.3f} {m['images_per_s']:>9.2f}", flush=True)
    print_peak_memory()


if __name__ == "__main__":
    main()
