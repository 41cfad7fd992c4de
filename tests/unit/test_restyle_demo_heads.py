"""configs/demo_restyle.py's encoder at initialisation: its codes depend on the input about as
much as configs/demo.py's e4e encoder's do. With the official 4 head convs whatever the input
size, the 2x2 map of a 32 px input (4x4 at 64 px) went through three (two) 3x3 stride-2 convs on
a 1x1 map (one tap of nine), and the codes' spread across a batch came out ~300x (~50x) under
e4e's (8e-5 vs 0.027 at 32 px), which left the demo's ReStyle behind e4e after 1,000 steps
(docs/training.md, ReStyle); the heads now have the convs that bring their map to 1x1."""
import importlib.util
import os

import jax
import numpy as np

from e4e_jax.models.encoders import build_encoder, encoder_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
N_LATENT = 8     # the demo generator's W+ rows (32 px)


def load(name):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", os.path.join(CONFIGS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def spread_at_init(c, channels):
    e = c.encoder
    cfg = encoder_config(e.type, N_LATENT, tuple(c.data.input_size), widths=tuple(e.widths),
                         units=tuple(e.units), style_dim=32, head_width=e.head_width)
    module = build_encoder(cfg)
    x = jax.random.normal(jax.random.PRNGKey(1), (8,) + tuple(c.data.input_size) + (channels,))
    codes = module.apply(module.init(jax.random.PRNGKey(0), x), x)
    return float(np.asarray(codes).std(axis=0).mean())


def test_demo_restyle_codes_follow_the_input_like_the_e4e_demo():
    e4e = spread_at_init(load("demo.py"), 3)
    restyle = spread_at_init(load("demo_restyle.py"), 6)
    assert restyle > 0.3 * e4e, (restyle, e4e)
