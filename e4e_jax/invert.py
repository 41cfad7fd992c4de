"""`python -m e4e_jax.invert`: the same command as `e4e-jax invert` (e4e_jax/cli/invert.py; aliases: e4e_jax/aliases.py)."""
import sys

if __name__ == "__main__":   # Ctrl-C / SIGTERM handled from the first import on (cli.run_main)
    from e4e_jax import cli
    sys.exit(cli.run_main("e4e_jax.cli.invert", label="python -m e4e_jax.invert"))

from e4e_jax.cli.invert import build_parser, main  # noqa: F401
