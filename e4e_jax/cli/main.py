"""`e4e-jax`: the one command on the PATH, a subcommand per task.

    e4e-jax --help                       the subcommands, one line each
    e4e-jax encode --help                usage, examples and exit codes of one subcommand
    e4e-jax convert e4e SRC.pt DST/      a converter: e4e-jax convert --help lists the formats

Each subcommand is the module e4e_jax/cli/<name>.py (its `main(argv)`); `python train.py`,
`python eval.py`, `python -m e4e_jax.<name>` and `python convert_weights/<format>.py` run the same
code (e4e_jax/aliases.py lists them). Exit codes are the subcommand's (docs/cli.md): 0 done,
1 ran but produced nothing usable, 2 bad arguments or input files, 130 / 143 interrupted.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Sequence

from e4e_jax import cli

# name -> (module holding main(argv), one line for `e4e-jax --help`)
SUBCOMMANDS = {
    "train": ("e4e_jax.cli.train", "train an e4e / pSp encoder from a config (configs/*.py)"),
    "eval": ("e4e_jax.cli.eval", "distortion, perception, editability and proximity-to-W metrics"),
    "encode": ("e4e_jax.cli.encode", "encode a folder of images into W+ latents"),
    "invert": ("e4e_jax.cli.invert", "invert images with e4e, ReStyle, the W projector or PTI"),
    "edit": ("e4e_jax.cli.edit", "latent edits (InterFaceGAN, GANSpace, SeFa) as labelled grids"),
    "directions": ("e4e_jax.cli.directions", "train an InterFaceGAN direction on scored codes"),
    "sample": ("e4e_jax.cli.sample", "a PNG grid of generator samples"),
    "align": ("e4e_jax.cli.align", "FFHQ-align the faces of a folder of photos"),
    "prepare": ("e4e_jax.cli.prepare", "an image folder as shards at the training size"),
    "convert": ("e4e_jax.cli.convert", "convert official PyTorch weights to a model directory"),
}


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: e4e-jax SUBCOMMAND [ARGS ...]", "",
             "e4e (Tov et al. 2021) and StyleGAN inversion and editing in JAX.", "",
             "subcommands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "`e4e-jax SUBCOMMAND --help` shows a subcommand's flags, examples and exit "
                  "codes."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return cli.EXIT_OK if argv else cli.EXIT_USAGE
    if argv[0] == "--version":
        from e4e_jax import __version__
        print(f"e4e-jax {__version__}")
        return cli.EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
        hint = f" (did you mean `e4e-jax {close[0]}`?)" if close else ""
        return cli.error(f"unknown subcommand {name!r}{hint}; `e4e-jax --help` lists them.")
    if name == "train":
        # training has its own graceful stop (e4e_jax/train/interrupts.py: finish the step,
        # save, exit 143 / 130) and its own "aborted" line for a second signal
        module = importlib.import_module(SUBCOMMANDS[name][0])
        cli.set_invocation(f"e4e-jax {name}")
        try:
            return module.main(rest)
        finally:
            cli.set_invocation(None)       # a caller's own parsers keep their own names
    # SIGINT / SIGTERM from the subcommand's first import on: one line, exit 130 / 143
    return cli.run_main(SUBCOMMANDS[name][0], rest, prog=f"e4e-jax {name}")


if __name__ == "__main__":
    sys.exit(main())
