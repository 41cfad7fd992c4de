"""Alias of e4e_jax.convert.e4e: `python convert_weights/e4e.py` and `python -m convert_weights.e4e` keep working."""
import sys

from e4e_jax.convert import e4e

if __name__ == "__main__":
    sys.exit(e4e.main())
sys.modules[__name__] = e4e
