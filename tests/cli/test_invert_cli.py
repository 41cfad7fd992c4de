"""The invert command (`python -m e4e_jax.invert`): e4e, projector and PTI end to end on tiny
models, unique output names, edit --generator with a tuned generator, exit codes, interrupts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import e4e_jax
from e4e_jax.cli import edit, invert
from e4e_jax.data import image_io
from e4e_jax.apps import invert as invert_run
from e4e_jax.nets.model_dir import save_model_dir
from e4e_jax.apps.invert import output_names
from e4e_jax.nets.encoder import load_encoder
from e4e_jax.models.lpips import LPIPS
from tests.parity.test_encoders import save_tiny_inverter, tiny_generator
from tests.cli.test_eval import random_variables

from tests.support.paths import REPO  # noqa: E402
# sorted order; 'A.png' / 'a.png' / 'a.jpg' share a base name (up to case)
READABLE = ["A.png", "a.jpg", "a.png", os.path.join("sub", "b.png")]
NAMES = ["A", "a_jpg", "a_png", "sub_b"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_inverter(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def lpips_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    v = random_variables(LPIPS("alex"), [(1, 64, 64, 3)] * 2)
    v = {"params": {k: ({"kernel": np.abs(p["kernel"])} if k.startswith("lin_") else p)
                    for k, p in v["params"].items()}}          # LPIPS's lin weights are >= 0
    return save_model_dir(str(d / "lpips_alex"), "lpips", {"net": "alex"}, v)


def _write_images(d, names, with_bad=True):
    rng = np.random.default_rng(0)
    for name in names:
        os.makedirs(os.path.dirname(os.path.join(d, name)) or d, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
            os.path.join(d, name), quality=95)
    if with_bad:
        with open(os.path.join(d, "bad.png"), "wb") as f:
            f.write(b"not an image")
    return str(d)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    return _write_images(d, READABLE)


def run(args):
    return invert.main([str(a) for a in args])


# ---------------------------------------------------------------------- names, arguments

def test_output_names_are_unique_up_to_case():
    assert output_names(READABLE) == NAMES
    assert output_names(["x.png", "y.jpg"]) == ["x", "y"]
    names = output_names(["a.png", "a_png.png", "A.PNG", "a.jpg", "a_jpg.png"])
    assert len({n.casefold() for n in names}) == 5, names


def test_help_exits_0_and_shows_the_invocation(capsys):
    assert invert.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m e4e_jax.invert" in out and "examples:" in out and "--method" in out
    proc = subprocess.run([sys.executable, "-m", "e4e_jax.invert", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "--pivot" in proc.stdout


def test_bad_arguments_exit_2(model_dir, lpips_dir, images, tmp_path, capsys):
    base = ["--checkpoint", model_dir, "--input", images]
    cases = [
        (base + ["--output", tmp_path / "o1", "--method", "projector"], "--lpips DIR"),
        (base + ["--output", tmp_path / "o2", "--method", "pti"], "LPIPS-alex"),
        (base + ["--output", tmp_path / "o3", "--method", "pti", "--lpips", tmp_path / "nope"],
         "not a directory"),
        (base + ["--output", tmp_path / "o4", "--method", "pti", "--lpips", lpips_dir,
                 "--steps", "0"], "--steps must be >= 1"),
        (["--checkpoint", model_dir, "--input", tmp_path / "missing", "--output",
          tmp_path / "o5"], "not a directory"),
        (["--checkpoint", tmp_path, "--input", images, "--output", tmp_path / "o6"], "error:"),
        (base + ["--output", tmp_path / "o7", "--method", "magic"], "invalid choice"),
        (base + ["--output", tmp_path / "o10", "--pivot", "projector"],
         "--pivot applies to --method pti only"),
        (base + ["--output", tmp_path / "o11", "--method", "pti", "--pivot", "projector",
                 "--lpips", lpips_dir, "--pivot_steps", "0"], "--pivot-steps must be >= 1"),
        (base + ["--output", tmp_path / "o8", "--method", "pti", "--lpips", model_dir],
         "error:"),
        (base + ["--output", tmp_path / "o13", "--method", "pti", "--lpips", lpips_dir,
                 "--lpips-threshold", "nan"], "--lpips-threshold must be a finite number"),
        # flags of the optimisation methods are not silently ignored by the default e4e method
        (base + ["--output", tmp_path / "o12", "--lpips", lpips_dir, "--steps", "5"],
         "--steps and --lpips apply to --method projector or pti only"),
    ]
    for args, message in cases:
        assert run(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    os.makedirs(tmp_path / "o9")
    np.save(tmp_path / "o9" / "latents.npy", np.zeros((1, 8, 32), np.float32))
    assert run(base + ["--output", tmp_path / "o9"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("keep me")
    assert run(base + ["--output", tmp_path / "a_file"]) == 2
    err = capsys.readouterr().err
    assert "is a file; give a folder" in err and "Traceback" not in err, err
    assert (tmp_path / "a_file").read_text() == "keep me"



# every optional flag against every --method: (flag and value, the methods it acts on); pti
# entries marked "pti+" act only with --pivot projector
FLAG_METHODS = [
    (["--iterations", "2"], {"restyle"}),
    (["--pivot", "e4e"], {"pti", "pti+"}),
    (["--steps", "3"], {"projector", "pti", "pti+"}),
    (["--lpips", "LPIPS"], {"projector", "pti", "pti+"}),
    (["--lpips-threshold", "0.5"], {"pti", "pti+"}),
    (["--lpips-threshold", "0.06"], {"pti", "pti+"}),      # the default typed out: refused too
    (["--pivot-steps", "3"], {"pti+"}),
    (["--seed", "1"], {"projector", "pti+"}),
    (["--transforms", "T"], {"e4e", "projector", "pti", "pti+", "restyle"}),
]
METHOD_ARGS = {"e4e": [], "projector": ["--method", "projector"], "pti": ["--method", "pti"],
               "pti+": ["--method", "pti", "--pivot", "projector"],
               "restyle": ["--method", "restyle"]}


@pytest.mark.parametrize("flag,methods", FLAG_METHODS,   # ids the same in every xdist worker
                         ids=lambda v: "+".join(sorted(v)) if isinstance(v, set) else str(v))
def test_a_flag_the_method_ignores_is_refused(images, tmp_path, capsys, monkeypatch, flag,
                                              methods):
    """issue 22: `--method projector --lpips-threshold 0.5` was accepted and ignored; each flag
    is refused, in one line naming the methods it applies to, under every method it does not
    act on (checked before any model is loaded: the checkpoint here is not one)."""
    calls = []
    monkeypatch.setattr(invert_run, "load_models", lambda req: calls.append(req) or 1 / 0)
    np.save(tmp_path / "t.npy", np.broadcast_to(np.eye(3, dtype=np.float32),
                                                (len(READABLE) + 1, 3, 3)))     # + bad.png
    os.makedirs(tmp_path / "lp")
    flag = [{"LPIPS": tmp_path / "lp", "T": tmp_path / "t.npy"}.get(a, a) for a in flag]
    for method, margs in METHOD_ARGS.items():
        extra = [] if "--lpips" in flag or method not in ("projector", "pti", "pti+") else \
            ["--lpips", tmp_path / "lp"]
        out = tmp_path / f"o_{method}"
        argv = ["--checkpoint", tmp_path, "--input", images, "--output", out, *margs, *extra,
                *flag]
        try:
            code = run(argv)
        except ZeroDivisionError:        # got past the checks to the model loading
            code = None
        err = capsys.readouterr().err.strip()
        if method in methods:
            assert code is None and "apply" not in err, (method, flag, err)
        else:
            assert code == 2 and len(err.splitlines()) == 1, (method, flag, err)
            assert f"{flag[0]} applies to --method" in err and "only" in err, err
            assert "Traceback" not in err and not os.path.exists(out / "latents.npy")


def test_library_request_refuses_a_non_default_setting_the_method_ignores(images, tmp_path):
    req = invert_run.InvertRequest(str(tmp_path), images, str(tmp_path / "o"),
                                   method="projector", lpips=str(tmp_path),
                                   lpips_threshold=0.5)
    with pytest.raises(invert_run.InvertError,
                       match="--lpips-threshold applies to --method pti only; it does not "
                             "apply to --method projector"):
        invert_run.check_request(req)


def _summary_of(req, files, out):
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "latents.npy"), np.zeros((0, 2, 4), np.float32))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"settings": invert_run.run_settings(req), "input_files": files}, f)


def test_resume_refusal_names_settings_not_used_and_changed_files(tmp_path):
    """issue 22: switching to e4e said `steps 300 there, 0 now` (an internal 0), and added
    inputs said only that the folder changed."""
    out = str(tmp_path / "o")
    old = invert_run.InvertRequest("c", "i", out, method="projector", steps=300, lpips="l")
    _summary_of(old, ["a.png", "b.png"], out)
    new = invert_run.InvertRequest("c", "i", out)
    with pytest.raises(invert_run.InvertError) as e:
        invert_run.previous_run(new, ["a.png", "b.png"])
    msg = str(e.value)
    assert "method 'projector' there, 'e4e' now" in msg
    assert "steps 300 there, not used now" in msg and " 0 now" not in msg, msg
    assert "lpips_threshold" not in msg and "pivot_steps" not in msg, msg   # used by neither
    # the same settings, five files added and one removed: named, first three and a count
    files = ["a.png"] + [f"n{k}.png" for k in range(5)]
    with pytest.raises(invert_run.InvertError) as e:
        invert_run.previous_run(old, files)
    msg = str(e.value)
    assert "5 file(s) added ('n0.png', 'n1.png', 'n2.png', ... 2 more)" in msg, msg
    assert "1 removed ('b.png')" in msg, msg
    # an e4e run resumes whatever projector-only values its summary holds (older summaries
    # stored steps 0 for e4e)
    _summary_of(new, ["a.png"], out)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    summary["settings"]["steps"] = 0
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f)
    assert invert_run.previous_run(new, ["a.png"]).processed == 0


def test_lpips_that_sees_nothing_at_the_generators_resolution_exits_2(lpips_dir, images,
                                                                      tmp_path, capsys):
    """LPIPS-alex needs 31 px: over a 16 px generator the projector's and PTI's losses would be
    NaN from the first step, so invert refuses before writing anything."""
    small = save_tiny_inverter(tmp_path / "tiny16", resolution=16)
    for method in ("projector", "pti"):
        out = tmp_path / method
        assert run(["--checkpoint", small, "--input", images, "--output", out, "--method",
                    method, "--lpips", lpips_dir]) == 2
        err = capsys.readouterr().err
        assert ("LPIPS (alex) needs images of at least 31x31 pixels; --lpips " in err
                and "generator (16px) gives 16x16" in err and "vgg: 16 px" in err), err
        assert len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_nothing_usable_exits_1(model_dir, tmp_path, capsys):
    d = tmp_path / "only_bad"
    os.makedirs(d)
    (d / "x.png").write_bytes(b"broken")
    assert run(["--checkpoint", model_dir, "--input", d, "--output", tmp_path / "o"]) == 1
    err = capsys.readouterr().err
    assert "could be inverted" in err and "Traceback" not in err
    # no empty latents.npy that would block the next run (issue 22, item 8)
    assert not (tmp_path / "o" / "latents.npy").exists()
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["inverted"] == 0
    _write_images(d, ["x.png"], with_bad=False)          # the file repaired: the rerun works
    assert run(["--checkpoint", model_dir, "--input", d, "--output", tmp_path / "o"]) == 0
    assert np.load(tmp_path / "o" / "latents.npy").shape == (1, 8, 32)
    assert "//" not in capsys.readouterr().err


# ---------------------------------------------------------------------- e4e, interrupts

def test_e4e_method_end_to_end(model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out]) == 0
    assert (out / "files.txt").read_text().splitlines() == READABLE
    assert (out / "names.txt").read_text().splitlines() == NAMES
    assert (out / "skipped.txt").read_text().startswith("bad.png\t")
    inv = load_encoder(model_dir)
    x = image_io.load_images([os.path.join(images, f) for f in READABLE], inv.input_size)
    lat = np.load(out / "latents.npy")
    for i, name in enumerate(NAMES):       # batch 1, as the command: one compilation
        w, rec = inv.invert(x[i:i + 1])
        np.testing.assert_allclose(lat[i], np.asarray(w)[0], atol=1e-5)
        np.testing.assert_array_equal(np.load(out / "latents" / f"{name}.npy"), lat[i:i + 1])
        got = np.asarray(Image.open(out / "reconstructions" / f"{name}.png"))
        np.testing.assert_array_equal(got, image_io.to_uint8(np.asarray(rec)[0]))
        assert (out / "side_by_side" / f"{name}.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inverted"] == 4 and summary["skipped"] == 1 and not summary["interrupted"]
    err = capsys.readouterr().err
    assert "[2/5]" in err and "overall ETA" in err


class _Failing(invert_run.Pipeline):
    """Raises `exc` on image `at` (0-based file index)."""
    at, exc = 1, KeyboardInterrupt

    def run(self, path, k=0):
        if k == self.at:
            raise self.exc()
        return super().run(path, k)


def test_interrupt_keeps_finished_images(model_dir, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(invert_run, "Pipeline", _Failing)
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out]) == 130
    lat = np.load(out / "latents.npy")          # a valid array of the finished row
    assert lat.shape == (1, 8, 32)
    assert (out / "files.txt").read_text().splitlines() == READABLE[:1]
    assert (out / "side_by_side" / f"{NAMES[0]}.png").is_file()
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    assert "interrupted" in capsys.readouterr().err


def test_crash_on_one_image_keeps_the_others(model_dir, images, tmp_path, monkeypatch, capsys):
    class Crash(_Failing):
        exc = RuntimeError
    monkeypatch.setattr(invert_run, "Pipeline", Crash)
    out = tmp_path / "out"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out]) == 0
    assert (out / "files.txt").read_text().splitlines() == [READABLE[0]] + READABLE[2:]
    assert "a.jpg\tinversion failed: RuntimeError" in (out / "skipped.txt").read_text()
    assert np.load(out / "latents.npy").shape == (3, 8, 32)


# ---------------------------------------------------------------------- projector and PTI

@pytest.mark.slow
def test_pti_end_to_end_and_edit_with_the_tuned_generator(model_dir, lpips_dir, images,
                                                           tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out, "--method", "pti",
                "--steps", 2, "--lpips", lpips_dir, "--lpips-threshold", -1]) == 0
    inv = load_encoder(model_dir)
    lat = np.load(out / "latents.npy")
    x = image_io.load_images([os.path.join(images, f) for f in READABLE], inv.input_size)
    for i in range(len(READABLE)):                                          # e4e pivots
        np.testing.assert_allclose(lat[i], np.asarray(inv.invert(x[i:i + 1])[0])[0], atol=1e-5)
    assert sorted(os.listdir(out / "generators")) == sorted(NAMES)
    g0 = inv.generator
    for i, name in enumerate(NAMES):
        g = e4e_jax.load_generator(str(out / "generators" / name))
        assert g.config["pti"]["num_updates"] == 2
        tuned = image_io.to_uint8(np.asarray(g.synthesis(lat[i:i + 1]))[0])
        rec = np.asarray(Image.open(out / "reconstructions" / f"{name}.png"))
        np.testing.assert_array_equal(rec, tuned)
        orig = image_io.to_uint8(np.asarray(g0.synthesis(lat[i:i + 1]))[0])
        assert not np.array_equal(tuned, orig)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["images"]] == NAMES
    assert all(r["num_updates"] == 2 and r["lpips_first"] > 0 for r in summary["images"])
    # edit with the tuned generator: its inversion column is the tuned reconstruction
    e1, e2 = tmp_path / "e_tuned", tmp_path / "e_orig"
    common = ["--checkpoint", model_dir, "--latents", str(out / "latents" / "a_jpg.npy"),
              "--edit", "sefa:0", "--strengths", "2", "--min_cell", "32"]
    assert edit.main(common + ["--generator", str(out / "generators" / "a_jpg"),
                               "--out", str(e1)]) == 0
    assert edit.main(common + ["--out", str(e2)]) == 0
    assert json.loads((e1 / "edits.json").read_text())["generator"] == os.path.abspath(
        out / "generators" / "a_jpg")
    assert json.loads((e2 / "edits.json").read_text())["generator"] is None
    # a one-row codes file names its grid by its stem (edit's read_latents)
    grid_tuned = np.asarray(Image.open(e1 / "a_jpg.png"))
    assert not np.array_equal(grid_tuned, np.asarray(Image.open(e2 / "a_jpg.png")))
    bad = tiny_generator(64)
    bad_dir = e4e_jax.save_generator(bad, str(tmp_path / "g64"))
    assert edit.main(common + ["--generator", bad_dir, "--out", str(tmp_path / "e3")]) == 2
    assert "64px generator" in capsys.readouterr().err


@pytest.mark.slow
def test_projector_and_pti_with_a_projector_pivot(model_dir, lpips_dir, tmp_path):
    images = _write_images(tmp_path / "imgs", ["p.png"], with_bad=False)
    out = tmp_path / "proj"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out,
                "--method", "projector", "--steps", 2, "--lpips", lpips_dir]) == 0
    lat = np.load(out / "latents.npy")
    assert lat.shape == (1, 8, 32)
    np.testing.assert_array_equal(lat[0], np.broadcast_to(lat[0, :1], lat[0].shape))  # one w
    noises = np.load(out / "noises" / "p.npz")
    g = load_encoder(model_dir).generator
    img = g.synthesis(lat, noise=[noises[f"noise_{i}"][None, :, :, None]
                                  for i in range(len(noises.files))])
    rec = np.asarray(Image.open(out / "reconstructions" / "p.png"))
    np.testing.assert_array_equal(rec, image_io.to_uint8(np.asarray(img)[0]))
    out2 = tmp_path / "pti"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out2, "--method", "pti",
                "--pivot", "projector", "--pivot-steps", 2, "--steps", 2,
                "--lpips", lpips_dir]) == 0
    pivot = np.load(out2 / "latents.npy")
    np.testing.assert_array_equal(pivot[0], np.broadcast_to(pivot[0, :1], pivot[0].shape))
    assert os.path.isdir(out2 / "generators" / "p")


# ---------------------------------------------------------------------- interrupt and resume

# A real `invert` process whose images take SLOW_IMAGE_S longer (after each image's inversion,
# before its files are written), so a signal sent once the first row is on disk lands while
# the second image is in progress.
SLOW_IMAGE_S = 2.0
DRIVER = f"""
import sys, time
from e4e_jax.apps import invert as app
from e4e_jax.cli import invert
inverted = app.Pipeline.run
def slow(self, path, k=0):
    result = inverted(self, path, k)
    time.sleep({SLOW_IMAGE_S})
    return result
