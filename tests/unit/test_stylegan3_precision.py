"""The StyleGAN3 bfloat16 policy: `dtype` applies to the layers the official num_fp16_res split
runs in fp16 (low_precision_res: how many of the top resolutions), the rest stays float32."""
import numpy as np
import pytest

from e4e_jax.models.stylegan3 import Generator
from tests.support.tiny_sg3 import tiny_sg3


def bf16_layers(res, k=None, **kw):
    g = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, low_precision_res=k, **kw)
    return [int(spec.use_fp16) for spec in g.schedule()[1]]


def test_the_official_split():
    # official use_fp16 = sampling_rate * 2 ** num_fp16_res > img_resolution (default 4)
    assert bf16_layers(1024) == [0] * 5 + [1] * 10
    assert bf16_layers(256) == [0] * 3 + [1] * 12
    assert bf16_layers(1024, k=0) == [0] * 15
    assert bf16_layers(1024, k=32) == [1] * 15
    assert bf16_layers(1024, num_fp16_res=0) == [0] * 15       # the generator's own setting
    flags = bf16_layers(1024, k=2)
    assert flags == sorted(flags) and 0 < sum(flags) < 10        # the top layers only


def test_float32_layers_are_float32_and_bf16_layers_are_not():
    g = tiny_sg3()
    ws = np.asarray(g.mapping(np.random.default_rng(0).standard_normal((2, 8)).astype(
        np.float32)))
    ref = np.asarray(g.with_policy(None, "highest").synthesis(ws))
    none = g.with_low_precision_res(0).with_policy("bfloat16", "highest")
    np.testing.assert_allclose(np.asarray(none.synthesis(ws)), ref, atol=1e-6)
    err = {}
    for k in (1, 32):
        gk = g.with_low_precision_res(k).with_policy("bfloat16", "highest")
        err[k] = float(np.abs(np.asarray(gk.synthesis(ws)) - ref).max())
    assert 0 < err[1] <= err[32]
    assert g.with_low_precision_res(None).module.low_precision_res is None
    with pytest.raises(ValueError, match=">= 0"):
        g.with_low_precision_res(-1)
