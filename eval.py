"""Evaluates e4e / pSp encoder checkpoints: distortion, perception, editability, proximity to W.

    python eval.py --checkpoint runs/demo/export --data synthetic --out eval/
    python eval.py --checkpoint A --checkpoint B --data test_images/ --out eval/ \
        --lpips weights/lpips_alex --arcface weights/arcface --inception weights/fid_inception

Writes OUT/metrics.json and OUT/report.md; see e4e_jax/evaluation/ and `--help`.
"""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from e4e_jax.evaluation.cli import main
    sys.exit(main())
