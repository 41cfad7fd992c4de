"""The README's main job: e4e on the embedded synthetic domain, on CPU, with no downloads.

    python train.py --config configs/demo.py --workdir runs/demo

A small seeded StyleGAN2 generator (random weights) defines the domain: training images are drawn
on the fly as G(mapping(z)), so every image has a ground-truth w. A narrow e4e encoder learns to
invert it with the L2 loss, progressive training with delta regularization, and the latent
discriminator (the paper's configuration D without the perceptual networks, which would need
downloads). Finishes in a few minutes on 2 CPU cores; summary.json reports the held-out
reconstruction MSE before and after training.
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "synthetic_demo"
    c.data.kind = "synthetic"
    c.data.input_size = (32, 32)
    c.data.flip_prob = 0.0
    c.data.synthetic_noise = "const"
    c.generator.init.resolution = 32
    c.generator.init.max_channels = 32
    c.generator.init.n_mlp = 2
    c.encoder.init = "random"
    c.encoder.widths = (8, 16, 16, 32)
    c.encoder.units = (1, 1, 1, 1)
    c.encoder.head_width = 32
    c.output.face_pool = 32
    c.latent_avg_samples = 4096
    c.losses.lpips = 0.0
    c.losses.id = 0.0
    c.losses.l2 = 1.0
    c.losses.d_reg = 2e-4
    c.losses.adv = 0.1
    c.progressive.start = 100
    c.progressive.every = 25
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.test_batch_size = 8
    c.max_steps = 1000
    c.log_every = 50
    c.image_every = 250
    c.val_every = 250
    c.save_every = 250
    c.max_val_batches = 2
    c.holdout = 32
    return apply_args(c, arg)
