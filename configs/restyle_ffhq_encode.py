"""ReStyle on faces: FFHQ train, CelebA-HQ test, the 1024 px FFHQ StyleGAN2, IR-SE-50 backbone.

    python train.py --config configs/restyle_ffhq_encode.py --workdir runs/restyle_e4e_ffhq
    python train.py --config configs/restyle_ffhq_encode.py:psp --workdir runs/restyle_psp_ffhq
    python train.py --config configs/restyle_ffhq_encode.py:e4e,n=3,runlocal ...   # CPU smoke run

configs/ffhq_encode.py (data, generator, identity / similarity loss) with restyle-encoder's
official ReStyle-e4e (default, `e4e`) or ReStyle-pSp (`psp`) training settings
(e4e_jax.train.config.restyle_variant; restyle-encoder 5e80276, README training commands).
`n=K` sets n_iters_per_batch (official 5); `runlocal` is the domain config's.
"""

from e4e_jax.train.config import restyle_domain_config


def get_config(arg=None):
    return restyle_domain_config(__file__, "ffhq", arg)
