"""bfloat16 against float32 under the dtype policy: the generators' `low_precision_res` (how many
of the top resolutions compute in bfloat16; None: the official num_fp16_res split, 4; 0: none;
32: every layer but 4x4) and the encoders' `float32_stages` (models/encoders.py: which IR-SE body
stages stay float32; None: the default, the third), for e4e inversion, the W projector and PTI,
on the official-code fixtures.

    nice python benchmarks/dtype_policy.py [e4e] [encoder] [restyle] [projector] [pti] [--steps N]

- e4e: tests/fixtures/e4e_encoder (IR-SE-50 e4e + a 64 px rosinality generator, 2 images 256 px),
  `invert` with the encoder in the given dtype (its default split); "generator only": the
  float32 codes decoded by the generator in bfloat16 (the generator's own share of the error).
- encoder: the same fixture, the generator's default split, per encoder split (float32_stages),
  with the share of the encoder's convolution / matmul FLOPs that run in bfloat16 (counted on
  the jaxpr: 2 * MACs of every conv_general_dilated / dot_general by its operand dtype).
- restyle: tests/fixtures/restyle (IR-SE-50 ReStyle-e4e and ReStyle-pSp, 64 px generator),
  3 iterations of `e4e_jax.restyle.invert`, the default encoder split and every stage in
  bfloat16; the last iteration's W+ and image.
- projector: tests/fixtures/w_projector (32 px StyleGAN2-ADA generator, LPIPS-alex on synthetic
  weights), --steps steps (default 5; the fixture's 20 did not finish on the shared 2-core CPU)
  with the fixture's taped noise and w_avg_samples; the image of the projected w.
- PTI: tests/fixtures/pti_tuning (32 px ADA generator), --steps steps from the fixture's pivot;
  the tuned generator's image of the pivot.
The reference is the same computation in float32 at precision "highest"; the bfloat16 runs use
precision "highest" too (the dtype is the only difference). PSNR = 10 log10(2^2 / MSE) on the
raw [-1, 1] images (no clipping). Prints the device, date and batch.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import tests.support.fixtures as fu  # noqa: E402
from tests.support.synth_weights import build_state_dict  # noqa: E402

POLICIES = (None, 2, 32)
# encoder splits: None (the default), every stage in bfloat16, and two neighbours of the default
ENCODER_SPLITS = (None, (), (2, 3), (1, 2))
STEPS = 5


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def bf16_layers(g, k) -> str:
    d = g.with_low_precision_res(k).with_policy("bfloat16").module.layer_dtypes()
    low = [r for r, t in d.items() if t is not None]
    return f"{min(low)}-{max(low)}" if low else "none"


def flops_by_dtype(fn, *args) -> dict:
    """{dtype name: FLOPs} of the convolutions and matmuls of fn(*args), read off its jaxpr
    (nested jaxprs included): 2 * output size * contraction size, by the lhs operand's dtype."""
    out: dict = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name in ("conv_general_dilated", "dot_general"):
                lhs, rhs = (v.aval for v in eqn.invars[:2])
                res = eqn.outvars[0].aval
                if name == "dot_general":
                    (lc, _), _ = eqn.params["dimension_numbers"]
                    k = int(np.prod([lhs.shape[a] for a in lc]))
                else:
                    o = eqn.params["dimension_numbers"].rhs_spec[0]
                    k = int(np.prod(rhs.shape)) // rhs.shape[o]
                key = str(lhs.dtype)
                out[key] = out.get(key, 0) + 2 * int(np.prod(res.shape)) * k
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def e4e_fixture():
    import e4e_jax
    from e4e_jax.convert import e4e as conv
    fx = fu.load_fixture("e4e_encoder")
    d = tempfile.mkdtemp(prefix="dtype-policy-")
    src = fu.save_torch(fx.container(), os.path.join(d, "ckpt.pt"))
    assert conv.main([src, os.path.join(d, "converted")]) == 0
    x = fu.nchw_to_nhwc(fx.inputs["x"])
    inv32 = e4e_jax.load_encoder(os.path.join(d, "converted"), precision="highest")
    w32, img32 = (np.asarray(a) for a in inv32.invert(x))
    return x, inv32, w32, img32


