"""Training: loss decreases, progressive stages, resume, multi-device and multi-process agreement,
data robustness, and adding a regularizer from outside the package."""
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.paths import REPO
from PIL import Image

import tests.support.train_utils as train_utils
from tests.support.train_utils import tiny_config

from e4e_jax import losses as L
from e4e_jax import train as trainer
from e4e_jax.train import step as ts
from e4e_jax.nets.model_dir import flatten_tree, load_model_dir

WORKER = os.path.join(REPO, "tests", "support", "train_worker.py")


def exported_params(workdir):
    md = load_model_dir(os.path.join(workdir, "export"), "e4e_inverter")
    return flatten_tree(md.variables)


# ------------------------------------------------------------------ the W pool and the schedule

def test_pool_fills_then_swaps_half_the_time():
    query = jax.jit(ts.pool_query)
    pool = ts.pool_init(4, 2)
    ws = jnp.arange(8, dtype=jnp.float32).reshape(4, 2)
    pool, out = query(pool, ws, jax.random.key(0))
    np.testing.assert_array_equal(out, ws)                # filling: returns its inputs
    np.testing.assert_array_equal(pool.ws, ws)
    assert int(pool.num) == 4
    returned_old = 0
    for i in range(50):
        new = jnp.full((4, 2), 100.0 + i)
        pool, out = query(pool, new, jax.random.key(i + 1))
        returned_old += int(jnp.sum(out[:, 0] != 100.0 + i))
    assert 60 < returned_old < 140                        # ~ half of 200 queries


def test_progressive_schedule_matches_official_setup():
    steps = ts.progressive_steps(18, 20000, 2000)
    assert steps[:3] == (0, 20000, 22000) and len(steps) == 18 and steps[-1] == 20000 + 16 * 2000
    stages = [int(ts.stage_at(s, steps)) for s in (0, 19999, 20000, 21999, 22000, 10 ** 6)]
    assert stages == [0, 0, 1, 1, 2, 17]
    assert int(ts.stage_at(5, None)) == 18


# ------------------------------------------------------------------ end to end on the demo domain

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("demo"))
    config = tiny_config(max_steps=60)
    summary = trainer.train_and_evaluate(config, workdir)
    return workdir, summary


def test_training_lowers_the_reconstruction_error(demo_run):
    workdir, summary = demo_run
    assert summary["steps"] == 60
    assert summary["mse_after"] < 0.85 * summary["mse_before"], summary
    assert summary["holdout_mse_raw_after"] < 0.85 * summary["holdout_mse_raw_before"], summary
    # clamping both sides never increases an error (clip is 1-Lipschitz)
    assert summary["mse_after"] <= summary["holdout_mse_raw_after"]
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    for key in ("mse_before", "mse_after", "holdout_mse_raw_before", "holdout_mse_raw_after",
                "holdout", "steps", "seconds"):
        assert key in on_disk


def tensorboard_scalars(workdir, tag):
    """{step: value} of one scalar in WORKDIR/tensorboard (clu writes tensor summaries)."""
    import glob

    import tensorflow as tf
    out = {}
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                if v.tag == tag:
                    out[event.step] = float(tf.make_ndarray(v.tensor))
    return out


def test_one_mse_in_tensorboard_summary_and_eval(demo_run):
    """The held-out MSE of TensorBoard (holdout/mse), of summary.json (mse_before / mse_after)
    and of eval.py's report on the export (--data synthetic --seed SEED+2000 --num-images
    HOLDOUT: the same images) is one figure."""
    from e4e_jax import evaluation as ev
    from e4e_jax.apps import evaluate as ev_app
    from e4e_jax.nets.encoder import load_encoder
    workdir, summary = demo_run
    config = tiny_config(max_steps=60)
    board = tensorboard_scalars(workdir, "holdout/mse")
    assert sorted(board) == list(range(0, 61, config.val_every))
    np.testing.assert_allclose(board[0], summary["mse_before"], rtol=1e-6)
    np.testing.assert_allclose(board[60], summary["mse_after"], rtol=1e-6)
    assert summary["holdout"]["mse"] == summary["mse_after"]
    entry = ev_app.evaluate_checkpoint(
        load_encoder(os.path.join(workdir, "export")),
        ev_app.open_data("synthetic", num_images=config.holdout, seed=config.seed + 2000),
        ev.Networks(), ev.EvalOptions(batch_size=config.test_batch_size, edits=[],
                                      lec_edit=None, deviation_samples=0))
    assert entry["num_images"] == summary["holdout"]["num_images"] == config.holdout
    # the same images and model; eval generates and inverts in its own programs (float32
    # rounding apart)
    np.testing.assert_allclose(entry["mse"], summary["mse_after"], rtol=1e-4)


