"""notebooks/inference_playground.ipynb runs headless (nbclient) on a tiny e4e model with the demo's
layout (random weights: the test checks that every step runs and shows its pictures, not their
quality), so the notebook cannot rot."""
import os
import re

import jax
import numpy as np
import pytest

from e4e_jax.nets.encoder import save_inverter
from e4e_jax.models import encoders as E
from tests.parity.test_encoders import tiny_generator

nbformat = pytest.importorskip("nbformat", reason="the [test] extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the [test] extra installs nbclient")

from tests.support.paths import REPO  # noqa: E402
NOTEBOOK = os.path.join(REPO, "notebooks", "inference_playground.ipynb")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # style dim 512 like the demo, so the official InterFaceGAN directions fit
    g = tiny_generator(32, style_dim=512, channels=16)
    cfg = E.encoder_config("Encoder4Editing", g.n_latent, (32, 32), widths=(8, 16, 16, 32),
                           units=(1, 1, 1, 1), style_dim=512, head_width=32)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    la = (0.1 * np.random.default_rng(0).standard_normal((g.n_latent, 512))).astype(np.float32)
    return save_inverter(str(tmp_path_factory.mktemp("model") / "export"), cfg, v, g, la,
                         face_pool=32)


@pytest.fixture(scope="module")
def tiny_restyle_model(tmp_path_factory):
    from tests.parity.test_restyle import tiny_model
    m = tiny_model()
    return save_inverter(str(tmp_path_factory.mktemp("restyle") / "export"), m.encoder_config,
                         m.variables, m.generator, m.latent_avg, face_pool=16)


def _run(model_dir, cwd, **params):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    cells[0].source += f"\nMODEL_DIR = {model_dir!r}\n"
    cells[0].source += "".join(f"{k} = {v!r}\n" for k, v in params.items())
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + env_path if env_path else "")
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": cwd}})
        client.execute()
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            os.environ.pop("PYTHONPATH", None)
    return nb


def _outputs(nb):
    images, text = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            images += "image/png" in out.get("data", {})
            text.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return images, "\n".join(text)


@pytest.mark.slow
def test_notebook_runs_headless_on_a_demo_sized_model(tiny_model, tiny_restyle_model):
    # started from notebooks/, as `jupyter notebook` in that folder would: the first cell moves
    # to the repository root so the README's relative paths work
    nb = _run(tiny_model, os.path.join(REPO, "notebooks"), RESTYLE_MODEL_DIR=tiny_restyle_model,
              RESTYLE_ITERATIONS=3)
    images, text = _outputs(nb)
    assert f"working directory: {REPO}" in text
    assert "W+ (1, 8, 512)" in text
    # photo | aligned, two inversions, 2 InterFaceGAN rows, 1 GANSpace row, 3 SeFa rows, and
    # ReStyle's input | iteration 1..3 row
    assert images == 10, (images, text)
    assert "ReStyle: W+ per iteration (3, 1, 6, 32), reconstructions (3, 1, 16, 16, 3)" in text
    # the 512-d W directions fit any 512-d model; the 18-row W+ one is refused with the reason
    for name in ("age", "smile"):
        assert f"{name}: skipped" not in text, text
    assert "pose: skipped (the W+ direction has 18 rows but the codes have 8" in text, text


@pytest.mark.slow
def test_notebook_pointed_at_a_training_workdir_names_its_export(tiny_model):
    """MODEL_DIR = a training workdir (it holds export/): the notebook stops with the commands'
    hint to pass WORKDIR/export, not with "train the demo first"."""
    workdir = os.path.dirname(tiny_model)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
        _run(workdir, REPO)
    # the message repeats the cell's source; the raised error is its last "ModelDirError:" line
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err.value))     # the kernel colours tracebacks
    raised = [line for line in plain.splitlines() if line.startswith("ModelDirError:")]
    assert raised and repr(tiny_model) in raised[-1], plain[-2000:]
    assert "Train the demo first" not in raised[-1]
