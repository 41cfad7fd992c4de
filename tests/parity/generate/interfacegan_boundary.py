"""Rebuilds tests/fixtures/interfacegan_boundary from InterFaceGAN's official boundary functions.

Official code: genforce/interfacegan at commit 8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb
(https://github.com/genforce/interfacegan), `utils/manipulator.py`, imported unchanged:

- `train_boundary(latent_codes, scores, chosen_num_or_ratio, split_ratio, invalid_value,
  logger)` on synthetic codes and scores, one call per case below, each right after
  `np.random.seed(case seed)` (the function shuffles its train / validation split with numpy's
  global random state and takes no seed). Saved: the returned boundary, and the counts and
  accuracies it logs (captured from the logger passed in).
- `project_boundary(primal, *conditions)` with 0 to 4 conditions.

Needs numpy and scikit-learn only (no torch). One harness-side stand-in: the official code
writes `np.int`, an alias of the builtin `int` that numpy removed in 1.24; when numpy lacks it,
`np.int = int` is set before the calls (the same type the alias named).

Run it with a checkout of the official repository at the pinned commit:

    git clone https://github.com/genforce/interfacegan /tmp/official/interfacegan
    git -C /tmp/official/interfacegan checkout 8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb
    python tests/parity/generate/interfacegan_boundary.py --official /tmp/official/interfacegan \
        --out tests/fixtures/interfacegan_boundary

or straight from a bare mirror (`--git-dir MIRROR.git`: the three files of utils/ are read with
`git show COMMIT:PATH`). `--compare tests/fixtures/interfacegan_boundary` (with --out elsewhere)
checks a rebuild against the committed fixture.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

REPO = "genforce/interfacegan"
COMMIT = "8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb"
FILES = ("utils/__init__.py", "utils/logger.py", "utils/manipulator.py")
FAMILY = "interfacegan_boundary"

# name -> (samples, w_dim, chosen_num_or_ratio, split_ratio, invalid_value, seed, noise,
#          score dtype); scores = codes @ v + noise * N(0, 1), so the validation accuracy is
#          high but not always 1
CASES = {
    "ratio_default": (2000, 32, 0.02, 0.7, None, 0, 0.5, "float32"),
    "count_invalid": (600, 64, 60, 0.6, -1.0, 11, 1.0, "float64"),
    "w512": (400, 512, 0.25, 0.7, None, 2021, 0.3, "float32"),
    "half": (300, 16, 0.5, 0.7, None, 5, 1.0, "float64"),
}
INVALID_ROWS = 50           # rows of count_invalid whose score is set to the invalid value
PROJECT_DIM = 32
PROJECT_CONDITIONS = 4      # project_boundary with the first k of them, k = 0..4
DATA_SEED = 1234


def official_tree(args) -> str:
    """A folder holding utils/ of the official repository at COMMIT."""
    if args.official:
        head = subprocess.run(["git", "-C", args.official, "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=False)
        if head.returncode == 0 and head.stdout.strip() != COMMIT:
            sys.exit(f"{args.official} is at {head.stdout.strip()}, not {COMMIT}.")
        return args.official
    dest = tempfile.mkdtemp(prefix="interfacegan_")
    for path in FILES:
        text = subprocess.run(["git", f"--git-dir={args.git_dir}", "show", f"{COMMIT}:{path}"],
                              capture_output=True, check=True).stdout
        os.makedirs(os.path.join(dest, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(dest, path), "wb") as f:
            f.write(text)
    return dest


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def logged_counts(lines: list[str]) -> dict[str, int]:
    """The integers the official function logs: split sizes and correct / total counts."""
    text = "\n".join(lines)
    out = {}
    for key, pattern in (("train", r"Training: (\d+) positive, (\d+) negative"),
                         ("val", r"Validation: (\d+) positive, (\d+) negative"),
                         ("remaining", r"Remaining: (\d+) positive, (\d+) negative")):
        m = re.search(pattern, text)
        out[f"{key}_positive"], out[f"{key}_negative"] = int(m.group(1)), int(m.group(2))
    for key, pattern in (("val", r"Accuracy for validation set: (\d+) / (\d+)"),
                         ("remaining", r"Accuracy for remaining set: (\d+) / (\d+)")):
        m = re.search(pattern, text)
        out[f"{key}_correct"], out[f"{key}_total"] = ((int(m.group(1)), int(m.group(2)))
                                                      if m else (0, 0))
    return out


def make_inputs() -> dict[str, np.ndarray]:
    draw = np.random.RandomState(DATA_SEED)
    inputs = {}
    for name, (n, dim, _, _, invalid, _, noise, dtype) in CASES.items():
        codes = draw.standard_normal((n, dim)).astype(np.float32)
        v = draw.standard_normal((dim, 1))
        scores = (codes.astype(np.float64) @ v / np.linalg.norm(v)
                  + noise * draw.standard_normal((n, 1))).astype(dtype)
        if invalid is not None:
            scores[draw.choice(n, INVALID_ROWS, replace=False)] = invalid
        valid = scores[scores != invalid] if invalid is not None else scores.ravel()
        assert len(np.unique(valid)) == len(valid), "tied scores: the sort order is ambiguous"
        inputs[f"{name}/codes"] = codes
        inputs[f"{name}/scores"] = scores
    vectors = draw.standard_normal((PROJECT_CONDITIONS + 1, 1, PROJECT_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    inputs["project/primal"] = vectors[0]
    inputs["project/conditions"] = vectors[1:]
    return inputs


def generate(tree: str) -> tuple[dict, dict, dict]:
    sys.path.insert(0, os.path.abspath(tree))
    if not hasattr(np, "int"):
        np.int = int            # the alias the official code uses (removed in numpy 1.24)
    manipulator = importlib.import_module("utils.manipulator")
    import sklearn

    inputs = make_inputs()
    expected, cases = {}, {}
    for name, (n, dim, chosen, split, invalid, seed, noise, dtype) in CASES.items():
        logger = logging.getLogger(f"{FAMILY}.{name}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        records = Records()
        logger.addHandler(records)
        np.random.seed(seed)
        boundary = manipulator.train_boundary(
            inputs[f"{name}/codes"], inputs[f"{name}/scores"], chosen_num_or_ratio=chosen,
            split_ratio=split, invalid_value=invalid, logger=logger)
        expected[f"{name}/boundary"] = np.asarray(boundary, np.float32)
        counts = logged_counts(records.lines)
        for key, value in counts.items():
            expected[f"{name}/{key}"] = np.asarray(value, np.int64)
        cases[name] = {"samples": n, "w_dim": dim, "chosen_num_or_ratio": chosen,
                       "split_ratio": split, "invalid_value": invalid, "seed": seed,
                       "score_noise": noise, "scores_dtype": dtype, "log": records.lines,
                       **counts}
    primal = inputs["project/primal"]
    conditions = list(inputs["project/conditions"])
    for k in range(PROJECT_CONDITIONS + 1):
        expected[f"project/k{k}"] = np.asarray(
            manipulator.project_boundary(primal, *conditions[:k]))
    manifest = {
        "official": {"repo": REPO, "commit": COMMIT, "file": "utils/manipulator.py",
                     "functions": ["train_boundary", "project_boundary"]},
        "harness": "tests/parity/generate/interfacegan_boundary.py",
        "stand_ins": ["np.int = int when numpy lacks the alias (numpy >= 1.24)"],
        "versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__,
                     "python": sys.version.split()[0]},
        "data_seed": DATA_SEED,
        "cases": cases,
        "project": {"w_dim": PROJECT_DIM, "conditions": PROJECT_CONDITIONS,
                    "calls": [f"project_boundary(primal, *conditions[:{k}])"
                              for k in range(PROJECT_CONDITIONS + 1)]},
    }
    return inputs, expected, manifest


def write(out: str, inputs: dict, expected: dict, manifest: dict) -> None:
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, "inputs.npz"), **inputs)
    np.savez(os.path.join(out, "expected.npz"), **expected)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def compare(out: str, reference: str) -> int:
    bad = 0
    for file in ("inputs.npz", "expected.npz"):
        with np.load(os.path.join(out, file)) as a, np.load(os.path.join(reference, file)) as b:
            for key in sorted(set(a.files) | set(b.files)):
                if key not in a.files or key not in b.files:
                    print(f"{file}:{key} present in one folder only")
                    bad += 1
                elif not np.allclose(a[key], b[key], rtol=0, atol=1e-6):
                    print(f"{file}:{key} differs: max {np.max(np.abs(a[key] - b[key]))}")
                    bad += 1
    print("identical within 1e-6" if not bad else f"{bad} arrays differ")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--official", help="checkout of genforce/interfacegan at the pinned commit")
    src.add_argument("--git-dir", help="a (bare) clone holding the pinned commit")
    p.add_argument("--out", required=True)
    p.add_argument("--compare", help="a committed fixture folder to compare the rebuild with")
    args = p.parse_args()
    inputs, expected, manifest = generate(official_tree(args))
    write(args.out, inputs, expected, manifest)
    for name in CASES:
        c = manifest["cases"][name]
        print(f"{name}: validation {c['val_correct']}/{c['val_total']}, remaining "
              f"{c['remaining_correct']}/{c['remaining_total']}")
    print(f"wrote {args.out}")
    return compare(args.out, args.compare) if args.compare else 0


if __name__ == "__main__":
    sys.exit(main())
