"""The directions command (`e4e-jax directions`, `python -m e4e_jax.directions`): training an
InterFaceGAN direction from codes + a CSV of scores, the edit command reading it, --condition,
the refusals and exit codes, and --synthetic's samples and labels template."""
import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is a dependency of e4e_jax (setup.py)")

from e4e_jax.cli import directions, edit
from e4e_jax.cli import main as dispatcher
from e4e_jax.nets.generator import load_generator
from tests.parity.test_encoders import save_tiny_inverter

DIM = 32          # the tiny model's style_dim


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_inverter(tmp_path_factory.mktemp("model") / "tiny")


def scored_set(folder, n=300, dim=DIM, seed=0, wplus_rows=None, names=None):
    """codes.npy + files.txt + labels.csv in `folder`: scores linear in the codes (+ noise).
    Returns (latents path, labels path, true direction)."""
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n, dim)).astype(np.float32)
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    scores = codes @ v + 0.1 * rng.standard_normal(n)
    names = names or [f"img_{i:04d}.jpg" for i in range(n)]
    os.makedirs(folder, exist_ok=True)
    array = codes if wplus_rows is None else np.repeat(codes[:, None], wplus_rows, axis=1)
    np.save(os.path.join(folder, "latents.npy"), array)
    with open(os.path.join(folder, "files.txt"), "w") as f:
        f.write("".join(n_ + "\n" for n_ in names))
    write_labels(os.path.join(folder, "labels.csv"), zip(names, scores))
    return os.path.join(folder, "latents.npy"), os.path.join(folder, "labels.csv"), v


def write_labels(path, rows, header=("name", "score")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        for name, score in rows:
            w.writerow([name, score if isinstance(score, str) else f"{score:.6f}"])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def run(argv, capsys):
    code = directions.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_and_the_dispatcher(capsys):
    with pytest.raises(SystemExit) as e:
        directions.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m e4e_jax.directions")
    assert "examples:\n  python -m e4e_jax.directions" in out and "Exit codes: 0" in out
    assert dispatcher.main(["--help"]) == 0
    assert "directions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dispatcher.main(["directions", "--help"])
    assert capsys.readouterr().out.startswith("usage: e4e-jax directions")


def test_train_writes_the_direction_and_its_report(tmp_path, capsys):
    latents, labels, v = scored_set(tmp_path / "set")
    out = tmp_path / "dirs"
    code, stdout, _ = run(["--latents", latents, "--labels", labels, "--attribute", "smile",
                           "--output", str(out), "--chosen", "0.25"], capsys)
    assert code == 0, stdout
    d = np.load(out / "smile.npy")
    assert d.shape == (1, DIM) and d.dtype == np.float32
    assert abs(np.linalg.norm(d) - 1) < 1e-6 and float(d[0] @ v) > 0.9
    report = json.loads((out / "smile.json").read_text())
    assert report["validation_accuracy"] >= 0.95
    assert report["counts"]["chosen_per_side"] == 75
    assert report["counts"]["train"] == {"positive": 52, "negative": 52}
    assert report["counts"]["validation"]["total"] == 46
    assert report["counts"]["codes"] == report["counts"]["scored"] == 300
    assert len(report["chosen"]["positive"]) == 75
    first = report["chosen"]["positive"][0]
    assert first["name"].startswith("img_") and first["split"] in ("train", "validation")
    assert report["settings"]["seed"] == 0 and report["settings"]["split_ratio"] == 0.7
    assert report["inputs"]["labels"] == os.path.abspath(labels)
    assert report["method"]["commit"].startswith("8da3fc0")
    assert "validation accuracy" in stdout and "interfacegan:" in stdout


def test_the_edit_command_reads_the_direction(model_dir, tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set")
    out = tmp_path / "dirs"
    assert run(["--latents", latents, "--labels", labels, "--attribute", "smile",
                "--output", str(out), "--chosen", "0.25"], capsys)[0] == 0
    d = np.load(out / "smile.npy")
    # two W+ codes of the tiny model (decoded only: no encoder to compile)
    n_latent = load_generator(model_dir).n_latent
    codes = np.random.default_rng(1).standard_normal((2, n_latent, DIM)).astype(np.float32)
    np.save(tmp_path / "w.npy", codes)
    (tmp_path / "files.txt").write_text("a.png\nb.png\n")
    edits = tmp_path / "edits"
    code = edit.main(["--checkpoint", model_dir, "--latents", str(tmp_path / "w.npy"),
                      "--edit", f"interfacegan:{out / 'smile.npy'}", "--strengths", "0", "3",
                      "--out", str(edits)])
    assert code == 0, capsys.readouterr().err
    edited = np.load(edits / "edited_latents.npy")           # (N, E, S, n_latent, 512)
    np.testing.assert_allclose(edited[:, 0, 0], codes, atol=1e-6)
    np.testing.assert_allclose(edited[:, 0, 1], codes + 3 * d, atol=1e-5)
    assert sorted(os.listdir(edits)) == ["a.png", "b.png", "edited_latents.npy", "edits.json"]


def test_wplus_codes_with_equal_rows_are_w_codes(tmp_path, capsys):
    w_latents, labels, _ = scored_set(tmp_path / "w")
    p_latents, p_labels, _ = scored_set(tmp_path / "wplus", wplus_rows=6)
    for latents, lab, out in ((w_latents, labels, "a"), (p_latents, p_labels, "b")):
        assert run(["--latents", latents, "--labels", lab, "--attribute", "x", "--output",
                    str(tmp_path / out), "--chosen", "0.2"], capsys)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "x.npy"),
                                  np.load(tmp_path / "b" / "x.npy"))
    assert json.loads((tmp_path / "b" / "x.json").read_text())["inputs"]["codes"] == \
        "W+ with equal rows"


