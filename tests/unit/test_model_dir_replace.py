"""A model directory is written only over nothing, an empty folder or an earlier model directory
of the same kind (nets/model_dir.check_replaceable): a newcomer's `e4e-jax convert stylegan3 SRC
runs/demo/export` replaced the trained encoder, and `... tests/data/images` deleted the images."""
import json
import os

import pytest

from e4e_jax.convert import stylegan3 as sg3_cli
from e4e_jax.nets.model_dir import ModelDirError, check_replaceable, save_model_dir
from tests.support.paths import REPO

SG3_PKL = os.path.join(REPO, "tests", "fixtures", "stylegan3_generator", "network-snapshot-t.pkl")


def test_only_an_earlier_model_of_the_same_kind_is_replaced(tmp_path):
    same = save_model_dir(str(tmp_path / "m"), "lpips", {"net": "alex"})
    save_model_dir(same, "lpips", {"net": "vgg"})                       # re-conversion
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["net"] == "vgg"
    with pytest.raises(ModelDirError, match=r"holds a model of kind 'lpips'; writing a "
                                            r"'arcface' model there would replace it"):
        save_model_dir(same, "arcface", {})
    (tmp_path / "empty").mkdir()
    save_model_dir(str(tmp_path / "empty"), "lpips", {"net": "alex"})    # an empty folder is fine
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    (tmp_path / "notes.txt").write_text("keep")
    for path, what in ((folder, "is a folder that is not a model directory"),
                       (tmp_path / "notes.txt", "is a file")):
        with pytest.raises(ModelDirError, match=what):
            save_model_dir(str(path), "lpips", {"net": "alex"})
        with pytest.raises(ModelDirError, match="give a new output path"):
            check_replaceable(str(path))
    assert (folder / "a.png").read_bytes() == b"png" and os.listdir(folder) == ["a.png"]
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["empty", "m", "notes.txt", "photos"]  # no leftovers


def test_convert_refuses_a_folder_of_images_and_another_model_in_one_line(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "face.png").write_bytes(b"png")
    assert sg3_cli.main([SG3_PKL, str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is a folder that is not a model directory" in err and len(err.splitlines()) == 1
    assert os.listdir(folder) == ["face.png"]
    other = save_model_dir(str(tmp_path / "lp"), "lpips", {"net": "alex"})
    assert sg3_cli.main([SG3_PKL, other]) == 2
    assert "holds a model of kind 'lpips'" in capsys.readouterr().err
    out = str(tmp_path / "g")
    assert sg3_cli.main([SG3_PKL, out]) == 0 and sg3_cli.main([SG3_PKL, out]) == 0