def test_outputs_of_a_run(demo_run):
    workdir, _ = demo_run
    grids = sorted(os.listdir(os.path.join(workdir, "images")))               # image grids
    assert grids
    # captioned input | reconstruction columns, the 16 px images magnified for display
    from e4e_jax.outputs.grids import grid_layout
    grid = np.asarray(Image.open(os.path.join(workdir, "images", grids[-1])))
    layout = grid_layout(2, 2, 16, 16)
    assert layout.scale == 8 and grid.shape[:2] == layout.shape
    assert any(f.startswith("events.") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))          # periodic saves
    assert os.listdir(os.path.join(workdir, "best"))                        # best by validation
    import e4e_jax
    inv = e4e_jax.load_encoder(os.path.join(workdir, "export"))
    x = np.zeros((2, 16, 16, 3), np.float32)
    w_plus, rec = inv.invert(x)
    assert w_plus.shape == (2, inv.n_latent, 512) and rec.shape == (2, 16, 16, 3)


def test_progressive_stages_switch_at_scheduled_steps():
    config = tiny_config()
    setup = trainer.build(config)
    state = trainer.create_train_state(setup)
    x = trainer.TrainData(setup).holdout_images()
    seen = []
    n_traces = []
    for step in range(7):
        state, metrics = setup.train_step(state, setup.frozen, {})
        seen.append(int(metrics["progressive_stage"]))
        n_traces.append(setup.train_step._cache_size())
        w_plus, _ = setup.reconstruct(state, setup.frozen, x)
        codes = np.asarray(w_plus) - np.asarray(setup.frozen["latent_avg"])
        stage = int(ts.stage_at(step + 1, setup.spec.progressive_steps))
        deltas = np.abs(codes[:, 1:] - codes[:, :1]).max(axis=(0, 2))
        # deltas 1..stage are active (non-zero), the later ones exactly zero
        assert (deltas[:stage] > 0).all() and (deltas[stage:] == 0).all(), (step, deltas)
    assert seen == [0, 0, 1, 1, 2, 2, 3]
    assert n_traces[-1] == n_traces[0]                                        # no recompiles


