"""eval of a ReStyle model: distortion per iteration (e4e_jax/apps/evaluate_restyle.py) equals
the metric computed directly on e4e_jax.restyle.invert's every iteration, and the entry's
mse / lpips are the last iteration's."""
import jax
import numpy as np
import pytest

from e4e_jax import evaluation as ev
from e4e_jax.apps import evaluate as ev_app
from e4e_jax.inversion import restyle
from e4e_jax.models import encoders as E
from e4e_jax.models.lpips import LPIPS
from e4e_jax.nets.encoder import Inverter
from e4e_jax.nets.model_dir import save_model_dir
from tests.cli.test_eval import random_variables
from tests.parity.test_encoders import tiny_generator
from tests.parity.test_restyle import LOOP_TINY


@pytest.fixture(scope="module")
def model():
    g = tiny_generator(32)
    cfg = E.encoder_config("ProgressiveBackboneEncoder", g.n_latent, (32, 32), **LOOP_TINY)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    for name, node in v["params"].items():
        if name.startswith("styles_"):     # small residuals keep the tiny loop bounded
            node["linear"]["kernel"] = node["linear"]["kernel"] * 0.1
    la = (0.5 * np.random.default_rng(0).standard_normal((g.n_latent, 32))).astype(np.float32)
    return Inverter(cfg, v, g, latent_avg=la, face_pool_size=32)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    lpips_dir = save_model_dir(str(d / "lpips_alex"), "lpips", {"net": "alex"},
                               random_variables(LPIPS("alex"), [(1, 64, 64, 3)] * 2))
    return ev.load_networks(lpips=lpips_dir)


@pytest.mark.slow   # compiles the 5-iteration loop and LPIPS (~2 min on a shared CPU)
def test_per_iteration_distortion(model, nets):
    data = ev_app.open_data("synthetic", num_images=5, seed=3)
    opts = ev.EvalOptions(batch_size=4, seed=3, edits=None, lec_edit=None,
                          deviation_samples=0)
    entry = ev_app.evaluate_checkpoint(model, data, nets, opts, name="restyle")
    per = entry["per_iteration"]
    n_iter = restyle.DEFAULT_ITERATIONS
    assert per["iterations"] == n_iter and len(per["mse"]) == n_iter
    x = np.concatenate([b.images[:b.valid] for b in data.batches(model, 4)])
    _, recs = restyle.invert(model, x, iterations=n_iter)
    xc, rc = np.clip(x, -1, 1), np.clip(np.asarray(recs), -1, 1)
    want = [float(np.mean((r - xc) ** 2)) for r in rc]
    np.testing.assert_allclose(per["mse"], want, rtol=1e-4)
    assert entry["mse"] == pytest.approx(want[-1], rel=1e-4)
    lp = [float(np.mean(np.asarray(nets.lpips(xc, r)))) for r in rc]
    np.testing.assert_allclose(per["lpips"], lp, rtol=1e-4, atol=1e-6)
    assert entry["lpips"] == pytest.approx(lp[-1], rel=1e-4)
    assert len(set(np.round(want, 7))) > 1           # the iterations differ
    assert entry["lec"] is None and "ReStyle" in entry["lec_reason"]
    assert entry["latent_variation"] is not None


def test_edits_are_refused_for_restyle(model, nets):
    data = ev_app.open_data("synthetic", num_images=2, seed=3)
    opts = ev.EvalOptions(batch_size=2, edits=["sefa:0"], lec_edit=None, deviation_samples=0)
    with pytest.raises(ev.EvalError, match="--edits is not evaluated for ReStyle"):
        ev_app.evaluate_checkpoint(model, data, nets, opts, name="restyle")
