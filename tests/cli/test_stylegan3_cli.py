"""The commands over a StyleGAN3 generator (a tiny 32 px config-T e4e model, tests.support.
tiny_sg3): encode, invert (e4e, projector, PTI; --transforms for unaligned inversion, refused
for StyleGAN2), edit (InterFaceGAN, GANSpace, SeFa on the layers' affine weights) and eval."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

import e4e_jax
from e4e_jax import editing
from e4e_jax.cli import edit, encode, invert
from e4e_jax.data import image_io
from e4e_jax.nets.encoder import load_encoder
from tests.cli.test_invert_cli import _write_images, lpips_dir  # noqa: F401 (fixture)
from tests.parity.test_encoders import save_tiny_inverter
from tests.parity.test_restyle import LOOP_TINY
from tests.support.tiny_sg3 import save_tiny_sg3_inverter, tiny_sg3


@pytest.fixture(scope="module")
def sg3_model(tmp_path_factory):
    return save_tiny_sg3_inverter(str(tmp_path_factory.mktemp("sg3") / "e4e_sg3"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp("imgs"), ["a.png", "b.png"], with_bad=False)


def run(main, args):
    return main([str(a) for a in args])


def save_transforms(path):
    """(2, 3, 3) float32 for images a and b: the identity, and the inverse of a rotation with a
    shift (the buffer's meaning); saved to `path` and returned."""
    transforms = np.stack([np.eye(3), np.linalg.inv([[0.8, 0.6, 0.1], [-0.6, 0.8, 0.0],
                                                     [0, 0, 1]])]).astype(np.float32)
    np.save(path, transforms)
    return transforms


def check_unaligned(out, inv, transforms):
    """OUT/unaligned/<name>.png is each code of latents.npy rendered with its transform: for the
    identity the aligned reconstruction itself, for the rotation another image."""
    lat = np.load(out / "latents.npy")
    for k, name in enumerate(["a", "b"]):
        rec = np.asarray(Image.open(out / "reconstructions" / f"{name}.png"))
        una = np.asarray(Image.open(out / "unaligned" / f"{name}.png"))
        want = image_io.to_uint8(np.asarray(inv.decode(lat[k:k + 1], transform=transforms[k]))[0])
        np.testing.assert_array_equal(una, want)
        assert np.array_equal(una, rec) == (k == 0)


def test_sefa_factorizes_the_affine_kernels_and_edits_rows_after_the_input():
    g = tiny_sg3()
    names, weight = g.style_affines("all")
    assert names[0].startswith("L0_") and names[-1].startswith("L4_")
    assert weight.shape[0] == g.w_dim and len(names) == g.n_latent - 1
    kernels = g.variables["params"]["synthesis"]
    np.testing.assert_array_equal(g.style_affines([2])[1], kernels[names[2]]["affine"]["kernel"])
    values, vectors = editing.sefa(g, [1, 2])
    w = editing.modulation_weights(g, [1, 2])
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    np.testing.assert_allclose(w @ w.T @ vectors[0], values[0] * vectors[0], rtol=1e-4,
                               atol=1e-4)
    assert editing.first_style_row(g) == 1
    codes = np.zeros((1, g.n_latent, g.w_dim), np.float32)
    moved = np.asarray(editing.sefa_edit(codes, vectors, 0, [0, 3], distances=[2.0],
                                         first_row=editing.first_style_row(g)))[0]
    changed = np.flatnonzero(np.abs(moved).sum(-1))
    assert changed.tolist() == [1, 4]   # layer i is fed by W+ row i + 1
    with pytest.raises(ValueError, match="0..4"):
        g.style_affines([5])


@pytest.mark.slow
def test_encode_invert_e4e_and_unaligned_transforms(sg3_model, images, tmp_path):
    inv = load_encoder(sg3_model)
    assert type(inv.generator).__name__ == "LoadedStyleGAN3"
    out = tmp_path / "enc"
    assert run(encode.main, ["--checkpoint", sg3_model, "--input", images, "--output", out]) == 0
    x = image_io.load_images([os.path.join(images, f) for f in ("a.png", "b.png")],
                             inv.input_size)
    lat = np.load(out / "latents.npy")
    np.testing.assert_allclose(lat, np.asarray(inv.encode(x)), atol=1e-5)

    transforms = save_transforms(tmp_path / "t.npy")
    out = tmp_path / "inv"
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output", out,
                             "--transforms", tmp_path / "t.npy"]) == 0
    check_unaligned(out, inv, transforms)
    assert not (out / "noises").exists()


