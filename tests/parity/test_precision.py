"""The numeric policy (e4e_jax.core.precision): precision reaches every conv / matmul of every network
and entry point (jaxpr inspection), bfloat16 forwards run and stay finite with float32 outputs,
float32 stays bit-identical to the code before the policy existed (golden outputs), and
rematerialisation leaves the gradients unchanged."""
import os

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from tests.support.paths import FIXTURES
import pytest

from tests.support.train_utils import tiny_config

from e4e_jax import losses as L
from e4e_jax import train as trainer
from e4e_jax.nets.generator import init_generator
from e4e_jax.nets.encoder import Inverter
from e4e_jax.models.arcface import ArcFace
from e4e_jax.models.discriminator import LatentCodesDiscriminator
from e4e_jax.models.encoders import encoder_config, init_encoder
from e4e_jax.models.inception import fid_inception
from e4e_jax.models.lpips import LPIPS
from e4e_jax.models.resnet import MocoFeatures
from e4e_jax.core.precision import Policy, module_kwargs

GOLDEN = os.path.join(FIXTURES, "dtype_golden.npz")
MATMULS = ("conv_general_dilated", "dot_general")
P = jax.lax.Precision
ENCODERS = ("Encoder4Editing", "GradualStyleEncoder", "SingleStyleCodeEncoder")


def _sub_jaxprs(value):
    if isinstance(value, jex.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def matmul_precisions(jaxpr) -> list:
    """precision of every conv_general_dilated / dot_general, recursing into pjit, scan, cond,
    remat, custom_vjp / custom_jvp bodies."""
    if isinstance(jaxpr, jex.core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in MATMULS:
            out.append(eqn.params["precision"])
        for v in eqn.params.values():
            for sub in _sub_jaxprs(v):
                out.extend(matmul_precisions(sub))
    return out


def assert_all(fn, args, want: str):
    found = matmul_precisions(jax.make_jaxpr(fn)(*args))
    p = {"default": P.DEFAULT, "high": P.HIGH, "highest": P.HIGHEST}[want]
    assert found, "no convolution or matmul traced"
    bad = [f for f in found if f != (p, p)]
    print(f"{len(found)} convs/matmuls, {len(bad)} without precision {want}")
    assert not bad, f"{len(bad)} of {len(found)} without {want}: {set(map(str, bad))}"


def tiny_generator(**kw):
    return init_generator(jax.random.key(0), 16, max_channels=16, n_mlp=2,
                          with_latent_avg=False, **kw)


def tiny_inverter(encoder_type="Encoder4Editing", **kw):
    gen = tiny_generator()
    cfg = encoder_config(encoder_type, gen.n_latent, (32, 32), widths=(4, 8, 8, 16),
                         units=(1, 1, 1, 1), head_width=16)
    la = np.full((gen.n_latent, 512), 0.1, np.float32)
    inv = Inverter(cfg, init_encoder(jax.random.key(1), cfg), gen, la, face_pool_size=8, **kw)
    return inv


def images(n=2, size=32, seed=2):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


def tiny_loss_nets(**policy):
    """LPIPS (vgg, full widths), ArcFace (narrow, one unit per stage), MoCo (narrow)."""
    k = jax.random.key(3)
    lp = LPIPS("vgg", **policy)
    arc = ArcFace(widths=(4, 8, 8, 16), units=(1, 1, 1, 1), embedding_dim=8, **policy)
    moco = MocoFeatures(blocks=(1, 1, 1, 1), widths=(2, 2, 4, 4), stem_width=4, input_size=32,
                        **policy)
    x32, x256 = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 256, 256, 3))
    return {"lpips": (lp, lp.init(k, x32, x32), (images(), images(seed=5))),
            "arcface": (arc, arc.init(k, x256), (images(1, 256),)),
            "moco": (moco, moco.init(k, x32), (images(),))}


# ------------------------------------------------------------------ precision everywhere

@pytest.mark.parametrize("want", ["default", "highest"])
@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_precision_reaches_encode_decode_invert(want, encoder_type):
    inv = tiny_inverter(encoder_type, precision=want)
    assert inv.generator.module.precision == inv.encoder.precision
    x = images()
    w = jnp.zeros((2, inv.n_latent, 512))
    stage = jnp.int32(3) if inv.is_e4e else None
    # the Inverter is a pytree: its weights are traced arguments, as in the compiled verbs
    assert_all(lambda net, x: net.apply_encode(net.variables, x, stage), (inv, x), want)
    assert_all(lambda v, w: inv.apply_decode(v, w), (inv.generator.variables, w), want)
    assert_all(lambda net, x: net.apply_invert(net.variables, x, resize=True), (inv, x), want)