def encoder_rows():
    x, inv32, w32, img32 = e4e_fixture()
    bf = inv32.with_policy("bfloat16", "highest")
    for split in ENCODER_SPLITS:
        t = time.perf_counter()
        inv = bf.with_encoder_float32_stages(split)
        w, img = inv.invert(x)
        fl = flops_by_dtype(lambda v, a: inv.module.apply(v, a), inv.variables, x)
        share = fl.get("bfloat16", 0) / sum(fl.values())
        rel = float(np.linalg.norm(np.asarray(w) - w32) / np.linalg.norm(w32))
        yield ("default (2)" if split is None else str(split), share, rel, psnr(img, img32),
               time.perf_counter() - t)


def e4e_rows():
    x, inv32, w32, img32 = e4e_fixture()
    g = inv32.generator
    for k in POLICIES:
        t = time.perf_counter()
        inv = inv32.with_policy("bfloat16", "highest").with_low_precision_res(k)
        _, img = inv.invert(x)
        gen_only = inv.decode(w32)
        yield ("e4e invert (fixture, 64 px G)", x.shape[0], k, bf16_layers(g, k),
               psnr(img, img32), psnr(gen_only, img32), time.perf_counter() - t)


RESTYLE_MODELS = ("e4e_backbone", "psp_backbone")   # the fixture's IR-SE-50 ReStyle encoders
RESTYLE_ITERATIONS = 3                              # as the fixture's official loop
RESTYLE_SPLITS = (None, ())                         # the default, and every stage in bfloat16


def restyle_rows():
    """ReStyle inversion (tests/fixtures/restyle: IR-SE-50 ReStyle-e4e / ReStyle-pSp, 64 px
    generator, 256 px images, 3 iterations) in bfloat16 against float32, per encoder split; the
    last iteration's W+ and reconstruction. A split the code does not have (the code before the
    ReStyle split) is reported as such, its bfloat16 run being every encoder layer in bfloat16."""
    import e4e_jax
    from e4e_jax.convert import restyle as conv
    from e4e_jax.inversion import restyle
    folder = os.path.join(fu.FIXTURES, "restyle")
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    for name in RESTYLE_MODELS:
        entry = manifest["models"][name]
        state, extra = fu.state_from_manifest(entry)
        d = tempfile.mkdtemp(prefix="dtype-policy-restyle-")
        src = fu.save_torch(fu.build_container(entry, state, extra), os.path.join(d, "ckpt.pt"))
        assert conv.main([src, os.path.join(d, "converted")]) == 0
        x = fu.nchw_to_nhwc(inputs[f"{name}/x"])
        inv32 = e4e_jax.load_encoder(os.path.join(d, "converted"), precision="highest")
        w32, img32 = (np.asarray(a)[-1] for a in restyle.invert(inv32, x, RESTYLE_ITERATIONS))
        bf = inv32.with_policy("bfloat16", "highest")
        for split in RESTYLE_SPLITS:
            t = time.perf_counter()
            try:
                inv = bf.with_encoder_float32_stages(split)
                label = "default (2)" if split is None else str(split)
            except ValueError:
                if split is not None:
                    continue
                inv, label = bf, "no split (every layer bfloat16)"
            w, img = (np.asarray(a)[-1] for a in restyle.invert(inv, x, RESTYLE_ITERATIONS))
            rel = float(np.linalg.norm(w - w32) / np.linalg.norm(w32))
            yield (name, x.shape[0], label, rel, psnr(img, img32), time.perf_counter() - t)


def fixture_lpips(manifest, key):
    from e4e_jax.convert.lpips import convert_lpips
    from e4e_jax.models.lpips import LPIPS
    from e4e_jax.nets.loss_nets import LoadedLPIPS
    t = build_state_dict({"seed": manifest["seed"], "tensors": manifest[key]})
    backbone = {k: v for k, v in t.items() if k.startswith("features.")}
    lin = {k: v for k, v in t.items() if k.startswith("lin")}
    return LoadedLPIPS(LPIPS("alex"), convert_lpips(backbone, lin, "alex"))


def ada_generator(fixture):
    from e4e_jax.convert.stylegan2_ada import convert_ada_generator
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config
    config, variables, latent_avg = convert_ada_generator(
        fixture.state, fixture.manifest["container"]["G"]["init_kwargs"])
    return LoadedGenerator(module_from_config(config), variables, config, latent_avg)