app.Pipeline.run = slow
sys.exit(invert.main(sys.argv[1:]))
"""


def _signal_after_first_image(args, signum, out, timeout=300):
    """Starts the command in a child process, sends `signum` once OUT/files.txt holds a row;
    returns (exit status, stderr)."""
    import time
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER] + [str(a) for a in args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    files_txt, t0 = os.path.join(out, "files.txt"), time.time()
    while not (os.path.exists(files_txt) and Path(files_txt).read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, "no image finished"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _outputs(out):
    """Everything of OUT a resumed run must reproduce (timings aside)."""
    summary = json.loads((out / "summary.json").read_text())
    return dict(
        latents=np.load(out / "latents.npy"),
        rows={n: np.load(out / "latents" / f"{n}.npy")
              for n in (out / "names.txt").read_text().split()},
        text={f: (out / f).read_text() for f in ("files.txt", "names.txt", "skipped.txt")},
        recon={n: np.asarray(Image.open(out / "reconstructions" / n))
               for n in sorted(os.listdir(out / "reconstructions"))},
        summary={k: summary[k] for k in ("files", "inverted", "skipped", "complete",
                                         "settings", "latents_shape")},
        images=[r["name"] for r in summary["images"]])


def _assert_same_outputs(a, b):
    np.testing.assert_array_equal(a["latents"], b["latents"])
    assert a["rows"].keys() == b["rows"].keys()
    for n in a["rows"]:
        np.testing.assert_array_equal(a["rows"][n], b["rows"][n])
    assert a["recon"].keys() == b["recon"].keys()
    for n in a["recon"]:
        np.testing.assert_array_equal(a["recon"][n], b["recon"][n])
    assert a["text"] == b["text"] and a["images"] == b["images"]
    settings_a, settings_b = dict(a["summary"]), dict(b["summary"])
    for s in (settings_a, settings_b):         # the input folders differ between the runs
        s["settings"] = {k: v for k, v in s["settings"].items() if k != "input_dir"}
    assert settings_a == settings_b


@pytest.fixture(scope="module")
def e4e_reference(model_dir, images, tmp_path_factory):
    """An uninterrupted e4e run over `images`: the outputs a resumed run must end with."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert run(["--checkpoint", model_dir, "--input", images, "--output", out]) == 0
    return _outputs(out)


