"""Alias of e4e_jax.convert.stylegan2: `python convert_weights/stylegan2.py` and `python -m convert_weights.stylegan2` keep working."""
import sys

from e4e_jax.convert import stylegan2

if __name__ == "__main__":
    sys.exit(stylegan2.main())
sys.modules[__name__] = stylegan2
