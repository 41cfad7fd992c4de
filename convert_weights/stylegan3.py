"""Alias of e4e_jax.convert.stylegan3: `python convert_weights/stylegan3.py` and `python -m convert_weights.stylegan3` keep working."""
import sys

from e4e_jax.convert import stylegan3

if __name__ == "__main__":
    sys.exit(stylegan3.main())
sys.modules[__name__] = stylegan3
