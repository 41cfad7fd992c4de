"""The commands on a bucket: gs:// inputs and outputs through e4e_jax.core.fs, against a GCS
emulator on the loopback interface (tests/support/gcs.py; the client code is the one a pod
uses). Every bucket run is compared with the same run on local folders."""
import io
import json
import os

import numpy as np
import pytest

from e4e_jax.apps.encode import encode_folder
from e4e_jax.cli import encode as encode_cli
from e4e_jax.cli import eval as eval_cli
from e4e_jax.cli import invert as invert_cli
from e4e_jax.core import fs
from tests.parity.test_encoders import save_tiny_inverter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_inverter(tmp_path_factory.mktemp("model") / "tiny")


def npy(path):
    return np.load(io.BytesIO(fs.read_bytes(path)))


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_encode_bucket_to_bucket_equals_local(model_dir, gcs, gcs_photos, tmp_path, capsys):
    local_in, url_in = gcs_photos
    out = gcs.url("encode_out")
    args = ["--checkpoint", model_dir, "--batch-size", "4", "--save-images"]
    assert encode_cli.main(args + ["--input", local_in, "--output", str(tmp_path / "o")]) == 0
    log = io.StringIO()
    encode_folder(model_dir, url_in, out, 4, save_images=True, log=log)
    assert f"wrote {out}/latents.npy (6, " in log.getvalue()
    assert "e4e_jax_output_" not in log.getvalue()          # the staging folder is not named
    ref = np.load(tmp_path / "o" / "latents.npy")
    assert ref.shape[0] == 6
    np.testing.assert_array_equal(npy(fs.join(out, "latents.npy")), ref)
    assert fs.read_bytes(fs.join(out, "files.txt")) == (tmp_path / "o" / "files.txt").read_bytes()
    names = fs.list_files(out)
    assert {"summary.json", "skipped.txt", "images.txt"} <= set(names)
    assert sorted(n for n in names if n.startswith("reconstructions/")) == [
        "reconstructions/a.png", "reconstructions/b.png", "reconstructions/c.png",
        "reconstructions/d.png", "reconstructions/sub/e.png", "reconstructions/sub/f.png"]
    assert json.loads(fs.read_bytes(fs.join(out, "summary.json")))["latents"] == 6
    # outputs never overwrite each other: a second run is refused in one line
    capsys.readouterr()
    assert encode_cli.main(args + ["--input", url_in, "--output", out]) == 2
    assert "pass --overwrite" in one_error_line(capsys.readouterr().err)


def test_missing_bucket_paths_are_one_line_errors(model_dir, gcs, gcs_photos, tmp_path, capsys):
    _, url_in = gcs_photos
    ck = ["--checkpoint", model_dir]
    assert encode_cli.main(ck + ["--input", gcs.url("no_such_folder"), "--output",
                                 str(tmp_path / "o")]) == 2
    assert "gs://bkt/no_such_folder' is not a directory" in one_error_line(
        capsys.readouterr().err)
    assert encode_cli.main(ck + ["--input", url_in, "--output", "gs://no-such-bucket/o"]) == 2
    assert "gcloud storage buckets create" in one_error_line(capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "o")
    assert eval_cli.main(ck + ["--input", gcs.url("no_such_folder"), "--output",
                               str(tmp_path / "e")]) == 2
    assert "is not a folder" in one_error_line(capsys.readouterr().err)
    assert invert_cli.main(ck + ["--input", gcs.url("no_such_folder"), "--output",
                                 gcs.url("inv_missing")]) == 2
    assert "is not a directory" in one_error_line(capsys.readouterr().err)


def test_invert_bucket_to_bucket_equals_local_and_resumes(model_dir, gcs, gcs_photos, tmp_path,
                                                          capsys):
    local_in, url_in = gcs_photos
    out = gcs.url("invert_out")
    ck = ["--checkpoint", model_dir]
    assert invert_cli.main(ck + ["--input", local_in, "--output", str(tmp_path / "o")]) == 0
    assert invert_cli.main(ck + ["--input", url_in, "--output", out]) == 0
    np.testing.assert_array_equal(npy(fs.join(out, "latents.npy")),
                                  np.load(tmp_path / "o" / "latents.npy"))
    assert fs.isfile(fs.join(out, "side_by_side", "sub_f.png"))
    summary = json.loads(fs.read_bytes(fs.join(out, "summary.json")))
    assert summary["complete"] and summary["settings"]["input_dir"] == url_in
    capsys.readouterr()
    # the finished run is found in the bucket: nothing to do, nothing rewritten
    assert invert_cli.main(ck + ["--input", url_in, "--output", out]) == 0
    assert "already holds this command's finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_from_a_bucket_equals_local(model_dir, gcs, gcs_photos, tmp_path):
    """The metrics of the bucket folder in batches of 4 (6 images: the last batch padded with 2
    rows, masked out) equal those of the local folder in one unpadded batch of 6."""
    local_in, url_in = gcs_photos
    common = ["--checkpoint", model_dir, "--edits", "none", "--lec-edit", "none",
              "--deviation-samples", "0", "--num-grid", "2"]
    out = gcs.url("eval_out")
    assert eval_cli.main(common + ["--batch-size", "4", "--input", url_in, "--output", out]) == 0
    assert eval_cli.main(common + ["--batch-size", "6", "--input", local_in, "--output",
                                   str(tmp_path / "e")]) == 0
    remote = json.loads(fs.read_bytes(fs.join(out, "metrics.json")))["tiny"]
    whole = json.loads((tmp_path / "e" / "metrics.json").read_text())["tiny"]
    assert remote["num_images"] == whole["num_images"] == 6
    np.testing.assert_allclose(remote["mse"], whole["mse"], rtol=1e-6)
    np.testing.assert_allclose(remote["latent_variation"], whole["latent_variation"], rtol=1e-5)
    assert {"metrics.json", "report.md", "tiny/inversions.png"} <= set(fs.list_files(out))


