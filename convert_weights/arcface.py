"""Alias of e4e_jax.convert.arcface: `python convert_weights/arcface.py` and `python -m convert_weights.arcface` keep working."""
import sys

from e4e_jax.convert import arcface

if __name__ == "__main__":
    sys.exit(arcface.main())
sys.modules[__name__] = arcface
