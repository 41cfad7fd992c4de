"""PTI (e4e_jax.inversion.pti.tune) against the official danielroich/PTI tuning loop, and its behaviour.

Parity: the pti_tuning fixture (a 32 px StyleGAN2-ADA generator and LPIPS-alex on synthetic
weights, rebuilt from its manifest): the plain run, the early stop at the LPIPS threshold and the
locality regulariser, compared per step, per parameter tensor and on the tuned image with the
README's tolerances. Behaviour: tuning a tiny rosinality generator lowers LPIPS / L2, the tuned
generator saves, loads and edits; multi-image tuning visits the pivots in turn.
"""
import math

import jax
import numpy as np
import pytest

import tests.support.fixtures as fu
from tests.support.synth_weights import build_state_dict

import e4e_jax
from e4e_jax.convert.lpips import convert_lpips
from e4e_jax.convert.stylegan2_ada import convert_ada_generator
from e4e_jax.inversion import pti
from e4e_jax.nets.generator import LoadedGenerator, module_from_config
from e4e_jax.nets.loss_nets import LoadedLPIPS
from e4e_jax.models.lpips import LPIPS

FIX = "pti_tuning"


def atol(key):
    return fu.suggested_atol(FIX, key)


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture(FIX)


def fixture_lpips(manifest):
    state = build_state_dict({"seed": manifest["seed"], "tensors": manifest["lpips_tensors"]})
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    return LoadedLPIPS(LPIPS("alex"), convert_lpips(backbone, lin, "alex"))


def ada_generator(state, init_kwargs):
    config, variables, latent_avg = convert_ada_generator(state, init_kwargs)
    return LoadedGenerator(module_from_config(config), variables, config, latent_avg)


@pytest.fixture(scope="module")
def nets(fixture):
    g = ada_generator(fixture.state, fixture.manifest["container"]["G"]["init_kwargs"])
    return g, fixture_lpips(fixture.manifest)


def official_path(name):
    """Official synthesis parameter name -> path in our params tree (convert_weights layout)."""
    _, block, *rest = name.split(".")
    res = int(block[1:])
    if rest == ["const"]:
        return ("input", "const")
    j = int(round(math.log2(res))) - 3
    layer = {"conv1": "conv1", "torgb": "to_rgb1"}[rest[0]] if res == 4 else {
        "conv0": f"convs_{2 * j}", "conv1": f"convs_{2 * j + 1}", "torgb": f"to_rgbs_{j}"}[rest[0]]
    leaf = {"weight": ("kernel",), "bias": ("bias",), "noise_strength": ("noise_strength",),
            "affine.weight": ("modulation", "kernel"), "affine.bias": ("modulation", "bias")}
    return (layer,) + leaf[".".join(rest[1:])]


def check_case(case, result, fixture, g_tuned_expected_state):
    exp = fixture.expected
    for key in result.history:
        if f"{case}.{key}" in exp:
            fu.assert_close(f"{case}.{key}", result.history[key], exp[f"{case}.{key}"],
                            atol(f"{case}.{key}"))
    assert result.num_updates == int(exp[f"{case}.num_updates"])
    w_pivot = fixture.inputs["w_pivot"]
    fu.assert_close(f"{case}.img_after", fu.nhwc_to_nchw(result.generator.synthesis(w_pivot)),
                    exp[f"{case}.img_after"], atol(f"{case}.img_after"))
    # every tuned tensor, in our layout (the expected state converted like a checkpoint)
    _, want, _ = convert_ada_generator(g_tuned_expected_state(case),
                                       fixture.manifest["container"]["G"]["init_kwargs"])
    names = [k[len(case) + 7:] for k in exp if k.startswith(f"{case}.param.")]
    assert len(names) == 52
    worst = 0.0
    for name in names:
        got, ref = result.generator.variables["params"], want["params"]
        for part in official_path(name):
            got, ref = got[part], ref[part]
        err = float(np.abs(np.asarray(got) - ref).max())
        worst = max(worst, err / atol(f"{case}.param.{name}"))
        assert err <= atol(f"{case}.param.{name}"), (name, err)
    print(f"[parity] {case}: 52 parameter tensors, worst error / atol {worst:.3f}")
    # frozen: mapping network and noise buffers are untouched
    np.testing.assert_array_equal(result.generator.variables["params"]["mapping"]["dense_0"]
                                  ["kernel"], want["params"]["mapping"]["dense_0"]["kernel"])
    np.testing.assert_array_equal(result.generator.variables["noises"]["noise_3"],
                                  want["noises"]["noise_3"])


@pytest.fixture(scope="module")
def expected_state(fixture):
    def build(case):
        state = dict(fixture.state)
        for k, v in fixture.expected.items():
            if k.startswith(f"{case}.param."):
                state[k[len(case) + 7:]] = v
        return state
    return build


