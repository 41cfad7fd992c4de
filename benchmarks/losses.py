"""Forward + backward time of the loss networks: LPIPS (AlexNet / VGG), ArcFace IR-SE-50, MoCo.

    python benchmarks/losses.py                              # lpips_alex, arcface, moco; batch 8
    python benchmarks/losses.py --nets lpips_alex lpips_vgg --batch 4 --repeats 5
    python benchmarks/losses.py --arcface converted/arcface  # real weights (same timing)

Each case times one jitted `jax.value_and_grad` of the official loss w.r.t. the reconstructions
y_hat (the network's weights passed as an argument, as inside a training step) on 256x256 NHWC
images: LPIPS(y_hat, y).mean(); the identity / MoCo loss of (y_hat, y, x) (f(y), f(x) without
gradient). Full-size networks with random weights unless a converted directory is given; float32.
Prints the device, the thread count, the load average, and per case the compile time (first call)
and the median steady-state time.
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

from e4e_jax import losses
from e4e_jax.losses import LossNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402

NETS = ("lpips_alex", "lpips_vgg", "arcface", "moco")


def build(name: str, path: str | None) -> LossNet:
    from e4e_jax.nets import loss_nets
    from e4e_jax.models.lpips import LPIPS
    if name.startswith("lpips"):
        if path:
            return loss_nets.load_lpips(path).net
        module = LPIPS(name.split("_")[1])
        probe = jnp.zeros((1, 64, 64, 3))
        return LossNet(module, jax.jit(module.init)(jax.random.key(0), probe, probe))
    if path:
        return (loss_nets.load_arcface if name == "arcface" else loss_nets.load_moco)(path).net
    module = loss_nets.arcface_module({}) if name == "arcface" else loss_nets.moco_module({})
    size = 256 if name == "arcface" else module.input_size
    return LossNet(module, jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def loss_fn(name: str):
    if name.startswith("lpips"):
        return lambda y_hat, y, x, net: losses.lpips_loss(net, y_hat, y)
    return lambda y_hat, y, x, net: losses.similarity_loss(net, y_hat, y, x)[0]


def bench(name: str, batch: int, size: int, repeats: int, path: str | None) -> dict:
    net = build(name, path)
    keys = jax.random.split(jax.random.key(1), 3)
    y_hat, y, x = (jax.random.uniform(k, (batch, size, size, 3), minval=-1, maxval=1) for k in keys)
    step = jax.jit(jax.value_and_grad(loss_fn(name)))
    t0 = time.perf_counter()
    compiled = step.lower(y_hat, y, x, net).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(y_hat, y, x, net))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(y_hat, y, x, net))
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return dict(compile_s=compile_s, step_s=t, images_per_s=batch / t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["lpips_alex", "arcface", "moco"], choices=NETS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lpips", default=None, help="converted LPIPS directory (its net is used)")
    p.add_argument("--arcface", default=None, help="converted ArcFace directory")
    p.add_argument("--moco", default=None, help="converted MoCo directory")
    args = p.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
          f"cpu threads visible: {os.cpu_count()}, jax {jax.__version__}, load avg "
          f"{os.getloadavg()[0]:.2f}")
    print(f"forward + backward w.r.t. y_hat, batch {args.batch}, {args.size}x{args.size}")
    print(f"{'net':>11} {'compile s':>10} {'step s':>8} {'images/s':>9}")
    for name in args.nets:
        path = args.lpips if name.startswith("lpips") else getattr(args, name)
        m = bench(name, args.batch, args.size, args.repeats, path)
        print(f"{name:>11} {m['compile_s']:>10.2f} {m['step_s']:>8.3f} {m['images_per_s']:>9.2f}",
              flush=True)
    print(f"load avg after: {os.getloadavg()[0]:.2f}")
    print_peak_memory()


if __name__ == "__main__":
    main()
