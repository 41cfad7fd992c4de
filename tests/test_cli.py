"""The command-line conventions shared by every command (e4e_jax/cli.py, docs/pending/cli.md):
dash flags with underscore aliases, --help exit 0 with the real invocation, exit codes,
--dtype / --precision reaching the loaders, --class on sample, unique output names, model
directory modes and hints, eval's cost estimate."""
import os
import subprocess
import sys

import numpy as np
import pytest

from e4e_jax import cli
from e4e_jax.output_names import OutputNames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

# module, the invocation its --help must show
COMMANDS = [
    ("e4e_jax.encode", "python -m e4e_jax.encode"),
    ("e4e_jax.align", "python -m e4e_jax.align"),
    ("e4e_jax.edit", "python -m e4e_jax.edit"),
    ("e4e_jax.sample", "python -m e4e_jax.sample"),
    ("e4e_jax.evaluation.cli", "python eval.py"),
    ("convert_weights.stylegan2", "python -m convert_weights.stylegan2"),
    ("convert_weights.stylegan2_ada", "python -m convert_weights.stylegan2_ada"),
    ("convert_weights.e4e", "python -m convert_weights.e4e"),
    ("convert_weights.lpips", "python -m convert_weights.lpips"),
    ("convert_weights.arcface", "python -m convert_weights.arcface"),
    ("convert_weights.moco", "python -m convert_weights.moco"),
    ("convert_weights.fid_inception", "python -m convert_weights.fid_inception"),
]


@pytest.mark.parametrize("module,invocation", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_exits_0_with_real_invocation_and_example(module, invocation, capsys):
    import importlib
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: " + invocation), out[:200]
    assert "examples:\n  " + invocation in out               # an example to copy
    assert "underscore spelling" in out


@pytest.mark.slow
def test_help_of_the_real_entry_points_in_subprocesses():
    """The very commands a user types (python -m ..., python eval.py) exit 0 on --help."""
    for module, invocation in COMMANDS:
        if module == "e4e_jax.evaluation.cli":
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
                 ["--batch_size=3", "--num-images=5"],
                 ["--batch", "3", "--num", "5"]):             # abbreviations stay unambiguous
        a = p.parse_args(argv)
        assert (a.batch_size, a.num_images) == (3, 5), argv
    assert p.parse_args(["--check", "x"]).checkpoint == "x"
    assert "--batch_size" not in p.format_help()              # listed once, dashed


@pytest.mark.parametrize("module,old,new,dest", [
    ("e4e_jax.edit", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.edit", "--num_images", "--num-images", "num_images"),
    ("e4e_jax.edit", "--min_cell", "--min-cell", "min_cell"),
    ("e4e_jax.encode", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.align", "--max_faces", "--max-faces", "max_faces"),
    ("e4e_jax.evaluation.cli", "--num_images", "--num-images", "num_images"),
    ("e4e_jax.evaluation.cli", "--batch_size", "--batch-size", "batch_size"),
    ("e4e_jax.evaluation.cli", "--deviation_samples", "--deviation-samples",
     "deviation_samples"),
    ("e4e_jax.evaluation.cli", "--num_grid", "--num-grid", "num_grid"),
])
def test_command_aliases(module, old, new, dest):
    import importlib
    mod = importlib.import_module(module)
    parser = mod.build_parser()
    required = {"e4e_jax.edit": ["--checkpoint", "c", "--synthetic", "1", "--edit", "sefa:0",
                                 "--out", "o"],
                "e4e_jax.encode": ["--checkpoint", "c", "--input", "i", "--output", "o"],
                "e4e_jax.align": ["--input", "i", "--output", "o"],
                "e4e_jax.evaluation.cli": ["--checkpoint", "c", "--data", "d", "--out", "o"]}
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
    from e4e_jax.checkpoints import save_model_dir
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
    from e4e_jax import checkpoints
    from e4e_jax.encoder_dirs import check_checkpoint
    workdir = tmp_path / "run"
    checkpoints.save_model_dir(str(workdir / "export"), "test", {})
    (workdir / "checkpoints").mkdir()
    export = repr(str(workdir / "export"))
    for fn in (check_checkpoint, checkpoints.read_meta,
               lambda p: checkpoints.load_model_dir(p, "generator")):
        with pytest.raises(checkpoints.ModelDirError) as e:
            fn(str(workdir))
        assert f"pass {export}" in str(e.value) and "WORKDIR/export" in str(e.value)
