"""Step time of the full e4e training configuration (FFHQ: 1024 generator, batch 8, all losses).

    python benchmarks/train_step.py                    # official sizes, batch 8
    python benchmarks/train_step.py --batch 4 --steps 3
    python benchmarks/train_step.py --resolution 256   # a 256 generator (LSUN-size)

Random weights stand in for the pretrained files (same shapes, same compute): the 1024x1024
channel-multiplier-2 generator, the IR-SE-50 e4e encoder, LPIPS-alex, ArcFace IR-SE-50, the latent
discriminator with R1 on the timed steps (step % 16 == 0 pays for it; the others do not: both
kinds are timed), Ranger. Prints the device, compile time, XLA's memory estimate, per-step time,
images/s and peak memory.

Memory: XLA's buffers for the 1024 step are about 4.3 GiB of state (encoder, Ranger's three
slots) plus ~1.5 GiB + ~2.1 GiB per image of temporaries (batch 8: 18.8 + 4.3 GiB), so batch 8
does not fit a 24 GiB CPU host; `--compile-only` prints the estimate without running.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps after the compile step")
    p.add_argument("--compile-only", action="store_true",
                   help="stop after printing the compile time and XLA's memory estimate")
    args = p.parse_args()

    from configs import ffhq_encode
    from e4e_jax import losses as L
    from e4e_jax import trainer
    from e4e_jax.models.arcface import ArcFace
    from e4e_jax.models.lpips import LPIPS

    config = ffhq_encode.get_config()
    config.generator.path = None
    config.generator.init.resolution = args.resolution
    config.generator.init.max_channels = 0
    config.generator.init.n_mlp = 8
    config.encoder.init = "random"
    config.batch_size = args.batch
    config.progressive.start = 0          # every delta active: the most expensive stage
    config.latent_avg_samples = 1000
    key = jax.random.key(0)
    lp, arc = LPIPS("alex"), ArcFace()
    nets = {"lpips": L.LossNet(lp, lp.init(key, jnp.zeros((1, 64, 64, 3)),
                                           jnp.zeros((1, 64, 64, 3)))),
            "id": L.LossNet(arc, arc.init(key, jnp.zeros((1, 256, 256, 3))))}
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, cpu threads "
          f"{os.cpu_count()}, jax {jax.__version__}, load avg {os.getloadavg()[0]:.2f}")
    print(f"config: generator {args.resolution}px (channel multiplier 2), e4e IR-SE-50 encoder "
          f"256x256, LPIPS-alex + ArcFace + L2 + d-reg + latent discriminator, batch "
          f"{args.batch}, Ranger")
    t0 = time.perf_counter()
    setup = trainer.build(config, nets=nets)
    compiled = trainer.compile_functions(setup)
    state = trainer.create_train_state(setup)
    x = jax.random.uniform(jax.random.key(1), (args.batch, 256, 256, 3), minval=-1, maxval=1)
    batch = {"image": trainer.to_global(x, compiled.batch_sharding)}
    print(f"set-up (random weights, latent_avg): {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    lowered = compiled.train_step.lower(state, setup.frozen, batch)
    exe = lowered.compile()
    print(f"compile: {time.perf_counter() - t0:.1f}s", flush=True)
    mem = exe.memory_analysis()
    if mem is not None:
        print(f"XLA memory estimate: temporaries {mem.temp_size_in_bytes / 2**30:.2f} GiB, "
              f"arguments {mem.argument_size_in_bytes / 2**30:.2f} GiB, outputs "
              f"{mem.output_size_in_bytes / 2**30:.2f} GiB", flush=True)
    if args.compile_only:
        return
    t0 = time.perf_counter()
    state, m = exe(state, setup.frozen, batch)      # step 0: with R1
    jax.block_until_ready(m)
    print(f"step 0 (discriminator R1 step): {time.perf_counter() - t0:.2f}s", flush=True)
    times = []
    for _ in range(args.steps):
        batch = {"image": trainer.to_global(x, compiled.batch_sharding)}
        t0 = time.perf_counter()
        state, m = exe(state, setup.frozen, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        print(f"step time {times[-1]:.2f}s  loss {float(m['loss']):.4f}", flush=True)
    step = statistics.median(times)
    print(f"median step {step:.2f}s, {args.batch / step:.2f} images/s, "
          f"{step / args.batch:.2f} s/image")
    print_peak_memory()


if __name__ == "__main__":
    main()