@pytest.mark.slow
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    full = str(tmp_path / "full")
    trainer.train_and_evaluate(tiny_config(max_steps=8), full)
    part = str(tmp_path / "part")
    trainer.train_and_evaluate(tiny_config(max_steps=4), part)       # "killed" after step 4
    trainer.train_and_evaluate(tiny_config(max_steps=8), part)       # restarted: resumes at 4
    a, b = exported_params(full), exported_params(part)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_resume_refuses_another_architecture_and_skips_a_damaged_checkpoint(tmp_path, capsys):
    w = str(tmp_path / "w")
    trainer.train_and_evaluate(tiny_config(max_steps=8), w)          # checkpoints 4 and 8
    # another architecture in the same workdir: one line naming the field, before restoring
    with pytest.raises(trainer.TrainingError,
                       match=r"--workdir .* was made with another configuration \(encoder."
                             r"widths=\[4, 8, 8, 16\] there, \[4, 8, 8, 8\] now\); use another "
                             r"--workdir, or rerun with the original settings"):
        trainer.train_and_evaluate(tiny_config(max_steps=12, **{"encoder.widths": (4, 8, 8, 8)}),
                                   w)
    # the newest checkpoint damaged (a data file truncated): moved aside, step 4 restored
    data = os.path.join(w, "checkpoints", "8", "state", "d")
    for name in os.listdir(data):
        with open(os.path.join(data, name), "r+b") as f:
            f.truncate(os.path.getsize(os.path.join(data, name)) // 2)
    capsys.readouterr()
    summary = trainer.train_and_evaluate(tiny_config(max_steps=12), w)
    out = capsys.readouterr().out
    ckpt = os.path.join(w, "checkpoints")
    assert (f"checkpoint {os.path.join(os.path.abspath(ckpt), '8')} is damaged (" in out
            and f"moved it to {os.path.join(os.path.abspath(ckpt), '8.damaged')} and resumed "
                f"from step 4, the newest intact checkpoint" in out), out
    assert "resumed from" in out and summary["steps"] == 12
    assert summary["trained_steps_this_run"] == 8
    assert os.path.isdir(os.path.join(ckpt, "8.damaged"))
    assert os.path.isdir(os.path.join(ckpt, "12"))


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_term(tmp_path):
    @L.register_loss("explodes")
    def explodes(inputs):
        return jnp.where(jnp.mean(inputs.y_hat) > -1e9, jnp.inf, 0.0)
    try:
        config = tiny_config(max_steps=8)
        config.losses.explodes = 1.0
        with pytest.raises(trainer.TrainingError, match=r"non-finite loss at step 0: .*explodes"):
            trainer.train_and_evaluate(config, str(tmp_path / "nan"))
        assert not os.path.exists(tmp_path / "nan" / "export")
        ckpts = tmp_path / "nan" / "checkpoints"
        assert not ckpts.exists() or not [p for p in ckpts.iterdir() if p.name.isdigit()]
    finally:
        L.unregister_loss("explodes")


@pytest.mark.slow
def test_new_regularizer_from_a_test_file():
    """A latent-space regularizer written here, named in the config: no edit to the step."""
    @L.register_loss("pull_to_avg")
    def pull_to_avg(inputs):
        return jnp.mean(jnp.sum((inputs.w_plus - inputs.latent_avg) ** 2, axis=-1))

    def run(config, steps=6):
        setup = trainer.build(config)
        state = trainer.create_train_state(setup)
        history = []
        for _ in range(steps):
            state, metrics = setup.train_step(state, setup.frozen, {})
            history.append({k: float(v) for k, v in metrics.items()})
        return trainer.to_host(state.params), history

    try:
        with_reg = tiny_config()
        with_reg.losses.pull_to_avg = 10.0
        params_reg, history = run(with_reg)
        values = [m["loss_pull_to_avg"] for m in history]
        assert values[-1] < values[0]                     # the new term is optimised
        params_base, base_history = run(tiny_config())
        assert "loss_pull_to_avg" not in base_history[0]
        a, b = flatten_tree(params_base), flatten_tree(params_reg)
        assert any(not np.array_equal(a[k], b[k]) for k in a)
    finally:
        L.unregister_loss("pull_to_avg")


def test_unknown_loss_name_is_a_clear_error():
    config = tiny_config()
    config.losses.no_such_term = 1.0
    with pytest.raises(trainer.TrainingError, match="unknown loss term.*no_such_term"):
        trainer.build(config)


# ------------------------------------------------------------------ image folders

def write_images(folder, n, size=20, corrupt=()):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        path = os.path.join(folder, f"img_{i:03d}.png")
        if i in corrupt:
            with open(path, "wb") as f:
                f.write(b"\x89PNG but not really")
        else:
            Image.fromarray(rng.randint(0, 255, (size, size + 4, 3), np.uint8)).save(path)


@pytest.mark.slow
def test_corrupt_image_is_skipped_and_counted(tmp_path, capsys):
    folder = str(tmp_path / "imgs")
    write_images(folder, 12, corrupt=(3,))
    config = tiny_config(max_steps=4)
    config.data.kind = "images"
    config.data.train = folder
    config.data.test = folder
    summary = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["unreadable_images"] == ["img_003.png"]
    assert "skipping unreadable image" in capsys.readouterr().out


@pytest.mark.slow
def test_tfds_dataset_by_name(tmp_path):
    """A TFDS dataset prepared under a local data_dir (ArrayRecord), read by name."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from e4e_jax.data import DataError, TFDSSource

    images = np.random.RandomState(0).randint(0, 255, (12, 20, 24, 3), np.uint8)
    builder = tfds.dataset_builders.TfDataBuilder(
        name="tiny_faces", version="1.0.0", data_dir=str(tmp_path / "tfds"),
        split_datasets={"train": tf.data.Dataset.from_tensor_slices({"image": images})},
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3))}),
        file_format="array_record")
    builder.download_and_prepare()
    source = TFDSSource("tiny_faces", "train", str(tmp_path / "tfds"))
    assert len(source) == 12
    first = source.load(0, (20, 24))
    assert any(np.array_equal(first, im) for im in images)          # decoded exactly
    config = tiny_config(max_steps=4)
    config.data.kind = "images"
    config.data.train = "tfds:tiny_faces:train"
    config.data.test = "tfds:tiny_faces:train"
    config.data.data_dir = str(tmp_path / "tfds")
    summary = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["steps"] == 4 and np.isfinite(summary["mse_after"])
    with pytest.raises(DataError, match="cannot open TFDS dataset 'no_such_set'"):
        TFDSSource("no_such_set", "train", str(tmp_path / "tfds"))


# ------------------------------------------------------------------ parallelism

def run_worker(args, device_count: int, timeout=900):
    env = train_utils.subprocess_env(f"--xla_force_host_platform_device_count={device_count}")
    return subprocess.Popen([sys.executable, WORKER] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=900):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def one_device_result(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    folder = str(d / "imgs")
    write_images(folder, 16)
    out = str(d / "result.npz")
    finish(run_worker(["--workdir", str(d / "run"), "--images", folder, "--out", out], 1))
    return folder, dict(np.load(out))


def compare(a, b, rtol=2e-4, atol=2e-5):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.slow
def test_eight_devices_match_one(one_device_result, tmp_path):
    folder, one = one_device_result
    out = str(tmp_path / "result.npz")
    log = finish(run_worker(["--workdir", str(tmp_path / "run"), "--images", folder, "--out", out],
                            8))
    assert "on 8 device(s)" in log
    compare(one, dict(np.load(out)))


@pytest.mark.slow
def test_two_processes_match_one(one_device_result, tmp_path):
    folder, one = one_device_result
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [str(tmp_path / f"result{i}.npz") for i in range(2)]
    procs = [run_worker(["--workdir", str(tmp_path / "run"), "--images", folder, "--out", outs[i],
                         "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2",
                         "--process_id", str(i)], 1)
             for i in range(2)]
    logs = [finish(p) for p in procs]
    assert "(2 process(es))" in logs[0]
    compare(one, dict(np.load(outs[0])))
