"""Codes files as users have them (e4e_jax/data/codes.py): .npy, .npz, the official inference's
latents.pt (torch.save of a tensor), dicts; NaN / Inf rows refused naming the rows."""
import numpy as np
import pytest

from e4e_jax.data.codes import CodesError, check_finite, read_codes, split_key

torch = pytest.importorskip("torch", reason="the [convert] extra installs torch")


@pytest.fixture
def codes():
    return np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)


def test_every_format_gives_the_same_codes(codes, tmp_path):
    np.save(tmp_path / "a.npy", codes)
    np.savez(tmp_path / "one.npz", latents=codes)
    np.savez(tmp_path / "two.npz", w_plus=codes, other=codes[:1])
    torch.save(torch.from_numpy(codes), tmp_path / "latents.pt")      # scripts/inference.py
    torch.save({"latents": torch.from_numpy(codes)}, tmp_path / "dict.pt")
    for spec in ("a.npy", "one.npz", "two.npz:w_plus", "latents.pt", "dict.pt",
                 "dict.pt:latents"):
        got = read_codes(str(tmp_path / spec))
        assert got.dtype == np.float32 and np.array_equal(got, codes), spec


def test_refusals_name_the_problem(codes, tmp_path):
    np.savez(tmp_path / "two.npz", w_plus=codes, other=codes[:1])
    with pytest.raises(CodesError, match=r"several arrays \(other, w_plus\); name one as '.*two"
                                         r"\.npz:KEY'"):
        read_codes(str(tmp_path / "two.npz"))
    with pytest.raises(CodesError, match="has no array 'nope'"):
        read_codes(str(tmp_path / "two.npz:nope"))
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(CodesError, match="expected codes"):
        read_codes(str(tmp_path / "s.npy"))
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unknown file type '.txt'"):
        read_codes(str(tmp_path / "x.txt"))
    with pytest.raises(FileNotFoundError):
        read_codes(str(tmp_path / "missing.npy"))


def test_non_finite_rows_are_refused_by_row(codes, tmp_path):
    bad = codes.copy()
    bad[1, 2, 3] = np.nan
    bad[2, 0, 0] = -np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(CodesError, match=r"2 of 3 rows hold NaN or Inf \(rows 1, 2\)"):
        read_codes(str(tmp_path / "bad.npy"))
    with pytest.raises(CodesError, match=r"rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\."):
        check_finite(np.full((12, 2), np.nan), "x")
    check_finite(codes, "fine")


def test_a_key_is_split_only_from_an_array_file_path(tmp_path):
    assert split_key("codes.npz:w") == ("codes.npz", "w")
    assert split_key("latents.pt:latents") == ("latents.pt", "latents")
    assert split_key("weird:name.npy") == ("weird:name.npy", None)
    assert split_key("plain.npy") == ("plain.npy", None)
