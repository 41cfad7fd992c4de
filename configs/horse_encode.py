"""e4e on LSUN horse: 256x256 inputs and the official 256x256 horse StyleGAN2.

    python train.py --config configs/horse_encode.py --workdir runs/horse
    python train.py --config configs/horse_encode.py:A --workdir runs/horse_A
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "horse_encode"
    c.data.train = "data/horse/train"
    c.data.test = "data/horse/test"
    c.data.input_size = (256, 256)
    c.generator.path = "pretrained/stylegan2-horse"
    c.losses.id = 0.5                      # MoCo similarity loss for non-face domains
    c.loss_nets.id = "pretrained/moco_v2"
    c.loss_nets.id_kind = "moco"
    return apply_args(c, arg)
