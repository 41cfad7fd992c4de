"""`python -m e4e_jax.encode`: the same command as `e4e-jax encode` (e4e_jax/cli/encode.py; aliases: e4e_jax/aliases.py)."""
import sys

from e4e_jax.cli.encode import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
