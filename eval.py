"""Evaluates e4e / pSp encoder checkpoints: distortion, perception, editability, proximity to W.

    python eval.py --checkpoint runs/demo/export --data synthetic --num-images 64 --out eval/
    python eval.py --checkpoint A --checkpoint B --data test_images/ --out eval/ \
        --lpips weights/lpips_alex --arcface weights/arcface --inception weights/fid_inception

Writes OUT/metrics.json and OUT/report.md; see e4e_jax/evaluation/ and `--help`. Flags use
dashes; the underscore spellings (--num_images) still work. `--paper` restores the paper's
5,000 sampled w for w_deviation (default 500).
"""
import os
import sys

if __name__ == "__main__":
    if "--verbose" not in sys.argv:          # TF reads its log level at import
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from e4e_jax import cli              # Ctrl-C / SIGTERM: one line, exit 130 / 143
    sys.exit(cli.run_main("e4e_jax.cli.eval", label="python eval.py"))