@pytest.mark.slow   # compiles the ReStyle loop and two renders (~40 s on 2 CPU cores)
def test_restyle_renders_the_last_iteration_with_the_transform(images, tmp_path):
    """stylegan3-editing's run_on_batch with landmarks_transform: the iterations see the
    identity-transform reconstructions (the codes do not depend on the transforms) and the last
    iteration's code is rendered with each image's transform into unaligned/."""
    from e4e_jax.models import encoders as E
    from e4e_jax.nets.encoder import save_inverter
    g = tiny_sg3()
    cfg = E.encoder_config("ProgressiveBackboneEncoder", g.n_latent, (32, 32), **LOOP_TINY)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    model_dir = save_inverter(str(tmp_path / "restyle_sg3"), cfg, v, g, g.latent_avg,
                              face_pool=32)
    transforms = save_transforms(tmp_path / "t.npy")
    base = ["--checkpoint", model_dir, "--input", images, "--method", "restyle",
            "--iterations", 2]
    assert run(invert.main, base + ["--output", tmp_path / "plain"]) == 0
    assert not (tmp_path / "plain" / "unaligned").exists()
    out = tmp_path / "out"
    assert run(invert.main, base + ["--output", out, "--transforms", tmp_path / "t.npy"]) == 0
    np.testing.assert_array_equal(np.load(out / "latents.npy"),
                                  np.load(tmp_path / "plain" / "latents.npy"))
    check_unaligned(out, load_encoder(model_dir), transforms)


def test_transforms_refusals(sg3_model, images, tmp_path, capsys):
    transforms = np.broadcast_to(np.eye(3, dtype=np.float32), (2, 3, 3))
    np.save(tmp_path / "t.npy", transforms)
    np.save(tmp_path / "bad.npy", transforms[:1])
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output",
                             tmp_path / "o2", "--transforms", tmp_path / "bad.npy"]) == 2
    assert "must be a float array of shape (2, 3, 3)" in capsys.readouterr().err
    sg2 = save_tiny_inverter(str(tmp_path / "sg2"))
    assert run(invert.main, ["--checkpoint", sg2, "--input", images, "--output",
                             tmp_path / "o3", "--transforms", tmp_path / "t.npy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--transforms: only a StyleGAN3 generator has an input transform" in err
    assert not (tmp_path / "o3" / "latents.npy").exists()
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output",
                             tmp_path / "o4", "--transforms", tmp_path / "nope.npy"]) == 2
    assert "--transforms" in capsys.readouterr().err
    singular = transforms.copy()
    singular[1] = 0.0
    np.save(tmp_path / "singular.npy", singular)
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output",
                             tmp_path / "o5", "--transforms", tmp_path / "singular.npy"]) == 2
    assert "rows [1] are singular matrices" in capsys.readouterr().err
    assert not (tmp_path / "o5").exists()
    # the library call refuses non-finite transforms as the command does
    g = load_encoder(sg3_model).generator
    with pytest.raises(ValueError, match="transform holds NaN or Inf"):
        g.synthesis(np.zeros((1, g.n_latent, g.style_dim), np.float32),
                    transform=np.full((3, 3), np.nan, np.float32))


