"""Encoders (e4e, pSp, single code): parity with the official outputs and the behaviours the
training and the cars model rely on (progressive stages without retracing, non-square inputs,
BatchNorm training mode)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.fixtures as fu

import e4e_jax
from e4e_jax.convert import e4e as conv
from e4e_jax.nets.encoder import Inverter, face_pool
from e4e_jax.models import encoders as E
from e4e_jax.models import irse

PARITY = {
    "e4e_encoder": ["codes_stage18", "codes_stage3", "codes_stage0", "latents", "images",
                    "images_noresize"],
    "psp_gradual_style_encoder": ["codes", "latents", "images", "images_noresize"],
    "psp_single_style_code_encoder": ["codes", "latents", "images", "images_noresize"],
}


# the e4e and pSp gradual encoders cost most; the fast subset keeps the single-code parity case
SLOW_PARITY = {"e4e_encoder", "psp_gradual_style_encoder"}


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_PARITY else name
    for name in sorted(PARITY)])
def official(request, tmp_path_factory):
    """(fixture, inverter): the official checkpoint written with torch.save, converted by the
    converter CLI, loaded with e4e_jax.load_encoder."""
    name = request.param
    fx = fu.load_fixture(name)
    d = tmp_path_factory.mktemp(name)
    src = fu.save_torch(fx.container(), str(d / "ckpt.pt"))
    assert conv.main([src, str(d / "converted")]) == 0
    inv = e4e_jax.load_encoder(str(d / "converted"))
    yield fx, inv


def test_parity_with_official(official):
    fx, inv = official
    name = fx.name
    x = fu.nchw_to_nhwc(fx.inputs["x"])
    got = {}
    if name == "e4e_encoder":
        codes = jax.jit(lambda v, x, s: inv.encoder.apply(v, x, progressive_stage=s))
        for stage in (18, 3, 0):
            got[f"codes_stage{stage}"] = codes(inv.variables, x, jnp.int32(stage))
    else:
        got["codes"] = jax.jit(inv.encoder.apply)(inv.variables, x)
    w, images = inv.invert(x)
    got["latents"] = w
    got["images"] = fu.nhwc_to_nchw(images)
    got["images_noresize"] = fu.nhwc_to_nchw(inv.generator.synthesis(w))
    assert sorted(got) == sorted(PARITY[name])
    for key in PARITY[name]:
        fu.assert_close(f"{name}/{key}", got[key], fx.expected[key], fu.suggested_atol(name, key))


def test_loaded_attributes(official):
    fx, inv = official
    assert inv.input_size == (256, 256)
    assert inv.n_latent == 10 and inv.generator.resolution == 64
    # latent_avg keeps one row per W+ layer (the fixtures use different rows)
    np.testing.assert_array_equal(inv.latent_avg, fx.extra["latent_avg"])
    if fx.name != "e4e_encoder":
        with pytest.raises(ValueError, match="Encoder4Editing only"):
            inv.encode(np.zeros((1, 256, 256, 3), np.float32), progressive_stage=3)


# ---------------------------------------------------------------- tiny models, behaviours

TINY = dict(widths=(8, 16, 16, 32), units=(1, 2, 1, 1), style_dim=32)


def tiny_generator(resolution=32, style_dim=32, channels=16, seed=0):
    """A small random LoadedGenerator drawn with numpy (init_generator compiles a threefry
    graph per parameter, which is slow on CPU and irrelevant to these tests)."""
    from e4e_jax.nets.generator import LoadedGenerator, expected_variables, module_from_config
    from e4e_jax.models.stylegan2 import official_channels
    config = dict(resolution=resolution, style_dim=style_dim, n_mlp=2, lr_mlp=0.01,
                  channels=list(official_channels(resolution, 2, channels)),
                  blur_kernel=[1, 3, 3, 1])
    module = module_from_config(config)
    gen = np.random.default_rng(seed)

    def fill(node, path):
        out = {}
        for k, leaf in node.items():
            if isinstance(leaf, dict):
                out[k] = fill(leaf, path + (k,))
                continue
            shape = tuple(leaf.shape)
            if k == "bias" and "modulation" in path:
                out[k] = np.ones(shape, np.float32)
            elif k == "bias":
                out[k] = np.zeros(shape, np.float32)
            elif k == "noise_strength":
                out[k] = np.full(shape, 0.1, np.float32)
            elif "mapping" in path:
                out[k] = (gen.standard_normal(shape) / 0.01).astype(np.float32)
            else:
                out[k] = gen.standard_normal(shape).astype(np.float32)
        return out

    variables = fill(jax.tree_util.tree_map(lambda s: s, dict(expected_variables(module))), ())
    return LoadedGenerator(module, variables, config,
                           gen.standard_normal(style_dim).astype(np.float32))


def rand_images(n, h, w, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, 3)).astype(np.float32)


def tiny_config(encoder_type="Encoder4Editing", n_styles=10, input_size=(64, 64)):
    return E.encoder_config(encoder_type, n_styles, input_size, **TINY)



def save_tiny_inverter(path, resolution=32):
    """A 32px (or `resolution` px) e4e inverter directory (tiny generator and encoder, seeded
    latent_avg): the model the command tests (invert, edit, eval) run on. Returns the
    directory."""
    from e4e_jax.nets.encoder import save_inverter
    g = tiny_generator(resolution)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(resolution, resolution))
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    la = (0.1 * np.random.default_rng(0).standard_normal((g.n_latent, 32))).astype(np.float32)
    return save_inverter(str(path), cfg, v, g, la, face_pool=resolution)

def test_progressive_stage_is_traced_not_static():
    cfg = tiny_config()
    enc = E.build_encoder(cfg)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    x = rand_images(2, 64, 64)
    traces = []

    @jax.jit
    def f(v, x, stage):
        traces.append(1)
        return enc.apply(v, x, progressive_stage=stage)

    outs = {s: np.asarray(f(v, x, jnp.int32(s))) for s in (0, 3, 7, 18, 5, 0)}
    assert len(traces) == 1, f"retraced {len(traces)} times for 5 stages"
    full = np.asarray(jax.jit(enc.apply)(v, x))
    np.testing.assert_allclose(outs[18], full, atol=1e-6)
    for s in (0, 3, 5, 7):
        o = outs[s]
        # rows 1..s carry their delta, later rows equal w (row 0)
        for i in range(1, 10):
            if i <= s:
                assert not np.allclose(o[:, i], o[:, 0])
                np.testing.assert_allclose(o[:, i], full[:, i], atol=1e-6)
            else:
                np.testing.assert_array_equal(o[:, i], o[:, 0])
    # the masked heads get exactly zero gradient, as the unevaluated heads of the official code
    grads = jax.jit(jax.grad(lambda p: jnp.sum(
        enc.apply({**v, "params": p}, x, progressive_stage=3) ** 2)))(v["params"])
    assert float(jnp.abs(grads["styles_5"]["linear"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(grads["styles_3"]["linear"]["kernel"]).max()) > 0.0


def test_official_head_depths_and_cars_input():
    """Heads built for spatial 16/32/64 (4/5/6 stride-2 convs) serve both 256x256 and the
    cars' 192x256 inputs, as in the official code."""
    for size in ((256, 256), (192, 256)):
        shapes = E.encoder_shapes(E.encoder_config("Encoder4Editing", 16, size))
        p = shapes["params"]
        for i, n in ((0, 4), (2, 4), (3, 5), (6, 5), (7, 6), (15, 6)):
            assert f"convs_{n - 1}" in p[f"styles_{i}"] and f"convs_{n}" not in p[f"styles_{i}"]
    assert len(shapes["params"]["body"]) == 24


