"""Alias of e4e_jax.convert.stylegan2_ada: `python convert_weights/stylegan2_ada.py` and `python -m convert_weights.stylegan2_ada` keep working."""
import sys

from e4e_jax.convert import stylegan2_ada

if __name__ == "__main__":
    sys.exit(stylegan2_ada.main())
sys.modules[__name__] = stylegan2_ada