@pytest.mark.slow
def test_projector_and_pti_tune_the_stylegan3_synthesis(sg3_model, images, lpips_dir,
                                                        tmp_path):
    out = tmp_path / "proj"
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output", out,
                             "--method", "projector", "--steps", 2, "--lpips", lpips_dir]) == 0
    lat = np.load(out / "latents.npy")
    np.testing.assert_array_equal(lat[:, 1:], np.broadcast_to(lat[:, :1], lat[:, 1:].shape))
    summary = json.loads((out / "summary.json").read_text())
    assert all(np.isfinite(r["final_dist"]) for r in summary["images"])
    assert not (out / "noises").exists()          # no noise maps in StyleGAN3

    out = tmp_path / "pti"
    assert run(invert.main, ["--checkpoint", sg3_model, "--input", images, "--output", out,
                             "--method", "pti", "--steps", 2, "--lpips", lpips_dir,
                             "--lpips-threshold", -1]) == 0
    inv = load_encoder(sg3_model)
    lat = np.load(out / "latents.npy")
    g = e4e_jax.load_generator(str(out / "generators" / "a"))
    assert type(g).__name__ == "LoadedStyleGAN3" and g.config["pti"]["num_updates"] == 2
    # the synthesis moved, the mapping and buffers did not
    old, new = inv.generator.variables, g.variables
    assert not np.array_equal(np.asarray(new["params"]["synthesis"]["input"]["kernel"]),
                              np.asarray(old["params"]["synthesis"]["input"]["kernel"]))
    for a, b in zip(jax.tree_util.tree_leaves([old["params"]["mapping"], old["buffers"]]),
                    jax.tree_util.tree_leaves([new["params"]["mapping"], new["buffers"]])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rec = np.asarray(Image.open(out / "reconstructions" / "a.png"))
    np.testing.assert_array_equal(rec, image_io.to_uint8(np.asarray(g.synthesis(lat[:1]))[0]))
    # edit with the tuned StyleGAN3 generator and its pivot
    e = tmp_path / "e"
    assert run(edit.main, ["--checkpoint", sg3_model, "--generator", out / "generators" / "a",
                           "--latents", out / "latents" / "a.npy", "--edit", "sefa:0",
                           "--strengths", "2", "--min_cell", "32", "--out", e]) == 0
    assert json.loads((e / "edits.json").read_text())["generator"] == os.path.abspath(
        out / "generators" / "a")


@pytest.mark.slow
def test_edit_sefa_interfacegan_and_ganspace(sg3_model, images, tmp_path):
    inv = load_encoder(sg3_model)
    d = np.zeros((1, inv.generator.w_dim), np.float32)
    d[0, 0] = 1.0
    np.save(tmp_path / "dir.npy", d)
    pca = {"mean": np.zeros((1, 32), np.float32), "comp": np.eye(32, dtype=np.float32)[:, None],
           "std": np.ones((32,), np.float32)}
    np.savez(tmp_path / "pca.npz", **pca)
    out = tmp_path / "e"
    assert run(edit.main, ["--checkpoint", sg3_model, "--images", images, "--edit", "sefa:0",
                           "--edit", f"interfacegan:{tmp_path / 'dir.npy'}",
                           "--edit", f"ganspace:{tmp_path / 'pca.npz'}:1,1,4",
                           "--edit", "sefa:1::0-2",
                           "--strengths", "-2", "2", "--min_cell", "32", "--out", out]) == 0
    edited = np.load(out / "edited_latents.npy")           # (N, E, S, n_latent, w_dim)
    w = np.load(out / "latents.npy")
    assert edited.shape == (2, 4, 2, inv.n_latent, 32)
    moved = np.abs(edited - w[:, None, None]).sum(axis=(0, 2, 4)) > 0    # (E, n_latent)
    assert moved[0].tolist() == [False] + [True] * 5          # sefa 'all': every layer's row
    assert moved[1].all()                                     # InterFaceGAN in W
    assert moved[2].tolist() == [False, True, True, True, False, False]    # GANSpace rows 1..3
    assert moved[3].tolist() == [False, True, True, True, False, False]    # sefa layers 0-2
    assert any(f.endswith(".png") for f in os.listdir(out))


@pytest.mark.slow
def test_eval_on_a_folder(sg3_model, tmp_path):
    from e4e_jax.cli import eval as ev_cli
    inv = load_encoder(sg3_model)
    g = inv.generator
    folder = tmp_path / "images"
    x = np.asarray(g.sample(jax.random.key(3), 8))
    for i, im in enumerate(x):
        image_io.save_png(image_io.to_uint8(im), str(folder / f"img_{i}.png"))
    out = tmp_path / "out"
    assert ev_cli.main(["--checkpoint", sg3_model, "--data", str(folder), "--out", str(out),
                        "--num_images", "8", "--batch_size", "4", "--edits", "sefa:0",
                        "--lec_edit", "sefa:0", "--deviation_samples", "4",
                        "--num_grid", "2"]) == 0
    r = json.loads((out / "metrics.json").read_text())["e4e_sg3"]
    for k in ("mse", "swd", "lec", "latent_variation", "w_deviation"):
        assert isinstance(r[k], float) and np.isfinite(r[k]), (k, r[k])
