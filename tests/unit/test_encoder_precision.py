"""The encoders' bfloat16 policy (models/encoders.py, DEFAULT_FLOAT32_STAGES): with dtype bfloat16
the input layer and the IR body's third stage compute in float32, the other stages, the FPN lateral
layers and the style heads' convolutions in bfloat16; BatchNorm outputs, SE gates, the residual sum,
the heads' final linear layers and the W+ output stay float32. float32 ignores the knob."""
import os

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.models.encoders import (DEFAULT_FLOAT32_STAGES, build_encoder, encoder_config,
                                     init_encoder)

# widths chosen distinct so a convolution's output width names its place: 4 input layer and
# stage 0, 6 stage 1, 8 stage 2, 10 stage 3 and the lateral layers, 12 the heads' convs
CFG = encoder_config("Encoder4Editing", 6, (32, 32), widths=(4, 6, 8, 10), units=(1, 1, 2, 1),
                     style_dim=16, head_width=12)
X = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)


def ops(fn, *args):
    """[(primitive, lhs dtype, rhs shape)] of every conv_general_dilated / dot_general."""
    out = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
                lhs, rhs = (v.aval for v in eqn.invars[:2])
                out.append((eqn.primitive.name, str(lhs.dtype), tuple(rhs.shape)))
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                    if isinstance(sub, jex.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jex.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def encoder_ops(dtype=None, **fields):
    m = build_encoder(CFG, dtype=dtype).clone(**fields)
    v = init_encoder(jax.random.key(0), CFG)
    return ops(lambda v, x: m.apply(v, x), v, X), jax.eval_shape(m.apply, v, X)


def test_default_bfloat16_split_keeps_the_sensitive_parts_float32():
    assert DEFAULT_FLOAT32_STAGES == (2,)
    found, out = encoder_ops("bfloat16")
    assert out.dtype == jnp.float32 and out.shape == (2, 6, 16)
    convs = [(dt, k) for p, dt, k in found if p == "conv_general_dilated"]
    dots = [(dt, k) for p, dt, k in found if p == "dot_general"]
    stage2 = [dt for dt, k in convs if k[-1] == 8]
    assert stage2 and set(stage2) == {"float32"}                  # 3 convs + shortcut of stage 2
    stem = [dt for dt, k in convs if k == (3, 3, 3, 4)]
    assert stem == ["float32"]
    rest = [dt for dt, k in convs if k[-1] != 8 and k != (3, 3, 3, 4)]
    assert rest and set(rest) == {"bfloat16"}                     # stages 0, 1, 3, FPN, heads
    heads_linear = [dt for dt, k in dots if k == (12, 16)]
    assert heads_linear == ["float32"] * 6                        # one final linear per W+ row
    assert {dt for dt, _ in dots} == {"float32"}                  # and the SE gates


def test_split_is_a_knob_and_float32_ignores_it():
    found, _ = encoder_ops("bfloat16", float32_stages=())
    f32 = [k for p, dt, k in found if p == "conv_general_dilated" and dt == "float32"]
    assert f32 == [(3, 3, 3, 4)]                                  # only the input layer
    found, _ = encoder_ops("bfloat16", float32_stages=(0, 1, 2, 3))
    body = [dt for p, dt, k in found if p == "conv_general_dilated" and k[-1] in (4, 6, 8)]
    assert set(body) == {"float32"}
    # float32: the knob changes nothing, not even the traced program
    v = init_encoder(jax.random.key(0), CFG)
    texts = {str(jax.make_jaxpr(lambda v, x: build_encoder(CFG).clone(float32_stages=s).apply(
        v, x))(v, X)) for s in (None, (), (0, 1, 2, 3))}
    assert len(texts) == 1 and "bf16" not in texts.pop()


def test_inverter_knob_survives_with_policy_and_rejects_bad_stages():
    from e4e_jax.nets.encoder import Inverter
    from e4e_jax.nets.generator import init_generator
    gen = init_generator(jax.random.key(0), 16, max_channels=16, n_mlp=2, with_latent_avg=False)
    cfg = encoder_config("Encoder4Editing", gen.n_latent, (32, 32), widths=(4, 6, 8, 10),
                         units=(1, 1, 1, 1), head_width=12)
    inv = Inverter(cfg, init_encoder(jax.random.key(1), cfg), gen,
                   np.zeros((gen.n_latent, 512), np.float32))
    assert inv.module.float32_stages is None
    two = inv.with_encoder_float32_stages([3, 1]).with_policy("bfloat16")
    assert two.module.float32_stages == (1, 3) and two.module.dtype == jnp.bfloat16
    assert two.with_encoder_float32_stages(None).module.float32_stages is None
    with pytest.raises(ValueError, match="0..3"):
        inv.with_encoder_float32_stages((4,))


@pytest.mark.slow  # ~90 s on the loaded 2-core CPU: IR-SE-50 at 256 px, float32 and bfloat16
def test_e4e_fixture_inversion_in_bfloat16_is_within_30_db_of_float32(tmp_path):
    import e4e_jax
    import tests.support.fixtures as fu
    from e4e_jax.convert import e4e as conv
    fx = fu.load_fixture("e4e_encoder")
    src = fu.save_torch(fx.container(), os.path.join(tmp_path, "ckpt.pt"))
    assert conv.main([src, os.path.join(tmp_path, "converted")]) == 0
    x = fu.nchw_to_nhwc(fx.inputs["x"])
    inv = e4e_jax.load_encoder(os.path.join(tmp_path, "converted"), precision="highest")
    _, ref = inv.invert(x)
    _, img = inv.with_policy("bfloat16", "highest").invert(x)
    mse = float(np.mean((np.asarray(img, np.float64) - np.asarray(ref, np.float64)) ** 2))
    psnr = 10 * np.log10(4.0 / mse)
    print(f"e4e fixture, bfloat16 default policy vs float32: {psnr:.1f} dB")
    assert psnr >= 30.0   # 32.1 dB measured (benchmarks/RESULTS.md); 22.9 with no split


@pytest.mark.parametrize("encoder_type", ["ProgressiveBackboneEncoder", "BackboneEncoder"])
def test_restyle_ir_se_encoders_take_the_same_split(encoder_type):
    """ReStyle's IR-SE encoders (6-channel input) keep the same float32 parts under bfloat16;
    the ResNet-34 ones have no split and refuse the knob."""
    cfg = encoder_config(encoder_type, 6, (32, 32), widths=(4, 6, 8, 10), units=(1, 1, 2, 1),
                         style_dim=16, head_width=12)
    x6 = jnp.concatenate([X, X], axis=-1)
    v = init_encoder(jax.random.key(0), cfg)
    m = build_encoder(cfg, dtype="bfloat16")
    assert m.float32_stages is None
    convs = [(dt, k) for p, dt, k in ops(lambda v, x: m.apply(v, x), v, x6)
             if p == "conv_general_dilated"]
    assert [dt for dt, k in convs if k == (3, 3, 6, 4)] == ["float32"]      # the input layer
    stage2 = [dt for dt, k in convs if k[-1] == 8]
    assert stage2 and set(stage2) == {"float32"}
    rest = [dt for dt, k in convs if k[-1] != 8 and k != (3, 3, 6, 4)]
    assert rest and set(rest) == {"bfloat16"}                              # stages 0, 1, 3, heads
    every = m.clone(float32_stages=())
    f32 = [k for p, dt, k in ops(lambda v, x: every.apply(v, x), v, x6)
           if p == "conv_general_dilated" and dt == "float32"]
    assert f32 == [(3, 3, 6, 4)]
    # float32 is the unchanged program
    texts = {str(jax.make_jaxpr(lambda v, x: build_encoder(cfg).clone(float32_stages=s).apply(
        v, x))(v, x6)) for s in (None, (), (0, 1, 2, 3))}
    assert len(texts) == 1 and "bf16" not in texts.pop()


def test_restyle_resnet_encoder_refuses_the_split():
    from e4e_jax.nets.encoder import Inverter
    from e4e_jax.nets.generator import init_generator
    gen = init_generator(jax.random.key(0), 16, max_channels=16, n_mlp=2, with_latent_avg=False)
    cfg = encoder_config("ResNetProgressiveBackboneEncoder", gen.n_latent, (32, 32),
                         widths=(4, 6, 8, 10), units=(1, 1, 1, 1), head_width=12)
    inv = Inverter(cfg, init_encoder(jax.random.key(1), cfg), gen,
                   np.zeros((gen.n_latent, 512), np.float32))
    with pytest.raises(ValueError, match="has no float32_stages split; only the IR-SE encoders"):
        inv.with_encoder_float32_stages((2,))
