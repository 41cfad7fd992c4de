"""ReStyle on faces: FFHQ train, CelebA-HQ test, the 1024 px FFHQ StyleGAN2, IR-SE-50 backbone.

    python train.py --config configs/restyle_ffhq_encode.py --workdir runs/restyle_e4e_ffhq
    python train.py --config configs/restyle_ffhq_encode.py:psp --workdir runs/restyle_psp_ffhq
    python train.py --config configs/restyle_ffhq_encode.py:e4e,n=3,runlocal ...   # CPU smoke run

configs/ffhq_encode.py (data, generator, identity / similarity loss) with restyle-encoder's
official ReStyle-e4e (default, `e4e`) or ReStyle-pSp (`psp`) training settings
(e4e_jax.train.config.restyle_variant; restyle-encoder 5e80276, README training commands).
`n=K` sets n_iters_per_batch (official 5); `runlocal` is the domain config's.
"""
import importlib.util
import os

from e4e_jax.train.config import RESTYLE_KINDS, restyle_variant


def _domain():
    # configs/ is not a package (train.py loads a config by its path): load the sibling file
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ffhq_encode.py")
    spec = importlib.util.spec_from_file_location("_ffhq_encode_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    kinds = [t for t in tokens if t in RESTYLE_KINDS]
    n = [t for t in tokens if t.startswith("n=")]
    rest = [t for t in tokens if t not in kinds and t not in n]
    c = _domain().get_config(None)
    c = restyle_variant(c, kinds[-1] if kinds else "e4e",
                        int(n[-1].split("=", 1)[1]) if n else 5)
    if "runlocal" in rest:
        from e4e_jax.train.config import runlocal
        runlocal(c)
        rest.remove("runlocal")
    if rest:
        raise ValueError(f"unknown config argument(s) {', '.join(rest)}: expected e4e or psp, "
                         f"n=K and/or runlocal.")
    return c