@pytest.mark.parametrize("signum,code", [  # ~15 s each on 2 CPU cores: one in the fast set
    pytest.param(15, 143, id="SIGTERM"),
    pytest.param(2, 130, id="SIGINT", marks=pytest.mark.slow),
    pytest.param(9, -9, id="SIGKILL", marks=pytest.mark.slow)])
def test_signal_then_the_same_command_resumes(model_dir, images, e4e_reference, tmp_path,
                                               capsys, signum, code):
    out = tmp_path / "out"
    args = ["--checkpoint", model_dir, "--input", images, "--output", out]
    rc, err = _signal_after_first_image(args, signum, out)
    assert rc == code, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["complete"]
    if signum != 9:                    # SIGKILL: no last words, the outputs still resume
        name = {15: "SIGTERM", 2: "SIGINT"}[signum]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{name}: interrupted after 1 of 5 images (1 inverted, 0 "
                               f"skipped;"), last
        assert last.endswith("rerun the same command to resume"), last
        assert "Traceback" not in err and "//" not in err, err
        assert summary["interrupted"] and summary["inverted"] == 1
    assert np.load(out / "latents.npy").shape == (1, 8, 32)
    # another setting, or another --output's worth of inputs, is not resumed
    assert run(args + ["--precision", "highest"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "precision None there, 'highest' now" in err, err
    # the same command resumes without --overwrite and ends as the uninterrupted run
    assert run(args) == 0
    err = capsys.readouterr().err
    assert "resuming the interrupted run" in err and "1 of 5 images already done" in err, err
    assert "[1/5]" not in err and "[2/5]" in err                     # image 1 is not redone
    _assert_same_outputs(_outputs(out), e4e_reference)
    # a finished run is left as it is
    before = (out / "latents.npy").read_bytes()
    assert run(args) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out / "latents.npy").read_bytes() == before


class _SignalAt(invert_run.Pipeline):
    """Sends this process SIGTERM when image `at` starts (a real signal, through the
    command's handler)."""
    at = 1

    def run(self, path, k=0):
        if k == self.at:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        return super().run(path, k)


@pytest.mark.slow                 # ~30 s each on 2 CPU cores: three runs, each compiling
@pytest.mark.parametrize("method", ["projector", "pti"])
def test_projector_and_pti_resume_to_the_uninterrupted_outputs(model_dir, lpips_dir, tmp_path,
                                                               monkeypatch, capsys, method):
    images = _write_images(tmp_path / "imgs", ["p.png", "q.png", "r.png"], with_bad=False)
    args = ["--checkpoint", model_dir, "--input", images, "--method", method, "--steps", 2,
            "--lpips", lpips_dir] + (["--lpips-threshold", -1] if method == "pti" else [])
    assert run(args + ["--output", tmp_path / "whole"]) == 0
    with monkeypatch.context() as m:
        m.setattr(invert_run, "Pipeline", _SignalAt)
        assert run(args + ["--output", tmp_path / "out"]) == 143
    err = capsys.readouterr().err
    assert "SIGTERM: interrupted after 1 of 3 images" in err, err
    assert run(args + ["--output", tmp_path / "out"]) == 0
    assert "1 of 3 images already done" in capsys.readouterr().err
    _assert_same_outputs(_outputs(tmp_path / "out"), _outputs(tmp_path / "whole"))
    extra = "generators" if method == "pti" else "noises"
    assert sorted(os.listdir(tmp_path / "out" / extra)) == sorted(
        os.listdir(tmp_path / "whole" / extra))