def projector_rows(steps):
    from e4e_jax.inversion.projector import project
    fx = fu.load_fixture("w_projector")
    inp = fx.inputs
    g = ada_generator(fx)
    lp = fixture_lpips(fx.manifest, "feature_net_tensors")
    blocks = ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1", "b32.conv0",
              "b32.conv1"]
    steps = min(steps, int(inp["num_steps"]))

    def run(gen):
        res = project(gen, inp["target_ada"].transpose(1, 2, 0), lpips=lp, num_steps=steps,
                      w_avg_samples=int(inp["w_avg_samples"]),
                      initial_learning_rate=float(inp["pti.initial_learning_rate"]),
                      noise_init=[inp[f"pti.noise_init.{b}.noise_const"] for b in blocks],
                      w_noise=inp["pti.w_noise_raw"].reshape(int(inp["num_steps"]), -1)[:steps])
        w_plus = np.asarray(res.w_plus)[None]
        noise = res.synthesis_noise()
        return np.asarray(gen.synthesis(w_plus, noise=noise)), (w_plus, noise)

    ref, (w32, n32) = run(g.with_policy(None, "highest"))
    for k in POLICIES:
        t = time.perf_counter()
        gk = g.with_low_precision_res(k).with_policy("bfloat16", "highest")
        img, _ = run(gk)
        yield (f"projector (fixture, 32 px ADA G, {steps} steps)", 1, k, bf16_layers(g, k),
               psnr(img, ref), psnr(gk.synthesis(w32, noise=n32), ref),
               time.perf_counter() - t)


def pti_rows(steps):
    from e4e_jax.inversion import pti
    fx = fu.load_fixture("pti_tuning")
    inp = fx.inputs
    g = ada_generator(fx)
    lp = fixture_lpips(fx.manifest, "lpips_tensors")
    target = fu.nchw_to_nhwc(inp["target"])

    def run(gen):
        res = pti.tune(gen, inp["w_pivot"], target, lpips=lp, steps=steps, lpips_threshold=0.0)
        return np.asarray(res.generator.synthesis(inp["w_pivot"]))

    ref = run(g.with_policy(None, "highest"))
    for k in POLICIES:
        t = time.perf_counter()
        gk = g.with_low_precision_res(k).with_policy("bfloat16", "highest")
        img = run(gk)
        yield (f"PTI (fixture, 32 px ADA G, {steps} steps)", 1, k, bf16_layers(g, k),
               psnr(img, ref), float("nan"), time.perf_counter() - t)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    steps = STEPS
    if "--steps" in argv:
        i = argv.index("--steps")
        steps = int(argv[i + 1])
        del argv[i:i + 2]
    which = argv or ["e4e", "encoder", "restyle", "projector", "pti"]
    dev = jax.devices()[0]
    print(f"device {dev.platform} {dev.device_kind} ({os.cpu_count()} cores visible), "
          f"jax {jax.__version__}, {datetime.date.today()}, dtype bfloat16 vs float32 "
          f"(precision 'highest' in both)")
    if "encoder" in which:
        print("| encoder float32_stages | bf16 share of encoder FLOPs | W+ relative error | "
              "e4e invert PSNR vs float32 (dB) | seconds |\n|---|---|---|---|---|")
        for split, share, rel, p, s in encoder_rows():
            print(f"| {split} | {100 * share:.0f} % | {rel:.1e} | {p:.1f} | {s:.0f} |", flush=True)
    if "restyle" in which:
        print(f"| ReStyle model ({RESTYLE_ITERATIONS} iterations) | batch | encoder "
              f"float32_stages | W+ relative error | PSNR vs float32 (dB) | seconds |\n"
              f"|---|---|---|---|---|---|")
        for name, n, label, rel, p, s in restyle_rows():
            print(f"| {name} | {n} | {label} | {rel:.1e} | {p:.1f} | {s:.0f} |", flush=True)
    if not set(which) - {"encoder", "restyle"}:
        return
    print("| method | batch | low_precision_res | bf16 resolutions | PSNR vs float32 (dB) | "
          "generator only (dB) | seconds |\n|---|---|---|---|---|---|---|")
    runs = {"e4e": e4e_rows, "projector": lambda: projector_rows(steps),
            "pti": lambda: pti_rows(steps)}
    for name in which:
        if name in ("encoder", "restyle"):
            continue
        for m, n, k, layers, p, p_gen, s in runs[name]():
            k = "None (official, 4)" if k is None else k
            gen = "-" if np.isnan(p_gen) else f"{p_gen:.1f}"
            print(f"| {m} | {n} | {k} | {layers} | {p:.1f} | {gen} | {s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
