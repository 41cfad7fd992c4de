"""`python -m e4e_jax.prepare`: the same command as `e4e-jax prepare` (e4e_jax/cli/prepare.py; aliases: e4e_jax/aliases.py)."""
import sys

if __name__ == "__main__":   # Ctrl-C / SIGTERM handled from the first import on (cli.run_main)
    from e4e_jax import cli
    sys.exit(cli.run_main("e4e_jax.cli.prepare", label="python -m e4e_jax.prepare"))

from e4e_jax.cli.prepare import build_parser, main  # noqa: F401