def test_wplus_codes_whose_rows_differ_are_refused(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", wplus_rows=4)
    codes = np.load(latents)
    codes[7, 2] += 0.5
    np.save(latents, codes)
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                        "--output", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "rows differ (max row difference 0.5" in err and "'img_0007.jpg'" in err
    assert "W+ row 2" in err and not (tmp_path / "o" / "x.npy").exists()


def test_names_missing_on_either_side(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", n=200)
    rows = read_rows(labels)[1:]
    # a name that is no code: refused, named with its line
    write_labels(labels, rows[:150] + [["nobody.jpg", "1.0"]] + rows[150:])
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                        "--output", str(tmp_path / "o"), "--chosen", "0.25"], capsys)
    assert code == 2 and "'nobody.jpg' (line 152)" in err and "match no code" in err
    # codes without a row (or with an empty score) are left out and reported
    write_labels(labels, rows[:150] + [[rows[150][0], ""]])
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                        "--output", str(tmp_path / "o"), "--chosen", "0.25"], capsys)
    assert code == 0 and "50 code(s) have no score" in err
    report = json.loads((tmp_path / "o" / "x.json").read_text())
    assert report["counts"]["scored"] == 150 and report["counts"]["unlabelled"] == 50
    assert report["unlabelled"][0] == "img_0150.jpg"
    # another extension of the same path finds the code (e.g. scores of reconstructions)
    write_labels(labels, [(n.replace(".jpg", ".png"), s) for n, s in rows])
    assert run(["--latents", latents, "--labels", labels, "--attribute", "y",
                "--output", str(tmp_path / "o"), "--chosen", "0.25"], capsys)[0] == 0
    # a code scored twice
    write_labels(labels, rows + [rows[3]])
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "z",
                        "--output", str(tmp_path / "o")], capsys)
    assert code == 2 and "lines 5 and 202 both score the code 'img_0003.jpg'" in err


def test_bad_label_files(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", n=100)
    rows = read_rows(labels)[1:]
    args = ["--latents", latents, "--labels", labels, "--attribute", "x",
            "--output", str(tmp_path / "o")]
    write_labels(labels, rows[:10] + [[rows[10][0], "very"]] + rows[11:])
    code, _, err = run(args, capsys)
    assert code == 2 and f"{labels}:12: the score 'very' of 'img_0010.jpg' is not a " \
                         f"finite number" in err
    write_labels(labels, rows[:3] + [[rows[3][0], "nan"]])
    assert run(args, capsys)[0] == 2
    write_labels(labels, rows, header=None)
    code, _, err = run(args, capsys)
    assert code == 2 and "must be a header" in err
    os.remove(os.path.join(os.path.dirname(latents), "files.txt"))
    write_labels(labels, rows)
    code, _, err = run(args, capsys)
    assert code == 2 and "files.txt" in err and "--files" in err


def test_too_few_scored_codes_is_nothing_usable(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", n=20)
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                        "--output", str(tmp_path / "o")], capsys)   # 0.02 of 20: none per side
    assert code == 1 and "too few samples" in err and "--chosen" in err
    assert not (tmp_path / "o" / "x.npy").exists()
    rows = read_rows(labels)[1:]
    write_labels(labels, [(n, "0.5") for n, _ in rows])
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                        "--output", str(tmp_path / "o"), "--chosen", "0.5"], capsys)
    assert code == 1 and "nothing to separate" in err


