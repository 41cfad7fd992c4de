"""Steps per second of the latent-optimisation inversions, the W projector (`e4e_jax.project`)
and PTI (`e4e_jax.inversion.pti.tune`), with the official PyTorch numbers beside ours.

    python benchmarks/invert.py                       # projector: fixture size, 256, 1024
    python benchmarks/invert.py --resolutions 256 --steps 10 --batches 1 4
    python benchmarks/invert.py --method pti --resolutions fixture 256 --steps 5
    python benchmarks/invert.py --official-cmd "python /tmp/official_bench/bench_official.py \\
        --resolution {resolution} --steps {steps} --threads {threads} {official_args}"

Generators are StyleGAN2-ADA configurations with random weights, float32: "fixture" is the
w_projector fixture's 32 px generator (channel_base 512, channel_max 32) with LPIPS-alex, 256 is
ADA's paper256 / FFHQ-256 widths (channel_base 16384, max 512) and 1024 FFHQ's (32768, 512), both
with LPIPS-VGG on the area-downsampled 256 px image, the official recipe. One call of
`e4e_jax.project` runs all `--steps` steps in one compiled lax.scan (plus a 16-sample w_avg); we
time a second call after a warm-up one and report steps/s per image (batch B: B images in
parallel, vmapped).

`--method pti` times the PTI tuning loop (one compiled while_loop over all steps, every synthesis
parameter tuned, loss MSE + LPIPS at full resolution) on the same generators with LPIPS-alex
(PTI's `lpips_type`), the early stop disabled so every call does `--steps` updates; a second call
after a warm-up one, as for the projector. Batch B > 1 is PTI's multi-ID coach (B updates per
step), reported as updates/s.

`--official-cmd` runs a command of yours (formatted with {resolution}, {steps}, {threads},
{official_args}) right after each of our measurements, back to back on the same CPU, and reads the
last JSON line it prints ({"steps_per_s": ...}). No official code ships with e4e_jax: write that
harness from the official repository yourself (benchmarks/RESULTS.md describes the projector and
PTI harnesses used for the published numbers). `--loop step` times the same step dispatched once
per step from Python (state donated; `project` / `pti.tune` with loop="step") instead of the
shipped single compiled loop.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402

# name -> (resolution, channel_base, channel_max, LPIPS net, args for the official harness)
CASES = {
    "fixture": (32, 512, 32, "alex", "--channel-base 512 --channel-max 32 --feature-net alex"),
    "256": (256, 16384, 512, "vgg", "--channel-base 16384 --channel-max 512 --feature-net vgg"),
    "1024": (1024, 32768, 512, "vgg", "--channel-base 32768 --channel-max 512 --feature-net vgg"),
}


def ada_generator(resolution: int, channel_base: int, channel_max: int, seed: int = 0):
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config, official_init
    log = int(np.log2(resolution))
    channels = [min(channel_base // 2 ** k, channel_max) for k in range(2, log + 1)]
    config = dict(resolution=resolution, channels=channels, style_dim=512, n_mlp=8, lr_mlp=0.01,
                  blur_kernel=[1, 3, 3, 1], variant="ada", conv_clamp=None, z_dim=512, c_dim=0)
    module = module_from_config(config)
    return LoadedGenerator(module, official_init(module, jax.random.key(seed)), config)


def random_lpips(net: str, seed: int = 0):
    """LPIPS with He-normal backbone weights and lin weights in [0, 0.2) (speed only)."""
    from e4e_jax.nets.loss_nets import LoadedLPIPS
    from e4e_jax.models.lpips import LPIPS
    module = LPIPS(net)
    probe = jnp.zeros((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), probe, probe)
    draw = np.random.default_rng(seed)

    def fill(node, path):
        if not hasattr(node, "shape"):
            return {k: fill(v, path + (k,)) for k, v in node.items()}
        if path[-2].startswith("lin_"):
            return draw.uniform(0, 0.2, node.shape).astype(np.float32)
        if path[-1] == "bias":
            return np.full(node.shape, 0.01, np.float32)
        fan_in = int(np.prod(node.shape[:-1]))
        return (draw.standard_normal(node.shape) * np.sqrt(2 / fan_in)).astype(np.float32)

    return LoadedLPIPS(module, fill(shapes, ()))


def _time_twice(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return first, time.perf_counter() - t0


def bench_projector(g, lp, steps: int, batch: int, loop: str = "scan") -> dict:
    """`e4e_jax.project` of `batch` random targets in [-1, 1] with fixed draws (w_avg from 16
    samples: the mapping is not what is measured)."""
    from e4e_jax.inversion.projector import project
    rng = np.random.default_rng(1)
    targets = rng.uniform(-1, 1, (batch, g.resolution, g.resolution, 3)).astype(np.float32)
    sides = [s[1] for s in g.module.noise_shapes()]
    noise = [rng.standard_normal((batch, r, r)).astype(np.float32) for r in sides]
    w_noise = rng.standard_normal((batch, steps, g.style_dim)).astype(np.float32)

    def run():
        return project(g, targets, lpips=lp, num_steps=steps, w_avg_samples=16,
                       noise_init=noise, w_noise=w_noise, loop=loop).w_per_step
    first, t = _time_twice(run)
    return dict(first_call_s=first, s_per_step=t / steps, steps_per_s=steps * batch / t)


def bench_pti(g, lp, steps: int, batch: int, loop: str = "scan") -> dict:
    from e4e_jax.inversion import pti
    rng = np.random.default_rng(1)
    target = jnp.asarray(rng.uniform(-1, 1, (batch, g.resolution, g.resolution, 3)), jnp.float32)
    w = np.asarray(g.mapping(rng.standard_normal((batch, g.z_dim)).astype(np.float32)))
    w_pivot = jnp.asarray(np.broadcast_to(w[:, None], (batch, g.n_latent, g.style_dim)))

    def run():  # threshold -inf: no early stop, every call does `steps` * batch updates
        res = pti.tune(g, w_pivot, target, lpips=lp, steps=steps, lpips_threshold=-np.inf,
                       loop=loop)
        assert res.num_updates == steps * batch, res.num_updates
        return res.history["loss"]
    first, t = _time_twice(run)
    return dict(first_call_s=first, s_per_step=t / (steps * batch),
                steps_per_s=steps * batch / t)


def run_official(cmd: str, resolution: int, steps: int, threads: int, extra: str) -> dict | None:
    line = cmd.format(resolution=resolution, steps=steps, threads=threads, official_args=extra)
    proc = subprocess.run(shlex.split(line), capture_output=True, text=True)
    for out in reversed(proc.stdout.strip().splitlines()):
        if out.startswith("{"):
            return json.loads(out)
    print(f"  official command failed (rc {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="projector", choices=["projector", "pti"])
    p.add_argument("--resolutions", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--steps", type=int, default=5, help="steps per timed call (default 5)")
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--loop", default="scan", choices=["scan", "step"],
                   help="scan: the shipped loop, every step inside one compiled lax.scan "
                        "(projector) / while_loop (PTI); step: one donated jitted step per "
                        "dispatch from Python")
    p.add_argument("--official-cmd", default=None,
                   help="command printing the official steps/s as a JSON line (see docstring)")
    p.add_argument("--official-steps", type=int, default=None,
                   help="steps the official harness times (default --steps)")
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.steps < 1:
        print("error: --steps and --batches must be >= 1.", file=sys.stderr)
        return 2
    dev = jax.devices()[0]
    threads = os.cpu_count()
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, cpu threads visible: "
          f"{threads}, jax {jax.__version__}, float32, load avg {os.getloadavg()[0]:.2f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: python benchmarks/invert.py {shown}")
    print(f"{'method':>9} {'case':>7} {'batch':>5} {'first call s':>12} {'s/step':>8} "
          f"{'steps/s':>8} {'official steps/s':>16} {'speed-up':>8}")
    bench = bench_projector if args.method == "projector" else bench_pti
    for case in args.resolutions:
        res, cbase, cmax, net, extra = CASES[case]
        g = ada_generator(res, cbase, cmax)
        if args.method == "pti":  # PTI's loss network is LPIPS-alex at every size
            net, extra = "alex", extra.replace("--feature-net vgg", "--feature-net alex")
        lp = random_lpips(net)
        for b in args.batches:
            m = bench(g, lp, args.steps, b, args.loop)
            off = None
            if args.official_cmd and b == 1:
                off = run_official(args.official_cmd, res, args.official_steps or args.steps,
                                   threads, extra)
            o = f"{off['steps_per_s']:>16.3f}" if off else f"{'-':>16}"
            s = f"{m['steps_per_s'] / off['steps_per_s']:>7.2f}x" if off else f"{'-':>8}"
            print(f"{args.method:>9} {case:>7} {b:>5} {m['first_call_s']:>12.1f} "
                  f"{m['s_per_step']:>8.3f} {m['steps_per_s']:>8.3f} {o} {s}", flush=True)
    print_peak_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