def test_training_workdir_in_a_bucket_is_refused():
    from e4e_jax.train.checks import check_workdir
    from e4e_jax.train.errors import TrainingError
    with pytest.raises(TrainingError, match="gcloud storage cp -r runs/my_run gs://bkt/run"):
        check_workdir("gs://bkt/run")


@pytest.mark.slow
def test_training_on_a_bucket_equals_local(gcs, gcs_photos, tmp_path):
    """A short run with data.train / data.test in the bucket gives the numbers of the same run
    on the local copy of the folder."""
    from e4e_jax import train as trainer
    from tests.support.train_utils import tiny_config
    local_in, url_in = gcs_photos
    summaries = []
    for name, folder in (("local", local_in), ("bucket", url_in)):
        config = tiny_config(max_steps=2)
        config.data.kind = "images"
        config.data.train = folder
        config.data.test = folder
        summaries.append(trainer.train_and_evaluate(config, str(tmp_path / name)))
    local, bucket = summaries
    for k in ("mse_before", "mse_after"):
        assert bucket[k] == local[k], (k, local[k], bucket[k])


@pytest.mark.slow
def test_training_on_a_missing_bucket_folder_is_one_line(gcs, tmp_path):
    """`e4e-jax train` with data.train in a bucket folder that does not exist: one error line,
    exit 2 (the child process reaches this process's emulator through the environment)."""
    import subprocess
    import sys

    from tests.support.train_utils import subprocess_env
    r = subprocess.run(
        [sys.executable, "-m", "e4e_jax.cli.main", "train", "--config",
         "tests/support/tiny_train_config.py", "--workdir", str(tmp_path / "run"),
         "--config.data.kind=images", f"--config.data.train={gcs.url('no_such_folder')}"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_error_line(r.stderr)
    assert "gs://bkt/no_such_folder" in line and "does not exist" in line


@pytest.mark.slow
def test_unreadable_files_read_the_same_from_a_bucket_in_every_command(model_dir, gcs, gcs_photos,
                                                                      tmp_path, capfd):
    """One wording (image_io) for a corrupt file in prepare, encode, invert and the loaders
    (eval, training), local or gs://: the name relative to --input and PIL's reason, without
    `<_io.BytesIO object at 0x...>` (screen and skipped.txt)."""
    import shutil

    from e4e_jax.cli import prepare as prepare_cli
    from e4e_jax.data.image_io import ImageReadError
    from e4e_jax.data.sources import FolderSource
    local_in, _ = gcs_photos
    folder = tmp_path / "in"
    shutil.copytree(local_in, folder)
    (folder / "sub" / "corrupt.png").write_bytes(b"not a png")
    url = gcs.upload_folder(str(folder), "with_corrupt")
    want = ("cannot read 'sub/corrupt.png' as an image: UnidentifiedImageError: cannot "
            "identify image file")
    for k, src in enumerate((str(folder), url)):
        capfd.readouterr()
        assert prepare_cli.main(["--input", src, "--output", str(tmp_path / f"p{k}"),
                                 "--size", "16", "--workers", "1"]) == 0
        err = capfd.readouterr().err
        assert f"skipping sub/corrupt.png: {want}\n" in err, err
        m = json.loads((tmp_path / f"p{k}" / "manifest.json").read_text())
        assert [s["reason"] for s in m["skipped"]] == [want]
        for name, cli in (("enc", encode_cli), ("inv", invert_cli)):
            out = tmp_path / f"{name}{k}"
            assert cli.main(["--checkpoint", model_dir, "--input", src, "--output",
                             str(out)]) == 0
            # the screen's "skipping" line prints the same string (encode binds its log
            # stream at import, out of this test's capture)
            assert (out / "skipped.txt").read_text() == f"sub/corrupt.png\t{want}\n"
        source = FolderSource(src)
        with pytest.raises(ImageReadError) as e:
            source.load(source.files.index("sub/corrupt.png"), (16, 16))
        assert str(e.value) == want
