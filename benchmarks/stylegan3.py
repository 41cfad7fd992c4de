"""Synthesis throughput of the StyleGAN3 generator (configs T and R): compile time and images/s.

    python benchmarks/stylegan3.py                     # T and R, 256 and 1024, batch 1 and 4
    python benchmarks/stylegan3.py --resolutions 256 --batches 1 4 --repeats 3
    python benchmarks/stylegan3.py --resolutions 256 --official /tmp/official/stylegan3
    python benchmarks/stylegan3.py --json out.json     # also write the numbers

Official full-size widths (T: channel_base 32768, channel_max 512; R: 65536 / 1024, 1x1
convolutions, radial filters; z_dim = w_dim = 512, 2 mapping layers), random weights with the
official initialisation, W+ input, float32. Per case: the compile time (first call) and the
median steady-state time of `synthesis` after one warm-up call.

--official CHECKOUT also times NVlabs/stylegan3's own Generator (c233a91, imported unchanged) on
the CPU in the same run, through its reference ops (filtered_lrelu / bias_act / upfirdn2d with
CPU tensors; the CUDA plugins are not built), torch.no_grad(), eval mode, the same batch. Needs
torch and scipy; its CPU thread count is torch's default unless --torch-threads is given.
The official code on the CPU takes minutes per image at 256 (no compilation, so its first call is
already a steady-state call): --official-repeats 0 times that first call only, and --only
ours|official runs one side (e.g. to fill in a case the other side measured in another run).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402

FULL_SIZE = {
    "T": dict(channel_base=32768, channel_max=512),
    "R": dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
}


def generator_kwargs(config: str, resolution: int) -> dict:
    """The official Generator kwargs of a full-size config at `resolution`."""
    return dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                **FULL_SIZE[config])


def bench_ours(config: str, resolution: int, batch: int, repeats: int, precision) -> dict:
    from e4e_jax.nets.stylegan3 import init_stylegan3
    g = init_stylegan3(jax.random.key(0), generator_kwargs(config, resolution))
    g = g.with_policy(precision=precision)
    ws = jax.random.normal(jax.random.key(1), (batch, g.n_latent, g.w_dim))
    transform = jnp.broadcast_to(jnp.eye(3), (batch, 3, 3))
    fn = jax.jit(lambda v, w, t: g.synthesize(v, w, transform=t))
    t0 = time.perf_counter()
    compiled = fn.lower(g.variables, ws, transform).compile()
    compile_s = time.perf_counter() - t0
    compiled(g.variables, ws, transform).block_until_ready()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = compiled(g.variables, ws, transform)
        out.block_until_ready()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    assert bool(jnp.isfinite(out).all()), "non-finite output"
    return dict(impl="e4e_jax", config=config, resolution=resolution, batch=batch,
                compile_s=compile_s, step_s=step, images_per_s=batch / step)


def load_official(checkout: str):
    """networks_stylegan3 of the official checkout, imported unchanged, CUDA plugins off."""
    import importlib.util
    if importlib.util.find_spec("pkg_resources") is None:  # recent setuptools: gone
        import packaging.version
        sys.modules["pkg_resources"] = types.SimpleNamespace(
            parse_version=packaging.version.parse)
    sys.path.insert(0, os.path.abspath(checkout))
    from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d
    for op in (bias_act, filtered_lrelu, upfirdn2d):
        op._init = lambda: False
    from training import networks_stylegan3
    return networks_stylegan3


def bench_official(module, config: str, resolution: int, batch: int, repeats: int) -> dict:
    """`repeats` timed calls after a first one; 0: the first call is the measurement."""
    import torch
    G = module.Generator(**generator_kwargs(config, resolution)).eval().requires_grad_(False)
    ws = torch.randn(batch, G.num_ws, G.w_dim)
    with torch.no_grad():
        t0 = time.perf_counter()
        G.synthesis(ws, force_fp32=True)  # first call: the filters' device copies etc.
        first_s = time.perf_counter() - t0
        times = [first_s] if repeats == 0 else []
        for _ in range(repeats):
            t0 = time.perf_counter()
            G.synthesis(ws, force_fp32=True)
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return dict(impl="official (torch CPU, ref ops)", config=config, resolution=resolution,
                batch=batch, compile_s=first_s, step_s=step, images_per_s=batch / step)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["T", "R"], choices=sorted(FULL_SIZE))
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default=None, choices=["default", "high", "highest"],
                   help="matmul / convolution precision of ours (default: JAX's)")
    p.add_argument("--official", default=None, help="NVlabs/stylegan3 checkout (c233a91) to "
                                                    "time the official code on the CPU too")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--official-repeats", type=int, default=None,
                   help="timed calls of the official Generator (default: --repeats; 0: the "
                        "first call only)")
    p.add_argument("--only", default=None, choices=["ours", "official"],
                   help="time one side only (--official is needed for 'official')")
    p.add_argument("--json", default=None, help="write the measurements here")
    args = p.parse_args()
    if args.only == "official" and not args.official:
        p.error("--only official needs --official CHECKOUT")
    if args.official_repeats is None:
        args.official_repeats = args.repeats
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
          f"cpu threads visible: {os.cpu_count()}, jax {jax.__version__}, precision "
          f"{args.precision}, load avg {os.getloadavg()[0]:.2f}")
    official = None
    if args.official:
        import torch
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        official = load_official(args.official)
        print(f"official: torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'impl':>30} {'cfg':>3} {'res':>5} {'batch':>5} {'compile s':>10} {'step s':>8} "
          f"{'images/s':>9}")
    rows = []
    for cfg in args.configs:
        for r in args.resolutions:
            for b in args.batches:
                cases = []
                if args.only != "official":
                    cases.append(lambda: bench_ours(cfg, r, b, args.repeats, args.precision))
                if official is not None and args.only != "ours":
                    cases.append(lambda: bench_official(official, cfg, r, b,
                                                        args.official_repeats))
                for case in cases:
                    m = case()
                    rows.append(m)
                    print(f"{m['impl']:>30} {cfg:>3} {r:>5} {b:>5} {m['compile_s']:>10.2f} "
                          f"{m['step_s']:>8.3f} {m['images_per_s']:>9.2f}", flush=True)
    print_peak_memory()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": f"{dev.platform} {dev.device_kind}", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
