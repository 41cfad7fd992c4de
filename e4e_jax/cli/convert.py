"""`e4e-jax convert FORMAT SRC DST`: one converter per official file format (e4e_jax/convert/).

    e4e-jax convert e4e e4e_ffhq_encode.pt converted/e4e_ffhq_encode
    e4e-jax convert stylegan2_ada ffhq.pkl converted/ffhq_ada
    e4e-jax convert lpips --net alex --backbone alexnet.pth weights/lpips_alex

Every format is the module e4e_jax/convert/<format>.py, whose `main(argv)` parses that format's
arguments; `python convert_weights/<format>.py` and `python -m convert_weights.<format>` run the
same code. Exit codes: 0 model directory written, 2 bad arguments or an unreadable / unexpected
file, 130 interrupted (nothing half-written).
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Sequence

from e4e_jax import cli

# format -> one line for `e4e-jax convert --help`
FORMATS = {
    "e4e": "an official e4e or pSp checkpoint (.pt): encoder + generator + latent_avg",
    "restyle": "an official ReStyle-pSp / ReStyle-e4e checkpoint (.pt): encoder + generator",
    "stylegan2": "a rosinality-format StyleGAN2 checkpoint (.pt), the generator e4e uses",
    "stylegan2_ada": "a StyleGAN2-ADA network snapshot pickle (.pkl), read without running it",
    "stylegan3": "a StyleGAN3 network pickle (.pkl, T / R) or stylegan3-editing generator (.pt)",
    "lpips": "LPIPS v0.1 (AlexNet / VGG16 backbone + linear layers)",
    "arcface": "the ArcFace IR-SE-50 of the identity loss (model_ir_se50.pth)",
    "moco": "the MoCo v2 ResNet-50 of the similarity loss",
    "fid_inception": "pytorch-fid's FID Inception-v3 weights",
}


def usage() -> str:
    width = max(len(n) for n in FORMATS)
    lines = ["usage: e4e-jax convert FORMAT [ARGS ...]", "", "formats:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in FORMATS.items()]
    lines += ["", "`e4e-jax convert FORMAT --help` shows that converter's arguments.",
              "Exit codes: 0 model directory written, 2 bad arguments or an unreadable / "
              "unexpected file, 130 interrupted."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return cli.EXIT_OK if argv else cli.EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in FORMATS:
        close = difflib.get_close_matches(name, list(FORMATS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return cli.error(f"unknown format {name!r}{hint}; `e4e-jax convert --help` lists them.")
    module = importlib.import_module(f"e4e_jax.convert.{name}")
    outer = cli.invocation()
    cli.set_invocation(f"e4e-jax convert {name}")
    try:
        return module.main(rest)
    finally:
        cli.set_invocation(outer)
