"""e4e on LSUN cats: 256x256 inputs and the official 256x256 cats StyleGAN2.

    python train.py --config configs/cats_encode.py --workdir runs/cats
    python train.py --config configs/cats_encode.py:A --workdir runs/cats_A
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "cats_encode"
    c.data.train = "data/cats/train"
    c.data.test = "data/cats/test"
    c.data.input_size = (256, 256)
    c.generator.path = "pretrained/stylegan2-cats"
    c.losses.id = 0.5                      # MoCo similarity loss for non-face domains
    c.loss_nets.id = "pretrained/moco_v2"
    c.loss_nets.id_kind = "moco"
    return apply_args(c, arg)
