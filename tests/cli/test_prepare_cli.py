"""`e4e-jax prepare` / `python -m e4e_jax.prepare`: --help, a small run, the refusals and exit
codes, and the prepared folder taken where an image folder is (eval's open_data)."""
import json
import os
import pathlib

import pytest

from e4e_jax import prepare as entry
from e4e_jax.cli import main as dispatcher
from tests.unit.test_prepare import make_folder


def run(argv, capsys):
    try:
        code = dispatcher.main(["prepare"] + argv)
    except SystemExit as e:         # argparse's own exit
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code in (0, None)
    assert out.startswith("usage: e4e-jax prepare")
    assert "examples:\n  e4e-jax prepare --input" in out and "Exit codes" in out
    with pytest.raises(SystemExit) as e:
        entry.main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m e4e_jax.prepare")


def test_a_small_run_then_the_refusals(tmp_path, capsys):
    images = make_folder(str(tmp_path / "in"), n=6)
    out = str(tmp_path / "ds")
    argv = ["--input", images, "--output", out, "--size", "16", "--workers", "1",
            "--shard_size", "4"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert "prepared 8 images at 16x16 in 3 shard(s)" in err and "skipped 3" in err
    assert "skipping bad.png: cannot read 'bad.png'" in err
    m = json.loads(pathlib.Path(os.path.join(out, "manifest.json")).read_text())
    assert (m["count"], m["size"], len(m["shards"])) == (8, [16, 16], 3)
    code, _, err = run(argv, capsys)                       # already there
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(argv + ["--overwrite", "--size", "8,12"], capsys)
    assert code == 0 and "at 8x12" in err
    code, _, err = run(["--input", images, "--output", images + "2", "--size", "0"], capsys)
    assert code == 2 and "--size takes a positive integer" in err
    code, _, err = run(["--input", images, "--output", out + "2", "--workers", "0"], capsys)
    assert code == 2 and "--workers must be >= 1" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"no")
    code, _, err = run(["--input", str(junk), "--output", str(tmp_path / "o")], capsys)
    assert code == 1 and "none of the files" in err


def test_eval_takes_the_prepared_folder(tmp_path, capsys):
    from e4e_jax.apps.evaluate import open_data
    images = make_folder(str(tmp_path / "in"), n=5, bad=False)
    out = str(tmp_path / "ds")
    assert run(["--input", images, "--output", out, "--size", "16", "--workers", "1"],
               capsys)[0] == 0
    data = open_data(out, num_images=4)
    assert "PreparedSource" in data.description and len(data) == 4


@pytest.mark.slow
def test_encode_and_invert_take_the_prepared_folder(tmp_path, capsys):
    """At the encoder's input size (32 here) a prepared folder gives the folder's latents, and
    its output names are the source names."""
    import numpy as np

    from e4e_jax.cli import encode, invert
    from tests.parity.test_encoders import save_tiny_inverter
    model = save_tiny_inverter(tmp_path / "model")
    images = make_folder(str(tmp_path / "in"), n=3)
    out = str(tmp_path / "ds")
    assert run(["--input", images, "--output", out, "--size", "32", "--workers", "1"],
               capsys)[0] == 0
    latents = {}
    for name, folder in (("folder", images), ("prepared", out)):
        code = encode.main(["--checkpoint", model, "--input", folder, "--output",
                            str(tmp_path / f"enc_{name}"), "--batch-size", "2"])
        assert code == 0, capsys.readouterr().err
        latents[name] = np.load(tmp_path / f"enc_{name}" / "latents.npy")
        files = (tmp_path / f"enc_{name}" / "files.txt").read_text().split()
        assert files == ["cmyk.jpg", "grey16.png", "img01.png", "img02.png", "sub/img00.png"]
    np.testing.assert_allclose(latents["prepared"], latents["folder"], atol=1e-6)
    for name, folder in (("folder", images), ("prepared", out)):
        code = invert.main(["--checkpoint", model, "--input", folder, "--output",
                            str(tmp_path / f"inv_{name}")])
        assert code == 0, capsys.readouterr().err
        latents[name] = np.load(tmp_path / f"inv_{name}" / "latents.npy")
    np.testing.assert_allclose(latents["prepared"], latents["folder"], atol=1e-6)


@pytest.mark.slow
def test_training_on_a_prepared_folder_equals_the_folder(tmp_path):
    """`--config.data.train=DIR`: a short run on a prepared folder (at the config's 16x16)
    gives the numbers of the same run on the image folder."""
    from e4e_jax import train as trainer
    from e4e_jax.data import prepared
    from tests.support.train_utils import tiny_config
    # no unreadable files: the folder's stream replaces one by the next readable file of its
    # epoch order, which a prepared folder (without it) cannot reproduce
    images = make_folder(str(tmp_path / "in"), n=10, bad=False)
    out = str(tmp_path / "ds")
    prepared.prepare(images, out, (16, 16), workers=1)
    summaries = []
    for name, folder in (("folder", images), ("prepared", out)):
        config = tiny_config(max_steps=2)
        config.data.kind = "images"
        config.data.train = folder
        config.data.test = folder
        summaries.append(trainer.train_and_evaluate(config, str(tmp_path / name)))
    folder_run, prepared_run = summaries
    for k in ("mse_before", "mse_after"):
        assert prepared_run[k] == folder_run[k], (k, folder_run[k], prepared_run[k])


def test_sizes_outside_the_range_are_one_line(tmp_path, capsys):
    images = make_folder(str(tmp_path / "in"), n=2, bad=False)
    for size in ("1", "7,256", "100000", "4097,64"):
        code, _, err = run(["--input", images, "--output", str(tmp_path / "o"), "--size", size],
                           capsys)
        assert code == 2 and err.count("\n") == 1 and "outside 8..4096" in err, err
    assert not os.path.exists(tmp_path / "o")


def test_store_failures_are_one_line(tmp_path, capsys, monkeypatch):
    """fs.RemoteError (here: gcsfs missing) is exit 2 and names the path the user gave."""
    import sys
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    code, _, err = run(["--input", "gs://bkt/imgs", "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "gs://bkt/imgs" in err and "e4e_jax[gcs]" in err


def test_buckets_missing_or_inside_the_input_are_refused_before_any_work(gcs, gcs_photos,
                                                                         capsys):
    _, url_in = gcs_photos
    code, _, err = run(["--input", url_in, "--output", "gs://nobucket/prep2"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "bucket gs://nobucket of gs://nobucket/prep2 does not exist" in err
    code, _, err = run(["--input", url_in, "--output", url_in + "/p"], capsys)
    assert code == 2 and "is inside --input" in err and err.count("\n") == 1
    from e4e_jax.core import fs
    assert not fs.exists(url_in + "/p")


def test_sigterm_prints_the_interrupted_line_and_keeps_shards(tmp_path):
    """SIGTERM to the whole process group (a shell, `timeout`, a batch system): the same line
    as Ctrl-C, exit 143, no partial shard; a rerun resumes."""
    import signal
    import subprocess
    import sys
    import time
    images = make_folder(str(tmp_path / "in"), n=60, bad=False)
    out = tmp_path / "ds"
    argv = [sys.executable, "-m", "e4e_jax.prepare", "--input", images, "--output", str(out),
            "--size", "16", "--workers", "2", "--shard-size", "8"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not (out / "prepare-in-progress.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted: the complete shards in" in err and "Traceback" not in err, err
    assert not any(n.endswith(".tmp") for n in os.listdir(out))
