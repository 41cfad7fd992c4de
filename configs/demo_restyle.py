"""The demo's ReStyle variant: ReStyle-e4e on the same synthetic domain, budget and losses.

    python train.py --config configs/demo_restyle.py --workdir runs/demo_restyle

Everything is configs/demo.py's (the seeded 32 px generator, 1000 steps of batch 8, L2 +
progressive deltas with delta regularisation + the latent discriminator, Ranger at 1e-3), with
the encoder swapped for ReStyle-e4e (`ProgressiveBackboneEncoder`: the image and the current
reconstruction in, a residual W+ out) trained with the official recipe of restyle-encoder's
coach_restyle_e4e.py: `n_iters_per_batch` passes per batch, each pass's loss on its own output
and its gradient summed with the previous output held constant, one optimizer update per batch
(e4e_jax/train/restyle.py). summary.json's mse_after is the last iteration's held-out MSE.
`:n=K` sets n_iters_per_batch (default 3 here, to keep the demo's minutes; the official 5 with
`:n=5`); the other arguments are configs/demo.py's (`runlocal`, variants).
"""
from e4e_jax.train.config import sibling_config


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    n = [t for t in tokens if t.startswith("n=")]
    rest = ",".join(t for t in tokens if not t.startswith("n="))
    c = sibling_config(__file__, "demo.py", rest or None)
    c.dataset_type = "synthetic_demo_restyle"
    c.encoder.type = "ProgressiveBackboneEncoder"
    c.encoder.n_iters_per_batch = int(n[-1].split("=", 1)[1]) if n else 3
    return c
