"""ReStyle (yuval-alaluf/restyle-encoder at 5e80276): the four encoders and the iterative inference
loop against the official outputs (tests/fixtures/restyle), the converter with its refusals, and
the loop's behaviours on tiny models (one compiled scan, the batch one image at a time or not, the
cars crop)."""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.evaluation.monitoring import CompileCounter

import tests.support.fixtures as fu
from tests.parity.test_encoders import rand_images, tiny_generator

import e4e_jax
from e4e_jax.cli import convert as convert_cli
from e4e_jax.convert import restyle as conv
from e4e_jax.core.ops import adaptive_avg_pool2d
from e4e_jax.inversion import restyle
from e4e_jax.models import encoders as E
from e4e_jax.nets.encoder import Inverter
from e4e_jax.nets.generator import save_generator

FIXTURE = "restyle"
# fixture model -> (encoder type, runs the official loop)
MODELS = {
    "psp_backbone": ("BackboneEncoder", False),
    "psp_resnet_backbone": ("ResNetBackboneEncoder", True),
    "e4e_backbone": ("ProgressiveBackboneEncoder", True),
    "e4e_resnet_backbone": ("ResNetProgressiveBackboneEncoder", False),
}
ITERATIONS = 3


def fixture_files():
    folder = os.path.join(fu.FIXTURES, FIXTURE)
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    return (manifest, dict(np.load(os.path.join(folder, "inputs.npz"))),
            dict(np.load(os.path.join(folder, "expected.npz"))))


def atol(key):
    return fu.suggested_atol(FIXTURE, key)


# ------------------------------------------------------------------ parity with the official code

@pytest.fixture(scope="module")
def files():
    return fixture_files()


def _convert_official_dir(name, files, tmp_path_factory) -> str:
    """The official checkpoint written with torch.save and converted by `e4e-jax convert
    restyle`: the converted directory."""
    pytest.importorskip("torch")
    entry = files[0]["models"][name]
    state, extra = fu.state_from_manifest(entry)
    d = tmp_path_factory.mktemp(name)
    src = fu.save_torch(fu.build_container(entry, state, extra), str(d / "ckpt.pt"))
    del state
    assert convert_cli.main(["restyle", src, str(d / "converted")]) == 0
    os.remove(src)
    return str(d / "converted")


def _convert_official(name, files, tmp_path_factory):
    """(name, model): _convert_official_dir's directory loaded with e4e_jax.load_encoder."""
    return name, e4e_jax.load_encoder(_convert_official_dir(name, files, tmp_path_factory))


@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def official(request, files, tmp_path_factory):
    return _convert_official(request.param, files, tmp_path_factory)


# the fixture runs the official loop (run_on_batch) for two of the four models
@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow)
                                        for n, (_, loop) in MODELS.items() if loop])
def official_loop(request, files, tmp_path_factory):
    return _convert_official(request.param, files, tmp_path_factory)


def test_encoder_parity(official, files):
    """Each encoder's codes on a 6-channel input (and the e4e encoders at progressive stage 3)."""
    name, model = official
    _, inputs, expected = files
    x6 = np.concatenate([fu.nchw_to_nhwc(inputs[f"{name}/x"]),
                         fu.nchw_to_nhwc(inputs[f"{name}/y"])], axis=-1)
    apply = jax.jit(model.encoder.apply)
    fu.assert_close(f"{name}/codes", apply(model.variables, x6), expected[f"{name}/codes"],
                    atol(f"{name}/codes"))
    if name.startswith("e4e"):
        staged = jax.jit(lambda v, x, s: model.encoder.apply(v, x, progressive_stage=s))
        key = f"{name}/codes_stage3"
        fu.assert_close(key, staged(model.variables, x6, jnp.int32(3)), expected[key], atol(key))


