"""Alias of e4e_jax.convert.restyle: `python convert_weights/restyle.py` and
`python -m convert_weights.restyle` run `e4e-jax convert restyle`."""
import sys

from e4e_jax.convert import restyle

if __name__ == "__main__":
    sys.exit(restyle.main())
sys.modules[__name__] = restyle
