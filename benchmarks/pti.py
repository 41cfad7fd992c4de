"""PTI tuning speed (e4e_jax.pti.tune): steps/s of the compiled loop and its compile time.

    python benchmarks/pti.py                         # fixture size (32 px ADA) and 256 px
    python benchmarks/pti.py --resolutions 256 1024 --steps 5 --locality

Random weights, one image, LPIPS-alex (random weights), float32, threshold -inf (no early stop).
Each case runs `tune` twice with the same shapes: the first call compiles (compile + steps), the
second reuses the compiled loop; steps/s = steps / second call. Prints device, thread count and
load average (the machine may be shared). Sizes: "fixture" is the pti_tuning fixture's generator
(32 px, channels 32/32/32/16, w_dim 512, 8 mapping layers); 256 / 1024 use the official widths
(channel multiplier 2).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402


def make(resolution):
    from e4e_jax.generator import init_generator
    if resolution == "fixture":
        g = init_generator(jax.random.key(0), 32, channels=(32, 32, 32, 16),
                           with_latent_avg=False)
    else:
        g = init_generator(jax.random.key(0), int(resolution), channel_multiplier=2,
                           with_latent_avg=False)
    g.latent_avg = np.zeros((g.style_dim,), np.float32)
    return g


def lpips_alex():
    from e4e_jax.loss_nets import LoadedLPIPS
    from e4e_jax.models.lpips import LPIPS
    module = LPIPS("alex")
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    return LoadedLPIPS(module, module.init(jax.random.key(1), x, x))


def bench(resolution, steps: int, locality: bool, lp) -> dict:
    from e4e_jax import pti
    g = make(resolution)
    rs = np.random.RandomState(0)
    pivot = np.asarray(g.broadcast(g.mapping(rs.randn(1, g.z_dim))))
    target = np.clip(rs.randn(1, g.resolution, g.resolution, 3), -1, 1).astype(np.float32)
    kw = dict(lpips=lp, steps=steps, lpips_threshold=-np.inf, locality=locality)
    t0 = time.perf_counter()
    pti.tune(g, pivot, target, **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = pti.tune(g, pivot, target, **kw)
    second = time.perf_counter() - t0
    assert res.num_updates == steps
    return dict(compile_s=first - second, step_s=second / steps, steps_per_s=steps / second)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", nargs="+", default=["fixture", "256"])
    p.add_argument("--steps", type=int, nargs="+", default=[20, 3],
                   help="steps per case (one value, or one per resolution)")
    p.add_argument("--locality", action="store_true", help="with the locality regulariser")
    args = p.parse_args()
    steps = args.steps * len(args.resolutions) if len(args.steps) == 1 else args.steps
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, cpu threads "
          f"visible: {os.cpu_count()}, jax {jax.__version__}, load avg "
          f"{os.getloadavg()[0]:.2f}, float32, batch 1, locality {args.locality}, "
          f"{time.strftime('%Y-%m-%d')}")
    lp = lpips_alex()
    print(f"{'size':>8} {'steps':>5} {'compile s':>10} {'s/step':>8} {'steps/s':>8}")
    for r, n in zip(args.resolutions, steps):
        m = bench(r, n, args.locality, lp)
        print(f"{r:>8} {n:>5} {m['compile_s']:>10.1f} {m['step_s']:>8.3f} "
              f"{m['steps_per_s']:>8.2f}", flush=True)
    print_peak_memory()


if __name__ == "__main__":
    main()
