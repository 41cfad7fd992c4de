"""The command-line conventions shared by every command (e4e_jax/cli/__init__.py, docs/cli.md):
dash flags with underscore aliases, --help exit 0 with the real invocation, exit codes,
--dtype / --precision reaching the loaders, --class on sample, unique output names, model
directory modes and hints, eval's cost estimate."""
import os
import subprocess
import sys

import numpy as np
import pytest

from e4e_jax import cli
from e4e_jax.outputs.names import OutputNames

from tests.support.paths import REPO  # noqa: E402

# module, the invocation its --help must show
COMMANDS = [
    ("e4e_jax.encode", "python -m e4e_jax.encode"),
    ("e4e_jax.align", "python -m e4e_jax.align"),
    ("e4e_jax.edit", "python -m e4e_jax.edit"),
    ("e4e_jax.sample", "python -m e4e_jax.sample"),
    ("e4e_jax.invert", "python -m e4e_jax.invert"),
    ("e4e_jax.directions", "python -m e4e_jax.directions"),
    ("e4e_jax.cli.eval", "python eval.py"),
    ("convert_weights.stylegan2", "e4e-jax convert stylegan2"),
    ("convert_weights.stylegan2_ada", "e4e-jax convert stylegan2_ada"),
    ("convert_weights.e4e", "e4e-jax convert e4e"),
    ("convert_weights.lpips", "e4e-jax convert lpips"),
    ("convert_weights.arcface", "e4e-jax convert arcface"),
    ("convert_weights.moco", "e4e-jax convert moco"),
    ("convert_weights.fid_inception", "e4e-jax convert fid_inception"),
]


@pytest.mark.parametrize("module,invocation", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_exits_0_with_real_invocation_and_example(module, invocation, capsys):
    import importlib
    mod = importlib.import_module(module)
    try:
        code = mod.main(["--help"])  # commands either return their exit code ...
    except SystemExit as e:  # ... or leave through argparse's exit
        code = e.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: " + invocation), out[:200]
    assert "examples:\n  " + invocation in out               # an example to copy
    assert "underscore spelling" in out


@pytest.mark.slow
def test_help_of_the_real_entry_points_in_subprocesses():
    """The very commands a user types (python -m ..., python eval.py) exit 0 on --help."""
    for module, invocation in COMMANDS:
        if module == "e4e_jax.cli.eval":
            argv = [sys.executable, "eval.py", "--help"]
        else:
            argv = [sys.executable, "-m", module, "--help"]
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=REPO))
        assert r.returncode == 0, (module, r.stderr[-2000:])
        assert r.stdout.startswith("usage: " + invocation)


def test_underscore_and_dash_spellings_parse_alike():
    p = cli.make_parser("prog", "d")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num_images", type=int)                 # declared either way
    p.add_argument("--checkpoint")
    for argv in (["--batch-size", "3", "--num-images", "5"],
                 ["--batch_size", "3", "--num_images", "5"],
                 ["--batch_size=3", "--num-images=5"]):
        a = p.parse_args(argv)
        assert (a.batch_size, a.num_images) == (3, 5), argv
    usage = p.format_usage()                                  # listed once, dashed
    assert "--num-images" in usage and "--num_images" not in usage
    assert "--batch_size" not in usage


