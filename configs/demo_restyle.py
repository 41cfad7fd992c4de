"""The demo's ReStyle variant: ReStyle-e4e on the same synthetic domain, budget and losses.

    python train.py --config configs/demo_restyle.py --workdir runs/demo_restyle

Everything is configs/demo.py's (the seeded 32 px generator, 1000 steps of batch 8, L2 +
progressive deltas with delta regularisation + the latent discriminator, Ranger at 1e-3), with
the encoder swapped for ReStyle-e4e (`ProgressiveBackboneEncoder`: the image and the current
reconstruction in, a residual W+ out) trained with the official recipe of restyle-encoder's
coach_restyle_e4e.py: `n_iters_per_batch` passes per batch, each pass's loss on its own output
and its gradient summed with the previous output held constant, one optimizer update per batch
(e4e_jax/train/restyle.py). summary.json's mse_after is the last iteration's held-out MSE.

One geometry setting differs from configs/demo.py, as the official coach does it: the encoder
works at 64 px (`data.input_size`, `output.face_pool`), the generator's 32 px images and
reconstructions resized to it. restyle-encoder encodes every domain at a fixed size whatever the
generator's resolution (5e80276 configs/transforms_config.py:23 `Resize((256, 256))`,
models/e4e.py:23 `face_pool = AdaptiveAvgPool2d((256, 256))`), because its heads read only the
backbone's last map (1/16 of the input; models/encoders/restyle_e4e_encoders.py:63), where e4e's
feature pyramid also reads the 1/8 and 1/4 maps. At 32 px that map is 2x2; at 64 px 4x4, as
much as e4e's middle level (256 px would be the official 16x16, too slow for the CPU demo).
The held-out MSE is unchanged by the resize (both sides are the same 32 px images repeated).

Measured (2-core shared CPU, float32, 2026-12-07), summary.json mse_after after 1000 steps:
configs/demo.py (e4e) 0.335 -> 0.124; this config 0.334 -> 0.104 (docs/training.md, ReStyle).

`:n=K` sets n_iters_per_batch (default 3 here, to keep the demo's minutes; the official 5 with
`:n=5`); the other arguments are configs/demo.py's (`runlocal`, variants).
"""
from e4e_jax.train.config import sibling_config

# the official fixed encoding size (docstring), scaled from 256 to what the CPU demo affords
INPUT_SIZE = 64


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    n = [t for t in tokens if t.startswith("n=")]
    rest = ",".join(t for t in tokens if not t.startswith("n="))
    c = sibling_config(__file__, "demo.py", rest or None)
    c.dataset_type = "synthetic_demo_restyle"
    c.encoder.type = "ProgressiveBackboneEncoder"
    c.encoder.n_iters_per_batch = int(n[-1].split("=", 1)[1]) if n else 3
    c.data.input_size = (INPUT_SIZE, INPUT_SIZE)
    c.output.face_pool = INPUT_SIZE
    return c
