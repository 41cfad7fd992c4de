"""Alias of e4e_jax.convert.fid_inception: `python convert_weights/fid_inception.py` and `python -m convert_weights.fid_inception` keep working."""
import sys

from e4e_jax.convert import fid_inception

if __name__ == "__main__":
    sys.exit(fid_inception.main())
sys.modules[__name__] = fid_inception
