"""Start-up checks of train.py (issue 13): conditional and grayscale generators, the fine-tuned
encoder's input size, LPIPS's smallest input, and train.py's help / exit codes."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.ada_pickle_writer as writer
import tests.support.train_utils as train_utils
from tests.support.train_utils import tiny_config

from e4e_jax import train as trainer
from e4e_jax.losses.checks import check_lpips_size, lpips_min_size
from e4e_jax.train.checks import FixedClassGenerator, condition_generator, preflight

TRAIN = os.path.join(train_utils.ROOT, "train.py")
CONFIG = os.path.join(train_utils.HERE, "tiny_train_config.py")


def converted_ada(tmp_path, name, **kwargs):
    from e4e_jax.convert import stylegan2_ada as conv
    kw = writer.tiny_init_kwargs(resolution=16, w_dim=32, num_layers=2, channel_base=128,
                                 channel_max=16, **kwargs)
    state = writer.synthetic_generator_state(kw, seed=5)
    pkl = writer.write_snapshot(str(tmp_path / f"{name}.pkl"), state, kw)
    out = str(tmp_path / name)
    assert conv.main([pkl, out]) == 0
    return out


def over(path, **overrides):
    config = tiny_config(**overrides)
    config.generator.init.resolution = 0
    config.generator.path = path
    return config


# ------------------------------------------------------------------ LPIPS's smallest input

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_minimum_is_where_the_distance_stops_being_nan(net):
    from e4e_jax.models.lpips import LPIPS
    n = lpips_min_size(net)
    assert n == {"alex": 31, "vgg": 16}[net]
    module = LPIPS(net)
    v = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)))
    for side, finite in ((n - 1, False), (n, True)):
        a = jax.random.uniform(jax.random.key(1), (1, side, side, 3)) * 2 - 1
        d = np.asarray(module.apply(v, a, a * 0.5))
        assert bool(np.isfinite(d).all()) == finite, (side, d)


def test_lpips_loss_network_refuses_small_images():
    from e4e_jax.nets.loss_nets import LoadedLPIPS
    from e4e_jax.models.lpips import LPIPS
    module = LPIPS("alex")
    v = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))
    lp = LoadedLPIPS(module, v)
    with pytest.raises(ValueError, match=r"at least 31x31 pixels; the images gives 24x24"):
        lp(np.zeros((1, 24, 24, 3)), np.zeros((1, 24, 24, 3)))
    with pytest.raises(ValueError, match="at least 31x31"):
        lp.features(np.zeros((1, 30, 40, 3)))
    assert np.isfinite(np.asarray(lp(np.zeros((1, 31, 31, 3)), np.ones((1, 31, 31, 3))))).all()
    check_lpips_size("vgg", (16, 16))


def test_training_refuses_lpips_on_small_images_at_start_up():
    config = tiny_config()
    config.losses.lpips = 0.8
    with pytest.raises(trainer.TrainingError,
                       match=r"LPIPS \(alex\) needs images of at least 31x31 pixels; "
                             r"config.data.input_size gives 16x16"):
        trainer.build(config)


# ------------------------------------------------------------------ generator kinds

def test_grayscale_generator_is_refused_naming_both_channel_counts(tmp_path):
    path = converted_ada(tmp_path, "gray", img_channels=1, use_noise=False, w_avg_beta=None)
    with pytest.raises(trainer.TrainingError,
                       match=r"config.generator.path makes 1-channel images \(img_channels=1\)"
                             r".*take 3.*grayscale"):
        trainer.build(over(path))


def test_conditional_generator_needs_a_valid_class(tmp_path):
    path = converted_ada(tmp_path, "cond", c_dim=4)
    with pytest.raises(trainer.TrainingError,
                       match=r"class-conditional \(c_dim=4\).*--config.generator_class=K with K "
                             r"in 0..3"):
        preflight(over(path))
    with pytest.raises(trainer.TrainingError, match=r"generator_class=4 is out of range.*0..3"):
        preflight(over(path, generator_class=4))
    preflight(over(path, generator_class=3))
    with pytest.raises(trainer.TrainingError, match="unconditional.*generator_class=None"):
        preflight(tiny_config(generator_class=1))


def test_fixed_class_reaches_every_mapping_call(tmp_path):
    import e4e_jax
    gen = e4e_jax.load_generator(converted_ada(tmp_path, "cond", c_dim=4))
    fixed = condition_generator(over("x", generator_class=2), gen)
    assert isinstance(fixed, FixedClassGenerator)
    z = np.random.RandomState(0).randn(3, gen.z_dim).astype(np.float32)
    c = np.eye(4, dtype=np.float32)[[2, 2, 2]]
    want = np.asarray(gen.mapping(z, c))
    np.testing.assert_array_equal(np.asarray(fixed.mapping(z)), want)            # eager
    # in the step (un-jitted here: XLA may fuse differently, hence the tolerance)
    np.testing.assert_allclose(np.asarray(fixed.map(gen.variables, z)), want, atol=1e-5)
    other = np.asarray(gen.mapping(z, np.eye(4, dtype=np.float32)[[0, 0, 0]]))
    assert np.abs(other - want).max() > 1e-4                     # the label matters
    assert fixed.mean_latent(64, jax.random.key(0)).shape == (1, gen.style_dim)


@pytest.mark.slow
def test_training_over_a_conditional_generator(tmp_path):
    path = converted_ada(tmp_path, "cond", c_dim=4)
    summary = trainer.train_and_evaluate(over(path, generator_class=1, max_steps=2),
                                         str(tmp_path / "run"))
    assert summary["steps"] == 2 and np.isfinite(summary["mse_after"])


# ------------------------------------------------------------------ fine-tuning an encoder

def fake_encoder_dir(root, input_size):
    os.makedirs(os.path.join(root, "generator"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump({"kind": "e4e_inverter", "format_version": 1,
                   "config": {"encoder": {"input_size": list(input_size)}}}, f)
    with open(os.path.join(root, "generator", "config.json"), "w") as f:
        json.dump({"kind": "stylegan2_generator", "format_version": 1,
                   "config": {"img_channels": 3, "c_dim": 0}}, f)
    return root


def test_fine_tuning_names_both_input_sizes(tmp_path):
    config = tiny_config()
    config.encoder.init = "checkpoint"
    config.encoder.checkpoint = fake_encoder_dir(str(tmp_path / "enc"), (32, 32))
    with pytest.raises(trainer.TrainingError,
                       match=r"config.data.input_size=\(16, 16\) differs from the input size "
                             r"\(32, 32\) of the encoder in config.encoder.checkpoint"):
        preflight(config)
    config.data.input_size = (32, 32)
    with pytest.raises(trainer.TrainingError,
                       match=r"the reconstructions are 16x16 \(config.output.face_pool=16\) but "
                             r"config.data.input_size is 32x32; the losses compare them pixel "
                             r"by pixel: set --config.output.face_pool=32"):
        preflight(config)
    config.output.face_pool = 32
    preflight(config)
    config.encoder.checkpoint = str(tmp_path / "missing")
    with pytest.raises(trainer.TrainingError, match="config.encoder.checkpoint: .*not a directory"):
        preflight(config)


# ------------------------------------------------------------------ train.py's command line

def train_py(*args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([train_utils.ROOT, train_utils.HERE,
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, TRAIN, *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def test_help_exits_0_with_usage_example_and_overrides():
    p = train_py("--help")
    assert p.returncode == 0, p.stderr
    assert "usage: python train.py --config" in p.stdout                # the command typed
    assert "python train.py --config configs/demo.py --workdir runs/demo" in p.stdout
    assert "  --config.max_steps=1000" in p.stdout                  # the demo's value
    assert "  --config.generator_class=None" in p.stdout
    p = train_py("--config", CONFIG, "--help")
    assert p.returncode == 0 and "  --config.max_steps=24" in p.stdout


def test_bad_arguments_exit_2_without_traceback(tmp_path):
    cases = [(), ("--config", "configs/no_such.py", "--workdir", str(tmp_path)),
             ("--config", CONFIG, "--workdir", str(tmp_path), "--config.no_such_field=1"),
             ("--config", CONFIG, "--workdir", str(tmp_path), "--config.max_steps=many")]
    for args in cases:
        p = train_py(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, args


def test_start_up_error_exits_2_with_one_line(tmp_path):
    """A setting found wrong before training starts is bad input: exit 2, as every command."""
    p = train_py("--config", CONFIG, "--workdir", str(tmp_path / "w"), "--config.losses.lpips=0.8")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "error: LPIPS (alex) needs images of at least 31x31 pixels" in p.stderr
    # checked before anything is written (train_config.json used to record the bad value)
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ training image grids

def test_training_grid_captions_and_magnifies():
    from e4e_jax.outputs.grids import grid_layout, labelled_reconstruction_grid
    from e4e_jax.data.image_io import to_uint8
    x = np.random.RandomState(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    y = -x
    grid = labelled_reconstruction_grid(x, y, 2, title="step 4")
    layout = grid_layout(2, 2, 16, 16)
    assert grid.shape[:2] == layout.shape and layout.scale == 8
    for r in range(2):
        for c, im in enumerate((x[r], y[r])):
            top, left, h, w = layout.box(r, c)
            want = np.repeat(np.repeat(to_uint8(im), 8, 0), 8, 1)
            np.testing.assert_array_equal(grid[top:top + h, left:left + w], want)
        caption_top = layout.caption_xy(r, 0)[1]
        assert (grid[caption_top:caption_top + layout.text_h] < 128).any()   # text drawn


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("max_steps", -5),
                                         ("save_every", 0), ("test_batch_size", -1)])
def test_counts_must_be_at_least_one(field, value):
    """batch_size=0 used to fail inside BatchNorm with a traceback; max_steps=-5 exported an
    untrained model and reported success."""
    with pytest.raises(trainer.TrainingError, match=rf"config\.{field} must be .*>= 1"):
        preflight(tiny_config(**{field: value}))


def test_a_model_directory_is_refused_as_workdir(tmp_path):
    """An export (config.json, no checkpoints/) passed as --workdir is not trained into."""
    from e4e_jax.train.checks import check_workdir
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text("{}")
    with pytest.raises(trainer.TrainingError, match="model directory"):
        check_workdir(str(export))
    check_workdir(str(tmp_path / "new_run"))        # a new folder is fine
    (export / "checkpoints").mkdir()
    check_workdir(str(export))                      # a real workdir that happens to hold one
    (tmp_path / "notes.txt").write_text("x")        # a file: one line, not a makedirs traceback
    with pytest.raises(trainer.TrainingError, match="is a file, not a folder"):
        check_workdir(str(tmp_path / "notes.txt"))


def test_overrides_take_dashes_and_a_wrong_field_names_the_closest(tmp_path):
    """--config.batch-size=4 is --config.batch_size=4 (every other flag is dashed); a field the
    config lacks is one line naming the closest field, exit 2 (it used to print an escaped,
    quoted KeyError with a newline inside)."""
    from e4e_jax.cli.train import check_overrides, normalize_overrides
    assert normalize_overrides(["--config.batch-size=4", "--config.losses.id-lambda", "0.1",
                                "--workdir-x"]) == \
        ["--config.batch_size=4", "--config.losses.id_lambda", "0.1", "--workdir-x"]
    argv = ["--config", "configs/demo.py", "--config.max_step=10"]
    message = check_overrides(argv, "e4e-jax train")
    assert "has no field 'max_step'; did you mean --config.max_steps?" in message
    assert check_overrides(["--config", "configs/demo.py", "--config.max_steps=3",
                            "--config.generator.path=x"], "p") is None
    p = train_py("--config", CONFIG, "--workdir", str(tmp_path), "--config.max-step=10")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean --config.max_steps?" in lines[0], p.stderr


# ------------------------------------------------------------------ no silent wrong results

def test_summary_says_higher_when_the_error_rose():
    from e4e_jax.train.loop import change_note
    assert change_note(0.5, 0.4) == " (20.0% lower)"
    assert change_note(0.5, 0.5085) == " (1.7% higher)"
    assert change_note(0.5, 0.5) == " (unchanged)"
    assert change_note(None, 0.5) == "" and change_note(0.5, None) == ""


def test_a_generator_path_with_a_random_generator_is_refused():
    config = tiny_config()                               # generator.init.resolution = 16
    config.generator.path = "converted/gen"
    with pytest.raises(trainer.TrainingError,
                       match=r"config.generator.path=converted/gen and config.generator.init."
                             r"resolution=16 both name the generator.*"
                             r"--config.generator.init.resolution=0"):
        preflight(config)
    config = tiny_config(**{"encoder.checkpoint": "converted/e4e"})
    with pytest.raises(trainer.TrainingError,
                       match=r"config.encoder.checkpoint=converted/e4e is not read with "
                             r"config.encoder.init='random'.*--config.encoder.init=checkpoint"):
        preflight(config)


def test_an_explicit_generator_path_replaces_the_demos_random_generator(capsys):
    from e4e_jax.cli.train import explicit_generator
    config = tiny_config()
    config.generator.path = "converted/gen"
    explicit_generator(config, ["train.py", "--config.generator.path=converted/gen"])
    assert config.generator.init.resolution == 0
    assert "instead of the config's seeded random generator" in capsys.readouterr().out
    # both given explicitly: left as they are, and the start-up check refuses the pair
    config = tiny_config()
    config.generator.path = "converted/gen"
    explicit_generator(config, ["train.py", "--config.generator.path=converted/gen",
                                "--config.generator.init.resolution=16"])
    assert config.generator.init.resolution == 16
    with pytest.raises(trainer.TrainingError, match="both name the generator"):
        preflight(config)


@pytest.mark.slow
def test_training_console_is_one_line_per_interval(tmp_path):
    w = tmp_path / "w"
    p = train_py("--config", CONFIG, "--workdir", str(w), "--config.max_steps=8",
                 "--config.log_every=2", timeout=600)
    assert p.returncode == 0, p.stderr
    out, err = p.stdout.splitlines(), p.stderr.splitlines()
    assert len(out) + len(err) <= 20, p.stdout + p.stderr
    for line in out + err:                     # no metric dump (clu's logging writer), no banner
        assert "train/" not in line and "logging_writer" not in line, line
        assert "oneDNN" not in line and "work unit notes" not in line, line
    steps = [line for line in out if line.startswith("step ") and "steps/s, ETA" in line]
    assert [s.split(":")[0] for s in steps] == ["step 1/8", "step 2/8", "step 4/8", "step 6/8",
                                                "step 8/8"], p.stdout
    records = [json.loads(line) for line in open(w / "metrics.jsonl")]
    assert {r["step"] for r in records if "train/loss" in r} == {1, 2, 4, 6, 8}
