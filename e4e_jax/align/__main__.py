"""`python -m e4e_jax.align`: the same command as `e4e-jax align` (e4e_jax/cli/align.py)."""
import sys

from e4e_jax.cli.align import main

sys.exit(main())
