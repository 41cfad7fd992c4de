"""`python -m e4e_jax.sample`: the same command as `e4e-jax sample` (e4e_jax/cli/sample.py; aliases: e4e_jax/aliases.py)."""
import sys

from e4e_jax.cli.sample import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
