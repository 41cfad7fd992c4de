"""`python -m e4e_jax.invert`: the same command as `e4e-jax invert` (e4e_jax/cli/invert.py; aliases: e4e_jax/aliases.py)."""
import sys

from e4e_jax.cli.invert import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