@pytest.mark.parametrize("module,old,new,dest", [
    ("e4e_jax.edit", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.edit", "--num_images", "--num-images", "num_images"),
    ("e4e_jax.edit", "--min_cell", "--min-cell", "min_cell"),
    ("e4e_jax.encode", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.align", "--max_faces", "--max-faces", "max_faces"),
    ("e4e_jax.cli.eval", "--num_images", "--num-images", "num_images"),
    ("e4e_jax.cli.eval", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.cli.eval", "--deviation_samples", "--deviation-samples",
     "deviation_samples"),
    ("e4e_jax.cli.eval", "--num_grid", "--num-grid", "num_grid"),
])
def test_command_aliases(module, old, new, dest):
    import importlib
    mod = importlib.import_module(module)
    parser = mod.build_parser()
    required = {"e4e_jax.edit": ["--checkpoint", "c", "--synthetic", "1", "--edit", "sefa:0",
                                 "--out", "o"],
                "e4e_jax.encode": ["--checkpoint", "c", "--input", "i", "--output", "o"],
                "e4e_jax.align": ["--input", "i", "--output", "o"],
                "e4e_jax.cli.eval": ["--checkpoint", "c", "--data", "d", "--out", "o"]}
    a = parser.parse_args(required[module] + [old, "7"])
    b = parser.parse_args(required[module] + [new, "7"])
    assert getattr(a, dest) == getattr(b, dest) == 7


def test_dtype_precision_flags():
    p = cli.make_parser("prog", "d")
    cli.add_dtype_precision(p)
    assert cli.loader_kwargs(p.parse_args([])) == {}
    assert cli.loader_kwargs(p.parse_args(["--dtype", "bfloat16"])) == {"dtype": "bfloat16"}
    assert cli.loader_kwargs(p.parse_args(["--precision", "high"])) == {"precision": "high"}
    for bad in (["--dtype", "float16"], ["--precision", "medium"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2


def test_output_names_rule():
    n = OutputNames()
    got = [n.name("a.jpg"), n.name("a.png"), n.name("A.bmp"), n.name("two.jpg"),
           n.name("two.jpg", face=1), n.name("two_face1.jpg"), n.name("sub/x.jpg"),
           n.name("a_png.gif"), n.name("a.png")]
    assert got == ["a.png", "a_png.png", "A_bmp.png", "two.png", "two_face1.png",
                   "two_face1_jpg.png", "sub/x.png", "a_png_gif.png", "a_png-2.png"]
    assert len({g.lower() for g in got}) == len(got)
    assert OutputNames().row("p/q.jpg#face2") == "p/q_face2.png"
    # deterministic: the same inputs in the same order give the same names
    m = OutputNames()
    assert [m.name(x) for x in ("a.jpg", "a.png", "A.bmp")] == got[:3]


def test_model_dirs_follow_umask(tmp_path):
    from e4e_jax.nets.model_dir import save_model_dir
    old = os.umask(0o022)
    try:
        path = save_model_dir(str(tmp_path / "m"), "test", {"x": 1}, arrays={"a": np.zeros(2)})
        assert os.stat(path).st_mode & 0o777 == 0o755
        os.umask(0o077)
        path = save_model_dir(str(tmp_path / "p"), "test", {"x": 1})
        assert os.stat(path).st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_workdir_hint_is_shared(tmp_path):
    """Any loader or check given a training workdir names WORKDIR/export."""
    from e4e_jax.nets import model_dir as checkpoints
    from e4e_jax.nets.encoder import check_checkpoint
    workdir = tmp_path / "run"
    checkpoints.save_model_dir(str(workdir / "export"), "test", {})
    (workdir / "checkpoints").mkdir()
    export = repr(str(workdir / "export"))
    for fn in (check_checkpoint, checkpoints.read_meta,
               lambda p: checkpoints.load_model_dir(p, "generator")):
        with pytest.raises(checkpoints.ModelDirError) as e:
            fn(str(workdir))
        assert f"pass {export}" in str(e.value) and "WORKDIR/export" in str(e.value)


# --------------------------------------------------------------------------------------------
# Commands on tiny models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny e4e directory (16 px), a tiny unconditional generator directory and a converted
    class-conditional StyleGAN2-ADA generator (c_dim 5)."""
    import jax
    import tests.support.ada_pickle_writer as writer
    from e4e_jax.convert import stylegan2_ada
    from e4e_jax.nets.generator import save_generator
    from e4e_jax.nets.encoder import save_inverter
    from e4e_jax.models import encoders as E
    from tests.parity.test_encoders import tiny_config, tiny_generator
    root = tmp_path_factory.mktemp("models")
    g = tiny_generator(16)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(16, 16))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    la = np.zeros((g.n_latent, g.style_dim), np.float32)
    e4e = save_inverter(str(root / "e4e"), cfg, v, g, la)
    gen = save_generator(g, str(root / "gen"))
    kw = writer.tiny_init_kwargs(resolution=16, w_dim=16, z_dim=12, c_dim=5, num_layers=2,
                                 channel_base=64, channel_max=8)
    pkl = writer.write_snapshot(str(root / "cond.pkl"),
                                writer.synthetic_generator_state(kw, 3), kw)
    assert stylegan2_ada.main([pkl, str(root / "cond")]) == 0
    return {"e4e": e4e, "gen": gen, "cond": str(root / "cond")}


def test_sample_class_option(tiny_models, tmp_path, capsys):
    from PIL import Image
    import jax
    import e4e_jax
    from e4e_jax.cli import sample
    cond, gen = tiny_models["cond"], tiny_models["gen"]
    out = str(tmp_path / "s.png")
    assert sample.main(["--generator", cond, "--n", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "class-conditional (c_dim=5)" in err and "--class K" in err and not os.path.exists(out)
    assert sample.main(["--generator", cond, "--n", "2", "--out", out, "--class", "5"]) == 2
    assert "--class 5 is out of range" in capsys.readouterr().err
    assert sample.main(["--generator", cond, "--n", "2", "--out", out, "--class", "-1"]) == 2
    assert sample.main(["--generator", gen, "--n", "2", "--out", out, "--class", "0"]) == 2
    assert "unconditional (c_dim=0): drop --class" in capsys.readouterr().err
    # a valid class: the grid is the samples under that one-hot label
    grids = {}
    for k in (0, 3):
        path = str(tmp_path / f"c{k}.png")
        assert sample.main(["--generator", cond, "--n", "2", "--out", path, "--class",
                            str(k)]) == 0
        grids[k] = np.asarray(Image.open(path))
    g = e4e_jax.load_generator(cond)
    want = np.asarray(g.sample(jax.random.key(1), 2, noise="const",
                               c=np.eye(5, dtype=np.float32)[3]))
    from e4e_jax.data.image_io import to_uint8
    h = want.shape[1]
    assert np.abs(grids[3][:h, :h].astype(int) - to_uint8(want[0]).astype(int)).max() <= 1
    assert not np.array_equal(grids[0], grids[3])
    # truncation under a label (latent_avg re-estimated for that class) runs too
    assert sample.main(["--generator", cond, "--n", "1", "--out", out, "--class", "1",
                        "--truncation", "0.5"]) == 0


def _record_kwargs(monkeypatch, module, name):
    """Replaces module.name by a wrapper that records its keyword arguments and drops them
    (the loaders of this branch may not take dtype / precision yet)."""
    seen = []
    real = getattr(module, name)

    def fake(path, **kw):
        seen.append(kw)
        return real(path)
    monkeypatch.setattr(module, name, fake)
    return seen


@pytest.mark.slow
def test_dtype_precision_reach_the_loaders(tiny_models, tmp_path, monkeypatch):
    import e4e_jax
    import e4e_jax.nets.encoder as inverter
    from e4e_jax.cli import edit, sample
    from e4e_jax.evaluation import cli as eval_cli
    seen_g = _record_kwargs(monkeypatch, e4e_jax, "load_generator")
    seen_e = _record_kwargs(monkeypatch, inverter, "load_encoder")
    flags = ["--dtype", "bfloat16", "--precision", "highest"]
    want = {"dtype": "bfloat16", "precision": "highest"}
    assert sample.main(["--generator", tiny_models["gen"], "--n", "1", "--out",
                        str(tmp_path / "a.png")]) == 0
    assert sample.main(["--generator", tiny_models["gen"], "--n", "1", "--out",
                        str(tmp_path / "b.png")] + flags) == 0
    assert seen_g == [{}, want]
    assert edit.main(["--checkpoint", tiny_models["e4e"], "--synthetic", "1", "--edit",
                      "sefa:0:1", "--out", str(tmp_path / "e")] + flags) == 0
    assert seen_e[-1] == want
    seen_nets = []
    monkeypatch.setattr(eval_cli, "load_networks",
                        lambda *a, **kw: seen_nets.append(kw) or
                        __import__("e4e_jax.evaluation.networks",
                                   fromlist=["Networks"]).Networks())
    assert eval_cli.main(["--checkpoint", tiny_models["e4e"], "--data", "synthetic",
                          "--num-images", "2", "--batch-size", "2", "--out",
                          str(tmp_path / "ev"), "--lec-edit", "none", "--deviation-samples",
                          "0", "--precision", "high"]) == 0
    assert seen_e[-1] == {"precision": "high"}
    assert seen_nets[-1]["loader_kwargs"] == {"precision": "high"}


def test_exit_codes_edit_and_eval(tiny_models, tmp_path, capsys):
    """0 done, 1 nothing readable, 2 bad arguments (issue 13 item 5)."""
    from e4e_jax.cli import edit
    from e4e_jax.evaluation import cli as eval_cli
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not a jpeg")
    e4e = tiny_models["e4e"]
    assert edit.main(["--checkpoint", e4e, "--images", str(bad), "--edit", "sefa:0",
                      "--out", str(tmp_path / "e")]) == 1
    assert "could be read; nothing was written" in capsys.readouterr().err
    assert edit.main(["--checkpoint", e4e, "--images", str(tmp_path / "missing"), "--edit",
                      "sefa:0", "--out", str(tmp_path / "e")]) == 2
    assert edit.main(["--checkpoint", e4e, "--synthetic", "1", "--edit", "warp:1",
                      "--out", str(tmp_path / "e")]) == 2
    common = ["--out", str(tmp_path / "ev"), "--lec-edit", "none", "--deviation-samples", "0",
              "--batch-size", "2"]
    assert eval_cli.main(["--checkpoint", e4e, "--data", str(bad)] + common) == 1
    assert "no readable images" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", str(tmp_path), "--data", "synthetic"] + common) == 2
    with pytest.raises(SystemExit) as e:
        eval_cli.main(["--checkpoint", e4e, "--data", "synthetic", "--dtype", "int8"] + common)
    assert e.value.code == 2


def test_exit_codes_converters_and_sample(tmp_path, capsys):
    from e4e_jax.convert import e4e as conv_e4e
    from e4e_jax.convert import stylegan2
    from e4e_jax.cli import sample
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for conv in (stylegan2, conv_e4e):
        assert conv.main([str(junk), str(tmp_path / "o")]) == 2
        assert capsys.readouterr().err.startswith("error: ")
        assert not (tmp_path / "o").exists()
    assert sample.main(["--generator", str(tmp_path), "--out", str(tmp_path / "s.png")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_edit_grid_names_never_collide(tiny_models, tmp_path):
    import json
    from PIL import Image
    from e4e_jax.cli import edit
    src = tmp_path / "in"
    src.mkdir()
    for i, n in enumerate(["a.jpg", "a.png", "A.bmp"]):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(src / n)
    out = tmp_path / "e"
    assert edit.main(["--checkpoint", tiny_models["e4e"], "--images", str(src), "--edit",
                      "sefa:0:1", "--out", str(out), "--min-cell", "16"]) == 0
    s = json.loads((out / "edits.json").read_text())
    assert s["names"] == ["A.bmp", "a.jpg", "a.png"]
    assert s["grids"] == ["A.png", "a_jpg.png", "a_png.png"]
    assert all((out / g).is_file() for g in s["grids"])


def test_eval_cost_estimate_and_eta():
    from e4e_jax.evaluation.evaluators.base import EvalOptions
    from e4e_jax.evaluation.cost import EtaTracker, cost_plan, describe, total_passes
    opts = EvalOptions(deviation_samples=500, lec_edit="sefa:0", edits=None)
    plan = cost_plan(20, opts, n_edits=1, has_inception=True)
    assert [(s.name, s.passes) for s in plan] == [
        ("inversion metrics", 60), ("LEC", 80), ("W deviation", 1000),
        ("FID (Inception)", 60)]
    assert total_passes(plan) == 1200
    text = describe(plan, n_checkpoints=2)
    assert "W deviation" in text and "1000" in text and "2400" in text
    # no LEC below one group of 8, none when disabled; deviation 0: no stage
    small = cost_plan(4, EvalOptions(deviation_samples=0, lec_edit=None, edits=[]), 0, False)
    assert [(s.name, s.passes) for s in small] == [("inversion metrics", 8)]
    # the paper's setting costs 10x the default deviation stage
    from e4e_jax.evaluation.evaluators.base import DEFAULT_DEVIATION_SAMPLES, PAPER_DEVIATION_SAMPLES
    assert (DEFAULT_DEVIATION_SAMPLES, PAPER_DEVIATION_SAMPLES) == (500, 5000)
    # ETA from the third batch mark (the first interval may hold the compile): 20 images in
    # batches of 4, 0.25 s per batch after compile
    notes, clock = [], iter([5.0, 10.0, 10.25]).__next__

    class Printer:
        def __call__(self, *a):
            pass

        def note(self, text):
            notes.append(text)
    tracker = EtaTracker(plan, 1, Printer(), clock=clock)
    tracker("m", "inversion metrics", 0, 20)
    tracker("m", "inversion metrics", 4, 20)                # compile batch
    tracker("m", "inversion metrics", 8, 20)
    assert notes == []
    tracker("m", "inversion metrics", 12, 20)
    tracker("m", "inversion metrics", 16, 20)                # no second ETA
    per_pass = 0.25 / 4 / 3
    assert len(notes) == 1 and "after compile" in notes[0]
    assert tracker.eta_s == pytest.approx((1200 - 12 * 3) * per_pass)


def test_eval_paper_flag_and_default():
    from e4e_jax.evaluation import cli as eval_cli
    p = eval_cli.build_parser()
    base = ["--checkpoint", "c", "--data", "d", "--out", "o"]
    assert p.parse_args(base).deviation_samples is None and not p.parse_args(base).paper
    assert p.parse_args(base + ["--paper"]).paper


def test_progress_note_ends_the_line():
    import io
    from e4e_jax.evaluation.monitoring import ProgressPrinter

    class Tty(io.StringIO):
        def isatty(self):
            return True
    s = Tty()
    pp = ProgressPrinter(s)
    pp("m", "stage", 0, 4)
    pp("m", "stage", 2, 4)
    pp.note("ETA ~3 s")
    pp("m", "stage", 4, 4)
    lines = s.getvalue().split("\n")
    assert lines[1] == "ETA ~3 s" and lines[0].endswith("2/4 (" + lines[0].split("(")[-1])
    assert s.getvalue().endswith("\n")


def test_conditional_generator_refusals_in_edit_and_eval(tiny_models, tmp_path, capsys):
    """Where a command maps z (edit --synthetic, eval --data synthetic, eval's w_deviation),
    an e4e model over a class-conditional generator is refused with the option named."""
    import jax
    import e4e_jax
    from e4e_jax.cli import edit
    from e4e_jax.evaluation import cli as eval_cli
    from e4e_jax.nets.encoder import save_inverter
    from e4e_jax.models import encoders as E
    from tests.parity.test_encoders import tiny_config
    g = e4e_jax.load_generator(tiny_models["cond"])
    cfg = tiny_config(n_styles=g.n_latent, input_size=(16, 16))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    path = save_inverter(str(tmp_path / "cond_e4e"), cfg, v, g,
                         np.zeros((g.n_latent, g.style_dim), np.float32))
    assert edit.main(["--checkpoint", path, "--synthetic", "2", "--edit", "sefa:0",
                      "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "class-conditional (c_dim=5)" in err and "--input" in err and "--class K" in err
    assert eval_cli.main(["--checkpoint", path, "--data", "synthetic", "--num-images", "2",
                          "--batch-size", "2", "--out", str(tmp_path / "ev")]) == 2
    assert "--input synthetic) need an unconditional generator" in capsys.readouterr().err


def test_third_party_logs_quiet_unless_verbose(monkeypatch):
    import logging
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    monkeypatch.setattr(logging.getLogger("absl"), "level", logging.NOTSET)
    cli.quiet_third_party_logs(verbose=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert logging.getLogger("absl").level == logging.NOTSET
    for name in ("tensorflow", "orbax", "jax._src.xla_bridge"):   # restored after the test
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    cli.quiet_third_party_logs(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.getLogger("absl").level == logging.ERROR


@pytest.mark.parametrize("argv", [["--out", "."], ["--out", "samples.jpgx"]])
def test_sample_refuses_an_output_that_is_not_an_image_file_before_sampling(argv, capsys):
    from e4e_jax.cli import sample
    with pytest.raises(SystemExit) as e:
        sample.main(argv)
    assert e.value.code == 2
    assert "give an image file name ending in .png" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_encode_refuses_a_batch_size_below_one(value, capsys):
    from e4e_jax.cli import encode
    with pytest.raises(SystemExit) as e:
        encode.main(["--checkpoint", "c", "--input", "i", "--output", "o", "--batch-size", value])
    assert e.value.code == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_no_abbreviations_and_an_unknown_flag_names_the_closest(capsys):
    """`--check` is not `--checkpoint` (an abbreviation would silently change meaning when a
    flag is added); an unknown flag's error names the closest real one."""
    p = cli.make_parser("prog", "d")
    p.add_argument("--checkpoint")
    p.add_argument("--output")
    for argv, hint in ((["--check", "x"], "unknown flag --check; did you mean --checkpoint?"),
                       (["--out", "x"], "unknown flag --out; did you mean --output?"),
                       (["--outptu=x"], "unknown flag --outptu; did you mean --output?"),
                       (["--zzz", "1"], "unknown flag --zzz; see --help")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2
        assert hint in capsys.readouterr().err, argv


# --------------------------------------------------------------------------------------------
# One flag vocabulary (issue 21)

VOCABULARY = {
    # subcommand module -> the shared flags it takes (a flag it has no use for is left out)
    "e4e_jax.cli.encode": {"--input", "--output", "--checkpoint", "--batch-size", "--dtype",
                           "--precision", "--overwrite", "--verbose"},
    "e4e_jax.cli.invert": {"--input", "--output", "--checkpoint", "--lpips", "--dtype",
                           "--precision", "--overwrite", "--verbose"},
    "e4e_jax.cli.edit": {"--input", "--output", "--checkpoint", "--generator", "--batch-size",
                         "--dtype", "--precision", "--overwrite", "--verbose"},
    "e4e_jax.cli.eval": {"--input", "--output", "--checkpoint", "--lpips", "--batch-size",
                         "--dtype", "--precision", "--verbose"},
    "e4e_jax.cli.align": {"--input", "--output", "--verbose"},
    "e4e_jax.cli.directions": {"--output", "--checkpoint", "--generator", "--batch-size",
                               "--dtype", "--precision", "--overwrite", "--verbose"},
    "e4e_jax.cli.sample": {"--output", "--generator", "--dtype", "--precision", "--verbose"},
}


@pytest.mark.parametrize("module", sorted(VOCABULARY))
def test_every_subcommand_speaks_the_shared_vocabulary(module):
    import importlib
    parser = importlib.import_module(module).build_parser()
    shown = {o for a in parser._actions for o in a.option_strings}      # what --help lists
    missing = VOCABULARY[module] - shown
    assert not missing, f"{module} lacks {sorted(missing)}"


@pytest.mark.parametrize("module,required,old,new,dest,value", [
    ("e4e_jax.cli.edit", ["--checkpoint", "c", "--edit", "sefa:0", "--output", "o"],
     "--images", "--input", "input", "photos"),
    ("e4e_jax.cli.edit", ["--checkpoint", "c", "--edit", "sefa:0", "--synthetic", "1"],
     "--out", "--output", "output", "o/"),
    ("e4e_jax.cli.eval", ["--checkpoint", "c", "--output", "o"], "--data", "--input", "input",
     "synthetic"),
    ("e4e_jax.cli.eval", ["--checkpoint", "c", "--input", "synthetic"], "--out", "--output",
     "output", "o/"),
    ("e4e_jax.cli.sample", [], "--out", "--output", "out", "s.png"),
])
def test_old_input_output_spellings_are_aliases(module, required, old, new, dest, value):
    import importlib
    parser = importlib.import_module(module).build_parser()
    a = parser.parse_args(required + [old, value])
    b = parser.parse_args(required + [new, value])
    assert getattr(a, dest) == getattr(b, dest) == value
    text = " ".join(parser.format_help().split())
    assert f"{new} " in text and f"{old} is an alias" in text, text


def test_edit_output_is_accepted(capsys):
    """`edit --output` used to answer only "the following arguments are required: --out"."""
    from e4e_jax.cli import edit
    args = edit.build_parser().parse_args(["--checkpoint", "c", "--input", "i", "--edit",
                                           "sefa:0", "--output", "o"])
    assert (args.input, args.output) == ("i", "o")
    with pytest.raises(SystemExit):
        edit.build_parser().parse_args(["--checkpoint", "c", "--input", "i", "--edit", "sefa:0"])
    assert "--output" in capsys.readouterr().err


def test_invert_dtype_precision_take_effect_and_paths_are_joined(tiny_models, tmp_path,
                                                                  monkeypatch, capsys):
    """invert --dtype / --precision reach the loader (the networks compute under them), and a
    trailing '/' on --output prints no doubled slash (`wrote out//latents.npy`)."""
    from PIL import Image
    import jax.numpy as jnp
    import e4e_jax.nets.encoder as encoder_module
    from e4e_jax.cli import invert
    seen, loaded = [], []
    real = encoder_module.load_encoder

    def recording(path, **kw):
        seen.append(kw)
        loaded.append(real(path, **kw))
        return loaded[-1]
    monkeypatch.setattr(encoder_module, "load_encoder", recording)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(src / "a.png")
    out = str(tmp_path / "out") + "/"
    assert invert.main(["--checkpoint", tiny_models["e4e"], "--input", str(src), "--output", out,
                        "--dtype", "bfloat16", "--precision", "highest"]) == 0
    assert seen == [{"dtype": "bfloat16", "precision": "highest"}]
    assert loaded[0].module.dtype == jnp.bfloat16
    err = capsys.readouterr().err
    assert "latents.npy" in err and "//" not in err, err
    assert invert.main(["--checkpoint", tiny_models["e4e"], "--input", str(src), "--output",
                        str(tmp_path / "o2"), "--overwrite"]) == 0
    assert seen[-1] == {}                       # no flags: the loaders' defaults


# --------------------------------------------------------------------------------------------
# ETAs leave the compiling step out (issue 21)

def test_after_compile_rate_leaves_the_first_step_out():
    from e4e_jax.outputs.progress import AFTER_COMPILE, AfterCompileRate, duration
    clock = iter([100.0, 101.0, 102.0]).__next__
    r = AfterCompileRate(clock)
    assert r.eta_text(10) == AFTER_COMPILE and r.rate() is None
    r.mark(2)                                   # the first step: 100 s, mostly compilation
    assert r.eta_text(10) == AFTER_COMPILE
    r.mark(2)                                   # a repeated count is no measurement
    r.mark(4)                                   # 2 units in 1 s
    assert r.rate() == pytest.approx(2.0) and r.eta_s(10) == pytest.approx(3.0)
    assert r.eta_text(10) == "ETA 3s"
    assert [duration(s) for s in (9.4, 125, 15300)] == ["9s", "2m05s", "4h15m"]
    # marks taken as each step starts: the first interval is the compiling step
    r2 = AfterCompileRate(iter([0.0, 50.0, 51.0]).__next__, skip=2)
    for done in (1, 2):
        r2.mark(done)
    assert r2.rate() is None
    r2.mark(3)
    assert r2.rate() == pytest.approx(1.0)


def test_eval_eta_never_prices_the_compile_batch():
    """One batch in the inversion stage (the demo with --num-images 8 printed ~254 s for a 9 s
    run): no ETA from it; the first stage with a second batch gives it."""
    from e4e_jax.evaluation.cost import EtaTracker, cost_plan
    from e4e_jax.evaluation.evaluators.base import EvalOptions
    plan = cost_plan(8, EvalOptions(deviation_samples=64, lec_edit="sefa:0", edits=None), 1,
                     False)
    assert [s.name for s in plan] == ["inversion metrics", "LEC", "W deviation"]
    notes = []

    class Printer:
        def __call__(self, *a):
            pass

        def note(self, text):
            notes.append(text)
    times = iter([5.0, 9.0, 20.0, 30.0, 30.5]).__next__
    t = EtaTracker(plan, 1, Printer(), clock=times)
    t("m", "inversion metrics", 0, 8)
    t("m", "inversion metrics", 8, 8)            # compile + one batch: 5 s
    t("m", "LEC", 0, 8)
    t("m", "LEC", 8, 8)                          # its own compile
    assert notes == []
    t("m", "W deviation", 0, 64)
    t("m", "W deviation", 8, 64)                 # reported as batch 1 starts
    t("m", "W deviation", 16, 64)                # batch 2 starts: batch 1 compiled for 10 s
    assert notes == []
    t("m", "W deviation", 24, 64)                # 8 samples in 0.5 s: 2 passes each
    per_pass = 0.5 / 8 / 2
    assert len(notes) == 1 and "after compile" in notes[0] and "W deviation" in notes[0]
    assert t.eta_s == pytest.approx((64 - 24) * 2 * per_pass)
    t("m", "W deviation", 32, 64)
    assert len(notes) == 1                       # one ETA per checkpoint


def test_encode_progress_eta_after_compile():
    import io
    from e4e_jax.apps.encode import Progress
    now = [0.0]
    p = Progress(6, io.StringIO(), clock=lambda: now[0])
    now[0] = 1.0
    assert p.line(1, 0).endswith("ETA after compile")          # nothing written yet
    now[0] = 100.0
    assert p.line(2, 2).endswith("ETA after compile")          # the compiling batch
    now[0] = 101.0
    line = p.line(4, 4)                                         # 2 files in 1 s, 2 left
    assert line.endswith("ETA 1s") and "incl. compile" in line, line


def test_training_first_progress_line_waits_for_compile():
    from e4e_jax.train.loop import progress_line
    first = progress_line(1, 1000, 0.5, 15.3, compiling=True)
    assert first.endswith("steps/s, ETA after compile") and "4h" not in first, first
    assert progress_line(100, 1000, 0.5, 0.25).endswith("steps/s, ETA 3m45s")


def test_training_steps_per_second_leave_evaluations_out(monkeypatch):
    """Steps of 1 s with a 30 s evaluation after step 2: the line after it still says 1
    steps/s (the newcomer saw 2.94 steps/s and an ETA of 4 min right after an evaluation)."""
    import types

    from e4e_jax.train import loop
    clock = [0.0]
    monkeypatch.setattr(loop.time, "time", lambda: clock[0])
    dts = []

    def one_step(run, step):
        clock[0] += 1.0
    monkeypatch.setattr(loop, "train_one_step", one_step)
    monkeypatch.setattr(loop, "log_step", lambda run, step, m: dts.append(
        (clock[0] - run.last_log_time) / (step + 1 - run.last_log_step)) or setattr(
        run, "last_log_time", clock[0]) or setattr(run, "last_log_step", step + 1))
    monkeypatch.setattr(loop, "write_images", lambda run, done: None)

    def evaluate(run, done):
        if done == 2:
            clock[0] += 30.0
    monkeypatch.setattr(loop, "evaluate_at", evaluate)
    monkeypatch.setattr(loop, "save_at", lambda *a, **k: None)
    run = types.SimpleNamespace(start=0, max_steps=4, last_log_time=0.0, last_log_step=0)
    stop = types.SimpleNamespace(agreed=lambda: False)
    assert loop.run_steps(run, stop) is False
    assert dts == [1.0, 1.0, 1.0, 1.0], dts


def test_invert_ticker_eta_leaves_the_first_image_out():
    import io
    from e4e_jax.apps.invert import Ticker
    log = io.StringIO()
    t = Ticker(4, log)
    t.durations = [60.0]                         # the first image: compilation
    assert t.estimate() is None and t._eta(2, 0.0) == "ETA after compile"
    t.durations = [60.0, 2.0, 4.0]
    assert t.estimate() == pytest.approx(3.0)
    assert t._eta(1, 1.0) == "~2 s left for this image, overall ETA ~5 s"


def test_notebook_headless_recipe_is_documented_and_runnable():
    """docs/encoding.md gives `jupyter execute notebooks/NAME.ipynb`; the notebook exists and
    the `jupyter execute` subcommand is nbclient's (the `test` extra), installed here."""
    import re
    import shutil
    text = open(os.path.join(REPO, "docs", "encoding.md")).read()
    (path,) = set(re.findall(r"jupyter execute (notebooks/\S+\.ipynb)", text))
    assert os.path.isfile(os.path.join(REPO, path))
    pytest.importorskip("nbclient.cli", reason="the [test] extra installs nbclient")
    assert shutil.which("jupyter-execute") or shutil.which(
        "jupyter-execute", path=os.path.dirname(sys.executable))


# ------------------------------------------------------------- train's front door (issue 21)

def _train(*args, via="train.py", env_drop=(), timeout=240):
    """`python train.py ARGS` or `python -m e4e_jax.cli.main train ARGS` in a subprocess: the
    real sys.argv, as a user's shell gives it (absl / ml_collections read sys.argv)."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    head = ([sys.executable, "train.py"] if via == "train.py"
            else [sys.executable, "-m", "e4e_jax.cli.main", "train"])
    return subprocess.run(head + list(args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("via", ["train.py", "e4e-jax"])
def test_train_dashed_override_takes_effect(tmp_path, via):
    """`--config.batch-size=0` is `--config.batch_size=0` through the real command line: the
    start-up check then refuses that value (proof it arrived), before any model is built;
    ml_collections used to re-read the raw sys.argv and fail on `batch-size`."""
    p = _train("--config", "configs/demo.py", "--workdir", str(tmp_path / "w"),
               "--config.test-batch-size=0", via=via)
    assert p.returncode == 2, p.stderr           # a start-up ConfigError: bad input
    assert "malformed node" not in p.stderr and "invalid --config override" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: config.test_batch_size must be a whole number >= 1, got 0; set "
        "--config.test_batch_size=N."], p.stderr


def test_train_flag_errors_are_one_line(tmp_path):
    """A config field given as a plain flag points to its --config. spelling (not absl's
    "Unknown command line flag"); a missing --config / --workdir is one line, not absl's blank
    line + USAGE block."""
    w = str(tmp_path / "w")
    p = _train("--config", "configs/demo.py", "--workdir", w, "--batch-size=4")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: unknown flag --batch-size; training settings are config fields: "
        "--config.batch_size=4 (see python train.py --help)"], p.stderr
    p = _train("--config", "configs/demo.py", "--workdri", w, via="e4e-jax")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: unknown flag --workdri; did you mean --workdir? (see e4e-jax train --help)"]
    p = _train("--config", "configs/demo.py")
    assert p.returncode == 2 and "USAGE" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: --workdir is required, e.g. python train.py --config configs/demo.py "
        "--workdir runs/demo (see python train.py --help)"]
    assert not os.path.exists(w)


def test_train_console_has_no_library_banners(tmp_path):
    """Without --verbose, a run that imports TensorFlow / TFDS (a TFDS data set, refused as
    missing) shows only its error line: no TensorFlow C++ banner (oneDNN, absl::InitializeLog)
    and no absl INFO records of the libraries, even when the shell has no TF_CPP_MIN_LOG_LEVEL
    (tests/conftest.py sets one for the test process: dropped here)."""
    p = _train("--config", "tests/support/tiny_train_config.py", "--workdir",
               str(tmp_path / "w"), "--config.data.kind=images",
               "--config.data.train=tfds:e4e_no_such_set:train",
               "--config.data.test=tfds:e4e_no_such_set:test",
               env_drop=("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel"))
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot open TFDS dataset"), p.stderr
    for banner in ("oneDNN", "absl::InitializeLog", "port.cc", "load.py"):
        assert banner not in p.stderr + p.stdout


def test_train_mutes_only_tensorflows_import(tmp_path):
    """TensorFlow 2.20+ writes its oneDNN / absl::InitializeLog banner to file descriptor 2 at
    import whatever TF_CPP_MIN_LOG_LEVEL says; a stand-in `tensorflow` that does the same is
    imported without a byte reaching stderr, and stderr works again afterwards."""
    import subprocess
    import sys
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "tensorflow.py").write_text("import os\nos.write(2, b'oneDNN banner\\n')\n")
    code = ("import sys; from e4e_jax.cli.train import import_tensorflow_quietly; "
            "import_tensorflow_quietly(); import tensorflow; assert 'tensorflow' in sys.modules; "
            "print('after', file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), REPO]))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "oneDNN" not in p.stderr and p.stderr.strip() == "after", p.stderr


def test_train_quiet_native_logs_keeps_the_users_level():
    from e4e_jax.cli.train import quiet_native_logs
    env = {}
    quiet_native_logs(env)
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2"}
    env = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    quiet_native_logs(env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_invert_into_an_encode_folder_says_whose_summary_it_is(tmp_path):
    """`invert --output ENCODE_FOLDER`: the refusal names the summary.json it found as an
    encode run's (it used to say there was no summary.json)."""
    import json
    from types import SimpleNamespace

    from e4e_jax.apps.invert import InvertError, previous_run
    np.save(tmp_path / "latents.npy", np.zeros((1, 4, 8), np.float32))
    (tmp_path / "summary.json").write_text(json.dumps(
        {"files": 1, "latents": 1, "images_per_s": 2.0, "latents_shape": [1, 4, 8]}))
    req = SimpleNamespace(output_dir=str(tmp_path), overwrite=False)
    with pytest.raises(InvertError) as e:
        previous_run(req, ["a.png"])
    assert "summary.json there is an encode run's" in str(e.value), e.value
    assert "pass --overwrite" in str(e.value)
    (tmp_path / "summary.json").unlink()
    with pytest.raises(InvertError, match="no summary.json of an invert run"):
        previous_run(req, ["a.png"])


def test_train_interrupt_line_before_any_checkpoint(tmp_path):
    """Stopped before step 1 with nothing saved: the line says so and that a rerun starts
    again (it used to say "rerun ... to resume (it starts over)"); with a checkpoint it names
    the step a rerun resumes from."""
    from types import SimpleNamespace

    from e4e_jax.train.loop import stop_message
    run = SimpleNamespace(workdir=str(tmp_path), max_steps=8, start=0)
    assert stop_message(run) == ("stopped before step 1 of 8 ran; nothing was saved; rerun the "
                                 "same command to start again.")
    os.makedirs(tmp_path / "checkpoints" / "3")
    line = stop_message(run)
    assert line.startswith("stopped after step 3 of 8; checkpoint ")
    assert line.endswith("; rerun the same command to resume from step 3.") and "resume" in line


def test_encode_finished_progress_line_has_no_eta():
    """The last line (all files done) gives the elapsed time, not "ETA after compile"."""
    import io
    from e4e_jax.apps.encode import Progress
    now = [0.0]
    p = Progress(4, io.StringIO(), clock=lambda: now[0])
    now[0] = 3.0
    line = p.line(4, 4)                       # one batch: no measurement after compile
    assert "ETA" not in line and line.endswith("done in 3.0 s"), line


def test_invert_console_rounds_its_figures():
    """`final_dist 0.04188542068004608` -> 5 significant digits on the console."""
    import io
    from e4e_jax.apps.invert import Ticker
    log = io.StringIO()
    t = Ticker(2, log=log)
    t.done(0, "a.png", {"final_dist": 0.04188542068004608, "steps": 100})
    assert "final_dist 0.041885, steps 100" in log.getvalue(), log.getvalue()


def test_gitignore_holds_the_readme_weights_folder():
    text = open(os.path.join(REPO, ".gitignore")).read().split()
    assert "/weights/" in text or "weights/" in text


def test_train_sets_the_native_log_level_before_tensorflow_loads():
    """The mechanism behind the quiet console, in the order where this TensorFlow build does
    print its C++ banners (TensorFlow loaded before jax: oneDNN, cpu_feature_guard): the train
    command sets the level before its first import of TensorFlow; --verbose leaves it alone."""
    code = ("import sys\n"
            "from e4e_jax.cli import train\n"
            "train._main = lambda argv, prog: __import__('tensorflow')\n"
            "train.run(['train.py', '--config', 'configs/demo.py', '--workdir', 'w'] "
            "+ sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel")}
    quiet = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    assert quiet.returncode == 0, quiet.stderr
    assert "oneDNN" not in quiet.stderr and "tensorflow/" not in quiet.stderr, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code, "--verbose"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert "oneDNN" in loud.stderr, loud.stderr        # the banner this test looks for
