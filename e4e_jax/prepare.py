"""`python -m e4e_jax.prepare`: the same command as `e4e-jax prepare` (e4e_jax/cli/prepare.py; aliases: e4e_jax/aliases.py)."""
import sys

from e4e_jax.cli.prepare import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
