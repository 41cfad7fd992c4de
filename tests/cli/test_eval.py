"""eval.py: every metric against the metric library on a tiny model, one compilation per function
for a whole evaluation, unavailable metrics with reasons, the report, and the end-to-end demo
run (training -> eval.py -> the edit command)."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from e4e_jax import editing, evaluation as ev
from e4e_jax.apps import evaluate as ev_app
from e4e_jax.cli import eval as ev_cli
from e4e_jax.nets.encoder import checkpoint_names
from e4e_jax.data import image_io
from e4e_jax.evaluation import metrics
from e4e_jax.nets.model_dir import save_model_dir
from e4e_jax.nets.encoder import load_encoder, save_inverter
from e4e_jax.nets.loss_nets import moco_module
from e4e_jax.models import encoders as E
from e4e_jax.models.lpips import LPIPS
from e4e_jax.core.ops import adaptive_avg_pool2d
from tests.parity.test_encoders import save_tiny_inverter, tiny_config, tiny_generator

from tests.support.paths import REPO  # noqa: E402
MOCO_TINY = {"blocks": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "stem_width": 4, "input_size": 32}


def random_variables(module, shapes, seed=0):
    """Random variables of `module` drawn with numpy (no init compilation): BatchNorm statistics
    neutral, kernels ~ N(0, 1 / fan_in)."""
    tree = jax.eval_shape(module.init, jax.random.key(0),
                          *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes])
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("var", "scale"):
            return np.ones(leaf.shape, np.float32)
        if name in ("mean", "bias"):
            return np.zeros(leaf.shape, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(fill, tree)


class FakeInception:
    """Stands in for the FID Inception-v3 (24M parameters at 299 px is too slow for this test;
    tests/parity/test_fid_inception.py covers it): a fixed random projection of 4x4-pooled images,
    batched like LoadedInception.features."""

    def __init__(self):
        self.proj = np.random.default_rng(3).standard_normal((48, 12)).astype(np.float32)
        self._apply = jax.jit(lambda p, x: jnp.tanh(
            adaptive_avg_pool2d(x, (4, 4)).reshape(x.shape[0], -1) @ p))

    def features(self, images, batch_size=50):
        return metrics.run_batched(lambda b: self._apply(self.proj, jnp.asarray(b)), images,
                                   batch_size)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_inverter(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def inv(model_dir):
    return load_encoder(model_dir)


@pytest.fixture(scope="module")
def net_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    lpips_dir = save_model_dir(str(d / "lpips_alex"), "lpips", {"net": "alex"},
                               random_variables(LPIPS("alex"), [(1, 64, 64, 3)] * 2))
    moco_dir = save_model_dir(str(d / "moco"), "moco_resnet50", MOCO_TINY,
                              random_variables(moco_module(MOCO_TINY), [(1, 32, 32, 3)]))
    return lpips_dir, moco_dir


@pytest.fixture(scope="module")
def nets(net_dirs):
    nets = ev.load_networks(lpips=net_dirs[0], moco=net_dirs[1])
    nets.inception, nets.inception_reason = FakeInception(), None
    return nets


def test_checkpoint_names_disambiguate_basenames():
    assert checkpoint_names(["runs/a/export", "runs/b/export/", "x/e4e", "runs/c/export"]) \
        == ["export", "export-2", "e4e", "export-3"]


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 36 samples: singular cov
def test_every_metric_matches_the_library_and_compiles_once(inv, nets, tmp_path):
    """36 synthetic images in batches of 8 (the last padded): each number equals the metric
    library called directly on all images, and no batch after the first compiles anything."""
    data = ev_app.open_data("synthetic", num_images=36, seed=3)
    opts = ev.EvalOptions(batch_size=8, seed=3, edits=["sefa:1:2", "sefa:0:-4:1-3"],
                          lec_edit="sefa:0:3", deviation_samples=20)
    seen = []
    with ev.CompileCounter() as counter:
        entry = ev_app.evaluate_checkpoint(
            inv, data, nets, opts, name="tiny", grid_dir=str(tmp_path / "grids"),
            progress=lambda name, stage, done, total: seen.append((stage, done, counter.count)))
    # compilations: the count after every batch from the second on equals the one after the
    # first (inversion loop), and after the second call (LEC, deviation: the hooks run
    # mid-batch, so the first batch finishes compiling after them)
    for stage, first, batches in (("inversion metrics", 1, 5), ("LEC", 2, 5),
                                  ("W deviation", 2, 3)):
        counts = [c for s, done, c in seen if s == stage and done > 0]
        assert len(counts) == batches, (stage, seen)
        assert len(set(counts[first - 1:])) == 1, (stage, counts)
    assert entry["recompilations"] == {"inversion": 0, "lec": 0, "deviation": 0}
    assert inv.runtime.compilations == 2        # one invert and one encode program

    # the same numbers from the library on all 36 images (networks run in batches of 8 here
    # too, only to reuse their compiled programs)
    x = np.concatenate([b.images[:b.valid] for b in data.batches(inv, 8)])
    assert x.shape == (36, 32, 32, 3)

    w, rec = metrics.run_batched(inv.invert, x, 8)
    xc, rc = np.clip(x, -1, 1), np.clip(rec, -1, 1)
    assert entry["num_images"] == 36 and entry["image_size"] == [32, 32]
    np.testing.assert_allclose(entry["mse"], np.mean((rc - xc) ** 2), rtol=1e-5)
    pairs = np.stack([xc, rc], axis=1)
    lp = metrics.run_batched(lambda b: nets.lpips(b[:, 0], b[:, 1]), pairs, 8)
    np.testing.assert_allclose(entry["lpips"], np.mean(lp), rtol=1e-4)
    fx, fr = (metrics.run_batched(nets.similarity.features, a, 8) for a in (xc, rc))
    np.testing.assert_allclose(entry["identity"], np.mean(np.sum(fx * fr, -1)), rtol=1e-4)
    assert -1 <= entry["identity"] <= 1 and entry["identity_net"] == "moco"
    swd = metrics.swd(xc, rc, seed=3, batch_size=8)
    for k in ("swd", "swd_32", "swd_16"):
        np.testing.assert_allclose(entry[k], swd[k], rtol=1e-4)
    fake = nets.inception
    feat_real = fake.features(xc, batch_size=8)
    np.testing.assert_allclose(entry["fid"], metrics.fid_from_features(
        feat_real, fake.features(rc, batch_size=8)), rtol=1e-4)
    np.testing.assert_allclose(entry["latent_variation"], metrics.latent_variation(w),
                               rtol=1e-5)
    _, vectors = editing.sefa(inv.generator)
    _, vectors_123 = editing.sefa(inv.generator, (1, 2, 3))   # factorized over those layers
    swd_edits, fid_edits = [], []
    for key, we in (("sefa:1:+2", editing.sefa_edit(w, vectors[1], 0, "all", distances=[2.0])),
                    ("sefa:0:1-3:-4", editing.sefa_edit(w, vectors_123[0], 0, (1, 2, 3),
                                                        distances=[-4.0]))):
        img = np.clip(metrics.run_batched(inv.decode, np.asarray(we), 8), -1, 1)
        swd_edits.append(metrics.swd(xc, img, seed=3, batch_size=8)["swd"])
        fid_edits.append(metrics.fid_from_features(feat_real, fake.features(img, batch_size=8)))
        np.testing.assert_allclose(entry[f"swd_edit/{key}"], swd_edits[-1], rtol=1e-4)
        np.testing.assert_allclose(entry[f"fid_edit/{key}"], fid_edits[-1], rtol=1e-4)
    np.testing.assert_allclose(entry["swd_edit"], np.mean(swd_edits), rtol=1e-4)
    np.testing.assert_allclose(entry["fid_edit"], np.mean(fid_edits), rtol=1e-4)
    lin = editing.LinearEdit.sefa(vectors[0], 3.0, "all", inv.n_latent)
    np.testing.assert_allclose(entry["lec"], metrics.latent_editing_consistency(
        x, inv.encode, inv.decode, lin, lin.inverse, batch_size=8), rtol=1e-4)
    g = inv.generator
    np.testing.assert_allclose(entry["w_deviation"], metrics.latent_deviation(
        inv.encode, inv.decode, g.mapping, inv.n_latent, n_samples=20, batch_size=8, seed=3,
        style_dim=g.z_dim), rtol=1e-4)
    assert entry["edits"] == ["sefa:1:+2", "sefa:0:1-3:-4"] and entry["lec_edit"] == "sefa:0:+3"
    for k in ev.METRIC_KEYS:
        assert np.isfinite(entry[k]) and f"{k}_reason" not in entry, k
    # grids: 4 rows of source | inversion (| two edits), cells magnified 32 -> 128 px
    inv_grid = np.asarray(Image.open(entry["grids"]["inversions"]))
    edit_grid = np.asarray(Image.open(entry["grids"]["edits"]))
    assert inv_grid.shape[0] > 4 * 128 and 2 * 128 < inv_grid.shape[1] < 3 * 128
    assert 4 * 128 < edit_grid.shape[1] < 5 * 128


@pytest.mark.slow
def test_folder_cli_two_names_and_reasons(model_dir, net_dirs, inv, tmp_path, capsys):
    """`eval.py` on a folder (one corrupt file), the same checkpoint twice, metric families
    switched off: nulls with reasons in metrics.json and footnotes in report.md."""
    folder = tmp_path / "images"
    folder.mkdir()
    x = np.asarray(inv.generator.synthesis(inv.generator.broadcast(inv.generator.mapping(
        jax.random.normal(jax.random.key(1), (10, 32))))))
    for i, im in enumerate(x):
        image_io.save_png(image_io.to_uint8(im), str(folder / f"img_{i:02d}.png"))
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = ev_cli.main(["--checkpoint", model_dir, "--checkpoint", model_dir + os.sep, "--data",
                  str(folder), "--out", str(out), "--num_images", "9", "--batch_size", "4",
                  "--lpips", net_dirs[0], "--edits", "none", "--lec_edit", "none",
                  "--deviation_samples", "0", "--num_grid", "2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipping unreadable image broken.png" in err and "wrote" in err
    results = json.loads((out / "metrics.json").read_text())
    assert list(results) == ["tiny", "tiny-2"]
    r = results["tiny"]
    # broken.png sorts first: 9 slots, 8 readable images
    assert r["num_images"] == 8 and r["skipped_images"] == ["broken.png"]
    for k in ("mse", "lpips", "swd", "latent_variation"):
        assert isinstance(r[k], float) and np.isfinite(r[k]), k
    expected_reasons = {
        "identity": "no --arcface", "fid": "no FID Inception weights",
        "swd_edit": "no --edits given", "fid_edit": "no --edits given",
        "lec": "disabled with --lec_edit none",
        "w_deviation": "disabled with --deviation_samples 0"}
    for k, why in expected_reasons.items():
        assert r[k] is None and why in r[f"{k}_reason"], (k, r.get(f"{k}_reason"))
    assert results["tiny-2"]["mse"] == r["mse"]
    # the inputs are read like the official transform: mse from the files themselves
    files = sorted(p for p in os.listdir(folder) if p != "broken.png")[:8]
    xs = image_io.load_images([str(folder / p) for p in files], (32, 32))
    _, rec = inv.invert(xs)
    np.testing.assert_allclose(r["mse"], np.mean((np.clip(np.asarray(rec), -1, 1) - xs) ** 2),
                               rtol=1e-5)
    report = (out / "report.md").read_text()
    assert "| `mse` (" in report and "`tiny-2`" in report
    assert re.search(r"\| `lec` .*\| n/a \[\d\] \| n/a \[\d\] \|", report)
    assert "disabled with --lec_edit none" in report
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / link).is_file(), link
    assert "tiny/inversions.png" in report and "edits.png" not in report


@pytest.mark.slow
def test_reasons_for_sizes_the_metrics_cannot_take(tmp_path):
    """A model whose reconstructions (face_pool 64) differ from its 32 px input: image
    comparisons, LEC and E(G(w)) are unavailable (nothing is resampled); ArcFace wants 256 px."""
    g = tiny_generator(32)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(32, 32))
    d = save_inverter(str(tmp_path / "pool64"), cfg, E.init_encoder(jax.random.PRNGKey(1), cfg),
                      g, np.zeros((g.n_latent, 32), np.float32), face_pool=64)
    inv = load_encoder(d)
    nets = ev.Networks(similarity=object(), similarity_kind="arcface", similarity_reason=None)
    entry = ev_app.evaluate_checkpoint(inv, ev_app.open_data("synthetic", num_images=8), nets,
                                   ev.EvalOptions(batch_size=8, deviation_samples=8))
    assert entry["image_size"] == [64, 64]
    for k in ("mse", "swd", "identity", "swd_edit"):
        assert entry[k] is None and "nothing is resampled" in entry[f"{k}_reason"], k
    for k in ("lec", "w_deviation"):
        assert entry[k] is None and "E(G(w)) needs them equal" in entry[f"{k}_reason"], k
    assert np.isfinite(entry["latent_variation"])


@pytest.mark.slow
def test_arcface_needs_256px(inv):
    nets = ev.Networks(similarity=object(), similarity_kind="arcface", similarity_reason=None)
    entry = ev_app.evaluate_checkpoint(inv, ev_app.open_data("synthetic", num_images=4), nets,
                                   ev.EvalOptions(batch_size=4, edits=[], lec_edit=None,
                                                  deviation_samples=0))
    assert entry["identity"] is None and "256x256" in entry["identity_reason"]


def test_cli_errors(model_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    gen_dir = os.path.join(model_dir, "generator")
    cases = [
        (["--checkpoint", gen_dir, "--data", "synthetic"], "not an encoder checkpoint"),
        (["--checkpoint", str(tmp_path)], "not a converted model directory"),
        (["--checkpoint", model_dir, "--edits", "sefa:zero"], "SEMANTIC must be an integer"),
        (["--checkpoint", model_dir, "--lec_edit", "warp:1"], "cannot parse edit spec"),
        (["--checkpoint", model_dir, "--edits", "sefa:0:1:40"], "style layers 0..6"),
        (["--checkpoint", model_dir, "--edits", "interfacegan:missing.npy"], "does not exist"),
        (["--checkpoint", model_dir, "--data", str(tmp_path / "nope")], "is not a folder"),
        (["--checkpoint", model_dir, "--arcface", "a", "--moco", "b"], "not both"),
        (["--checkpoint", model_dir, "--lpips", gen_dir], "of kind 'stylegan2_generator'"),
    ]
    for args, message in cases:
        if "--data" not in args:
            args = args + ["--data", "synthetic", "--num_images", "8"]
        assert ev_cli.main(args + ["--out", out, "--deviation_samples", "0"]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)


# ---------------------------------------------------------------------- end to end on the demo

@pytest.mark.slow
def test_demo_training_then_eval_and_edit(tmp_path, capsys):
    """A few demo training steps, then eval.py on the synthetic domain and on a folder of
    generated PNGs, and the edit command: the JSON, the report and the PNGs."""
    from tests.support.train_utils import tiny_config as tiny_train_config
    from e4e_jax.cli import edit
    from e4e_jax import train as trainer
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(tiny_train_config(max_steps=4), workdir)
    export = os.path.join(workdir, "export")

    out = tmp_path / "eval_synthetic"
    assert ev_cli.main(["--checkpoint", export, "--data", "synthetic", "--num_images", "16",
                    "--out", str(out), "--deviation_samples", "16"]) == 0
    r = json.loads((out / "metrics.json").read_text())["export"]
    for k in ("mse", "swd", "swd_edit", "lec", "latent_variation", "w_deviation"):
        assert isinstance(r[k], float) and np.isfinite(r[k]) and r[k] >= 0, k
    for k in ("lpips", "identity", "fid", "fid_edit"):
        assert r[k] is None and r[f"{k}_reason"], k
    assert r["image_size"] == [16, 16] and r["num_images"] == 16
    assert r["recompilations"] == {"inversion": 0, "lec": 0, "deviation": 0}
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(links) == ["export/edits.png", "export/inversions.png"]
    for link in links:
        assert Image.open(out / link).size[0] > 0

    # a folder of the domain's images as PNG files, two checkpoints of the same basename
    folder = tmp_path / "pngs"
    inv = load_encoder(export)
    g = inv.generator
    x = np.asarray(g.synthesis(g.broadcast(g.mapping(jax.random.normal(jax.random.key(7),
                                                                       (8, g.z_dim))))))
    for i, im in enumerate(x):
        image_io.save_png(image_io.to_uint8(im), str(folder / f"sample_{i}.png"))
    copy = tmp_path / "other" / "export"
    os.makedirs(copy.parent)
    os.symlink(export, copy)
    out2 = tmp_path / "eval_folder"
    assert ev_cli.main(["--checkpoint", export, "--checkpoint", str(copy), "--data", str(folder),
                    "--out", str(out2), "--deviation_samples", "8"]) == 0
    both = json.loads((out2 / "metrics.json").read_text())
    assert list(both) == ["export", "export-2"]
    assert both["export"]["mse"] == both["export-2"]["mse"] and both["export"]["num_images"] == 8

    # the edit command on the same folder, then on the latents it wrote
    edits_out = tmp_path / "edits"
    assert edit.main(["--checkpoint", export, "--images", str(folder), "--edit", "sefa:0",
                      "--edit", "sefa:2::1-3", "--strengths", "-3", "3", "--out",
                      str(edits_out)]) == 0
    assert sorted(p for p in os.listdir(edits_out) if p.endswith(".png")) == \
        [f"sample_{i}.png" for i in range(8)]
    assert np.load(edits_out / "edited_latents.npy").shape == (8, 2, 2, g.n_latent, 512)
    latents_out = tmp_path / "edits_from_latents"
    assert edit.main(["--checkpoint", export, "--latents", str(edits_out / "latents.npy"),
                      "--edit", "sefa:0", "--out", str(latents_out)]) == 0
    summary = json.loads((latents_out / "edits.json").read_text())
    assert summary["has_source_column"] is False and summary["strengths"] == [-3.0, 0.0, 3.0]
    assert summary["names"][0] == "sample_0.png"

    # the thin top-level script: a workdir instead of its export is a clear error
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "eval.py"), "--checkpoint",
                           workdir, "--data", "synthetic", "--out", str(tmp_path / "x")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pass" in proc.stderr and "export" in proc.stderr, \
        proc.stderr


def test_input_output_flags_and_an_eta_without_compile_time(model_dir, tmp_path, capsys):
    """eval takes --input / --output (--data / --out stay aliases); a one-batch inversion stage
    gives no ETA (its only batch includes compilation: the demo with 8 images printed ~254 s for
    a 9 s run); the W deviation stage's second batch does; no doubled '/' in the paths."""
    out = str(tmp_path / "ev") + "/"
    assert ev_cli.main(["--checkpoint", model_dir, "--input", "synthetic", "--num-images", "2",
                        "--batch-size", "2", "--lec-edit", "none", "--deviation-samples", "8",
                        "--output", out]) == 0
    err = capsys.readouterr().err
    assert os.path.isfile(os.path.join(out, "metrics.json"))
    etas = [line for line in err.splitlines() if "ETA ~" in line]
    assert len(etas) == 1 and "in W deviation, after compile" in etas[0], err
    assert "compile included" not in err and "//" not in err, err


