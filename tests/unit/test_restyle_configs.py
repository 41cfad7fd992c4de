"""configs/restyle_*.py: restyle-encoder's official ReStyle training settings (5e80276, README
training commands and "Additional Notes") over each domain config; each builds (config checks and
the encoder config validate; nothing is trained or loaded)."""
import importlib.util
import os

import pytest

from e4e_jax.models.encoders import encoder_config
from e4e_jax.train import checks

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
DOMAINS = {"ffhq": ("arcface", (256, 256)), "cars": ("moco", (192, 256)),
           "church": ("moco", (256, 256)), "horse": ("moco", (256, 256))}


def load(domain, arg=None):
    path = os.path.join(CONFIGS, f"restyle_{domain}_encode.py")
    spec = importlib.util.spec_from_file_location(f"_restyle_{domain}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("kind", ["e4e", "psp"])
@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_config_builds_with_official_settings(domain, kind):
    c = load(domain, kind)
    id_kind, input_size = DOMAINS[domain]
    faces = id_kind == "arcface"
    want = ("" if faces else "ResNet") + ("ProgressiveBackboneEncoder" if kind == "e4e"
                                          else "BackboneEncoder")
    assert c.encoder.type == want and c.encoder.n_iters_per_batch == 5
    assert c.dataset_type == f"{domain}_encode" and tuple(c.data.input_size) == input_size
    assert c.loss_nets.id_kind == id_kind and c.losses.id == (0.1 if faces else 0.5)
    assert (c.losses.l2, c.losses.lpips, c.batch_size, c.optimizer.lr) == (1.0, 0.8, 8, 1e-4)
    assert c.start_from_latent_avg
    if kind == "e4e":
        assert (c.losses.d_reg, c.losses.adv, c.progressive.start, c.progressive.every) == \
            (2e-4, 0.1, 20000, 2000)
    else:
        assert (c.losses.d_reg, c.losses.adv, c.progressive.start) == (0.0, 0.0, None)
    assert c.encoder.init == ("arcface" if faces else "random")
    checks.check_counts(c)
    checks.check_conflicts(c)
    cfg = encoder_config(c.encoder.type, 18, tuple(c.data.input_size), c.encoder.num_layers,
                         c.encoder.mode)
    assert cfg["input_nc"] == 6 and cfg["mode"] == ("ir_se" if faces else "resnet34")


def test_default_kind_iterations_and_runlocal():
    c = load("church", "n=3,runlocal")
    assert c.encoder.type == "ResNetProgressiveBackboneEncoder"
    assert c.encoder.n_iters_per_batch == 3 and c.max_steps == 10 and c.progressive.start == 2


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match="unknown config argument"):
        load("ffhq", "pSp")
