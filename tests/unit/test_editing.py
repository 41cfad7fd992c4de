"""Editing: SeFa against the stylegan2 fixture, InterFaceGAN / GANSpace against hand-computed
results on the official direction files, PCA, interpolation and invertible edits."""
from __future__ import annotations

import os

import numpy as np
import pytest

import tests.support.fixtures as fu
from e4e_jax.convert import stylegan2 as conv_sg2

import e4e_jax
from e4e_jax.editing import (LinearEdit, compute_ganspace_pca, convert_editing_file,
                             ganspace_edit, interfacegan_edit, interpolate,
                             load_ganspace_pca, load_interfacegan_direction, modulation_weights,
                             sefa, sefa_edit, sefa_rows)

FIX = "stylegan2_generator"
EDITINGS = os.path.join(fu.DATA, "editings")
AGE = os.path.join(EDITINGS, "interfacegan_directions", "age.pt")
POSE = os.path.join(EDITINGS, "interfacegan_directions", "pose.pt")
FFHQ_PCA = os.path.join(EDITINGS, "ganspace_pca", "ffhq_pca.pt")
CARS_PCA = os.path.join(EDITINGS, "ganspace_pca", "cars_pca.pt")


def torch_load(path):
    torch = pytest.importorskip("torch", reason="the official editing files are torch files")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        return {k: v.numpy() for k, v in obj.items()}
    return obj.numpy()


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture(FIX)


@pytest.fixture(scope="module")
def generator(fixture, tmp_path_factory):
    """The official checkpoint written with torch.save, converted by the CLI, loaded back."""
    d = tmp_path_factory.mktemp("sefa_g")
    src = fu.save_torch(fixture.container(), str(d / "stylegan2.pt"))
    assert conv_sg2.main([src, str(d / "converted")]) == 0
    return e4e_jax.load_generator(str(d / "converted"))


@pytest.fixture(scope="module")
def factorization(generator):
    return e4e_jax.sefa(generator, layers="all")


