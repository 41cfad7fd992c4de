"""XLA's memory estimate of the generator alone: forward + backward (d loss / d W+) at batch 8.

    XLA_FLAGS=--xla_backend_optimization_level=0 python benchmarks/generator_memory.py \\
        --dtype bfloat16 --remat --per-image-from 4 --resolution 1024

Lowers abstractly (no weights are materialised): random noise, face_pool to 256, a sum of
squares as the loss. Used to find the peak of the training step (29 Nov 2026, CPU, jax 0.10.2,
bfloat16, 1024 px, batch 8: per-layer remat + per-image scan from 512 px 9.45 GiB of
temporaries; whole synthesis per image (per_image_from=4) 1.65 GiB). Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--remat", action="store_true")
    p.add_argument("--per-image-from", type=int, default=4)
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    from e4e_jax.models.stylegan2 import Generator, official_channels
    from e4e_jax.core.ops import adaptive_avg_pool2d
    g = Generator(args.resolution, official_channels(args.resolution),
                  dtype=None if args.dtype == "float32" else jnp.bfloat16, remat=args.remat,
                  per_image_from=args.per_image_from)
    w = jax.ShapeDtypeStruct((args.batch, g.n_latent, 512), jnp.float32)
    v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, g.n_latent, 512))))

    def grad_w(v, w, key):
        def loss(w):
            img = g.apply(v, w, noise_mode="random", rngs={"noise": key})
            return jnp.sum(adaptive_avg_pool2d(img, (256, 256)) ** 2)
        return jax.grad(loss)(w)

    t0 = time.perf_counter()
    m = jax.jit(grad_w).lower(v, w, jax.random.key(1)).compile().memory_analysis()
    print(json.dumps({**vars(args), "device": jax.devices()[0].platform,
                      "compile_s": round(time.perf_counter() - t0, 1),
                      "arguments_gib": m.argument_size_in_bytes / 2**30,
                      "temporaries_gib": m.temp_size_in_bytes / 2**30}))


if __name__ == "__main__":
    main()
