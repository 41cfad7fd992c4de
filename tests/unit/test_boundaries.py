"""InterFaceGAN boundaries (e4e_jax/editing/boundaries.py): parity with the official
`train_boundary` / `project_boundary` (genforce/interfacegan 8da3fc0, fixture
tests/fixtures/interfacegan_boundary, rebuilt by tests/parity/generate/interfacegan_boundary.py),
the seed semantics of the split, and properties."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is a dependency of e4e_jax (setup.py)")

from e4e_jax.editing.boundaries import (
    OFFICIAL_COMMIT,
    BoundaryError,
    chosen_count,
    project_boundary,
    train_boundary,
)
from tests.support.paths import FIXTURES

FIXTURE = os.path.join(FIXTURES, "interfacegan_boundary")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fixture():
    with open(os.path.join(FIXTURE, "manifest.json")) as f:
        manifest = json.load(f)
    with np.load(os.path.join(FIXTURE, "inputs.npz")) as a, \
            np.load(os.path.join(FIXTURE, "expected.npz")) as b:
        return manifest, {k: a[k] for k in a.files}, {k: b[k] for k in b.files}


def test_the_fixture_is_of_the_pinned_commit(fixture):
    manifest, _, _ = fixture
    assert manifest["official"]["commit"] == OFFICIAL_COMMIT
    assert manifest["official"]["repo"] == "genforce/interfacegan"


@pytest.mark.parametrize("case", ["ratio_default", "count_invalid", "w512", "half"])
def test_train_boundary_matches_the_official_function(fixture, case):
    manifest, inputs, expected = fixture
    c = manifest["cases"][case]
    r = train_boundary(inputs[f"{case}/codes"], inputs[f"{case}/scores"],
                       c["chosen_num_or_ratio"], c["split_ratio"], c["invalid_value"],
                       seed=c["seed"])
    want = expected[f"{case}/boundary"]
    assert r.normal.shape == want.shape and r.normal.dtype == np.float32
    np.testing.assert_allclose(r.normal, want, rtol=0, atol=TOLERANCE)
    got = {"train_positive": r.train_num, "train_negative": r.train_num,
           "val_positive": r.val_num, "val_negative": r.val_num,
           "val_correct": r.val_correct, "val_total": r.val_total,
           "remaining_positive": r.remaining_positive,
           "remaining_negative": r.remaining_negative,
           "remaining_correct": r.remaining_correct, "remaining_total": r.remaining_num}
    assert got == {k: int(expected[f"{case}/{k}"]) for k in got}


@pytest.mark.parametrize("k", range(5))
def test_project_boundary_matches_the_official_function(fixture, k):
    _, inputs, expected = fixture
    conditions = list(inputs["project/conditions"])[:k]
    got = project_boundary(inputs["project/primal"], *conditions)
    np.testing.assert_allclose(got, expected[f"project/k{k}"], rtol=0, atol=TOLERANCE)
    for c in conditions:                                   # orthogonal to every condition
        assert abs(float((got @ c.T)[0, 0])) < 1e-6
    assert abs(np.linalg.norm(got) - 1) < 1e-6


def test_seed_is_the_official_global_seed(fixture):
    """seed=s draws the split np.random.seed(s) + the official call draws; seed=None uses the
    global state itself; rng= takes a RandomState."""
    _, inputs, _ = fixture
    codes, scores = inputs["count_invalid/codes"], inputs["count_invalid/scores"]
    a = train_boundary(codes, scores, 60, 0.6, -1.0, seed=3)
    np.random.seed(3)
    b = train_boundary(codes, scores, 60, 0.6, -1.0)
    c = train_boundary(codes, scores, 60, 0.6, -1.0, rng=np.random.RandomState(3))
    for other in (b, c):
        np.testing.assert_array_equal(a.normal, other.normal)
        np.testing.assert_array_equal(a.positive_train, other.positive_train)
    d = train_boundary(codes, scores, 60, 0.6, -1.0, seed=4)
    assert not np.array_equal(a.positive_train, d.positive_train)    # another split
    with pytest.raises(ValueError, match="seed or rng"):
        train_boundary(codes, scores, 60, 0.6, seed=1, rng=np.random.RandomState(1))


def separable(n=400, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n, dim)).astype(np.float32)
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    return codes, (codes @ v).astype(np.float32), v


def test_separable_data_gives_the_true_direction_and_full_accuracy():
    codes, scores, v = separable()
    r = train_boundary(codes, scores, 0.25, 0.7, seed=0)
    assert abs(np.linalg.norm(r.normal) - 1) < 1e-6
    assert r.val_accuracy == 1.0 and r.val_total == 2 * r.val_num == 2 * (100 - 70)
    assert float(r.normal[0] @ v) > 0.9                     # points to the higher scores
    assert r.remaining_accuracy > 0.8         # labelled by the mid-range score, not the SVM
    # the chosen rows are the highest / lowest scores, most confident first
    order = np.argsort(-scores)
    np.testing.assert_array_equal(r.positive_index, order[:100])
    np.testing.assert_array_equal(r.negative_index, order[::-1][:100])
    assert r.positive_train.sum() == r.negative_train.sum() == 70
    counts = r.counts()
    assert counts["validation"]["accuracy"] == 1.0 and counts["chosen_per_side"] == 100
    json.dumps(counts)                                        # plain Python numbers


def test_invalid_rows_are_left_out_and_indices_refer_to_the_input():
    codes, scores, _ = separable(200)
    scores[:20] = -99.0
    r = train_boundary(codes, scores, 0.5, 0.7, invalid_value=-99.0, seed=0)
    assert r.num_valid == 180 and r.chosen_num == 90
    assert not set(range(20)) & (set(r.positive_index) | set(r.negative_index))


@pytest.mark.parametrize("n, ratio, split", [(4, 0.02, 0.7), (10, 0.1, 0.7), (40, 1, 0.01)])
def test_too_few_samples(n, ratio, split):
    codes, scores, _ = separable(n)
    with pytest.raises(BoundaryError, match="too few samples"):
        train_boundary(codes, scores, ratio, split, seed=0)


def test_chosen_count_is_the_official_rule():
    assert chosen_count(1000, 0.02) == 20
    assert chosen_count(1000, 1) == 500            # 1 is a ratio (all), capped at N // 2
    assert chosen_count(1000, 30) == 30            # > 1: a count
    assert chosen_count(1000, 2000) == 500
    with pytest.raises(BoundaryError):
        chosen_count(10, 0)


def test_bad_shapes():
    codes, scores, _ = separable(50)
    with pytest.raises(BoundaryError, match=r"\(N, w_dim\)"):
        train_boundary(codes[None], scores, seed=0)
    with pytest.raises(BoundaryError, match="scores must be"):
        train_boundary(codes, scores[:10], seed=0)
    with pytest.raises(ValueError, match=r"condition 0 must be \(1, 24\)"):
        project_boundary(codes[:1], codes[:1, :5])


def test_identical_codes_give_no_boundary():
    codes = np.ones((40, 8), np.float32)
    with pytest.raises(BoundaryError, match="cannot be told apart"):
        train_boundary(codes, np.arange(40.0), 0.5, seed=0)