@pytest.mark.slow
def test_parity_plain_and_early_stop(fixture, nets, expected_state):
    g, lp = nets
    inp, exp = fixture.inputs, fixture.expected
    target = fu.nchw_to_nhwc(inp["target"])
    fu.assert_close("img_before", fu.nhwc_to_nchw(g.synthesis(inp["w_pivot"])),
                    exp["img_before"], atol("img_before"))
    main = pti.tune(g, inp["w_pivot"], target, lpips=lp, steps=int(inp["num_steps"]),
                    lpips_threshold=0.0)
    assert sorted(main.history) == ["l2", "loss", "lpips"]
    assert len(main.history["loss"]) == int(inp["num_steps"])
    check_case("main", main, fixture, expected_state)

    k = int(inp["early_stop_step"])
    early = pti.tune(g, inp["w_pivot"], target, lpips=lp, steps=int(inp["num_steps"]),
                     lpips_threshold=float(inp["early_stop_threshold"]))
    assert early.num_updates == k and len(early.history["lpips"]) == k + 1
    assert early.history["lpips"][k] <= inp["early_stop_threshold"]
    assert np.all(early.history["lpips"][:k] > inp["early_stop_threshold"])
    check_case("early_stop", early, fixture, expected_state)
    # the input generator is not modified
    fu.assert_close("img_before (after tuning)", fu.nhwc_to_nchw(g.synthesis(inp["w_pivot"])),
                    exp["img_before"], atol("img_before"))


@pytest.mark.slow
def test_parity_locality(fixture, nets, expected_state):
    g, lp = nets
    inp, exp = fixture.inputs, fixture.expected
    z = inp["locality_z"]
    w_s, w_m = pti.morphed_codes(g, inp["w_pivot"], z)
    fu.assert_close("locality.w_sample", w_s, exp["locality.w_sample"], atol("locality.w_sample"))
    fu.assert_close("locality.w_morphed", w_m, exp["locality.w_morphed"],
                    atol("locality.w_morphed"))
    dist = np.linalg.norm((np.asarray(w_m) - inp["w_pivot"]).reshape(len(z), -1), axis=1)
    np.testing.assert_allclose(dist, 30.0, rtol=1e-5)
    res = pti.tune(g, inp["w_pivot"], fu.nchw_to_nhwc(inp["target"]), lpips=lp,
                   steps=int(inp["locality_num_steps"]), lpips_threshold=0.0, locality=True,
                   locality_z=z[:, None, :])
    assert sorted(res.history) == ["l2", "loss", "lpips", "reg_l2", "reg_loss", "reg_lpips"]
    # G is still the original at step 0 (zero up to how XLA fuses the two identical passes)
    assert abs(res.history["reg_loss"][0]) < 1e-12
    check_case("locality", res, fixture, expected_state)


# ----------------------------------------------------------------------------- behaviour

@pytest.fixture(scope="module")
def tiny(fixture):
    g = e4e_jax.init_generator(jax.random.key(3), 32, channels=(16, 16, 16, 8), style_dim=32,
                               n_mlp=2)
    rs = np.random.RandomState(0)
    w = np.asarray(g.mapping(rs.randn(3, 32).astype(np.float32)))
    target = np.clip(np.asarray(g.synthesis(g.broadcast(w[:2]))), -1, 1)
    return g, np.asarray(g.broadcast(w[2:3])), target, fixture_lpips(fixture.manifest)


TINY_STEPS, TINY_LR = 40, 3e-3


@pytest.fixture(scope="module")
def tiny_run(tiny):
    g, pivot, target, lp = tiny
    return pti.tune(g, pivot, target[:1], lpips=lp, steps=TINY_STEPS, learning_rate=TINY_LR,
                    lpips_threshold=0.0)


@pytest.mark.slow
def test_tuning_fits_the_target_and_the_tuned_generator_saves_loads_and_edits(tiny, tiny_run,
                                                                              tmp_path):
    g, pivot, target, lp = tiny
    res, h = tiny_run, tiny_run.history
    print(f"[pti tiny] lpips {h['lpips'][0]:.4f} -> {h['lpips'][-1]:.4f}, "
          f"l2 {h['l2'][0]:.4f} -> {h['l2'][-1]:.4f}")
    assert res.num_updates == TINY_STEPS and len(h["loss"]) == TINY_STEPS
    assert h["lpips"][-1] < 0.5 * h["lpips"][0] and h["l2"][-1] < 0.5 * h["l2"][0]
    np.testing.assert_allclose(h["loss"], h["l2"] + h["lpips"], rtol=1e-6)
    # the early stop at a threshold this run crosses (same compiled loop)
    thr = float(h["lpips"][10])
    early = pti.tune(g, pivot, target[:1], lpips=lp, steps=TINY_STEPS, learning_rate=TINY_LR,
                     lpips_threshold=thr)
    k = int(np.argmax(h["lpips"] <= thr))
    assert early.num_updates == k and len(early.history["lpips"]) == k + 1
    # save / load / edit
    path = e4e_jax.save_generator(res.generator, str(tmp_path / "tuned"))
    back = e4e_jax.load_generator(path)
    assert back.config["pti"]["num_updates"] == TINY_STEPS
    img = np.asarray(back.synthesis(pivot))
    np.testing.assert_allclose(img, np.asarray(res.generator.synthesis(pivot)), atol=1e-6)
    assert np.abs(img - np.asarray(g.synthesis(pivot))).max() > 1e-2
    direction = np.random.RandomState(1).randn(1, 32).astype(np.float32)
    edited = back.synthesis(e4e_jax.interfacegan_edit(pivot, direction, 2.0))
    assert edited.shape == (1, 32, 32, 3) and np.isfinite(np.asarray(edited)).all()
    values, vectors = e4e_jax.sefa(back)
    assert vectors.shape == (32, 32) and np.isfinite(values).all()