@pytest.mark.slow
def test_non_square_cars_inputs_and_crop():
    """A 512-style cars setup in miniature: non-square encoder input, face_pool then the
    official row crop 32:224 of the 256x256 pooled output."""
    g = tiny_generator(32)
    cfg = tiny_config(n_styles=g.n_latent, input_size=(48, 64))
    v = E.init_encoder(jax.random.PRNGKey(1), cfg)
    latent_avg = np.random.default_rng(3).standard_normal((g.n_latent, 32)).astype(np.float32)
    inv = Inverter(cfg, v, g, latent_avg=latent_avg, crop_rows=(32, 224))
    x = rand_images(3, 48, 64)
    w, rec = inv.invert(x)
    assert w.shape == (3, 8, 32) and rec.shape == (3, 192, 256, 3)
    np.testing.assert_allclose(np.asarray(inv.encode(x)), np.asarray(w), atol=1e-6)
    w0 = np.asarray(inv.encode(x, progressive_stage=0))
    np.testing.assert_allclose(w0 - inv.latent_avg, (w0 - inv.latent_avg)[:, :1].repeat(8, 1),
                               atol=1e-6)
    # one program for invert, one for encode: the stage is an argument, not a constant
    assert inv.runtime.compilations == 2
    # one image at a time inside the jit (the CPU default) or batched: the same results
    batched = Inverter(cfg, v, g, latent_avg=latent_avg, crop_rows=(32, 224), scan_batch=False)
    assert inv.scan_batch and not batched.scan_batch
    w_b, rec_b = batched.invert(x)
    np.testing.assert_allclose(np.asarray(w_b), np.asarray(w), atol=1e-5)
    np.testing.assert_allclose(np.asarray(rec_b), np.asarray(rec), atol=1e-4)
    raw = g.synthesis(w)
    np.testing.assert_allclose(np.asarray(rec), np.asarray(face_pool(raw, 256))[:, 32:224],
                               atol=1e-4)
    with pytest.raises(ValueError, match=r"\(N, 48, 64, 3\)"):
        inv.encode(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="float32"):
        inv.encode(np.zeros((1, 48, 64, 3), np.uint8))