def test_an_existing_direction_needs_overwrite(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", n=100)
    args = ["--latents", latents, "--labels", labels, "--attribute", "x",
            "--output", str(tmp_path / "o"), "--chosen", "0.3"]
    assert run(args, capsys)[0] == 0
    before = (tmp_path / "o" / "x.npy").read_bytes()
    code, _, err = run(args + ["--seed", "1"], capsys)
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / "o" / "x.npy").read_bytes() == before
    assert run(args + ["--seed", "1", "--overwrite"], capsys)[0] == 0
    assert json.loads((tmp_path / "o" / "x.json").read_text())["settings"]["seed"] == 1


def test_conditions_are_projected_out(tmp_path, capsys):
    latents, labels, v = scored_set(tmp_path / "set")
    rng = np.random.default_rng(5)
    conds = []
    for i in range(2):                       # correlated with the attribute, not unit norm
        c = (v + rng.standard_normal(DIM)).astype(np.float32)[None] * 2
        conds.append(str(tmp_path / f"c{i}.npy"))
        np.save(conds[-1], c)
    code, stdout, _ = run(["--latents", latents, "--labels", labels, "--attribute", "x",
                           "--output", str(tmp_path / "o"), "--chosen", "0.25",
                           "--condition", conds[0], "--condition", conds[1]], capsys)
    assert code == 0 and "projected off 2 condition(s)" in stdout
    d = np.load(tmp_path / "o" / "x.npy")
    assert abs(np.linalg.norm(d) - 1) < 1e-6
    for path in conds:
        c = np.load(path)
        assert abs(float(d[0] @ c[0]) / np.linalg.norm(c)) < 1e-5
    report = json.loads((tmp_path / "o" / "x.json").read_text())
    assert 0 < report["conditional"]["cos_to_unconditioned"] < 1
    assert report["settings"]["conditions"][0]["norm"] > 1
    np.save(tmp_path / "bad.npy", np.ones((1, 8), np.float32))
    code, _, err = run(["--latents", latents, "--labels", labels, "--attribute", "y",
                        "--output", str(tmp_path / "o"), "--condition",
                        str(tmp_path / "bad.npy")], capsys)
    assert code == 2 and "must be (1, 32)" in err


def test_argument_errors(tmp_path, capsys):
    latents, labels, _ = scored_set(tmp_path / "set", n=50)
    for argv in (["--latents", latents, "--labels", labels, "--output", "o"],
                 ["--synthetic", "4", "--labels", labels, "--output", "o"],
                 ["--latents", latents, "--labels", labels, "--attribute", "x", "--output",
                  "o", "--generator", "g"]):
        with pytest.raises(SystemExit) as e:
            directions.main(argv)
        assert e.value.code == 2
    for extra, message in ((["--attribute", "x.npy"], "without an extension"),
                           (["--attribute", "a/b"], "letters, digits"),
                           (["--attribute", "x", "--split-ratio", "1"], "strictly between"),
                           (["--attribute", "x", "--chosen", "0"], "must be positive")):
        code, _, err = run(["--latents", latents, "--labels", labels, "--output",
                            str(tmp_path / "o")] + extra, capsys)
        assert code == 2 and message in err, err


def test_synthetic_samples_then_train(model_dir, tmp_path, capsys):
    out = tmp_path / "dirs"
    code, stdout, _ = run(["--synthetic", "40", "--checkpoint", model_dir, "--output", str(out),
                           "--batch-size", "16"], capsys)
    assert code == 0
    folder = out / "synthetic"
    w = np.load(folder / "latents.npy")
    names = (folder / "files.txt").read_text().split()
    assert w.shape == (40, DIM) and names[0] == "sample_00000.png" and len(names) == 40
    assert sorted(os.listdir(folder / "images")) == names
    rows = read_rows(folder / "labels.csv")
    assert rows[0] == ["name", "score"] and rows[1:] == [[n, ""] for n in names]
    assert "--labels" in stdout and str(folder / "labels.csv") in stdout
    meta = json.loads((folder / "synthetic.json").read_text())
    assert meta["samples"] == 40 and meta["from"] == "checkpoint"
    # the template is not replaced without --overwrite (it may hold the user's scores)
    code, _, err = run(["--synthetic", "40", "--checkpoint", model_dir, "--output", str(out)],
                       capsys)
    assert code == 2 and "--overwrite" in err
    # scored by the first coordinate of w (a stand-in classifier), then trained
    write_labels(folder / "labels.csv", zip(names, w[:, 0]))
    code, _, _ = run(["--latents", str(folder / "latents.npy"), "--labels",
                      str(folder / "labels.csv"), "--attribute", "first", "--output", str(out),
                      "--chosen", "0.5"], capsys)
    assert code == 0
    d = np.load(out / "first.npy")
    assert abs(d[0, 0]) == np.abs(d[0]).max()
    # --synthetic needs exactly one generator source
    code, _, err = run(["--synthetic", "4", "--output", str(tmp_path / "x")], capsys)
    assert code == 2 and "--generator DIR" in err
