"""Step time of the full e4e training configuration (FFHQ: 1024 generator, batch 8, all losses).

    python benchmarks/train_step.py                    # official sizes, batch 8
    python benchmarks/train_step.py --batch 4 --steps 3
    python benchmarks/train_step.py --resolution 256   # a 256 generator (LSUN-size)
    python benchmarks/train_step.py --compile-only --dtype bfloat16 --remat blocks --json m.json

Random weights stand in for the pretrained files (same shapes, same compute): the 1024x1024
channel-multiplier-2 generator, the IR-SE-50 e4e encoder, LPIPS-alex, ArcFace IR-SE-50, the latent
discriminator with R1 on the timed steps (step % 16 == 0 pays for it; the others do not: both
kinds are timed), Ranger. Prints the device, compile time, XLA's memory estimate, per-step time,
images/s and peak memory.

--dtype / --precision / --remat set the config fields of the same names (e4e_jax.core.precision);
--json PATH writes {"device", "batch", "dtype", "remat", "compile_s", "step_s", "images_per_s",
"xla_bytes": {"arguments", "outputs", "temporaries", "total"}} (`--compile-only`: step_s and
images_per_s null). total = arguments + outputs + temporaries - aliased (the donated state).
--max-channels / --encoder-widths shrink the networks (smoke runs of device_check.sh).

Memory (float32, no remat): XLA's buffers for the 1024 step are about 4.3 GiB of state (encoder, Ranger's three
slots) plus ~1.5 GiB + ~2.1 GiB per image of temporaries (batch 8: 18.8 + 4.3 GiB), so batch 8
does not fit a 24 GiB CPU host; `--compile-only` prints the estimate without running. With
`--remat blocks`: 10.7 GiB (float32) / 9.6 GiB (bfloat16) in all. For a fast estimate, set
XLA_FLAGS=--xla_backend_optimization_level=0: buffer assignment happens before LLVM, so the
numbers are identical and the compile is ~3x faster (useless for timing steps).
"""
from __future__ import annotations

import argparse
import json
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
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--precision", default=None, choices=["default", "high", "highest"])
    p.add_argument("--remat", default="none", choices=["none", "blocks"])
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--max-channels", type=int, default=0, help="cap the generator widths")
    p.add_argument("--encoder-widths", type=int, nargs=4, default=None,
                   help="narrow IR-SE widths with one unit per stage (smoke runs)")
    args = p.parse_args()
    if args.json and os.path.exists(args.json):
        p.error(f"{args.json} exists; choose another --json path (results never overwrite)")

    from configs import ffhq_encode
    from e4e_jax import losses as L
    from e4e_jax import train as trainer
    from e4e_jax.models.arcface import ArcFace
    from e4e_jax.models.lpips import LPIPS

    config = ffhq_encode.get_config()
    config.generator.path = None
    config.generator.init.resolution = args.resolution
    config.generator.init.max_channels = args.max_channels
    config.generator.init.n_mlp = 8
    config.encoder.init = "random"
    if args.encoder_widths:
        config.encoder.widths = tuple(args.encoder_widths)
        config.encoder.units = (1, 1, 1, 1)
        config.encoder.head_width = args.encoder_widths[-1]
    config.batch_size = args.batch
    config.dtype, config.precision, config.remat = args.dtype, args.precision, args.remat
    config.progressive.start = 0          # every delta active: the most expensive stage
    config.latent_avg_samples = 1000
    key = jax.random.key(0)
    from e4e_jax.core.precision import module_kwargs
    policy = module_kwargs(args.dtype, args.precision)
    arc_kw = ({"widths": tuple(args.encoder_widths), "units": (1, 1, 1, 1)}
              if args.encoder_widths else {})
    lp, arc = LPIPS("alex", **policy), ArcFace(**arc_kw, **policy)
    nets = {"lpips": L.LossNet(lp, lp.init(key, jnp.zeros((1, 64, 64, 3)),
                                           jnp.zeros((1, 64, 64, 3)))),
            "id": L.LossNet(arc, arc.init(key, jnp.zeros((1, 256, 256, 3))))}
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, cpu threads "
          f"{os.cpu_count()}, jax {jax.__version__}, load avg {os.getloadavg()[0]:.2f}")
    print(f"config: generator {args.resolution}px (channel multiplier 2), e4e IR-SE-50 encoder "
          f"256x256, LPIPS-alex + ArcFace + L2 + d-reg + latent discriminator, batch "
          f"{args.batch}, Ranger, dtype {args.dtype}, precision {args.precision}, remat "
          f"{args.remat}")
    t0 = time.perf_counter()
    setup = trainer.build(config, nets=nets)
    state = trainer.create_train_state(setup)
    x = jax.random.uniform(jax.random.key(1), (args.batch, 256, 256, 3), minval=-1, maxval=1)
    batch = {"image": trainer.to_global(x, setup.batch_sharding)}
    print(f"set-up (random weights, latent_avg): {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    lowered = setup.train_step.lower(state, setup.frozen, batch)
    exe = lowered.compile()
    compile_s = time.perf_counter() - t0
    print(f"compile: {compile_s:.1f}s", flush=True)
    result = {"device": f"{dev.platform} {dev.device_kind} x{jax.device_count()}",
              "batch": args.batch, "dtype": args.dtype, "precision": args.precision,
              "remat": args.remat, "resolution": args.resolution, "compile_s": compile_s,
              "step_s": None, "images_per_s": None, "xla_bytes": xla_bytes(exe)}
    xb = result["xla_bytes"]
    if xb:
        print(f"XLA memory estimate: temporaries {xb['temporaries'] / 2**30:.2f} GiB, "
              f"arguments {xb['arguments'] / 2**30:.2f} GiB, outputs "
              f"{xb['outputs'] / 2**30:.2f} GiB, total {xb['total'] / 2**30:.2f} GiB", flush=True)
    if args.compile_only:
        write_json(args.json, result)
        return
    t0 = time.perf_counter()
    state, m = exe(state, setup.frozen, batch)      # step 0: with R1
    jax.block_until_ready(m)
    print(f"step 0 (discriminator R1 step): {time.perf_counter() - t0:.2f}s", flush=True)
    times = []
    for _ in range(args.steps):
        batch = {"image": trainer.to_global(x, setup.batch_sharding)}
        t0 = time.perf_counter()
        state, m = exe(state, setup.frozen, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        print(f"step time {times[-1]:.2f}s  loss {float(m['loss']):.4f}", flush=True)
    step = statistics.median(times)
    print(f"median step {step:.2f}s, {args.batch / step:.2f} images/s, "
          f"{step / args.batch:.2f} s/image")
    print_peak_memory()
    result.update(step_s=step, images_per_s=args.batch / step, peak_device_bytes=peak_bytes())
    write_json(args.json, result)


def xla_bytes(exe) -> dict | None:
    """XLA's buffer estimate of a compiled function (None where the backend has none)."""
    try:
        m = exe.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if m is None:
        return None
    out = {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
           "temporaries": int(m.temp_size_in_bytes),
           "aliased": int(getattr(m, "alias_size_in_bytes", 0))}
    out["total"] = out["arguments"] + out["outputs"] + out["temporaries"] - out["aliased"]
    return out


def peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def write_json(path: str | None, result: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