@pytest.mark.parametrize("encoder_type", E.ENCODER_TYPES)
def test_tiny_encoders_batch_independence_and_train_mode(encoder_type):
    """Small widths work for every encoder; eval mode treats samples independently (padding a
    batch changes nothing); train mode uses batch statistics and updates the running averages."""
    cfg = tiny_config(encoder_type, n_styles=8, input_size=(32, 32))
    enc = E.build_encoder(cfg)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    x = rand_images(4, 32, 32)
    apply = jax.jit(enc.apply)
    full = apply(v, x)
    assert full.shape == (4, 8, 32)
    np.testing.assert_allclose(np.asarray(apply(v, x[:1])), np.asarray(full[:1]), atol=1e-5)
    if encoder_type == "SingleStyleCodeEncoder":
        np.testing.assert_array_equal(np.asarray(full[:, 3]), np.asarray(full[:, 0]))
    if encoder_type != "Encoder4Editing":
        return
    y, upd = jax.jit(lambda v, x: enc.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
    assert not np.allclose(np.asarray(y), np.asarray(full))
    before = v["batch_stats"]["input_layer"]["bn"]["mean"]
    after = upd["batch_stats"]["input_layer"]["bn"]["mean"]
    assert not np.allclose(np.asarray(before), np.asarray(after))
    assert jax.tree_util.tree_structure(upd["batch_stats"]) == \
        jax.tree_util.tree_structure(v["batch_stats"])


def test_batchnorm_matches_torch_training_mode():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 5, 6, 7)) * 2 + 0.5).astype(np.float32)      # NHWC
    scale = rng.uniform(0.5, 1.5, 7).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, 7).astype(np.float32)
    mean0 = rng.uniform(-0.1, 0.1, 7).astype(np.float32)
    var0 = rng.uniform(0.8, 1.2, 7).astype(np.float32)
    tbn = torch.nn.BatchNorm2d(7)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(scale))
        tbn.bias.copy_(torch.from_numpy(bias))
        tbn.running_mean.copy_(torch.from_numpy(mean0))
        tbn.running_var.copy_(torch.from_numpy(var0))
    tbn.train()
    want = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    v = {"params": {"scale": scale, "bias": bias}, "batch_stats": {"mean": mean0, "var": var0}}
    got, upd = irse.BatchNorm().apply(v, x, train=True, mutable=["batch_stats"])
    fu.assert_close("bn train output", got, want, 2e-6)
    fu.assert_close("bn running_mean", upd["batch_stats"]["mean"], tbn.running_mean.numpy(), 1e-7)
    fu.assert_close("bn running_var", upd["batch_stats"]["var"], tbn.running_var.numpy(), 1e-6)
    tbn.eval()
    want = tbn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    got = irse.BatchNorm().apply({"params": v["params"], "batch_stats": upd["batch_stats"]}, x)
    fu.assert_close("bn eval output", got, want, 2e-6)


@pytest.mark.parametrize("num_layers,mode", [(50, "ir"), (100, "ir_se"), (152, "ir")])
def test_backbone_depths_and_modes(num_layers, mode):
    body = irse.IRBody(num_layers, mode)
    shapes = jax.eval_shape(body.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 112, 112, 64), jnp.float32))
    blocks = shapes["params"]
    assert len(blocks) == sum(irse.official_units(num_layers))
    assert ("se" in blocks["block_0"]) == (mode == "ir_se")
    # shortcut convs only where the width changes (the first unit of stages 2, 3, 4 and of
    # stage 1 never: 64 -> 64 uses the strided max-pool shortcut)
    ends = body.stage_ends
    with_conv = sorted(int(k.split("_")[1]) for k, b in blocks.items() if "shortcut_conv" in b)
    assert with_conv == [ends[0] + 1, ends[1] + 1, ends[2] + 1]
    out = jax.eval_shape(lambda v, x: body.apply(v, x, capture=(ends[1],)), shapes,
                         jax.ShapeDtypeStruct((2, 112, 112, 64), jnp.float32))
    assert out[0].shape == (2, 7, 7, 512) and out[1][0].shape == (2, 28, 28, 128)
