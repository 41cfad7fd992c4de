"""ReStyle inversion time (`e4e_jax.restyle.invert`): 1 and 5 iterations, compile once each.

    python benchmarks/restyle.py                               # fixture size, batch 2
    python benchmarks/restyle.py --sizes fixture 1024 --batch 1 --repeats 2
    python benchmarks/restyle.py --encoder ResNetBackboneEncoder --iterations 1 3 5

Sizes (random weights, float32, the generator's stored noise):
    fixture  the tests/fixtures/restyle models: official encoder widths (IR-SE-50 or ResNet-34,
             10 style heads) on 256x256 inputs, 64x64 StyleGAN2 generator (channel multiplier 2,
             512 channels at every resolution)
    1024     the released FFHQ models: the same encoder with 18 heads, 1024x1024 generator
One call runs all iterations in one compiled lax.scan (the average image included); per
(size, iterations): compile time (lower + compile), the median call time over --repeats calls
after one warm-up, seconds per image and per image-iteration, XLA's buffer estimate. Prints the
device, the thread count and the load average (2-core machines shared with other jobs give noisy
numbers: compare rows measured back to back).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {"fixture": 64, "1024": 1024}


def random_generator(resolution: int):
    """A rosinality generator of official widths with N(0, 1) raw weights drawn by numpy
    (seconds to build, where jax.random would compile a graph per parameter)."""
    from e4e_jax.models.stylegan2 import official_channels
    from e4e_jax.nets.generator import LoadedGenerator, expected_variables, module_from_config
    config = dict(resolution=resolution, channels=list(official_channels(resolution, 2, None)),
                  style_dim=512, n_mlp=8, lr_mlp=0.01, blur_kernel=[1, 3, 3, 1])
    module = module_from_config(config)
    rng = np.random.default_rng(0)

    def fill(node, path):
        out = {}
        for name, leaf in node.items():
            if isinstance(leaf, dict):
                out[name] = fill(leaf, path + (name,))
            elif name == "bias" and "modulation" in path:
                out[name] = np.ones(leaf.shape, np.float32)      # official bias_init=1
            elif name in ("bias", "noise_strength"):
                out[name] = np.zeros(leaf.shape, np.float32)
            else:
                out[name] = rng.standard_normal(leaf.shape, np.float32)
        return out

    variables = fill(dict(expected_variables(module)), ())
    return LoadedGenerator(module, variables, config)


def build_model(size: str, encoder_type: str):
    from e4e_jax.models.encoders import encoder_config, init_encoder
    from e4e_jax.nets.encoder import Inverter
    g = random_generator(SIZES[size])
    cfg = encoder_config(encoder_type, g.n_latent, (256, 256))
    v = init_encoder(jax.random.PRNGKey(0), cfg)
    # small heads: bounded residuals, as the fixture's synthetic weights
    for name, node in v["params"].items():
        if name.startswith("styles_"):
            node["linear"]["kernel"] = node["linear"]["kernel"] * 0.02
    la = 0.1 * np.random.default_rng(1).standard_normal((g.n_latent, 512)).astype(np.float32)
    return Inverter(cfg, v, g, la)


def bench(model, batch: int, iterations: int, repeats: int) -> dict:
    from e4e_jax.inversion import restyle
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (batch, 256, 256, 3)), jnp.float32)
    args = (model.variables, model.generator.variables, jnp.asarray(model.latent_avg), x)
    fn = jax.jit(functools.partial(restyle.apply_restyle, model),
                 static_argnames=("iterations", "resize"))
    t0 = time.perf_counter()
    compiled = fn.lower(*args, iterations=iterations, resize=True).compile()
    compile_s = time.perf_counter() - t0
    mib = None
    try:
        ma = compiled.memory_analysis()
        mib = (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes) / 2**20
    except Exception:  # not every backend reports it
        pass
    jax.block_until_ready(compiled(*args))   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    call = statistics.median(times)
    return dict(iterations=iterations, batch=batch, compile_s=compile_s, call_s=call,
                s_per_image=call / batch, s_per_image_iteration=call / batch / iterations,
                xla_mib=mib)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["fixture"], choices=sorted(SIZES))
    parser.add_argument("--encoder", default="ProgressiveBackboneEncoder",
                        choices=["BackboneEncoder", "ResNetBackboneEncoder",
                                 "ProgressiveBackboneEncoder", "ResNetProgressiveBackboneEncoder"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', '')}, CPU threads "
          f"{os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, encoder {args.encoder}")
    print(f"{'size':>8} {'iters':>5} {'batch':>5} {'compile s':>9} {'call s':>8} "
          f"{'s/image':>8} {'s/img/iter':>10} {'XLA MiB':>8}")
    for size in args.sizes:
        model = build_model(size, args.encoder)
        for iterations in args.iterations:
            r = bench(model, args.batch, iterations, args.repeats)
            mib = f"{r['xla_mib']:.0f}" if r["xla_mib"] is not None else "-"
            print(f"{size:>8} {iterations:>5} {args.batch:>5} {r['compile_s']:>9.1f} "
                  f"{r['call_s']:>8.2f} {r['s_per_image']:>8.2f} "
                  f"{r['s_per_image_iteration']:>10.2f} {mib:>8}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
