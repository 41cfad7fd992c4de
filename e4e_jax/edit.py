"""`python -m e4e_jax.edit`: the same command as `e4e-jax edit` (e4e_jax/cli/edit.py; aliases: e4e_jax/aliases.py)."""
import sys

from e4e_jax.cli.edit import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
