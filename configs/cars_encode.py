"""e4e on Stanford Cars: 192x256 inputs, the official 512x512 cars StyleGAN2, output rows 32:224.

    python train.py --config configs/cars_encode.py --workdir runs/cars
    python train.py --config configs/cars_encode.py:A --workdir runs/cars_A

The TFDS copy of the dataset works too: --config.data.train=tfds:cars196:train
--config.data.test=tfds:cars196:test --config.data.data_dir=/path/to/tensorflow_datasets
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "cars_encode"
    c.data.train = "data/cars/train"
    c.data.test = "data/cars/test"
    c.data.input_size = (192, 256)
    c.output.crop_rows = (32, 224)
    c.generator.path = "pretrained/stylegan2-cars"
    c.losses.id = 0.5                      # MoCo similarity loss for non-face domains
    c.loss_nets.id = "pretrained/moco_v2"
    c.loss_nets.id_kind = "moco"
    return apply_args(c, arg)
