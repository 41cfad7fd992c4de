"""SWD, LEC and proximity-to-W metrics: reference formulations, known values, properties, and
one compilation per evaluation (trace counters)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.fixtures import assert_close
from e4e_jax.evaluation import metrics
from e4e_jax.evaluation.monitoring import CompileCounter
from e4e_jax.editing import LinearEdit
from e4e_jax.evaluation.metrics import (filter_outliers, images_to_uint8, iterate_batches,
                             laplacian_pyramid, latent_deviation, latent_editing_consistency,
                             latent_variation, sliced_wasserstein, swd, swd_resolutions)


def smooth_images(n, size=32, seed=0):
    """Random smooth colour images in about [-1, 1] (sums of a few random sinusoids)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = np.zeros((n, size, size, 3), np.float32)
    for i in range(n):
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 4.0, 2)
            phase = rng.uniform(0, 2 * np.pi)
            colour = rng.uniform(-0.5, 0.5, 3)
            imgs[i] += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)[..., None] * colour
    return imgs


# ---------------------------------------------------------------------------------------------
# SWD


def reference_pyramid(nchw, num_levels):
    """progressive_growing_of_gans' generate_laplacian_pyramid (scipy.ndimage, NCHW)."""
    from scipy import ndimage
    g = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                    [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0
    down = lambda x: ndimage.convolve(x, g[None, None], mode="mirror")[:, :, ::2, ::2]  # noqa

    def up(x):
        s = x.shape
        res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), x.dtype)
        res[:, :, ::2, ::2] = x
        return ndimage.convolve(res, g[None, None] * 4.0, mode="mirror")

    pyramid = [np.float32(nchw)]
    for _ in range(1, num_levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] -= up(pyramid[-1])
    return pyramid


def test_laplacian_pyramid_matches_reference():
    x = smooth_images(3, 32, seed=1) * 100
    ours = laplacian_pyramid(jnp.asarray(x), 2)
    ref = reference_pyramid(np.transpose(x, (0, 3, 1, 2)), 2)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert_close(f"laplacian level {i}", np.transpose(np.asarray(a), (0, 3, 1, 2)), b, 1e-4)
    assert swd_resolutions(256) == [256, 128, 64, 32, 16]
    assert swd_resolutions(384) == [384, 192, 96, 48, 24]


def test_sliced_wasserstein_matches_numpy_formulation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 10)).astype(np.float32)
    b = (rng.normal(size=(300, 10)) * 1.5 + 0.3).astype(np.float32)
    key = jax.random.key(7)
    results = []
    for r in range(4):
        dirs = np.asarray(jax.random.normal(jax.random.fold_in(key, r), (10, 128)), np.float64)
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
        pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
        results.append(np.mean(np.abs(pa - pb)))
    assert_close("sliced_wasserstein", sliced_wasserstein(a, b, key), np.mean(results), 1e-5)


@pytest.fixture(scope="module")
def image_sets():
    return smooth_images(16, 32, seed=2), smooth_images(16, 32, seed=3)


def test_swd_zero_for_identical_sets_and_deterministic(image_sets):
    a, b = image_sets
    same = swd(a, a.copy(), seed=0)
    assert set(same) == {"swd_32", "swd_16", "swd"}
    assert all(abs(v) < 1e-6 for v in same.values()), same
    r1 = swd(a, b, seed=0, batch_size=16)
    r2 = swd(a, b, seed=0, batch_size=5)  # per-image patch keys: batch size does not matter
    for k in r1:
        assert r1[k] == pytest.approx(r2[k], rel=1e-5)
    assert r1["swd"] == pytest.approx(np.mean([r1["swd_32"], r1["swd_16"]]))
    assert r1["swd"] > 1.0  # x1e3 scale, different image sets
    assert swd(a, b, seed=1)["swd"] != r1["swd"]


def test_swd_grows_with_a_shift(image_sets):
    a, _ = image_sets
    rng = np.random.default_rng(0)
    noise = rng.normal(size=a.shape).astype(np.float32)
    by_noise = [swd(a, a + s * noise)["swd"] for s in (0.02, 0.1, 0.5)]
    assert by_noise[0] < by_noise[1] < by_noise[2], by_noise
    half = np.zeros_like(a)
    half[:8] = 1.0  # half of the images get brighter: the distribution's shape changes
    by_shift = [swd(a, a + s * half)["swd"] for s in (0.1, 0.4, 1.0)]
    assert by_shift[0] < by_shift[1] < by_shift[2], by_shift
    # a global affine change of every image is removed by the per-channel normalisation
    assert swd(a, 2.0 * a + 0.5)["swd"] < 1e-3