@pytest.mark.slow
def test_multi_image_tuning_visits_the_pivots_in_turn(tiny, tiny_run):
    """MultiIDCoach: evaluation (step i, image j) sees the generator after i * N + j updates."""
    g, pivot, target, lp = tiny
    pivots = np.concatenate([pivot, pivot + 0.1], 0)
    res = pti.tune(g, pivots, target, lpips=lp, steps=2, learning_rate=TINY_LR,
                   lpips_threshold=10.0)   # the threshold is not applied to several images
    assert res.num_updates == 4
    assert all(v.shape == (2, 2) for v in res.history.values())
    # image 0 of step 0 is the single-image run's first evaluation; image 1 sees one update
    fu.assert_close("multi-ID l2 of image 0", res.history["l2"][0, 0], tiny_run.history["l2"][0],
                    1e-6)
    h = tiny_run.history["lpips"]
    assert h[1] < h[0]
    one = pti.tune(g, pivot, target[:1], lpips=lp, steps=TINY_STEPS, learning_rate=TINY_LR,
                   lpips_threshold=float(h[1]))     # stops after exactly one update
    assert one.num_updates == 1
    img = one.generator.synthesis(pivots[1:])
    l2 = float(np.mean(np.square(np.asarray(img) - target[1:])))
    fu.assert_close("multi-ID l2 of image 1 after one update", l2, res.history["l2"][0, 1], 1e-6)


def test_bad_arguments_are_named(fixture):
    """Checked before anything is compiled."""
    g = e4e_jax.init_generator(jax.random.key(3), 32, channels=(16, 16, 16, 8), style_dim=32,
                               n_mlp=2, with_latent_avg=False).with_latent_avg(np.zeros((32,)))
    pivot = np.zeros((1, 8, 32), np.float32)
    target = np.zeros((2, 32, 32, 3), np.float32)
    lp = fixture_lpips(fixture.manifest)
    with pytest.raises(ValueError, match=r"w_pivot must have shape \(N, 8, 32\)"):
        pti.tune(g, pivot[:, 0], target[:1], lpips=lp)
    with pytest.raises(ValueError, match="NCHW"):
        pti.tune(g, pivot, np.transpose(target[:1], (0, 3, 1, 2)), lpips=lp)
    with pytest.raises(ValueError, match="uint8"):
        pti.tune(g, pivot, (target[:1] * 0).astype(np.uint8), lpips=lp)
    with pytest.raises(ValueError, match="same number"):
        pti.tune(g, pivot, target, lpips=lp)
    with pytest.raises(TypeError, match="load_lpips"):
        pti.tune(g, pivot, target[:1], lpips=None)
    with pytest.raises(ValueError, match=r"locality_z must have shape \(steps, n, 32\)"):
        pti.tune(g, pivot, target[:1], lpips=lp, steps=3, locality=True,
                 locality_z=np.zeros((2, 1, 32)))
    no_avg = LoadedGenerator(g.module, g.variables, g.config, None)
    with pytest.raises(ValueError, match="latent_avg"):
        pti.tune(no_avg, pivot, target[:1], lpips=lp, locality=True)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        pti.tune(g, pivot, target[:1], lpips=lp, steps=-1)


@pytest.mark.slow
def test_stepwise_loop_gives_the_same_tuning(tiny):
    """loop="step" (one donated compiled evaluation per dispatch, as benchmarks/invert.py --loop
    step times it) gives the numbers of the single compiled while_loop; one HWC target with a
    (n_latent, w_dim) pivot is the N = 1 case."""
    g, pivot, target, lp = tiny
    kw = dict(lpips=lp, steps=3, learning_rate=TINY_LR, lpips_threshold=0.0)
    scan = pti.tune(g, pivot, target[:1], **kw)
    step = pti.tune(g, pivot[0], target[0], loop="step", **kw)
    assert scan.num_updates == step.num_updates == 3
    for k in scan.history:
        np.testing.assert_allclose(step.history[k], scan.history[k], rtol=1e-6, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(scan.generator.variables),
                    jax.tree_util.tree_leaves(step.generator.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
