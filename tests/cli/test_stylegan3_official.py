"""Official StyleGAN3 files end to end: the config-T snapshot pickle of the fixture
(tests/fixtures/stylegan3_generator, written by NVlabs/stylegan3 c233a91's code) and the same
networks saved as a stylegan3-editing `.pt` generator (torch.save(G.state_dict()), as its
SG3Generator loads and its run_pti_images.py writes them) go through `e4e-jax convert
stylegan3`, then, paired with a tiny e4e encoder of n_styles = num_ws = 16, through sample,
encode, invert (e4e, projector, PTI), edit and eval by each command's main().

The two sources must give the same generator and byte-identical outputs; the numbers of the
converted generator against the official outputs are tests/parity/test_stylegan3.py's.
"""
import collections
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

import e4e_jax
import tests.support.fixtures as fu
from e4e_jax.cli import edit, encode, invert, sample
from e4e_jax.cli import eval as eval_cli
from e4e_jax.cli.convert import main as convert_main
from e4e_jax.data import image_io
from e4e_jax.nets.encoder import load_encoder
from e4e_jax.nets.stylegan3 import input_transform, load_stylegan3
from tests.cli.test_invert_cli import _write_images, lpips_dir  # noqa: F401 (fixture)

FIX = "stylegan3_generator"
PICKLE = os.path.join(fu.FIXTURES, FIX, "network-snapshot-t.pkl")


def write_editing_pt(state: dict, path: str) -> str:
    """A generator file as stylegan3-editing has them: torch.save of the Generator's
    state_dict (an OrderedDict of float32 CPU tensors, `synthesis.input.transform` included)."""
    torch = pytest.importorskip("torch")
    sd = collections.OrderedDict((k, torch.from_numpy(np.array(v, np.float32)))
                                 for k, v in state.items())
    torch.save(sd, path)
    return path


def t_state(transform=None) -> dict:
    fixture = fu.load_fixture(FIX)
    state = {k[2:]: v for k, v in fixture.state.items() if k.startswith("t/")}
    if transform is not None:
        state["synthesis.input.transform"] = transform
    return state


def converted(src, dst) -> str:
    assert convert_main(["stylegan3", str(src), str(dst)]) == 0
    return str(dst)