def test_loaded_model(official, files):
    name, model = official
    encoder_type, _ = MODELS[name]
    assert model.encoder_config["encoder_type"] == encoder_type
    assert model.encoder_config["input_nc"] == 6 and model.n_latent == 10
    cars = name == "psp_resnet_backbone"
    assert model.input_size == ((192, 256) if cars else (256, 256))
    assert model.crop_rows == ((32, 224) if cars else None)
    np.testing.assert_array_equal(model.latent_avg,
                                  fu.state_from_manifest(files[0]["models"][name])[1]["latent_avg"])
    assert restyle.is_restyle(model)


def test_loop_parity(official_loop, files):
    """run_on_batch for 3 iterations: the average image, every iteration's W+ and images."""
    name, model = official_loop
    _, inputs, expected = files
    x = fu.nchw_to_nhwc(inputs[f"{name}/x"])
    key = f"{name}/avg_image"
    fu.assert_close(key, np.transpose(restyle.average_image(model), (2, 0, 1)), expected[key],
                    atol(key))
    w, images = e4e_jax.restyle.invert(model, x, iterations=ITERATIONS)
    assert w.shape == (ITERATIONS, 2, 10, 512)
    assert images.shape == (ITERATIONS, 2) + model.input_size + (3,)
    for t in range(ITERATIONS):
        for key, got in ((f"{name}/loop_latents", w[t]),
                         (f"{name}/loop_images", np.transpose(images[t], (0, 3, 1, 2)))):
            fu.assert_close(f"{key}[{t}]", got, expected[key][t], atol(key))