def wplus(n, k=18, seed=0):
    return np.random.default_rng(seed).normal(size=(n, k, 512)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# SeFa


def test_sefa_matches_official_factorization(fixture, generator, factorization):
    values, vectors = factorization
    e = fixture.expected
    order = e["sefa_order_desc"]
    want_values = e["sefa_eigenvalues"][order]
    want_vectors = e["sefa_eigenvectors"][order]
    assert np.all(np.diff(values) <= 0), "eigenvalues must be sorted descending"
    fu.assert_close("sefa_eigenvalues (sorted)", values, want_values,
                    fu.suggested_atol(FIX, "sefa_eigenvalues"))
    cos = np.abs(np.sum(vectors.astype(np.float64) * want_vectors, axis=1))
    fu.assert_close("sefa_eigenvectors 1-|cos| per row", 1.0 - cos, np.zeros_like(cos), 1e-6)
    # rows are unit eigenvectors of W W^T paired with their eigenvalue
    w = modulation_weights(generator)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    m = w.astype(np.float64) @ w.T
    np.testing.assert_allclose(vectors[:5] @ m, values[:5, None] * vectors[:5], atol=1e-4)
    assert len(e["sefa_layers"]) == generator.num_layers - 1


@pytest.mark.slow
def test_sefa_layer_subset_by_hand(fixture, generator):
    # factorize_weight(g, [0, 2, 5]) by hand from the official state dict: conv1 first, then
    # convs[1], convs[4] (weight.T), normalised columns, eig.
    s = fixture.state
    weight = np.concatenate([s["conv1.conv.modulation.weight"].T,
                             s["convs.1.conv.modulation.weight"].T,
                             s["convs.4.conv.modulation.weight"].T], axis=1).astype(np.float32)
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    ev, vecs = np.linalg.eig(weight.dot(weight.T))
    order = np.argsort(ev.real)[::-1]
    values, vectors = sefa(generator.variables, layers=[0, 2, 5])
    fu.assert_close("sefa layers [0, 2, 5] eigenvalues", values, ev.real[order], 1e-4)
    cos = np.abs(np.sum(vectors[:20] * vecs.real.T[order][:20], axis=1))
    assert np.all(cos > 1 - 1e-5)
    with pytest.raises(ValueError, match="layer indices"):
        sefa(generator, layers=[0, 9])


def test_sefa_edit_matches_official_loop(generator, factorization):
    values, vectors = factorization
    codes = wplus(2, k=generator.n_latent, seed=1)
    got = np.asarray(sefa_edit(codes, vectors, semantic=[0, 3], layers=[2, 3, 4, 5],
                               official_rows=True))
    # official editings/sefa.py edit: layers returned by factorize_weight ([l - 1 ...]),
    # boundary rows, distances linspace(-15, 15, 11), loops semantic > sample > distance
    rows = [1, 2, 3, 4]
    want = []
    for sem in (0, 3):
        for sam in range(2):
            for d in np.linspace(-15.0, 15.0, 11):
                t = codes[sam:sam + 1].copy()
                t[:, rows, :] += vectors[sem:sem + 1] * d
                want.append(t)
    want = np.concatenate(want)
    fu.assert_close("sefa_edit (official rows)", got, want, 1e-5)
    # by default style convolution i is edited at its own W+ row i
    got = np.asarray(sefa_edit(codes[:1], vectors[0], layers=[0, 2], distances=[1.0]))
    delta = got[0] - codes[0]
    assert np.abs(delta[[1, 3, 4, 5, 6, 7, 8, 9]]).max() == 0
    np.testing.assert_allclose(delta[0], vectors[0], atol=1e-6)
    np.testing.assert_allclose(delta[2], vectors[0], atol=1e-6)
    assert sefa_rows("all", 10) == list(range(9)) and sefa_rows("all", 10, True) == list(range(8))


# ---------------------------------------------------------------------------------------------
# InterFaceGAN


def test_interfacegan_official_files_by_hand():
    age = load_interfacegan_direction(AGE)
    np.testing.assert_array_equal(age, torch_load(AGE))
    codes = wplus(3)
    got = np.asarray(interfacegan_edit(codes, age, factor=-3.0))
    fu.assert_close("interfacegan age -3", got, codes + (-3.0) * age[:, None, :], 1e-6)
    pose = load_interfacegan_direction(POSE)
    assert pose.shape == (1, 18, 512)
    got = np.asarray(interfacegan_edit(codes, pose, factor=2.5))
    fu.assert_close("interfacegan pose 2.5 (W+ direction)", got, codes + 2.5 * pose, 1e-6)
    with pytest.raises(ValueError, match="18 rows but the codes have 14"):
        interfacegan_edit(wplus(1, k=14), pose)


def test_interfacegan_factor_range_order():
    age = load_interfacegan_direction(AGE)
    codes = wplus(2)
    got = np.asarray(interfacegan_edit(codes, age, factor_range=(-2, 3)))
    want = np.concatenate([codes + f * age[:, None, :] for f in range(-2, 3)])
    fu.assert_close("interfacegan factor_range (-2, 3)", got, want, 1e-6)


def test_converted_numpy_files_load_without_torch(tmp_path):
    for src in (AGE, POSE):
        dst = convert_editing_file(src, str(tmp_path / (os.path.basename(src) + ".npy")))
        np.testing.assert_array_equal(load_interfacegan_direction(dst),
                                      load_interfacegan_direction(src))
    dst = convert_editing_file(FFHQ_PCA, str(tmp_path / "ffhq_pca.npz"))
    a, b = load_ganspace_pca(dst), load_ganspace_pca(FFHQ_PCA)
    for k in ("mean", "comp", "std"):
        np.testing.assert_array_equal(a[k], b[k])
    np.savez(tmp_path / "d.npz", direction=np.ones((1, 512)))
    assert load_interfacegan_direction(str(tmp_path / "d.npz")).shape == (1, 512)
    with pytest.raises(ValueError, match="InterFaceGAN direction"):
        np.save(tmp_path / "bad.npy", np.ones((3, 512)))
        load_interfacegan_direction(str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="GANSpace PCA"):
        load_ganspace_pca(str(tmp_path / "d.npz"))
    with pytest.raises(FileNotFoundError):
        load_interfacegan_direction(str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------------------------------------
# GANSpace


def official_ganspace(latents, pca, edit_directions):
    """editings/ganspace.py edit / get_delta, in numpy, loop for loop."""
    out = []
    for latent in latents:
        for pca_idx, start, end, strength in edit_directions:
            w_centered = latent - pca["mean"]
            w_coord = np.sum(w_centered[0].reshape(-1) * pca["comp"][pca_idx].reshape(-1)) \
                / pca["std"][pca_idx]
            delta = (strength - w_coord) * pca["comp"][pca_idx] * pca["std"][pca_idx]
            padded = np.zeros(latent.shape, np.float32)
            padded[start:end] += np.repeat(delta, end - start, axis=0)
            out.append(latent + padded)
    return np.stack(out)


def test_ganspace_official_files_by_hand():
    pca = torch_load(FFHQ_PCA)
    loaded = load_ganspace_pca(FFHQ_PCA)
    codes = wplus(3) * 0.5 + pca["mean"][None]
    edits = [(54, 7, 8, 5.0), (58, 7, 9, 7.0), (0, 0, 18, -2.0)]
    got = np.asarray(ganspace_edit(codes, loaded, edits))
    assert got.shape == (9, 18, 512)
    fu.assert_close("ganspace ffhq 3 edits", got, official_ganspace(codes, pca, edits), 1e-5)
    # the edit sets the coordinate of row 0 (if edited) along the component to `strength`
    e = got[2]  # code 0, edit (0, 0, 18, -2)
    coord = np.sum((e[0] - loaded["mean"][0]) * loaded["comp"][0, 0]) / loaded["std"][0]
    assert coord == pytest.approx(-2.0, abs=1e-4)
    cars = torch_load(CARS_PCA)
    codes16 = wplus(2, k=16) + cars["mean"][None]
    got = np.asarray(ganspace_edit(codes16, load_ganspace_pca(CARS_PCA), (0, 0, 5, 2.0)))
    fu.assert_close("ganspace cars (0, 0, 5, 2)", got,
                    official_ganspace(codes16, cars, [(0, 0, 5, 2.0)]), 1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        ganspace_edit(codes16, cars, (0, 10, 17, 1.0))


def test_compute_ganspace_pca_known_covariance():
    scales = np.linspace(3.0, 0.5, 8).astype(np.float32)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0].astype(np.float32)
    offset = np.arange(8, dtype=np.float32)

    def mapping(z):  # w = (z * scales) rot + offset: covariance rot^T diag(scales^2) rot
        return (z * scales) @ rot + offset

    pca = compute_ganspace_pca(mapping, n_samples=40_000, n_components=4, batch_size=7_000,
                               style_dim=8)
    assert pca["mean"].shape == (1, 8) and pca["comp"].shape == (4, 1, 8)
    np.testing.assert_allclose(pca["mean"][0], offset, atol=0.05)
    np.testing.assert_allclose(pca["std"], scales[:4], rtol=0.03)
    cos = np.abs(np.sum(pca["comp"][:, 0] * rot[:4], axis=1))
    assert np.all(cos > 0.99), cos
    np.testing.assert_allclose(np.linalg.norm(pca["comp"][:, 0], axis=1), 1.0, atol=1e-5)


def test_compute_ganspace_pca_of_generator(generator):
    pca = compute_ganspace_pca(generator, n_samples=600, n_components=5, batch_size=256)
    assert pca["comp"].shape == (5, 1, 512)
    assert np.all(np.diff(pca["std"]) <= 0)
    w = np.asarray(generator.mapping(np.random.default_rng(3).normal(size=(4, 512))))
    edited = ganspace_edit(generator.broadcast(w), pca, (1, 0, 4, 3.0))
    assert edited.shape == (4, generator.n_latent, 512)


# ---------------------------------------------------------------------------------------------
# Interpolation and invertible edits


def test_interpolate():
    a, b = wplus(2, seed=1), wplus(2, seed=2)
    np.testing.assert_allclose(interpolate(a, b, 0.0), a, atol=0)
    np.testing.assert_allclose(interpolate(a, b, 1.0), b, atol=1e-6)
    path = np.asarray(interpolate(a, b, [0.0, 0.25, 1.0]))
    assert path.shape == (3, 2, 18, 512)
    np.testing.assert_allclose(path[1], 0.75 * a + 0.25 * b, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        interpolate(a, b[:, :14], 0.5)


def test_linear_edits_invert_exactly():
    codes = wplus(2)
    age = load_interfacegan_direction(AGE)
    pca = load_ganspace_pca(FFHQ_PCA)
    vec = np.random.default_rng(0).normal(size=512).astype(np.float32)
    for edit in (LinearEdit.interfacegan(age, 3.0),
                 LinearEdit.ganspace(pca, 2, 4, 8, 3.0, n_latent=18),
                 LinearEdit.sefa(vec, 5.0, layers=[2, 3], n_latent=18)):
        moved = edit(codes)
        assert np.abs(np.asarray(moved) - codes).max() > 0.1
        np.testing.assert_allclose(edit.inverse(moved), codes, atol=1e-5)
    fu.assert_close("LinearEdit.interfacegan == interfacegan_edit",
                    LinearEdit.interfacegan(age, 3.0)(codes), interfacegan_edit(codes, age, 3.0),
                    1e-6)
    shift = np.asarray(LinearEdit.ganspace(pca, 2, 4, 8, 3.0, n_latent=18)(codes)) - codes
    np.testing.assert_allclose(shift[:, 5], np.broadcast_to(3.0 * pca["std"][2] * pca["comp"][2],
                                                            (2, 512)), atol=1e-5)
    assert np.abs(shift[:, :4]).max() == 0 and np.abs(shift[:, 8:]).max() == 0