def test_an_earlier_eval_is_not_overwritten(model_dir, tmp_path, capsys):
    """A second eval into the same --output is refused before any work (metrics.json and
    report.md unchanged); --overwrite replaces them."""
    out = str(tmp_path / "ev")
    args = ["--checkpoint", model_dir, "--input", "synthetic", "--num-images", "2",
            "--batch-size", "2", "--lec-edit", "none", "--deviation-samples", "0",
            "--output", out]
    assert ev_cli.main(args) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        first = f.read()
    capsys.readouterr()
    assert ev_cli.main(args + ["--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json exists" in err[0] and "--overwrite" in err[0], err
    with open(os.path.join(out, "metrics.json")) as f:
        assert f.read() == first
    assert ev_cli.main(args + ["--seed", "1", "--overwrite"]) == 0


def test_report_records_the_command_as_typed(model_dir, tmp_path):
    """report.md gives the command line the user ran: `e4e-jax eval ...` through the one
    command, `python eval.py ...` through the script."""
    from e4e_jax.cli import main as e4e_main
    args = ["--checkpoint", model_dir, "--input", "synthetic", "--num-images", "2",
            "--batch-size", "2", "--lec-edit", "none", "--deviation-samples", "0"]
    assert e4e_main.main(["eval", *args, "--output", str(tmp_path / "a")]) == 0
    assert ev_cli.main([*args, "--output", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "report.md").read_text()
    b = (tmp_path / "b" / "report.md").read_text()
    assert "e4e-jax eval --checkpoint" in a and "python eval.py" not in a
    assert "python eval.py --checkpoint" in b
