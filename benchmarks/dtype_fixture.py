"""bfloat16 vs float32 on the official e4e fixture (tests/fixtures/e4e_encoder): W+ relative error
and reconstruction PSNR against the official PyTorch outputs, per compute dtype and precision.

    python benchmarks/dtype_fixture.py

W+ relative error = ||w - w_official|| / ||w_official - latent_avg|| (the encoder's own part of
the codes); PSNR of the 256x256 reconstruction in [-1, 1] (peak-to-peak 2) against the official
reconstruction. Prints the device and date. bfloat16 here is the default policy: the
generator's split (low_precision_res None: the top 4 resolutions, which for this 64 px generator
is every resolution but 4x4) and the encoder's (float32_stages (2,)); benchmarks/dtype_policy.py
compares the splits.
"""
from __future__ import annotations

import datetime
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def main():
    import tests.support.fixtures as fu

    import e4e_jax
    from e4e_jax.convert import e4e as conv
    fx = fu.load_fixture("e4e_encoder")
    d = tempfile.mkdtemp(prefix="dtype-fixture-")
    src = fu.save_torch(fx.container(), os.path.join(d, "ckpt.pt"))
    assert conv.main([src, os.path.join(d, "converted")]) == 0
    x = fu.nchw_to_nhwc(fx.inputs["x"])
    w_ref = np.asarray(fx.expected["latents"])
    img_ref = fu.nchw_to_nhwc(fx.expected["images"])
    dev = jax.devices()[0]
    print(f"device {dev.platform} {dev.device_kind}, jax {jax.__version__}, "
          f"{datetime.date.today()}, batch {x.shape[0]}")
    print(f"{'dtype':>9} {'precision':>9} {'W+ rel err':>11} {'PSNR dB':>8} {'max |dimg|':>10}")
    for dtype in ("float32", "bfloat16"):
        for precision in (None, "highest"):
            inv = e4e_jax.load_encoder(os.path.join(d, "converted"), dtype=dtype,
                                       precision=precision)
            w, img = (np.asarray(a) for a in inv.invert(x))
            la = np.asarray(inv.latent_avg)
            rel = np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref - la)
            mse = float(np.mean((img - img_ref) ** 2))
            psnr = 10 * np.log10(4.0 / mse) if mse > 0 else float("inf")
            print(f"{dtype:>9} {str(precision):>9} {rel:>11.3e} {psnr:>8.1f} "
                  f"{float(np.abs(img - img_ref).max()):>10.3e}", flush=True)


if __name__ == "__main__":
    main()
