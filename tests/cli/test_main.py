"""`e4e-jax`, the one command: its subcommand list, each subcommand's --help under its
`e4e-jax X` name with an example and the exit codes, and one-line errors for a wrong name."""
import pytest

from e4e_jax.cli import convert as convert_cli
from e4e_jax.cli import main as e4e_jax_cli


def _help(argv, capsys):
    try:
        code = e4e_jax_cli.main(argv)
    except SystemExit as e:                          # argparse's --help leaves through exit
        code = e.code
    return code, capsys.readouterr().out


def test_help_lists_every_subcommand_with_one_line(capsys):
    code, out = _help(["--help"], capsys)
    assert code == 0
    for name in ("train", "eval", "encode", "invert", "edit", "sample", "align", "convert",
                 "directions"):
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert e4e_jax_cli.main([]) == 2                 # no subcommand: the list, exit 2


@pytest.mark.parametrize("name", ["eval", "encode", "invert", "edit", "sample", "align",
                                  "directions"])
def test_each_subcommand_help_names_itself_and_shows_an_example(name, capsys):
    code, out = _help([name, "--help"], capsys)
    assert code in (0, None)
    assert out.startswith(f"usage: e4e-jax {name}"), out[:200]
    assert f"examples:\n  e4e-jax {name}" in out
    assert "Exit codes" in out or "exit codes" in out


def test_train_help_names_itself(capsys):
    code, out = _help(["train", "--help"], capsys)
    assert code == 0 and "usage: e4e-jax train --config" in out
    assert "e4e-jax train --config configs/demo.py --workdir runs/demo" in out


def test_convert_lists_formats_and_each_converter_names_itself(capsys):
    code, out = _help(["convert", "--help"], capsys)
    assert code == 0
    for name in convert_cli.FORMATS:
        assert f"  {name} " in out, name
    code, out = _help(["convert", "e4e", "--help"], capsys)
    assert code in (0, None) and out.startswith("usage: e4e-jax convert e4e")


def test_the_spelling_does_not_leak_into_later_parsers(capsys):
    from e4e_jax.cli import encode
    _help(["encode", "--help"], capsys)
    with pytest.raises(SystemExit):
        encode.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m e4e_jax.encode")


def test_a_wrong_name_is_one_line_naming_the_closest(capsys):
    assert e4e_jax_cli.main(["encod"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown subcommand 'encod' (did you mean `e4e-jax encode`?); "
                   "`e4e-jax --help` lists them."]
    assert e4e_jax_cli.main(["convert", "stylegan"]) == 2
    assert "unknown format 'stylegan' (did you mean" in capsys.readouterr().err


@pytest.mark.parametrize("argv, want", [
    (["encode", "--out", "x"], "unknown flag --out; did you mean --output?"),
    (["encode", "--outptu", "x"], "unknown flag --outptu; did you mean --output?"),
    (["invert", "--outptu", "x"], "unknown flag --outptu; did you mean --output?"),
    (["directions", "--outptu", "x"], "unknown flag --outptu; did you mean --output?"),
    (["prepare", "--outptu", "x"], "unknown flag --outptu; did you mean --output?"),
    (["sample", "--checkpoint", "d"],
     "unknown flag --checkpoint: sample takes --generator DIR (an export works too)"),
])
def test_unknown_flag_comes_before_a_missing_required_one(argv, want, capsys):
    """A misspelt flag next to a missing required --output is reported with its suggestion
    (argparse alone says only "the following arguments are required: --output"); a declared
    confusion (sample --checkpoint) says what the command takes instead of "--help"."""
    try:
        code = e4e_jax_cli.main(argv)
    except SystemExit as e:                          # argparse's error leaves through exit
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert want in err and "required" not in err and "--help?" not in err, err


def test_invert_line_names_restyle(capsys):
    code, out = _help(["--help"], capsys)
    line = next(x for x in out.splitlines() if x.split()[:1] == ["invert"])
    assert "ReStyle" in line and "PTI" in line