@pytest.mark.parametrize("variant", ["rosinality", "ada"])
def test_precision_reaches_generator_mapping_and_synthesis(variant):
    gen = tiny_generator()
    if variant == "ada":
        gen = type(gen)(gen.module.clone(variant="ada", conv_clamp=256.0), gen.variables,
                        gen.config)
    gen = gen.with_policy(precision="high")
    z = jnp.zeros((2, 512))
    assert_all(lambda v, z: gen.synthesize(v, gen.broadcast(gen.map(v, z)), "const"),
               (gen.variables, z), "high")


@pytest.mark.slow  # 123 s on the loaded 2-core CPU (tracing Inception-v3 and the loss nets)
def test_precision_reaches_every_loss_network_and_inception_and_discriminator():
    for name, (module, variables, args) in tiny_loss_nets(**module_kwargs(None, "highest")).items():
        print(name, end=": ")
        assert_all(lambda v, *a: module.apply(v, *a), (variables, *args), "highest")
    inc = fid_inception(precision="highest", resize_input=False)
    x = jnp.zeros((1, 75, 75, 3))
    assert_all(lambda x: inc.init_with_output(jax.random.key(0), x)[0], (x,), "highest")
    inc = fid_inception(precision="high")  # the resize matrices too
    assert_all(lambda x: inc.init_with_output(jax.random.key(0), x)[0], (x,), "high")
    d = LatentCodesDiscriminator(512, precision=P.HIGHEST)
    assert_all(lambda w: d.init_with_output(jax.random.key(0), w)[0], (jnp.zeros((2, 512)),),
               "highest")


@pytest.mark.slow  # traces the whole differentiated step twice (~30-60 s on 2 cores)
@pytest.mark.parametrize("remat", ["none", "blocks"])
def test_precision_reaches_the_train_step(remat):
    """Encoder, generator, discriminator (with R1), the W pools and LPIPS + MoCo, in the
    differentiated step (custom_vjp / remat / cond / scan bodies included)."""
    c = tiny_config(precision="highest", remat=remat)
    c.losses.lpips = 0.8
    c.losses.id = 0.1
    c.data.input_size = (32, 32)
    c.generator.init.resolution = 32
    c.output.face_pool = 32
    nets = {k: L.LossNet(m, v) for k, (m, v, _) in
            tiny_loss_nets(**module_kwargs(None, "highest")).items() if k != "arcface"}
    nets["id"] = nets.pop("moco")
    setup = trainer.build(c, nets=nets)
    state = trainer.create_train_state(setup)
    from e4e_jax.train import step as ts
    fn = lambda s, f: ts.train_step(s, f, {}, spec=setup.spec)  # noqa: E731
    assert_all(fn, (state, setup.frozen), "highest")


def test_bad_policy_values_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="bfloat16"):
        Policy(dtype="float16")
    with pytest.raises(ValueError, match="highest"):
        module_kwargs(None, "fastest")
    with pytest.raises(ValueError, match="blocks"):
        Policy(remat="all")
    with pytest.raises(trainer.TrainingError, match="dtype"):
        trainer.build(tiny_config(dtype="fp8"))


# ------------------------------------------------------------------ bfloat16 and float32

