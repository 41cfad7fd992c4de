"""StyleGAN2 generator: parity with the official outputs and the behaviour of the public API."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.fixtures as fu
from tests.support.synth_weights import uniform

import e4e_jax
from e4e_jax.convert import stylegan2 as conv

FIX = "stylegan2_generator"


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture(FIX)


@pytest.fixture(scope="module")
def g(fixture, tmp_path_factory):
    """The official checkpoint written with torch.save, converted by the CLI, loaded back."""
    d = tmp_path_factory.mktemp("g")
    src = fu.save_torch(fixture.container(), str(d / "stylegan2.pt"))
    assert conv.main([src, str(d / "converted")]) == 0
    return e4e_jax.load_generator(str(d / "converted"))


def nchw(x):
    return fu.nhwc_to_nchw(np.asarray(x))


def check(name, got, fixture):
    fu.assert_close(name, got, fixture.expected[name], fu.suggested_atol(FIX, name))


def test_attributes(g, fixture):
    assert (g.resolution, g.n_latent, g.num_layers, g.style_dim) == (64, 10, 9, 512)
    np.testing.assert_array_equal(g.latent_avg, fixture.extra["latent_avg"])


def test_mapping(g, fixture):
    check("w", g.mapping(fixture.inputs["z"]), fixture)


def test_z_path_images_and_latents(g, fixture):
    w = g.mapping(fixture.inputs["z"])
    check("latent_z", g.broadcast(w), fixture)
    check("img_z", nchw(g.synthesis(g.broadcast(w), noise="const")), fixture)
    # the one-call form: z -> mapping -> synthesis
    check("img_z", nchw(g(fixture.inputs["z"])), fixture)


def test_truncation(g, fixture):
    img = g(fixture.inputs["z"], truncation=float(fixture.inputs["truncation"]),
            truncation_latent=fixture.inputs["truncation_latent"])
    check("img_trunc", nchw(img), fixture)


def test_wplus_input(g, fixture):
    check("img_wplus", nchw(g.synthesis(fixture.inputs["wplus"])), fixture)


def test_style_mixing(g, fixture):
    w1, w2 = g.mapping(fixture.inputs["z"]), g.mapping(fixture.inputs["z2"])
    w_plus = g.style_mix(w1, w2, int(fixture.inputs["inject_index"]))
    check("latent_mix", w_plus, fixture)
    check("img_mix", nchw(g.synthesis(w_plus)), fixture)


def test_explicit_noise(g, fixture):
    noises = [fu.nchw_to_nhwc(fixture.inputs[f"noise_{i:02d}"]) for i in range(g.num_layers)]
    w_plus = g.broadcast(g.mapping(fixture.inputs["z"]))
    check("img_noise", nchw(g.synthesis(w_plus, noise=noises)), fixture)


def gaussian(key, shape, seed):
    """The fixtures' Box-Muller draw (tests/fixtures/README.md)."""
    u1, u2 = uniform(key + "/u1", shape, seed), uniform(key + "/u2", shape, seed)
    r = np.sqrt(-2.0 * np.log(1.0 - (u1 + 1.0) / 2.0))
    return (r * np.cos(np.pi * (u2 + 1.0))).astype(np.float32)


def test_truncation_latent_from_4096_samples(g, fixture):
    """The stored truncation latent is the official mean of 4096 mapped z: a large-batch check."""
    zb = gaussian("truncation_z", (4096, 512), fixture.manifest["seed"])
    mean = np.asarray(g.mapping(zb)).mean(0, keepdims=True)
    fu.assert_close("truncation_latent", mean, fixture.inputs["truncation_latent"], 2e-5)


@pytest.mark.slow
def test_noise_modes(g):
    w_plus = g.broadcast(g.mapping(np.random.RandomState(0).randn(2, 512)))
    a = np.asarray(g.synthesis(w_plus, noise="random", rng=jax.random.key(1)))
    b = np.asarray(g.synthesis(w_plus, noise="random", rng=jax.random.key(1)))
    c = np.asarray(g.synthesis(w_plus, noise="random", rng=jax.random.key(2)))
    np.testing.assert_array_equal(a, b)  # deterministic given the key
    assert np.abs(a - c).max() > 1e-3
    # 'none' is the same as explicit all-zero noise
    zeros = [np.zeros((1, r, r, 1), np.float32) for r in (4, 8, 8, 16, 16, 32, 32, 64, 64)]
    none = np.asarray(g.synthesis(w_plus, noise="none"))
    np.testing.assert_allclose(none, np.asarray(g.synthesis(w_plus, noise=zeros)), atol=2e-5)
    # random noise differs per sample: the same code twice in a batch gives different images
    same = jnp.concatenate([w_plus[:1], w_plus[:1]])
    d = np.asarray(g.synthesis(same, noise="random", rng=jax.random.key(3)))
    assert np.abs(d[0] - d[1]).max() > 1e-3


