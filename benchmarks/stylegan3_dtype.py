"""PSNR of StyleGAN3 synthesis in bfloat16 against float32 ('highest') under the per-layer
policy `low_precision_res` (None: the official num_fp16_res split; 0: no layer; 32: every layer).

    python benchmarks/stylegan3_dtype.py            # CPU, about 3 minutes on 2 cores

Generators: the parity fixture's config T (32 px, synthetic weights through the official
snapshot pickle) and a seeded random config-T generator at 256 px (32 channels). Images are
clipped to [-1, 1]; PSNR = 10 log10(2^2 / MSE).
"""
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from e4e_jax.cli.convert import main as convert_main  # noqa: E402
from e4e_jax.nets.stylegan3 import init_stylegan3, load_stylegan3  # noqa: E402
import tests.support.fixtures as fu  # noqa: E402

POLICIES = (None, 2, 0, 32)


def psnr(a, b) -> float:
    a, b = np.clip(np.asarray(a), -1, 1), np.clip(np.asarray(b), -1, 1)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def rows(name, g, ws):
    ref = np.asarray(g.with_policy(None, "highest").synthesis(ws))
    for k in POLICIES:
        gk = g.with_low_precision_res(k).with_policy("bfloat16", "highest")
        layers = gk.module.schedule()[1]
        t = time.perf_counter()
        out = np.asarray(gk.synthesis(ws))
        yield (f"| {name} | {k} | {sum(s.use_fp16 for s in layers)}/{len(layers)} | "
               f"{psnr(out, ref):.1f} | {time.perf_counter() - t:.0f} |")


def main():
    fix = fu.load_fixture("stylegan3_generator")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(fu.FIXTURES, "stylegan3_generator", "network-snapshot-t.pkl")
        assert convert_main(["stylegan3", src, os.path.join(tmp, "t")]) == 0
        g = load_stylegan3(os.path.join(tmp, "t"))
        print("| generator | low_precision_res | bf16 layers | PSNR vs float32 (dB) | "
              "seconds (with compile) |\n|---|---|---|---|---|")
        for line in rows("fixture T, 32 px", g, fix.inputs["t_ws"]):
            print(line, flush=True)
    g = init_stylegan3(jax.random.key(0), dict(z_dim=64, c_dim=0, w_dim=64,
                                               img_resolution=256, channel_base=4096,
                                               channel_max=32))
    ws = g.mapping(np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32))
    for line in rows("random T, 256 px, 32 ch", g, ws):
        print(line, flush=True)


if __name__ == "__main__":
    main()
