"""`python -m e4e_jax.sample`: the same command as `e4e-jax sample` (e4e_jax/cli/sample.py; aliases: e4e_jax/aliases.py)."""
import sys

if __name__ == "__main__":   # Ctrl-C / SIGTERM handled from the first import on (cli.run_main)
    from e4e_jax import cli
    sys.exit(cli.run_main("e4e_jax.cli.sample", label="python -m e4e_jax.sample"))

from e4e_jax.cli.sample import build_parser, main  # noqa: F401
