"""InterFaceGAN boundaries: a linear SVM between the highest- and lowest-scored codes, and the
projection of a boundary off other (condition) boundaries.

    result = train_boundary(w, scores, chosen_num_or_ratio=0.02, split_ratio=0.7, seed=0)
    result.normal               # (1, w_dim) float32, unit norm: the editing direction
    result.val_accuracy         # on the held-out part of the chosen samples
    conditional = project_boundary(result.normal, smile, age)   # orthogonal to both

Semantics are those of genforce/interfacegan `utils/manipulator.py` (`train_boundary`,
`project_boundary`) at commit 8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb
(https://github.com/genforce/interfacegan), re-implemented here; the parity fixture
tests/fixtures/interfacegan_boundary/ holds the official function's outputs on the same inputs.

How the official train_boundary works, step by step (this module does the same):

1. rows whose score equals `invalid_value` are dropped (when it is not None);
2. the rows are ordered by score, highest first (`np.argsort` of the (N, 1) scores, reversed);
3. chosen = int(N * r) for 0 < r <= 1, else int(r); at most N // 2. The first `chosen` rows are
   the positives, the last `chosen` the negatives;
4. train = int(chosen * split_ratio) per side, the rest of each side is the validation set. Which
   rows go where is drawn by shuffling 0..chosen-1 twice with numpy's GLOBAL random state
   (`np.random.shuffle`, positives first, then negatives): the official function takes no seed,
   so its split depends on whatever seeded (or did not seed) `np.random` before the call;
5. `sklearn.svm.SVC(kernel='linear')` is fitted on the positives' training rows, then the
   negatives' (labels 1 then 0);
6. it logs the validation accuracy and the accuracy on the rows between the two chosen sets
   (labelled by whether their score reaches the midpoint of the highest and lowest score);
7. it returns coef_ as float32 (1, w_dim), divided by its norm.

The split here: `seed` (an int) shuffles with `np.random.RandomState(seed)`, which draws exactly
what `np.random.seed(seed)` followed by the official call draws, so `seed=s` reproduces
`np.random.seed(s); train_boundary(...)` of the official code. `rng` passes a RandomState (or
anything with a `shuffle` method) instead; with neither, the global `np.random` state is used,
as the official code does.

scikit-learn is imported when train_boundary runs (a dependency of the package: setup.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

OFFICIAL_REPO = "genforce/interfacegan"
OFFICIAL_COMMIT = "8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb"


class BoundaryError(ValueError):
    """Inputs from which no boundary can be trained (too few samples, a degenerate SVM)."""


@dataclasses.dataclass
class BoundaryResult:
    """What train_boundary found. Indices are rows of the `latent_codes` passed in.

    normal: (1, w_dim) float32, unit norm; positives lie on its positive side.
    positive_index / negative_index: the chosen rows of each side, most confident first.
    positive_train / negative_train: for each chosen row (same order), True when it was used
    for training, False when it was held out for validation.
    val_correct / val_total: validation rows the SVM classifies right / all of them (both
    sides); val_accuracy = their ratio, None when the split left no validation rows.
    remaining_*: the same on the rows between the chosen sets (None when there are none).
    """
    normal: np.ndarray
    num_samples: int             # rows given
    num_valid: int               # rows left after invalid_value filtering
    chosen_num: int              # per side
    train_num: int               # per side
    val_num: int                 # per side
    positive_index: np.ndarray
    negative_index: np.ndarray
    positive_train: np.ndarray
    negative_train: np.ndarray
    val_correct: int
    val_total: int
    val_accuracy: float | None
    remaining_num: int
    remaining_positive: int
    remaining_negative: int
    remaining_correct: int
    remaining_accuracy: float | None
    decision_value: float        # score threshold of the remaining rows' labels

    def counts(self) -> dict[str, Any]:
        """The counts as plain Python numbers (for JSON)."""
        return {
            "samples": self.num_samples, "valid": self.num_valid,
            "chosen_per_side": self.chosen_num,
            "train": {"positive": self.train_num, "negative": self.train_num},
            "validation": {"positive": self.val_num, "negative": self.val_num,
                           "correct": self.val_correct, "total": self.val_total,
                           "accuracy": self.val_accuracy},
            "remaining": {"positive": self.remaining_positive,
                          "negative": self.remaining_negative,
                          "correct": self.remaining_correct, "total": self.remaining_num,
                          "accuracy": self.remaining_accuracy,
                          "score_threshold": self.decision_value},
        }


def chosen_count(num_samples: int, chosen_num_or_ratio: float) -> int:
    """Rows per side: int(N * r) for a ratio 0 < r <= 1, int(r) for a count r > 1, at most
    N // 2 (the official rule)."""
    if chosen_num_or_ratio <= 0:
        raise BoundaryError(f"chosen_num_or_ratio must be positive, got {chosen_num_or_ratio}.")
    if chosen_num_or_ratio <= 1:
        n = int(num_samples * chosen_num_or_ratio)
    else:
        n = int(chosen_num_or_ratio)
    return min(n, num_samples // 2)


def _shuffler(seed: int | None, rng: Any):
    if rng is not None and seed is not None:
        raise ValueError("give seed or rng, not both.")
    if rng is not None:
        return rng.shuffle
    if seed is not None:
        return np.random.RandomState(seed).shuffle
    return np.random.shuffle            # the global state, as the official function


def train_boundary(latent_codes: np.ndarray, scores: np.ndarray,
                   chosen_num_or_ratio: float = 0.02, split_ratio: float = 0.7,
                   invalid_value: float | None = None, *, seed: int | None = None,
                   rng: Any = None) -> BoundaryResult:
    """The InterFaceGAN boundary of `scores` in the space of `latent_codes` (module docstring).

    latent_codes: (N, w_dim) array; scores: (N, 1) or (N,) array. Codes are passed to the SVM
    in their own dtype (float32 codes stay float32 until scikit-learn converts them), as the
    official function does. Raises BoundaryError (bad shapes, chosen_num_or_ratio <= 0, no
    training row per side, an SVM with a zero normal) and ImportError without scikit-learn.
    """
    codes = latent_codes
    if not isinstance(codes, np.ndarray) or codes.ndim != 2:
        raise BoundaryError(f"latent_codes must be a numpy array (N, w_dim), got "
                            f"{getattr(codes, 'shape', type(codes).__name__)}.")
    total, dim = codes.shape
    s = np.asarray(scores)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape != (total, 1):
        raise BoundaryError(f"scores must be ({total}, 1) or ({total},) for {total} codes, got "
                            f"{np.shape(scores)}.")
    if chosen_num_or_ratio <= 0:
        raise BoundaryError(f"chosen_num_or_ratio must be positive, got {chosen_num_or_ratio}.")
    shuffle = _shuffler(seed, rng)

    rows = np.arange(total)
    if invalid_value is not None:
        keep = s[:, 0] != invalid_value
        codes, s, rows = codes[keep], s[keep], rows[keep]
    order = np.argsort(s, axis=0)[::-1, 0]         # highest score first
    codes, s, rows = codes[order], s[order], rows[order]
    valid = len(codes)
    chosen = chosen_count(valid, chosen_num_or_ratio)
    n_train = int(chosen * split_ratio)
    n_val = chosen - n_train
    if chosen < 1 or n_train < 1:
        raise BoundaryError(
            f"too few samples: {valid} scored codes with chosen_num_or_ratio="
            f"{chosen_num_or_ratio} give {chosen} per side and {n_train} per side for "
            f"training (split_ratio={split_ratio}); the SVM needs at least one of each.")

    # the positive side first, then the negative side: the order of the two draws matters
    pos_perm = np.arange(chosen)
    shuffle(pos_perm)
    neg_perm = np.arange(chosen)
    shuffle(neg_perm)
    top, bottom = codes[:chosen], codes[valid - chosen:]
    x_train = np.concatenate([top[pos_perm[:n_train]], bottom[neg_perm[:n_train]]])
    y_train = np.repeat(np.array([1, 0]), n_train)
    x_val = np.concatenate([top[pos_perm[n_train:]], bottom[neg_perm[n_train:]]])
    y_val = np.repeat(np.array([1, 0]), n_val)

    middle_codes = codes[chosen:valid - chosen]
    middle_scores = s[chosen:valid - chosen, 0]
    threshold = (s[0] + s[-1]) / 2
    y_middle = (~(middle_scores < threshold)).astype(int)

    try:
        from sklearn import svm
    except ImportError as e:
        raise ImportError(f"training an InterFaceGAN boundary needs scikit-learn ({e}); "
                          f"`pip install scikit-learn` (a dependency of e4e_jax).") from e
    classifier = svm.SVC(kernel="linear").fit(x_train, y_train)

    val_correct = int(np.sum(classifier.predict(x_val) == y_val)) if n_val else 0
    middle_correct = (int(np.sum(classifier.predict(middle_codes) == y_middle))
                      if len(middle_codes) else 0)
    normal = classifier.coef_.reshape(1, dim).astype(np.float32)
    norm = np.linalg.norm(normal)
    if not np.isfinite(norm) or norm == 0:
        raise BoundaryError("the SVM's normal is zero or not finite: the chosen positive and "
                            "negative codes cannot be told apart (identical codes?).")
    # index of each chosen row in the caller's array; the shuffles say which were trained on
    pos_train = np.zeros(chosen, bool)
    pos_train[pos_perm[:n_train]] = True
    neg_train = np.zeros(chosen, bool)
    neg_train[neg_perm[:n_train]] = True
    return BoundaryResult(
        normal=normal / norm, num_samples=total, num_valid=valid, chosen_num=chosen,
        train_num=n_train, val_num=n_val,
        positive_index=rows[:chosen], negative_index=rows[valid - chosen:][::-1],
        positive_train=pos_train, negative_train=neg_train[::-1],
        val_correct=val_correct, val_total=2 * n_val,
        val_accuracy=val_correct / (2 * n_val) if n_val else None,
        remaining_num=len(middle_codes), remaining_positive=int(np.sum(y_middle == 1)),
        remaining_negative=int(np.sum(y_middle == 0)), remaining_correct=middle_correct,
        remaining_accuracy=middle_correct / len(middle_codes) if len(middle_codes) else None,
        decision_value=float(threshold[0]))


def _check_row(b: np.ndarray, dim: int | None, what: str) -> None:
    if b.ndim != 2 or b.shape[0] != 1 or (dim is not None and b.shape[1] != dim):
        want = f"(1, {dim})" if dim is not None else "(1, w_dim)"
        raise ValueError(f"{what} must be {want}, got {b.shape}.")


def project_boundary(primal: np.ndarray, *conditions: np.ndarray) -> np.ndarray:
    """The part of `primal` orthogonal to every condition boundary, at unit norm (official
    `project_boundary`): editing along it leaves the conditions' attributes as they are.

    All boundaries are (1, w_dim) and, as the official function assumes, of unit norm. With no
    condition `primal` itself is returned (not renormalised). One condition c: primal -
    (primal . c) c. Two: the closed-form 2x2 solution with 1e-8 added to the denominator
    1 - (c1 . c2)^2 (as the official code). More: the coefficients solve the normal equations
    (C C^T) x = C primal^T (np.linalg.LinAlgError when the conditions are linearly dependent).
    The result is divided by its norm.
    """
    _check_row(primal, None, "the primal boundary")
    if not conditions:
        return primal
    dim = primal.shape[1]
    for i, c in enumerate(conditions):
        _check_row(c, dim, f"condition {i}")
    if len(conditions) == 1:
        (c,) = conditions
        out = primal - (primal @ c.T) * c
    elif len(conditions) == 2:
        c1, c2 = conditions
        p1, p2, c12 = primal @ c1.T, primal @ c2.T, c1 @ c2.T
        denominator = 1 - c12 ** 2 + 1e-8
        a = (p1 - p2 * c12) / denominator
        b = (p2 - p1 * c12) / denominator
        out = primal - a * c1 - b * c2
    else:
        stacked = np.concatenate(conditions, axis=0)            # (k, w_dim)
        coefficients = np.linalg.solve(stacked @ stacked.T, stacked @ primal.T)   # (k, 1)
        out = primal - coefficients.T @ stacked
    return out / np.linalg.norm(out)
