"""Alias of e4e_jax.convert.lpips: `python convert_weights/lpips.py` and `python -m convert_weights.lpips` keep working."""
import sys

from e4e_jax.convert import lpips

if __name__ == "__main__":
    sys.exit(lpips.main())
sys.modules[__name__] = lpips