def e4e_over(generator_dir: str, path: str) -> str:
    """An e4e inverter directory: the tiny seeded encoder (32 px input, n_styles = the
    generator's num_ws), latent_avg = the converted w_avg."""
    from e4e_jax.models import encoders as E
    from e4e_jax.nets.encoder import save_inverter
    from tests.parity.test_encoders import tiny_config
    g = load_stylegan3(generator_dir)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(32, 32))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    return save_inverter(path, cfg, v, g, g.latent_avg, face_pool=g.resolution)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"pkl": generator dir, "pt": generator dir}, both converted by the command."""
    d = tmp_path_factory.mktemp("official")
    pt = write_editing_pt(t_state(), str(d / "sg3-t-32.pt"))
    return {"pkl": converted(PICKLE, d / "from_pkl"), "pt": converted(pt, d / "from_pt")}


def leaves(g):
    flat = jax.tree_util.tree_flatten_with_path(g.variables)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def test_pickle_and_pt_convert_to_the_same_generator(sources, tmp_path, capsys):
    gp, gt = (e4e_jax.load_generator(sources[k]) for k in ("pkl", "pt"))
    for g in (gp, gt):
        assert type(g).__name__ == "LoadedStyleGAN3" and g.config_name == "T"
        assert (g.n_latent, g.w_dim, g.z_dim, g.resolution) == (16, 32, 32, 32)
    a, b = leaves(gp), leaves(gt)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(gp.latent_avg, t_state()["mapping.w_avg"])
    assert gp.config["init_kwargs"]["channel_base"] == gt.config["init_kwargs"]["channel_base"]

    # a .pt whose buffer holds a transform (stylegan3-editing keeps it): the converted
    # generator renders with it by default
    m = input_transform((0.125, -0.25), 20.0)
    src = write_editing_pt(t_state(m), str(tmp_path / "moved.pt"))
    gm = load_stylegan3(converted(src, tmp_path / "moved"))
    np.testing.assert_array_equal(gm.transform, m)
    capsys.readouterr()


def _through_every_command(gen_dir, inv_dir, images, lpips, out):
    """Runs each command; returns {name: array} of what the runs wrote."""
    got = {}
    g = e4e_jax.load_generator(gen_dir)

    def run(main, args):
        return main([str(a) for a in args])

    # sample: the official gen_images.py --translate / --rotate
    png = out / "sample.png"
    assert run(sample.main, ["--generator", gen_dir, "--n", 2, "--seed", 3, "--translate",
                             0.25, -0.1, "--rotate", 30, "--out", png]) == 0
    got["sample"] = np.asarray(Image.open(png))
    assert got["sample"].shape[0] == g.resolution

    inv = load_encoder(inv_dir)
    assert type(inv.generator).__name__ == "LoadedStyleGAN3" and inv.n_latent == 16
    names = ("a.png", "b.png")
    x = image_io.load_images([os.path.join(images, f) for f in names], inv.input_size)

    # encode
    assert run(encode.main, ["--checkpoint", inv_dir, "--input", images, "--output",
                             out / "enc"]) == 0
    got["encode"] = np.load(out / "enc" / "latents.npy")
    assert got["encode"].shape == (2, 16, 32)
    np.testing.assert_allclose(got["encode"], np.asarray(inv.encode(x)), atol=1e-5)

    # invert with e4e, the aligned code rendered with a per-image transform too
    transforms = np.stack([np.eye(3), input_transform((0.1, 0.0), 15.0)]).astype(np.float32)
    np.save(out / "t.npy", transforms)
    assert run(invert.main, ["--checkpoint", inv_dir, "--input", images, "--output",
                             out / "e4e", "--transforms", out / "t.npy"]) == 0
    lat = np.load(out / "e4e" / "latents.npy")
    got["e4e"] = lat
    rec = np.asarray(Image.open(out / "e4e" / "reconstructions" / "b.png"))
    np.testing.assert_array_equal(rec, image_io.to_uint8(np.asarray(inv.decode(lat[1:2]))[0]))
    una = np.asarray(Image.open(out / "e4e" / "unaligned" / "b.png"))
    np.testing.assert_array_equal(
        una, image_io.to_uint8(np.asarray(inv.decode(lat[1:2], transform=transforms[1]))[0]))
    assert not np.array_equal(una, rec)
    got["e4e_rec"] = rec

    # the projector (W, broadcast to every row) and PTI
    assert run(invert.main, ["--checkpoint", inv_dir, "--input", images, "--output",
                             out / "proj", "--method", "projector", "--steps", 2,
                             "--lpips", lpips]) == 0
    lat = np.load(out / "proj" / "latents.npy")
    np.testing.assert_array_equal(lat[:, 1:], np.broadcast_to(lat[:, :1], lat[:, 1:].shape))
    got["projector"] = lat
    assert run(invert.main, ["--checkpoint", inv_dir, "--input", images, "--output",
                             out / "pti", "--method", "pti", "--steps", 2, "--lpips", lpips,
                             "--lpips-threshold", -1]) == 0
    tuned = e4e_jax.load_generator(str(out / "pti" / "generators" / "a"))
    assert type(tuned).__name__ == "LoadedStyleGAN3"
    old = inv.generator.variables["params"]["synthesis"]
    new = tuned.variables["params"]["synthesis"]
    assert any(not np.array_equal(np.asarray(p), np.asarray(q)) for p, q in
               zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new)))
    got["pti"] = np.load(out / "pti" / "latents.npy")

    # edit: SeFa on the layers' affine weights and InterFaceGAN, with the PTI generator too
    d = np.zeros((1, 32), np.float32)
    d[0, 3] = 1.0
    np.save(out / "dir.npy", d)
    assert run(edit.main, ["--checkpoint", inv_dir, "--images", images, "--edit", "sefa:0",
                           "--edit", f"interfacegan:{out / 'dir.npy'}", "--strengths", -2, 2,
                           "--min_cell", 32, "--out", out / "edit"]) == 0
    edited = np.load(out / "edit" / "edited_latents.npy")
    w = np.load(out / "edit" / "latents.npy")
    assert edited.shape == (2, 2, 2, 16, 32)
    moved = np.abs(edited - w[:, None, None]).sum(axis=(0, 2, 4)) > 0
    assert moved[0].tolist() == [False] + [True] * 15 and moved[1].all()
    got["edit"] = edited
    assert run(edit.main, ["--checkpoint", inv_dir, "--generator", out / "pti" / "generators"
                           / "a", "--latents", out / "pti" / "latents" / "a.npy", "--edit",
                           "sefa:1", "--strengths", 3, "--min_cell", 32,
                           "--out", out / "edit_pti"]) == 0

    # eval on images the converted generator draws
    folder = out / "data"
    for i, im in enumerate(np.asarray(g.sample(jax.random.key(5), 4))):
        image_io.save_png(image_io.to_uint8(im), str(folder / f"img_{i}.png"))
    assert run(eval_cli.main, ["--checkpoint", inv_dir, "--data", folder, "--out",
                               out / "eval", "--num_images", 4, "--batch_size", 4,
                               "--edits", "sefa:0", "--deviation_samples", 2,
                               "--num_grid", 2]) == 0
    r = json.loads((out / "eval" / "metrics.json").read_text())[os.path.basename(inv_dir)]
    for k in ("mse", "swd", "latent_variation", "w_deviation"):
        assert isinstance(r[k], float) and np.isfinite(r[k]), (k, r[k])
    got["eval_mse"] = np.float64(r["mse"])
    return got


@pytest.mark.slow
def test_converted_pickle_through_every_command(sources, lpips_dir, tmp_path):  # noqa: F811
    """The converted official pickle through sample, encode, invert (e4e, projector, PTI), edit
    and eval. The .pt converts to the very same variables
    (test_pickle_and_pt_convert_to_the_same_generator), so one pass covers both files; a second
    pass for the .pt cost 3.5 CPU-minutes for nothing new."""
    images = _write_images(tmp_path / "imgs", ["a.png", "b.png"], with_bad=False)
    out = tmp_path / "pkl"
    out.mkdir()
    inv_dir = e4e_over(sources["pkl"], str(out / "e4e_sg3_t"))
    got = _through_every_command(sources["pkl"], inv_dir, images, lpips_dir, out)
    assert got and all(np.all(np.isfinite(v)) for v in got.values())
