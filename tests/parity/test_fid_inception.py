"""FID Inception-v3 (pytorch-fid 0.3.0) and the FID statistics against the fid_inception fixture.

The official checkpoint is rebuilt from the manifest, written with torch.save, converted with OUR
converter CLI, loaded with OUR loader and run through OUR model and statistics.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.support.fixtures import (assert_close, load_fixture, load_real_size, nchw_to_nhwc, save_torch,
                           suggested_atol)
from e4e_jax.convert.common import ConversionError
from e4e_jax.convert.fid_inception import convert_fid_inception, main as convert_main
from e4e_jax.nets.model_dir import ModelDirError, check_tree, save_model_dir
from e4e_jax.evaluation.metrics import (fid_from_features, fid_statistics, frechet_distance,
                             frechet_distance_details, load_inception, maybe_load_inception)
from e4e_jax.models.inception import expected_variables

NAME = "fid_inception"


@pytest.fixture(scope="module")
def fx():
    return load_fixture(NAME)


@pytest.fixture(scope="module")
def converted(fx, tmp_path_factory):
    d = tmp_path_factory.mktemp("fid_inception")
    src = save_torch(fx.container(), str(d / "pt_inception-2015-12-05-6726825d.pth"))
    assert convert_main([src, str(d / "inception")]) == 0
    return str(d / "inception")


@pytest.fixture(scope="module")
def features(fx, converted):
    inception = load_inception(converted)
    # One batch shape (8) for all three calls: the 4-image batch is padded, so one compilation.
    pool3 = inception.features(nchw_to_nhwc(fx.inputs["x"]), value_range=(0.0, 1.0), batch_size=8)
    pool3_a = inception.features(fx.inputs["set_a_u8"], batch_size=8)
    pool3_b = inception.features(fx.inputs["set_b_u8"], batch_size=8)
    return {"pool3": pool3, "pool3_a": pool3_a, "pool3_b": pool3_b, "inception": inception}


def test_pool3_features_match(fx, features):
    for key in ("pool3", "pool3_a", "pool3_b"):
        assert_close(key, features[key], fx.expected[key], suggested_atol(NAME, key))
    # one program for every call: the 4-image batch was padded to 8, so nothing recompiles
    from e4e_jax.evaluation.monitoring import CompileCounter
    with CompileCounter() as counter:
        features["inception"].features(fx.inputs["set_a_u8"][:3], batch_size=8)
    assert counter.count == 0


def test_float_input_in_minus1_1_matches(fx, features):
    # Generated / encoded images come in [-1, 1]: same features up to the rounding of 2x - 1.
    x = nchw_to_nhwc(fx.inputs["x"]) * 2.0 - 1.0
    got = features["inception"].features(x, batch_size=8)
    assert_close("pool3 from [-1, 1] input", got, fx.expected["pool3"],
                 suggested_atol(NAME, "pool3"))


def test_fid_statistics_from_our_features(fx, features):
    e = fx.expected
    for s in ("a", "b"):
        mu, sigma = fid_statistics(features[f"pool3_{s}"])
        assert_close(f"mu_{s}", mu, e[f"mu_{s}"], suggested_atol(NAME, f"mu_{s}"))
        assert_close(f"sigma_{s}_diag", np.diagonal(sigma), e[f"sigma_{s}_diag"],
                     suggested_atol(NAME, f"sigma_{s}_diag"))
        assert_close(f"sigma_{s}_sub", sigma[::16, ::16], e[f"sigma_{s}_sub"],
                     suggested_atol(NAME, f"sigma_{s}_sub"))


@pytest.mark.slow
def test_fid_from_our_features_exactly_as_pytorch_fid(fx, features):
    # scipy's sqrtm of the 2048x2048 product, as pytorch-fid (~15-40 s on 2 cores).
    e = fx.expected
    mu_a, sigma_a = fid_statistics(features["pool3_a"])
    mu_b, sigma_b = fid_statistics(features["pool3_b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's LinAlgWarning on the rank-7 product
        r = frechet_distance_details(mu_a, sigma_a, mu_b, sigma_b)
    assert_close("fid", r.fid, e["fid"], suggested_atol(NAME, "fid"))
    terms = [r.mean_term, r.trace_sigma1, r.trace_sigma2, r.trace_covmean]
    assert_close("fid_terms", terms, e["fid_terms"], suggested_atol(NAME, "fid_terms"))
    assert int(r.singular_fallback) == int(e["fid_singular_branch"])


def test_statistics_and_fast_fid_of_official_features(fx):
    # The statistics alone, fed the official features: float64 as pytorch-fid, so they agree to
    # the float32 storage of the expected values. The 'eigen' FID (through the 8 samples) lands
    # within the fixture's tolerance of the sqrtm value.
    e = fx.expected
    mu_a, sigma_a = fid_statistics(e["pool3_a"])
    mu_b, sigma_b = fid_statistics(e["pool3_b"])
    assert_close("mu_a (official features)", mu_a, e["mu_a"], 1e-7)
    assert_close("sigma_b_sub (official features)", sigma_b[::16, ::16], e["sigma_b_sub"], 1e-9)
    got = fid_from_features(e["pool3_a"], e["pool3_b"], method="eigen")
    assert_close("fid, method 'eigen' (official features)", got, e["fid"],
                 suggested_atol(NAME, "fid"))


def test_frechet_distance_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu, sigma = fid_statistics(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    # The three ways of taking tr(sqrtm(sigma1 sigma2)) agree.
    want = fid_from_features(x, y)
    assert fid_from_features(x, y, method="eigen") == pytest.approx(want, rel=1e-10)
    assert fid_from_features(x[:4], y[:5], method="eigen") == pytest.approx(
        fid_from_features(x[:4], y[:5]), rel=1e-6)
    with pytest.raises(ValueError, match="unknown FID method"):
        frechet_distance(mu, sigma, mu, sigma, method="svd")
    # Gaussians with equal covariance: FID = ||mu1 - mu2||^2.
    assert frechet_distance(mu, sigma, mu + 2.0, sigma) == pytest.approx(6 * 4.0, rel=1e-6)
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])
    with pytest.raises(ValueError, match="at least 2"):
        fid_statistics(x[:1])


def test_singular_fallback_fires_on_nonfinite_sqrtm(monkeypatch):
    # pytorch-fid retries with eps on both diagonals when sqrtm of the product is not finite.
    from scipy import linalg
    calls = []

    def flaky(m, disp=True):
        calls.append(disp)
        if len(calls) == 1:
            return np.full_like(m, np.inf), 1.0
        w, v = np.linalg.eigh(m)  # the test matrices are symmetric PSD
        return (v * np.sqrt(w)) @ v.T, 0.0

    monkeypatch.setattr(linalg, "sqrtm", flaky)
    s = np.diag([1.0, 0.0])
    r = frechet_distance_details(np.zeros(2), s, np.zeros(2), s, eps=1e-6)
    assert r.singular_fallback and len(calls) == 2
    # tr(sqrtm((s + eps)(s + eps))) = tr(s + eps) = 1 + 2e-6
    assert r.trace_covmean == pytest.approx(1 + 2e-6, rel=1e-9)


def test_converter_real_size_manifest():
    manifest, state, _ = load_real_size("pt_inception_2015_12_05.json")
    variables = convert_fid_inception(state)
    check_tree(expected_variables(), variables, "converted real-size FID Inception")
    k = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    np.testing.assert_array_equal(
        k, np.transpose(state["Mixed_6b.branch7x7_2.conv.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                  state["Mixed_7c.branch_pool.bn.running_var"])


def test_converter_errors_name_the_problem():
    _, state, _ = load_real_size("pt_inception_2015_12_05.json")
    broken = dict(state)
    del broken["Mixed_5b.branch1x1.bn.running_mean"]
    broken["Mixed_6a.branch3x3.conv.weight"] = np.zeros((384, 288, 3, 1), np.float32)
    with pytest.raises(ConversionError) as e:
        convert_fid_inception(broken)
    assert "Mixed_5b.branch1x1.bn.running_mean" in str(e.value)
    assert "Mixed_6a.branch3x3.conv.weight" in str(e.value)
    with pytest.raises(ConversionError, match="Mixed_7c"):
        convert_fid_inception({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})


def test_loader_errors(tmp_path):
    save_model_dir(str(tmp_path / "other"), "stylegan2_generator", {}, variables={"a": np.ones(1)})
    with pytest.raises(ModelDirError, match="fid_inception"):
        load_inception(str(tmp_path / "other"))
    inc, reason = maybe_load_inception(None)
    assert inc is None and "`e4e-jax convert fid_inception`" in reason
    inc, reason = maybe_load_inception(str(tmp_path / "missing"))
    assert inc is None and "could not be loaded" in reason
