"""ReStyle on LSUN Horse: the 256 px horse StyleGAN2, ResNet-34 backbone.

    python train.py --config configs/restyle_horse_encode.py --workdir runs/restyle_e4e_horse
    python train.py --config configs/restyle_horse_encode.py:psp --workdir runs/restyle_psp_horse
    python train.py --config configs/restyle_horse_encode.py:e4e,n=3,runlocal ...   # CPU smoke run

configs/horse_encode.py (data, generator, identity / similarity loss) with restyle-encoder's
official ReStyle-e4e (default, `e4e`) or ReStyle-pSp (`psp`) training settings
(e4e_jax.train.config.restyle_variant; restyle-encoder 5e80276, README training commands).
`n=K` sets n_iters_per_batch (official 5); `runlocal` is the domain config's.
"""

from e4e_jax.train.config import restyle_domain_config


def get_config(arg=None):
    return restyle_domain_config(__file__, "horse", arg)
