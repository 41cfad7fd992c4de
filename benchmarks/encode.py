"""Encoding / inversion throughput at the FFHQ sizes: images/s, compile time, memory.

    python benchmarks/encode.py                          # encode and invert, batch 1 and 8
    python benchmarks/encode.py --batches 4 --cases invert --repeats 2
    python benchmarks/encode.py --dtype bfloat16 --precision highest --json enc.json

Full official sizes: e4e IR-SE-50 encoder on 256x256 inputs (18 style heads), 1024x1024 StyleGAN2
generator (channel multiplier 2), random weights, float32, the generator's stored noise.
`encode` = encoder + latent_avg; `invert` = encode + generator + face_pool to 256x256 (the
official full inversion). Per case: compile time (lower + compile), median step time over
`--repeats` runs after one warm-up, seconds per image, images/s, and XLA's buffer estimate
(arguments + outputs + temporaries). Prints the device, thread count and load average; compare
with the official PyTorch numbers of the README measured on the same machine class.
--dtype / --precision: the inverter's numeric policy (e4e_jax.core.precision); --json PATH writes
{"device", "dtype", "precision", "cases": [{case, batch, compile_s, step_s, images_per_s,
"xla_bytes": {arguments, outputs, temporaries, total}, ...}]}; --resolution / --max-channels /
--encoder-widths shrink the networks (smoke runs of device_check.sh).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_report.py
from _report import print_peak_memory  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def random_generator(resolution: int = 1024, seed: int = 0, max_channels: int | None = None):
    """Official-size generator with random raw weights drawn by numpy (fast to build)."""
    from e4e_jax.nets.generator import LoadedGenerator, expected_variables, module_from_config
    from e4e_jax.models.stylegan2 import official_channels
    config = dict(resolution=resolution,
                  channels=list(official_channels(resolution, 2, max_channels)),
                  style_dim=512, n_mlp=8, lr_mlp=0.01, blur_kernel=[1, 3, 3, 1])
    module = module_from_config(config)
    gen = np.random.default_rng(seed)

    def fill(node, path):
        out = {}
        for k, leaf in node.items():
            if isinstance(leaf, dict):
                out[k] = fill(leaf, path + (k,))
            elif k == "bias" and "modulation" in path:
                out[k] = np.ones(leaf.shape, np.float32)
            elif k in ("bias", "noise_strength"):
                out[k] = np.zeros(leaf.shape, np.float32)
            else:
                out[k] = gen.standard_normal(leaf.shape, np.float32)
        return out

    variables = fill(jax.tree_util.tree_map(lambda s: s, dict(expected_variables(module))), ())
    return LoadedGenerator(module, variables, config, np.zeros(512, np.float32))


def build_inverter(dtype: str = "float32", precision: str | None = None,
                   resolution: int = 1024, max_channels: int | None = None,
                   encoder_widths=None):
    from e4e_jax.nets.encoder import Inverter
    from e4e_jax.models.encoders import encoder_config, init_encoder
    g = random_generator(resolution, max_channels=max_channels)
    small = ({"widths": tuple(encoder_widths), "units": (1, 1, 1, 1),
              "head_width": encoder_widths[-1]} if encoder_widths else {})
    cfg = encoder_config("Encoder4Editing", g.n_latent, (256, 256), **small)
    v = init_encoder(jax.random.PRNGKey(0), cfg)
    la = np.random.default_rng(1).standard_normal((g.n_latent, 512)).astype(np.float32) * 0.1
    return Inverter(cfg, v, g, la, dtype=dtype, precision=precision)


def bench(inv, case: str, batch: int, repeats: int) -> dict:
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (batch, 256, 256, 3)), jnp.float32)
    if case == "encode":
        lowered, args = inv.lower("apply_encode", x, progressive_stage=jnp.int32(18))
    else:
        lowered, args = inv.lower("apply_invert", x, resize=True)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    mem, xla = None, None
    try:
        ma = compiled.memory_analysis()
        mem = (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes) / 2**20
        xla = {"arguments": int(ma.argument_size_in_bytes),
               "outputs": int(ma.output_size_in_bytes),
               "temporaries": int(ma.temp_size_in_bytes),
               "total": int(ma.argument_size_in_bytes + ma.output_size_in_bytes
                            + ma.temp_size_in_bytes)}
    except Exception:  # not every backend reports it
        pass
    jax.block_until_ready(compiled(*args))  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    step = statistics.median(times)
    return dict(case=case, batch=batch, compile_s=compile_s, step_s=step, s_per_image=step / batch,
                images_per_s=batch / step, xla_mib=mem, xla_bytes=xla, cpu_s_per_image=statistics.median(cpu)
                / batch, best_step_s=min(times))


def _official_modules(official_dir: str):
    """The official Encoder4Editing and Generator classes, importable on CPU.

    The official `models/stylegan2/op` package compiles CUDA kernels at import; it is replaced by
    the pure-PyTorch equivalents the reference fixtures used: the official `upfirdn2d_native`
    (taken from the official file at run time) and leaky_relu(x + b, 0.2) * sqrt(2).
    """
    import ast
    import types

    import torch
    from torch import nn
    from torch.nn import functional as F

    op_file = os.path.join(official_dir, "models", "stylegan2", "op", "upfirdn2d.py")
    tree = ast.parse(open(op_file).read())
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upfirdn2d_native"]
    ns = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=fn, type_ignores=[]), op_file, "exec"), ns)
    native = ns["upfirdn2d_native"]

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        # the CUDA wrapper's layout: every channel as its own (H, W, 1) image
        n, c, h, w = input.shape
        out = native(input.reshape(-1, h, w, 1), kernel, up, up, down, down, pad[0], pad[1],
                     pad[0], pad[1])
        return out.reshape(n, c, out.shape[1], out.shape[2])

    def fused_leaky_relu(input, bias, negative_slope=0.2, scale=2 ** 0.5):
        shape = (1, bias.shape[0]) + (1,) * (input.ndim - 2)
        return F.leaky_relu(input + bias.view(shape), negative_slope) * scale

    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(channel))
            self.negative_slope, self.scale = negative_slope, scale

        def forward(self, input):
            return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    op = types.ModuleType("models.stylegan2.op")
    op.upfirdn2d, op.fused_leaky_relu, op.FusedLeakyReLU = upfirdn2d, fused_leaky_relu, \
        FusedLeakyReLU
    sys.modules["models.stylegan2.op"] = op
    sys.path.insert(0, official_dir)
    from models.encoders.psp_encoders import Encoder4Editing
    from models.stylegan2.model import Generator
    return Encoder4Editing, Generator


def bench_official(official_dir: str, cases, batches, repeats, repeats_large):
    """The official PyTorch encoder / full inversion on this machine, same sizes and cases."""
    import argparse as _ap

    import torch
    Encoder4Editing, Generator = _official_modules(official_dir)
    torch.manual_seed(0)
    enc = Encoder4Editing(50, "ir_se", _ap.Namespace(stylegan_size=1024)).eval()
    dec = Generator(1024, 512, 8, channel_multiplier=2).eval()
    pool = torch.nn.AdaptiveAvgPool2d((256, 256))
    latent_avg = torch.zeros(18, 512)
    out = []
    for case in cases:
        for b in batches:
            x = torch.rand(b, 3, 256, 256) * 2 - 1

            def run():
                with torch.no_grad():
                    codes = enc(x) + latent_avg.repeat(b, 1, 1)
                    if case == "invert":
                        img, _ = dec([codes], input_is_latent=True, randomize_noise=False)
                        return pool(img)
                    return codes

            run()
            reps = repeats_large if (case == "invert" and b >= 4) else repeats
            times, cpu = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            step = statistics.median(times)
            out.append(dict(case=case, batch=b, step_s=step, s_per_image=step / b,
                            images_per_s=b / step, cpu_s_per_image=statistics.median(cpu) / b,
                            best_step_s=min(times)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["encode", "invert"],
                   choices=["encode", "invert"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-large", type=int, default=1,
                   help="repeats for invert at batch >= 4 (slow on CPU)")
    p.add_argument("--official", default=None, metavar="DIR",
                   help="also time the official PyTorch code (an encoder4editing checkout) on "
                        "the same cases, interleaved in this process (torch threads = "
                        "os.cpu_count())")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--precision", default=None, choices=["default", "high", "highest"])
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--max-channels", type=int, default=None)
    p.add_argument("--encoder-widths", type=int, nargs=4, default=None)
    args = p.parse_args(argv)
    if args.json and os.path.exists(args.json):
        p.error(f"{args.json} exists; choose another --json path (results never overwrite)")
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
          f"cpu threads visible: {os.cpu_count()}, jax {jax.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load avg "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    inv = build_inverter(args.dtype, args.precision, args.resolution, args.max_channels,
                         args.encoder_widths)
    print(f"built {inv} with random weights in {time.perf_counter() - t0:.1f} s, dtype "
          f"{args.dtype}, precision {args.precision}", flush=True)
    results = []
    print(f"{'case':>7} {'batch':>5} {'compile s':>10} {'step s':>8} {'best s':>7} "
          f"{'s/image':>8} {'images/s':>9} {'CPU s/img':>9} {'XLA MiB':>8}", flush=True)
    for case in args.cases:
        for b in args.batches:
            reps = args.repeats_large if (case == "invert" and b >= 4) else args.repeats
            m = bench(inv, case, b, reps)
            results.append(m)
            mem = f"{m['xla_mib']:>8.0f}" if m["xla_mib"] is not None else f"{'n/a':>8}"
            print(f"{case:>7} {b:>5} {m['compile_s']:>10.2f} {m['step_s']:>8.3f} "
                  f"{m['best_step_s']:>7.3f} {m['s_per_image']:>8.3f} {m['images_per_s']:>9.2f} "
                  f"{m['cpu_s_per_image']:>9.3f} {mem}", flush=True)
            if args.official:
                import torch
                torch.set_num_threads(os.cpu_count())
                o = bench_official(args.official, [case], [b], args.repeats,
                                   args.repeats_large)[0]
                print(f"{'  torch':>7} {b:>5} {'':>10} {o['step_s']:>8.3f} "
                      f"{o['best_step_s']:>7.3f} {o['s_per_image']:>8.3f} "
                      f"{o['images_per_s']:>9.2f} {o['cpu_s_per_image']:>9.3f}   (official; "
                      f"median ratio {o['step_s'] / m['step_s']:.2f}x, best ratio "
                      f"{o['best_step_s'] / m['best_step_s']:.2f}x)", flush=True)
    print_peak_memory(f"; load avg at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        import json
        stats = dev.memory_stats() or {}
        out = {"device": f"{dev.platform} {dev.device_kind} x{jax.device_count()}",
               "dtype": args.dtype, "precision": args.precision, "resolution": args.resolution,
               "cases": results, "peak_device_bytes": stats.get("peak_bytes_in_use")}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
