"""A flag that another flag makes ineffective is refused in one line (issue 22: "a setting the
user gives takes effect or is refused"), before any model is loaded: the checkpoint and
generator paths here do not exist, so reaching the loaders would fail differently."""
import pytest

from e4e_jax.cli import edit, sample
from e4e_jax.cli import eval as ev_cli


@pytest.mark.parametrize("main,argv,needle", [
    (edit.main, ["--checkpoint", "nowhere", "--input", "imgs", "--edit", "sefa:0",
                 "--output", "o", "--files", "names.txt"], "--files applies to --latents only"),
    (edit.main, ["--checkpoint", "nowhere", "--input", "imgs", "--edit", "sefa:0",
                 "--output", "o", "--seed", "0"], "--seed applies to --synthetic only"),
    (sample.main, ["--generator", "nowhere", "--resolution", "32", "--output", "s.png"],
     "--resolution applies to the tiny random generator"),
    (ev_cli.main, ["--checkpoint", "nowhere", "--input", "imgs", "--output", "o",
                   "--data-dir", "tfds_data"], "--data-dir applies to --input tfds:NAME:SPLIT"),
    (ev_cli.main, ["--checkpoint", "nowhere", "--input", "imgs", "--output", "o",
                   "--fid-method", "eigen"], "--fid-method applies to FID (--inception DIR)"),
])
def test_an_ineffective_flag_is_refused(main, argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())             # nothing written
