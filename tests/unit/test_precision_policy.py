"""The StyleGAN2 dtype policy `low_precision_res` (e4e_jax.core.precision): the default puts
exactly the layers StyleGAN2-ADA's num_fp16_res=4 runs in fp16 in bfloat16 (the dtypes of the
layers' outputs, captured), float32 is untouched by the knob, fewer bfloat16 resolutions stay closer to
float32, the Inverter's dtype path keeps the split, and a bad value
is refused with one line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.core.precision import (DEFAULT_LOW_PRECISION_RES, Policy, check_low_precision_res,
                                    low_precision_from)
from e4e_jax.models.encoders import encoder_config, init_encoder
from e4e_jax.nets.encoder import Inverter
from e4e_jax.nets.generator import init_generator


def official_fp16_resolution(img_resolution, num_fp16_res):
    """StyleGAN2-ADA training/networks.py SynthesisNetwork, written out independently."""
    log2 = int(np.log2(img_resolution))
    return max(2 ** (log2 + 1 - num_fp16_res), 8)


@pytest.fixture(scope="module")
def gen128():
    return init_generator(jax.random.key(0), 128, max_channels=8, n_mlp=2, style_dim=32,
                          with_latent_avg=False)


def w_plus(g, n=2, seed=1):
    z = jax.random.normal(jax.random.key(seed), (n, g.style_dim))
    return g.broadcast(g.mapping(z))


def conv_output_dtypes(g, wp):
    """resolution -> set of the output dtype names of its StyledConv layers (captured)."""
    _, state = g.module.apply(g.variables, wp, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    out = {4: {inter["conv1"]["__call__"][0].dtype.name}}
    for j in range((len(g.module.channels) - 1) * 2):
        res = 2 ** (j // 2 + 3)
        out.setdefault(res, set()).add(inter[f"convs_{j}"]["__call__"][0].dtype.name)
    return out


def psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(4.0 / mse)


@pytest.mark.parametrize("resolution", [32, 64, 256, 1024])
@pytest.mark.parametrize("k", [0, 1, 2, 4, 7, 32])
def test_low_precision_from_is_the_official_fp16_resolution(resolution, k):
    assert low_precision_from(resolution, k) == (official_fp16_resolution(resolution, k)
                                                 if k else 2 * resolution)
    assert low_precision_from(resolution, None) == low_precision_from(resolution, 4)
    assert DEFAULT_LOW_PRECISION_RES == 4


def test_default_split_runs_exactly_the_official_layers_in_bfloat16(gen128):
    wp = w_plus(gen128)
    # 128 px, num_fp16_res 4: fp16_resolution 16 -> 16, 32, 64, 128 reduced; 4 and 8 float32
    got = conv_output_dtypes(gen128.with_policy("bfloat16"), wp)
    assert got == {4: {"float32"}, 8: {"float32"}, 16: {"bfloat16"},
                   32: {"bfloat16"}, 64: {"bfloat16"}, 128: {"bfloat16"}}
    two = conv_output_dtypes(gen128.with_low_precision_res(2).with_policy("bfloat16"), wp)
    assert [r for r, d in two.items() if d == {"bfloat16"}] == [64, 128]
    every = conv_output_dtypes(gen128.with_policy("bfloat16").with_low_precision_res(32), wp)
    assert [r for r, d in every.items() if d == {"bfloat16"}] == [8, 16, 32, 64, 128]
    # the mapping network, the styles and the output stay float32
    g16 = gen128.with_policy("bfloat16").with_low_precision_res(32)
    assert g16.mapping(jnp.zeros((1, 32))).dtype == jnp.float32
    assert g16.synthesis(wp).dtype == jnp.float32


def test_float32_is_bit_identical_whatever_low_precision_res(gen128):
    wp = w_plus(gen128)
    ref = np.asarray(gen128.synthesis(wp))
    for k in (None, 0, 2, 32):
        for g in (gen128.with_low_precision_res(k),
                  gen128.with_low_precision_res(k).with_policy("float32")):
            assert conv_output_dtypes(g, wp)[128] == {"float32"}
            np.testing.assert_array_equal(np.asarray(g.synthesis(wp)), ref)
    # bfloat16 with no reduced layer is the float32 program too
    np.testing.assert_array_equal(
        np.asarray(gen128.with_policy("bfloat16").with_low_precision_res(0).synthesis(wp)), ref)


@pytest.mark.slow
def test_fewer_bfloat16_resolutions_stay_closer_to_float32():
    # on a 64 px generator the default (num_fp16_res 4) already covers 8-64, every resolution
    # the official code may reduce; the property is the ordering over k (fixed seed, batch 4):
    # the more top resolutions in bfloat16, the further from float32
    g = init_generator(jax.random.key(3), 64, max_channels=16, n_mlp=2, style_dim=32,
                       with_latent_avg=False)
    wp = w_plus(g, n=4)
    ref = g.with_policy(None, "highest").synthesis(wp)
    scores = {k: psnr(g.with_low_precision_res(k).with_policy("bfloat16", "highest")
                      .synthesis(wp), ref) for k in (1, 2, 32)}
    print({str(k): round(v, 2) for k, v in scores.items()})
    assert scores[1] > scores[2] > scores[32] > 25


def test_inverter_dtype_path_uses_the_default_split_and_takes_the_knob():
    gen = init_generator(jax.random.key(0), 32, max_channels=8, n_mlp=1, style_dim=32,
                         with_latent_avg=False)
    cfg = encoder_config("Encoder4Editing", gen.n_latent, (32, 32), widths=(4, 8, 8, 16),
                         units=(1, 1, 1, 1), head_width=16, style_dim=32)
    la = np.full((gen.n_latent, 32), 0.1, np.float32)
    inv = Inverter(cfg, init_encoder(jax.random.key(1), cfg), gen, la, face_pool_size=8,
                   dtype="bfloat16")
    assert inv.generator.module.low_precision_res is None
    assert inv.generator.module.layer_dtypes() == {4: None, 8: jnp.bfloat16, 16: jnp.bfloat16,
                                                  32: jnp.bfloat16}
    inv1 = inv.with_low_precision_res(1)
    assert inv1.generator.module.layer_dtypes()[16] is None
    # the knob survives a policy change and a generator swap (e.g. a PTI-tuned one)
    assert inv1.with_policy("bfloat16", "highest").generator.module.low_precision_res == 1
    assert inv1.with_generator(inv1.generator).generator.module.low_precision_res == 1
    _, img = inv1.invert(jax.random.uniform(jax.random.key(2), (1, 32, 32, 3), minval=-1))
    assert img.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(img)))


@pytest.mark.parametrize("bad", [-1, 2.5, "4", True])
def test_low_precision_res_outside_its_range_is_refused(gen128, bad):
    for call in (lambda: gen128.with_low_precision_res(bad),
                 lambda: Policy(dtype="bfloat16", low_precision_res=bad),
                 lambda: check_low_precision_res(bad)):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert "low_precision_res" in msg and "\n" not in msg and repr(bad) in msg
    assert check_low_precision_res(np.int64(3)) == 3
    assert Policy(low_precision_res=0).low_precision_res == 0
