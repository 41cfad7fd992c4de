"""`python -m e4e_jax.directions`: the same command as `e4e-jax directions` (e4e_jax/cli/directions.py)."""
import sys

from e4e_jax.cli.directions import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
