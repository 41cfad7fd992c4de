"""e4e on faces: FFHQ train, CelebA-HQ test, the official 1024x1024 FFHQ StyleGAN2.

    python train.py --config configs/ffhq_encode.py --workdir runs/ffhq
    python train.py --config configs/ffhq_encode.py:A --workdir runs/ffhq_A     # Table 2 variant
    python train.py --config configs/ffhq_encode.py:runlocal ...                 # CPU smoke run

Convert the pretrained files first (README, "Converting official weights"):
    pretrained/stylegan2-ffhq        convert_weights/stylegan2.py stylegan2-ffhq-config-f.pt
    pretrained/arcface_ir_se50       convert_weights/arcface.py model_ir_se50.pth
    pretrained/lpips_alex            convert_weights/lpips.py --net alex ...
"""
from e4e_jax.train.config import apply_args, base_config


def get_config(arg=None):
    c = base_config()
    c.dataset_type = "ffhq_encode"
    c.data.train = "data/ffhq"
    c.data.test = "data/celeba_hq_test"
    c.data.input_size = (256, 256)
    c.generator.path = "pretrained/stylegan2-ffhq"
    c.losses.id = 0.1                      # ArcFace identity loss for faces
    c.loss_nets.id = "pretrained/arcface_ir_se50"
    c.loss_nets.id_kind = "arcface"
    return apply_args(c, arg)