@pytest.mark.slow  # ~75 s on 2 cores: two tiny inverters, three loss networks and Inception
def test_bfloat16_forward_of_every_network_is_finite_and_float32_out():
    inv = tiny_inverter(dtype="bfloat16")
    ref = tiny_inverter()
    x = images()
    w, rec = inv.invert(x)
    w32, rec32 = ref.invert(x)
    assert w.dtype == rec.dtype == jnp.float32
    assert np.isfinite(w).all() and np.isfinite(rec).all()
    rel = float(jnp.linalg.norm(w - w32) / jnp.linalg.norm(w32 - ref.latent_avg))
    print(f"bf16 W+ relative error {rel:.3g}, image max error {float(abs(rec - rec32).max()):.3g}")
    assert rel < 0.1
    bf = tiny_loss_nets(**module_kwargs("bfloat16"))
    fp = tiny_loss_nets()
    for name in bf:
        (mb, vb, args), (mf, _, _) = bf[name], fp[name]
        yb, yf = mb.apply(vb, *args), mf.apply(vb, *args)
        assert yb.dtype == jnp.float32 and np.isfinite(yb).all(), name
        print(f"{name}: bf16 vs f32 max error {float(abs(yb - yf).max()):.3g}")
        assert float(abs(yb - yf).max()) < 0.1 * max(1.0, float(abs(yf).max())), name
    inc = fid_inception(dtype="bfloat16", resize_input=False)
    f, _ = inc.init_with_output(jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
    assert f.dtype == jnp.float32 and np.isfinite(f).all()


def _golden_outputs():
    """Outputs of the tiny networks with the default policy (float32, precision None)."""
    inv = tiny_inverter()
    x = images()
    w, rec = inv.invert(x)
    out = {"w_plus": w, "reconstruction": rec}
    gen = inv.generator
    out["mapping"] = gen.map(gen.variables, jax.random.normal(jax.random.key(4), (2, 512)))
    for name, (module, variables, args) in tiny_loss_nets().items():
        out[name] = module.apply(variables, *args)
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.slow  # 260 s on the loaded 2-core CPU (LPIPS-vgg full widths, ArcFace 256 px)
def test_float32_default_is_bit_identical_to_the_code_before_the_policy():
    """dtype_golden.npz was written by the code before e4e_jax.core.precision existed (same tiny
    networks, same seeds); the default path must reproduce it to the CPU's float32 rounding."""
    golden = np.load(GOLDEN)
    # The file was written on a CPU whose XLA kernels round some reductions differently from
    # others' (AVX-512 vs AVX2 vector widths change the summation order): the recorded code
    # itself, run on an AVX-512 machine, differs from the file by up to 6e-8 (a few values of
    # w_plus and lpips, relative 1e-6). So with the same jax the outputs must agree to 2e-6
    # relative / 1e-7 absolute, a bound any change to the computation exceeds by orders of
    # magnitude; another jax release may round float32 differently, so there the bound is
    # float32 rounding (1e-5). So may XLA_FLAGS (the file was written without any): e4e_jax's
    # YNNPACK workaround on jaxlib 0.10.2 (core/xla_flags.py) changes XLA's fusions, which moved
    # one of 384 reconstruction values by 2e-7 (relative 4.6e-6).
    same_compiler = (str(golden["jax_version"]) == jax.__version__
                     and not os.environ.get("XLA_FLAGS", "").strip())
    tol = dict(rtol=2e-6, atol=1e-7) if same_compiler else dict(rtol=1e-5, atol=1e-5)

    def check(a, b, err_msg=""):
        np.testing.assert_allclose(a, b, err_msg=err_msg, **tol)

    got = _golden_outputs()
    explicit = tiny_inverter(dtype="float32").invert(images())[0]
    for k, v in got.items():
        err = float(np.max(np.abs(v - golden[k])))
        print(f"{k}: max abs error vs the unmodified code {err}")
        check(v, golden[k], err_msg=k)
    check(explicit, golden["w_plus"])


# ------------------------------------------------------------------ remat

@pytest.mark.slow  # 240 s on the loaded 2-core CPU (three jitted value_and_grad compiles)
def test_remat_gradients_equal_plain_gradients():
    """Same loss and the same encoder gradients (float32) through encoder + generator."""
    x = images()

    def grads(remat, per_image_from=4):
        inv = tiny_inverter(remat=remat)
        g = inv.generator
        # 4: the whole synthesis one image at a time (the default); 8: the 8x8 and 16x16 layers
        # one at a time (as the 512 / 1024 layers with per_image_from=512)
        inv = inv.with_generator(g.replace(module=g.module.clone(per_image_from=per_image_from)))
        la = jnp.asarray(inv.latent_avg)

        def loss(params):
            w, stats = inv.apply_encode({"params": params, **{"batch_stats":
                                         inv.variables["batch_stats"]}}, x, 3, train=True,
                                        latent_avg=la)
            y = inv.apply_decode(inv.generator.variables, w, noise="random",
                                 rng=jax.random.key(7))
            return jnp.mean(jnp.square(y - jax.image.resize(x, y.shape, "linear")))

        return jax.jit(jax.value_and_grad(loss))(inv.variables["params"])

    l0, g0 = grads(False)
    leaves0 = jax.tree_util.tree_leaves(g0)
    for per_image_from in (4, 8):
        l1, g1 = grads(True, per_image_from)
        np.testing.assert_allclose(float(l0), float(l1), rtol=1e-6)
        leaves1 = jax.tree_util.tree_leaves(g1)
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves0, leaves1))
        print(f"remat (per_image_from={per_image_from}) vs plain: max gradient difference {err}")
        # equal up to float32 rounding: remat changes XLA's fusion (and so the summation order)
        for a, b in zip(leaves0, leaves1):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))))
