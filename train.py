"""`python train.py`: the same command as `e4e-jax train` (e4e_jax/cli/train.py; see --help).

    python train.py --config configs/demo.py --workdir runs/demo
"""
import sys

from e4e_jax.cli.train import run

if __name__ == "__main__":
    run(sys.argv)