@pytest.mark.slow   # three compiles of the 256 px IR-SE-50 loop (~1-2 min on 2 CPU cores)
def test_converted_checkpoint_through_invert_edit_and_eval(files, tmp_path_factory, tmp_path):
    """An official ReStyle-e4e checkpoint converted by `e4e-jax convert restyle` goes through
    the commands: `invert --method restyle` gives run_on_batch's last codes, `edit --input`
    encodes with the official 5 iterations (its latents are e4e_jax.restyle.invert's) and
    `eval` reports every iteration's distortion, the last one's as the entry's."""
    from PIL import Image

    from e4e_jax.cli import edit, invert
    from e4e_jax.cli import eval as eval_cli
    name = "e4e_backbone"
    conv_dir = _convert_official_dir(name, files, tmp_path_factory)
    model = e4e_jax.load_encoder(conv_dir)
    _, inputs, expected = files
    x = fu.nchw_to_nhwc(inputs[f"{name}/x"])
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k, n in enumerate(("a.png", "b.png")):    # uint8 patterns: the PNGs hold them exactly
        Image.fromarray(np.rint((x[k] + 1) * 127.5).astype(np.uint8)).save(imgs / n)
    out = tmp_path / "inv"
    assert invert.main(["--checkpoint", conv_dir, "--input", str(imgs), "--output", str(out),
                        "--method", "restyle", "--iterations", str(ITERATIONS)]) == 0
    key = f"{name}/loop_latents"
    fu.assert_close(f"{key} (invert command)", np.load(out / "latents.npy"),
                    expected[key][ITERATIONS - 1], atol(key))
    assert edit.main(["--checkpoint", conv_dir, "--input", str(imgs), "--edit", "sefa:0",
                      "--output", str(tmp_path / "edit")]) == 0
    ws, recs = restyle.invert(model, x, iterations=restyle.DEFAULT_ITERATIONS)
    np.testing.assert_allclose(np.load(tmp_path / "edit" / "latents.npy"), np.asarray(ws)[-1],
                               atol=1e-4)
    assert eval_cli.main(["--checkpoint", conv_dir, "--input", str(imgs), "--output",
                          str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "metrics.json") as f:
        (entry,) = json.load(f).values()
    per = entry["per_iteration"]
    assert per["iterations"] == restyle.DEFAULT_ITERATIONS and len(per["mse"]) == per["iterations"]
    want = [float(np.mean((np.clip(np.asarray(r), -1, 1) - x) ** 2)) for r in recs]
    np.testing.assert_allclose(per["mse"], want, rtol=1e-3)
    assert entry["mse"] == pytest.approx(per["mse"][-1])


@pytest.mark.slow
def test_encoder_only_file_with_generator_dir(files, tmp_path):
    """A checkpoint without decoder.* keys (opts as an argparse.Namespace) converts with
    --generator DIR, and its encoder reproduces the official codes."""
    pytest.importorskip("torch")
    from e4e_jax.convert.stylegan2 import convert_generator
    from e4e_jax.nets.generator import LoadedGenerator, module_from_config
    name = "e4e_resnet_backbone"
    manifest, inputs, expected = files
    entry = manifest["models"][name]
    state, extra = fu.state_from_manifest(entry)
    container = fu.build_container(entry, state, extra)
    decoder = {k[len("decoder."):]: a for k, a in container["state_dict"].items()
               if k.startswith("decoder.")}
    gen_config, gen_variables = convert_generator(decoder)
    gen_dir = save_generator(LoadedGenerator(module_from_config(gen_config), gen_variables,
                                             gen_config), str(tmp_path / "generator"))
    container["state_dict"] = {k: a for k, a in container["state_dict"].items()
                               if k.startswith("encoder.")}
    container["opts"] = argparse.Namespace(**container["opts"])
    src = fu.save_torch(container, str(tmp_path / "encoder_only.pt"))
    del state, container
    dst = str(tmp_path / "converted")
    assert convert_cli.main(["restyle", src, dst, "--generator", gen_dir]) == 0
    model = e4e_jax.load_encoder(dst)
    for (_, want), have in zip(jax.tree_util.tree_leaves_with_path(gen_variables),
                               jax.tree_util.tree_leaves(model.generator.variables)):
        np.testing.assert_array_equal(np.asarray(have), np.asarray(want))
    x6 = np.concatenate([fu.nchw_to_nhwc(inputs[f"{name}/x"]),
                         fu.nchw_to_nhwc(inputs[f"{name}/y"])], axis=-1)
    fu.assert_close(f"{name}/codes (encoder-only file)",
                    jax.jit(model.encoder.apply)(model.variables, x6),
                    expected[f"{name}/codes"], atol(f"{name}/codes"))


# ------------------------------------------------------------------ tiny models: behaviours

TINY = dict(widths=(8, 16, 16, 32), units=(1, 2, 1, 1), style_dim=32)


LOOP_TINY = dict(widths=(8, 16, 16, 32), units=(1, 1, 1, 1), style_dim=32)


def tiny_model(encoder_type="ProgressiveBackboneEncoder", cars=False, seed=0, **kwargs):
    """A ReStyle Inverter over a 16px tiny generator (6 W+ rows). Faces: 16x16 inputs, face_pool
    16. Cars: the official 256-pixel face_pool and rows 32:224 scaled by 1/8, face_pool 32 then
    rows 4:28, 24x32 inputs (so the raw 16px images crop rows 2:14)."""
    g = tiny_generator(16)
    size = (24, 32) if cars else (16, 16)
    cfg = E.encoder_config(encoder_type, g.n_latent, size, **LOOP_TINY)
    v = E.init_encoder(jax.random.PRNGKey(seed), cfg)
    # small heads: residuals of ~0.1 around latent_avg keep the tiny loop bounded
    for name, node in v["params"].items():
        if name.startswith("styles_"):
            node["linear"]["kernel"] = node["linear"]["kernel"] * 0.1
    la = (0.5 * np.random.default_rng(seed).standard_normal((g.n_latent, 32))).astype(np.float32)
    return Inverter(cfg, v, g, latent_avg=la, face_pool_size=32 if cars else 16,
                    crop_rows=(4, 28) if cars else None, **kwargs)


def stepwise_reference(model, x, iterations, resize=True):
    """The official run_on_batch written out step by step with the model's pure pieces:
    (avg image, W+ per iteration, reconstructions per iteration)."""
    encode = jax.jit(model.encoder.apply)
    decode = jax.jit(lambda gv, w: model.apply_decode(gv, w))
    pool = jax.jit(lambda images: adaptive_avg_pool2d(images, model.input_size))
    la = jnp.asarray(model.latent_avg)
    avg = pool(decode(model.generator.variables, la[None]))
    y = jnp.broadcast_to(avg, x.shape)
    w = jnp.broadcast_to(la, (x.shape[0],) + la.shape)
    ws, recs = [], []
    for _ in range(iterations):
        w = w + encode(model.variables, jnp.concatenate([x, y], -1))
        rec = decode(model.generator.variables, w)
        y = pool(rec)
        ws.append(w)
        recs.append(rec)
    return np.asarray(avg[0]), np.stack(ws), np.stack(recs)


@pytest.mark.parametrize("cars", [False, True], ids=["faces", "cars"])
def test_loop_matches_stepwise_reference(cars):
    model = tiny_model(cars=cars)
    x = rand_images(3, *model.input_size)
    w, rec = restyle.invert(model, x, iterations=3)
    want_avg, want_w, want_rec = stepwise_reference(model, jnp.asarray(x), 3)
    assert w.shape == (3, 3, 6, 32) and rec.shape == (3, 3) + model.input_size + (3,)
    np.testing.assert_allclose(np.asarray(w), want_w, atol=2e-5)
    np.testing.assert_allclose(np.asarray(rec), want_rec, atol=1e-4)
    # every iteration moves the codes (the residual is added, not replaced)
    assert np.abs(np.asarray(w[1] - w[0])).max() > 1e-3
    # the average image: the generator's image of latent_avg, pooled and cropped like the recs
    np.testing.assert_allclose(np.asarray(restyle.average_image(model)), want_avg, atol=1e-5)


def test_raw_reconstructions_with_the_cars_crop():
    """resize=False (official resize_outputs=False): the raw generator images, the cars rows
    scaled to the generator's resolution (official 64:448 of 512); the codes do not change."""
    model = tiny_model(cars=True)
    x = rand_images(2, *model.input_size)
    w, raw = restyle.invert(model, x, iterations=2, resize=False)
    _, want_w, _ = stepwise_reference(model, jnp.asarray(x), 2)
    assert raw.shape == (2, 2, 12, 16, 3)
    np.testing.assert_allclose(np.asarray(w), want_w, atol=2e-5)
    full = jax.jit(lambda gv, w: model.apply_decode(gv, w, resize=False))(
        model.generator.variables, w[1])
    np.testing.assert_allclose(np.asarray(raw[1]), np.asarray(full)[:, 2:14], atol=1e-5)


def test_one_program_batch_modes_and_iterations():
    """One compilation per (shape, iterations); one image at a time (the CPU default) and the
    batched program agree; a shorter run is a prefix of a longer one."""
    model = tiny_model("ResNetBackboneEncoder", seed=1)
    x = rand_images(2, *model.input_size, seed=3)
    w3, r3 = restyle.invert(model, x, iterations=3)
    with CompileCounter() as compiles:
        restyle.invert(model, x + 0.1, iterations=3)
        restyle.invert(tiny_model("ResNetBackboneEncoder", seed=2), x, iterations=3)
    assert compiles.count == 0          # new images, even another model's weights: no program
    batched = tiny_model("ResNetBackboneEncoder", seed=1, scan_batch=False)
    assert model.scan_batch and not batched.scan_batch
    wb, rb = restyle.invert(batched, x, iterations=1)
    assert wb.shape == (1, 2, 6, 32)
    np.testing.assert_allclose(np.asarray(wb[0]), np.asarray(w3[0]), atol=2e-5)
    np.testing.assert_allclose(np.asarray(rb[0]), np.asarray(r3[0]), atol=1e-4)


def test_invert_checks_its_arguments():
    model = tiny_model("BackboneEncoder")
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        restyle.invert(model, np.zeros((1, 16, 16, 6), np.float32))
    with pytest.raises(ValueError, match="float32"):
        restyle.invert(model, np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="positive integer"):
        restyle.invert(model, np.zeros((1, 16, 16, 3), np.float32), iterations=0)
    g = tiny_generator(32)
    cfg = E.encoder_config("Encoder4Editing", g.n_latent, (32, 32), **TINY)
    e4e = Inverter(cfg, E.init_encoder(jax.random.PRNGKey(0), cfg), g,
                   latent_avg=np.zeros((8, 32), np.float32), face_pool_size=32)
    with pytest.raises(ValueError, match="convert restyle"):
        restyle.invert(e4e, np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(TypeError, match="load_encoder"):
        restyle.invert(object(), np.zeros((1, 32, 32, 3), np.float32))
    # the one-pass entry points explain what a ReStyle encoder takes
    with pytest.raises(ValueError, match="e4e_jax.restyle.invert"):
        model.encode(np.zeros((1, 16, 16, 3), np.float32))
    assert e4e_jax.restyle is restyle


@pytest.mark.parametrize("encoder_type", E.RESTYLE_ENCODER_TYPES)
def test_tiny_encoders(encoder_type):
    """Shapes, the variable tree the converter maps, the e4e stages as data."""
    cfg = E.encoder_config(encoder_type, 8, (32, 32), **TINY)
    assert cfg["input_nc"] == 6
    enc = E.build_encoder(cfg)
    v = E.init_encoder(jax.random.PRNGKey(0), cfg)
    p = v["params"]
    assert sorted(k for k in p if k.startswith("styles_")) == sorted(f"styles_{i}"
                                                                     for i in range(8))
    # the 2x2 map of a 32 px input takes one stride-2 conv to 1x1 (official spatial=16: 4 convs
    # for the 16x16 map of the official 256 input, which test_convert_* load)
    assert sorted(p["styles_0"]) == ["convs_0", "linear"]
    big = E.init_encoder(jax.random.PRNGKey(0), E.encoder_config(encoder_type, 8, (256, 256),
                                                                  **TINY))["params"]
    assert sorted(big["styles_0"]) == ["convs_0", "convs_1", "convs_2", "convs_3", "linear"]
    if encoder_type.startswith("ResNet"):
        assert p["conv1"]["kernel"].shape == (7, 7, 6, 8) and "prelu" in p
        assert len(p["body"]) == 5 and "downsample_conv" in p["body"]["block_1"]
        assert "downsample_conv" not in p["body"]["block_0"]
    else:
        assert p["input_layer"]["conv"]["kernel"].shape == (3, 3, 6, 8)
    x6 = np.concatenate([rand_images(2, 32, 32), rand_images(2, 32, 32, seed=2)], -1)
    traces = []

    @jax.jit
    def f(v, x, stage):
        traces.append(1)
        return enc.apply(v, x, progressive_stage=stage)

    full = np.asarray(jax.jit(enc.apply)(v, x6))
    assert full.shape == (2, 8, 32)
    if encoder_type.startswith(("Progressive", "ResNetProgressive")):
        for stage in (0, 3, 18):
            out = np.asarray(f(v, x6, jnp.int32(stage)))
            for i in range(8):
                if 1 <= i <= stage:
                    np.testing.assert_allclose(out[:, i], full[:, i], atol=1e-6)
                else:
                    np.testing.assert_array_equal(out[:, i], out[:, 0])
        assert len(traces) == 1
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 6\)"):
        enc.apply(v, x6[..., :3])
    with pytest.raises(ValueError, match="6 input channels"):
        E.encoder_config(encoder_type, 8, (32, 32), input_nc=3)


def test_config_validation():
    with pytest.raises(ValueError, match="ResNet-34"):
        E.encoder_config("ResNetBackboneEncoder", 18, num_layers=50)
    with pytest.raises(ValueError, match="256 pixels"):
        E.encoder_config("BackboneEncoder", 18, (512, 512))
    with pytest.raises(ValueError, match="3 input channels"):
        E.encoder_config("Encoder4Editing", 18, input_nc=6)
    cfg = E.encoder_config("ResNetProgressiveBackboneEncoder", 18)
    assert (cfg["num_layers"], cfg["mode"], cfg["input_nc"]) == (34, "resnet34", 6)
    # e4e / pSp configs are unchanged (no input_nc entry)
    assert "input_nc" not in E.encoder_config("Encoder4Editing", 18)


# ------------------------------------------------------------------ converter on tiny checkpoints

def official_state(config, variables):
    """Flax variables -> the official encoder state dict (keys without 'encoder.'), with the
    BatchNorm num_batches_tracked buffers an official file has."""
    out = {}
    for key, (collection, path, kind, shape) in conv.official_layout(
            E.encoder_shapes(config), config["encoder_type"]).items():
        value = np.asarray(_get(variables[collection], path))
        if path[-1] == "kernel" and kind == "conv":
            value = value.transpose(3, 2, 0, 1)
        elif path[-1] == "kernel" and kind == "dense":
            value = value.T
        elif path[-1] == "kernel" and kind == "se_fc":
            value = value.T[:, :, None, None]
        assert value.shape == tuple(shape), key
        out[key] = np.ascontiguousarray(value)
        if key.endswith(".running_mean"):
            out[key.replace(".running_mean", ".num_batches_tracked")] = np.array(0, np.int64)
    return out


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def tiny_checkpoint(encoder_type, output_size=32, opts_namespace=False):
    """(container, config, variables, generator) of a tiny official-format ReStyle checkpoint
    without decoder.* keys (the generator goes in with --generator)."""
    g = tiny_generator(32)
    cfg = E.encoder_config(encoder_type, g.n_latent, (32, 32), **TINY)
    v = E.init_encoder(jax.random.PRNGKey(5), cfg)
    state = {f"encoder.{k}": a for k, a in official_state(cfg, v).items()}
    opts = dict(encoder_type=encoder_type, output_size=output_size, input_nc=6,
                dataset_type="ffhq_encode", n_iters_per_batch=5, start_from_latent_avg=True,
                device="cuda:0")
    la = (0.1 * np.random.default_rng(5).standard_normal((g.n_latent, 32))).astype(np.float32)
    container = {"state_dict": state, "latent_avg": la,
                 "opts": argparse.Namespace(**opts) if opts_namespace else opts}
    return container, cfg, v, g


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    return save_generator(tiny_generator(32), str(tmp_path_factory.mktemp("gen") / "g32"))


@pytest.mark.parametrize("encoder_type", E.RESTYLE_ENCODER_TYPES)
def test_encoder_conversion_round_trip(encoder_type):
    """Official key names and layouts of every encoder: a tiny model written in the official
    layout converts back to the same variables (official files have official widths; the full
    sizes go through the CLI in the parity tests)."""
    container, cfg, v, _ = tiny_checkpoint(encoder_type)
    state = {k[len("encoder."):]: a for k, a in container["state_dict"].items()}
    got = conv.convert_restyle_encoder(state, cfg)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(v)
    for (path, want), have in zip(jax.tree_util.tree_leaves_with_path(v),
                                  jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(have, np.asarray(want), err_msg=str(path))
    # the checkpoint's opts give the official configuration of the same encoder type
    official = conv.restyle_config_from_opts(container["opts"], state)
    assert official == E.encoder_config(encoder_type, 8, (256, 256))
    assert official["input_nc"] == 6
    with pytest.raises(conv.ConversionError, match="missing keys"):
        conv.convert_restyle_encoder({k: a for k, a in state.items()
                                      if not k.startswith("styles.3.")}, cfg)


def fake_decoder(resolution, channels=4, style_dim=8):
    """The keys and shapes of a rosinality generator state that the size checks read."""
    n = int(np.log2(resolution)) - 2
    state = {"input.input": np.zeros((1, channels, 4, 4), np.float32),
             "conv1.conv.weight": np.zeros((1, channels, channels, 3, 3), np.float32),
             "style.1.weight": np.zeros((style_dim, style_dim), np.float32)}
    for j in range(n):
        state[f"to_rgbs.{j}.conv.weight"] = np.zeros((1, 3, channels, 1, 1), np.float32)
        state[f"convs.{2 * j}.conv.weight"] = np.zeros((1, channels, channels, 3, 3), np.float32)
    return {f"decoder.{k}": a for k, a in state.items()}


def _drop_heads(c, keep):
    c["state_dict"] = {k: a for k, a in c["state_dict"].items()
                       if not any(k.startswith(f"encoder.styles.{i}.") for i in range(keep, 99))}


def _three_channels(c):
    w = c["state_dict"]["encoder.input_layer.0.weight"]
    c["state_dict"]["encoder.input_layer.0.weight"] = w[:, :3]


REFUSALS = {
    "input channels": (_three_channels,
                       r"reads 3 input channels but opts\['input_nc'\] = 6"),
    "n_styles": (lambda c: _drop_heads(c, 6),
                 (r"has 6 style heads \(n_styles, as for a 16px generator\) but "
                  r"opts\['output_size'\] = 32 implies 8")),
    "stylegan size": (lambda c: c["state_dict"].update(fake_decoder(16)),
                      (r"decoder is a 16px generator but opts\['output_size'\] = 32 "
                       r"\(stylegan size mismatch\)")),
    "no generator": (lambda c: None, r"no decoder\.\* keys.*--generator DIR"),
    "no latent_avg": (lambda c: c.pop("latent_avg"), r"no latent_avg"),
    "e4e file": (lambda c: c["opts"].update(encoder_type="Encoder4Editing", stylegan_size=32),
                 r"use `e4e-jax convert e4e`"),
    "FPN encoder": (lambda c: c["opts"].update(encoder_type="GradualStyleEncoder"),
                    r"FPN encoder, is not supported"),
    "backbone": (lambda c: c["opts"].update(encoder_type="ResNetBackboneEncoder"),
                 r"has no 'conv1.weight'; it has 'input_layer.0.weight'"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_are_one_line(case, tmp_path, capsys):
    pytest.importorskip("torch")
    container, _, _, _ = tiny_checkpoint("ProgressiveBackboneEncoder")
    edit, pattern = REFUSALS[case]
    edit(container)
    src = fu.save_torch(container, str(tmp_path / "ckpt.pt"))
    assert convert_cli.main(["restyle", src, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    import re
    assert re.search(pattern, err), err
    assert not os.path.exists(tmp_path / "out")


def test_generator_option_size_mismatch(generator_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    container, _, _, _ = tiny_checkpoint("BackboneEncoder", output_size=64)
    # 10 heads for a 64px generator: copy head 0 to 8 and 9 so that only the size differs
    for k in [k for k in container["state_dict"] if k.startswith("encoder.styles.0.")]:
        for i in (8, 9):
            container["state_dict"][k.replace("styles.0.", f"styles.{i}.")] = \
                container["state_dict"][k]
    src = fu.save_torch(container, str(tmp_path / "ckpt.pt"))
    assert convert_cli.main(["restyle", src, str(tmp_path / "out"), "--generator",
                             generator_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert "is 32px but opts['output_size'] = 64 (stylegan size mismatch)" in err
    assert len(err.splitlines()) == 1


def test_convert_command_help(capsys):
    """`e4e-jax convert restyle --help` and the script alias convert_weights/restyle.py."""
    import importlib
    assert importlib.import_module("convert_weights.restyle") is conv
    assert "restyle" in convert_cli.FORMATS
    try:
        code = conv.main(["--help"])
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: e4e-jax convert restyle")
    assert "--generator DIR" in out and "examples:\n  e4e-jax convert restyle" in out
