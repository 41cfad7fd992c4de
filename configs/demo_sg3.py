"""The demo over StyleGAN3: e4e on the synthetic domain of a small seeded random StyleGAN3
generator (config T), on CPU, with no downloads.

    python train.py --config configs/demo_sg3.py --workdir runs/demo_sg3

configs/demo.py with `generator.init.kind = "stylegan3"`: training images are G(mapping(z)) of a
32 px config-T generator (4 synthesis layers + ToRGB, 16 channels, 2 mapping layers, official
initialisation, w_avg = the mean of 4096 mapped z), so every image has a ground-truth w. The
encoder predicts the generator's num_ws = num_layers + 2 = 6 W+ rows (n_styles), the first of
which drives the Fourier input's rotation / translation affine. 600 steps (about ten minutes on
2 CPU cores); summary.json reports the held-out reconstruction MSE before and after training.
"""
from e4e_jax.train.config import sibling_config


def get_config(arg=None):
    """configs/demo.py's config (and its arguments: `runlocal`, ...) over StyleGAN3."""
    c = sibling_config(__file__, "demo.py", arg)
    c.dataset_type = "synthetic_demo_sg3"
    c.generator.init.kind = "stylegan3"
    c.generator.init.resolution = 32
    c.generator.init.max_channels = 16
    c.generator.init.num_layers = 4
    c.generator.init.n_mlp = 2
    # StyleGAN3's synthesis costs several times StyleGAN2's at 32 px (margins, 2x-upsampled
    # filtered activations): fewer steps keep the demo at about ten minutes on 2 CPU cores
    if c.max_steps > 600:               # `runlocal` has already made it a 10-step smoke run
        c.max_steps = 600
        c.image_every = 200
        c.val_every = 200
        c.save_every = 200
    return c
