"""Alias of e4e_jax.convert.moco: `python convert_weights/moco.py` and `python -m convert_weights.moco` keep working."""
import sys

from e4e_jax.convert import moco

if __name__ == "__main__":
    sys.exit(moco.main())
sys.modules[__name__] = moco