def test_swd_input_checks(image_sets):
    a, b = image_sets
    with pytest.raises(ValueError, match="equal size"):
        swd(a, b[:8])
    with pytest.raises(ValueError, match="at least 16px"):
        swd(a[:, :8, :8], b[:, :8, :8])
    u8 = images_to_uint8(a)
    assert u8.dtype == np.uint8 and swd(u8, u8)["swd"] == 0.0


def test_swd_compiles_once_per_evaluation():
    imgs = smooth_images(23, 48, seed=4)  # 48px: a shape no other test uses
    metrics.SWDDescriptors(batch_size=5).add(imgs[:5])    # compiles the 48px programs
    with CompileCounter() as compiles:
        acc = metrics.SWDDescriptors(batch_size=5).add(imgs)  # 5 batches, the last one partial
    assert acc.count == 23 and acc.levels == [48, 24]
    assert compiles.count == 0
    desc = acc.finalize()
    assert desc[0].shape == (23 * 128, 7 * 7 * 3)
    np.testing.assert_allclose(desc[0].reshape(-1, 49, 3).mean(axis=(0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(desc[0].reshape(-1, 49, 3).std(axis=(0, 1)), 1, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# LEC


K, S = 2, 6  # toy W+: 2 rows of 6; images 2x2x3 = 12 values = one W+ code


class ToyInverter:
    """A linear generator G(w) = vec(w) A and its exact inverse encoder, jitted with counters."""

    def __init__(self, seed=0, perturb=0.0):
        rng = np.random.default_rng(seed)
        q = np.linalg.qr(rng.normal(size=(K * S, K * S)))[0]
        self.a = jnp.asarray(q * np.linspace(1.0, 2.0, K * S), jnp.float32)
        self.a_inv = jnp.asarray(np.linalg.inv(np.asarray(self.a, np.float64)), jnp.float32)
        self.perturb = perturb
        self.traces = {"encode": 0, "generate": 0}

        @jax.jit
        def generate(a, w_plus):
            self.traces["generate"] += 1
            return (w_plus.reshape(w_plus.shape[0], -1) @ a).reshape(-1, 2, 2, 3)

        @jax.jit
        def encode(a_inv, images):
            self.traces["encode"] += 1
            w = (images.reshape(images.shape[0], -1) @ a_inv).reshape(-1, K, S)
            return w + self.perturb * jnp.tanh(w)

        self._generate, self._encode = generate, encode

    def generate(self, w_plus):
        return self._generate(self.a, w_plus)

    def encode(self, images):
        return self._encode(self.a_inv, images)


def toy_images(n, seed=5):
    return np.random.default_rng(seed).normal(size=(n, 2, 2, 3)).astype(np.float32)


def test_lec_zero_for_exact_inverse_and_positive_otherwise():
    edit = LinearEdit(np.linspace(-1, 1, S, dtype=np.float32)[None] * 2.0)
    x = toy_images(37)
    exact = ToyInverter()
    lec = latent_editing_consistency(x, exact.encode, exact.generate, edit, edit.inverse,
                                     batch_size=8)
    assert abs(lec) < 1e-5, lec
    # 5 batches of 8 (the last padded): each jitted function traced once
    assert exact.traces == {"encode": 1, "generate": 1}
    off = ToyInverter(perturb=0.2)
    lec_off = latent_editing_consistency(x, off.encode, off.generate, edit, edit.inverse,
                                         batch_size=8)
    assert lec_off > 0.05
    stronger = LinearEdit(np.linspace(-1, 1, S, dtype=np.float32)[None] * 4.0)
    assert latent_editing_consistency(x, off.encode, off.generate, stronger, stronger.inverse,
                                      batch_size=8) != pytest.approx(lec_off)


def test_lec_official_grouping_and_outlier_filter():
    off = ToyInverter(perturb=0.2)
    edit = LinearEdit(np.ones((1, S), np.float32))
    x = toy_images(20)
    d = latent_editing_consistency(x, off.encode, off.generate, edit, edit.inverse,
                                   batch_size=6, group_size=4, return_details=True)
    per_image = d["per_image"]
    assert per_image.shape == (20,)
    # official: per-batch means (batches of 4 here), then the percentile filter, then the mean
    groups = per_image.reshape(5, 4).mean(axis=1)
    np.testing.assert_allclose(d["values"], groups, rtol=1e-6)
    assert d["lec"] == pytest.approx(filter_outliers(groups).mean(), rel=1e-6)
    # recomputing the per-image distances by hand
    codes = np.asarray(off.encode(x))
    back = np.asarray(edit.inverse(off.encode(off.generate(edit(codes)))))
    np.testing.assert_allclose(per_image, np.linalg.norm((codes - back).reshape(20, -1), axis=1),
                               rtol=1e-5)
    per = latent_editing_consistency(x, off.encode, off.generate, edit, edit.inverse,
                                     batch_size=6, group_size=None)
    assert per == pytest.approx(filter_outliers(per_image).mean(), rel=1e-6)
    with pytest.raises(ValueError, match="at least 8"):
        latent_editing_consistency(x[:5], off.encode, off.generate, edit, edit.inverse)


def test_filter_outliers_known_values():
    arr = np.concatenate([[-1000.0], np.arange(99.0), [5000.0]])  # 101 values
    kept = filter_outliers(arr)
    np.testing.assert_array_equal(kept, np.arange(99.0))
    assert kept.mean() == 49.0


# ---------------------------------------------------------------------------------------------
# Proximity to W


def test_latent_variation_known_values():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 512)), rng.normal(size=(10, 512))
    codes = np.stack([a, b], axis=1).astype(np.float32)  # two rows: ||w - w_mu|| = ||a-b||/sqrt2
    want = np.mean(np.linalg.norm(a - b, axis=1) / np.sqrt(2))
    latent_variation(codes[:3], batch_size=3)                 # compiles the (3, 2, 512) program
    with CompileCounter() as compiles:
        assert latent_variation(codes, batch_size=3) == pytest.approx(want, rel=1e-5)
    assert compiles.count == 0  # 4 batches, the padded last one included: no new program
    in_w = np.repeat(a[:, None, :], 18, axis=1).astype(np.float32)
    assert latent_variation(in_w) < 1e-4
    # an iterable of batches (as a data loader) gives the same number
    batches = [(codes[i:i + 4], None) for i in range(0, 10, 4)]
    assert latent_variation(batches, batch_size=4) == pytest.approx(want, rel=1e-5)


def test_latent_deviation_known_values():
    exact = ToyInverter()
    mapping = jax.jit(lambda z: 0.5 * z + 1.0)
    dev = latent_deviation(exact.encode, exact.generate, mapping, n_latent=K, n_samples=50,
                           batch_size=16, style_dim=S)
    assert dev < 1e-5
    assert exact.traces == {"encode": 1, "generate": 1}
    shift = np.arange(K * S, dtype=np.float32).reshape(K, S) / 10

    def shifted(images):
        return exact.encode(images) + shift

    dev, d = latent_deviation(shifted, exact.generate, mapping, n_latent=K, n_samples=50,
                              batch_size=16, style_dim=S, return_distances=True)
    assert d.shape == (50,)
    assert dev == pytest.approx(np.linalg.norm(shift), rel=1e-5)
    with pytest.raises(ValueError, match="expected"):
        latent_deviation(lambda im: exact.encode(im)[:, :1], exact.generate, mapping,
                         n_latent=K, n_samples=4, batch_size=4, style_dim=S)


def test_iterate_batches_pads_and_checks():
    x = np.arange(10)[:, None].astype(np.float32)
    out = list(iterate_batches(x, 4))
    assert [m for _, m in out] == [4, 4, 2]
    assert all(b.shape == (4, 1) for b, _ in out)
    np.testing.assert_array_equal(out[-1][0][:, 0], [8, 9, 9, 9])
    with pytest.raises(ValueError, match="larger than batch_size"):
        list(iterate_batches([x[:5]], 4))
    with pytest.raises(ValueError, match="no data"):
        latent_variation(np.zeros((0, 2, 4), np.float32))


def test_sliced_wasserstein_backends_agree():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 20)).astype(np.float32)
    b = (rng.normal(size=(500, 20)) + 0.2).astype(np.float32)
    key = jax.random.key(3)
    got_np = sliced_wasserstein(a, b, key, backend="numpy")
    got_jax = sliced_wasserstein(a, b, key, backend="jax")
    assert got_np == pytest.approx(got_jax, rel=1e-5)
    with pytest.raises(ValueError, match="backend"):
        sliced_wasserstein(a, b, key, backend="torch")