@pytest.mark.slow
def test_random_noise_differs_per_layer():
    """Each layer draws its own map: the draws of two layers at the same resolution differ."""
    from e4e_jax.models.stylegan2 import Generator
    small = e4e_jax.init_generator(jax.random.key(0), 16, max_channels=8, n_mlp=1)
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name in ("convs_0", "convs_1"):
            captured[context.module.name] = args[2]
        return next_fun(*args, **kwargs)

    w_plus = jnp.zeros((1, small.n_latent, 512))
    with jax.disable_jit():
        import flax.linen as nn
        with nn.intercept_methods(interceptor):
            small.module.apply(small.variables, w_plus, "random", rngs={"noise": jax.random.key(0)})
    assert captured["convs_0"].shape == captured["convs_1"].shape == (1, 8, 8, 1)
    assert np.abs(np.asarray(captured["convs_0"] - captured["convs_1"])).max() > 1e-3
    assert isinstance(small.module, Generator)


def test_bad_inputs(g):
    with pytest.raises(ValueError, match=r"\(N, 10, 512\)"):
        g.synthesis(np.zeros((2, 18, 512), np.float32))
    with pytest.raises(ValueError, match="needs an rng"):
        g.synthesis(np.zeros((1, 10, 512), np.float32), noise="random")
    with pytest.raises(ValueError, match="9 arrays"):
        g.synthesis(np.zeros((1, 10, 512), np.float32), noise=[np.zeros((1, 4, 4, 1))])
    bad = [np.zeros((1, 4, 4, 1), np.float32)] * 9
    with pytest.raises(ValueError, match=r"noise\[1\]"):
        g.synthesis(np.zeros((1, 10, 512), np.float32), noise=bad)
    with pytest.raises(ValueError, match="noise_mode|noise must be"):
        g.synthesis(np.zeros((1, 10, 512), np.float32), noise="gaussian")
    with pytest.raises(ValueError, match=r"\(N, 512\)"):
        g.mapping(np.zeros((2, 256), np.float32))
    with pytest.raises(ValueError, match="inject_index"):
        g.style_mix(np.zeros((1, 512)), np.zeros((1, 512)), 10)


def test_jit_compiles_once_per_shape(g):
    """New codes, and another generator of the same shape (weights are program arguments, and a
    config change is metadata), reuse the compiled synthesis."""
    from e4e_jax.evaluation.monitoring import CompileCounter
    w_plus = np.zeros((2, 10, 512), np.float32)
    g.synthesis(w_plus)
    other = g.replace(variables=jax.tree_util.tree_map(np.asarray, g.variables),
                      config={**g.config, "source": "another file"})
    with CompileCounter() as counter:
        for s in range(3):
            g.synthesis(w_plus + s)
        other.synthesis(w_plus)
    assert counter.count == 0


def test_official_channel_table():
    from e4e_jax.models.stylegan2 import official_channels
    assert official_channels(1024, 2) == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    assert official_channels(256, 1) == (512, 512, 512, 512, 256, 128, 64)
    assert official_channels(64, 2, max_channels=32) == (32,) * 5
    with pytest.raises(ValueError, match="power of two"):
        official_channels(100)


@pytest.mark.slow
def test_init_save_load_roundtrip(tmp_path):
    small = e4e_jax.init_generator(jax.random.key(0), 32, max_channels=16, n_mlp=2)
    assert small.latent_avg.shape == (512,)
    w_plus = small.broadcast(small.mapping(np.random.RandomState(1).randn(2, 512)))
    img = np.asarray(small.synthesis(w_plus))
    assert img.shape == (2, 32, 32, 3) and np.isfinite(img).all() and img.std() > 0
    e4e_jax.save_generator(small, str(tmp_path / "tiny"))
    back = e4e_jax.load_generator(str(tmp_path / "tiny"))
    np.testing.assert_array_equal(np.asarray(back.synthesis(w_plus)), img)
    np.testing.assert_array_equal(back.latent_avg, small.latent_avg)


@pytest.mark.slow
def test_gradient_through_synthesis_is_finite():
    small = e4e_jax.init_generator(jax.random.key(0), 16, max_channels=8, n_mlp=1,
                                   with_latent_avg=False)
    w_plus = jnp.ones((2, small.n_latent, 512)) * 0.1

    def f(w):
        return jnp.mean(small.synthesize(small.variables, w, "random", jax.random.key(0)) ** 2)

    grad = jax.grad(f)(w_plus)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


def test_load_errors(tmp_path):
    from e4e_jax.nets.model_dir import ModelDirError
    with pytest.raises(ModelDirError, match="not a directory"):
        e4e_jax.load_generator(str(tmp_path / "missing"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ModelDirError, match="config.json"):
        e4e_jax.load_generator(str(tmp_path / "empty"))

