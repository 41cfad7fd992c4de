"""e4e on LSUN church (outdoor): 256x256 inputs and the official 256x256 church StyleGAN2.

    python train.py --config configs/church_encode.py --workdir runs/church
    python train.py --config configs/church_encode.py:A --workdir runs/church_A

The TFDS copy works too: --config.data.train=tfds:lsun/church_outdoor:train ... --config.data.data_dir=DIR
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "church_encode"
    c.data.train = "data/church/train"
    c.data.test = "data/church/test"
    c.data.input_size = (256, 256)
    c.generator.path = "pretrained/stylegan2-church"
    c.losses.id = 0.5                      # MoCo similarity loss for non-face domains
    c.loss_nets.id = "pretrained/moco_v2"
    c.loss_nets.id_kind = "moco"
    return apply_args(c, arg)
