"""`e4e-jax convert e4e`: layouts, the written directory, full-size files and wrong files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.fixtures as fu

import e4e_jax
from e4e_jax.convert import e4e as conv
from e4e_jax.convert.common import ConversionError
from e4e_jax.nets import model_dir as checkpoints
from e4e_jax.models.encoders import encoder_shapes


@pytest.fixture(scope="module")
def e4e_fx():
    return fu.load_fixture("e4e_encoder")


@pytest.fixture(scope="module")
def converted_dir(e4e_fx, tmp_path_factory):
    """The fixture checkpoint converted by the pure function and written as a directory."""
    d = tmp_path_factory.mktemp("e4e") / "converted"
    conv.write_e4e_dir(conv.convert_e4e(e4e_fx.container()), str(d), source="fixture")
    return str(d)


def test_directory_layout_and_values(e4e_fx, converted_dir):
    with open(os.path.join(converted_dir, "config.json")) as f:
        meta = json.load(f)
    assert meta["kind"] == "e4e_inverter" and meta["subdirs"] == ["generator"]
    cfg = meta["config"]
    assert cfg["encoder"]["encoder_type"] == "Encoder4Editing"
    assert cfg["encoder"]["n_styles"] == 10 and cfg["encoder"]["input_size"] == [256, 256]
    assert cfg["start_from_latent_avg"] is True and cfg["crop_rows"] is None
    md = checkpoints.load_model_dir(converted_dir, "e4e_inverter")
    np.testing.assert_array_equal(md.arrays["latent_avg"], e4e_fx.extra["latent_avg"])
    s = {k[len("encoder."):]: v for k, v in e4e_fx.state.items() if k.startswith("encoder.")}
    p, bs = md.variables["params"], md.variables["batch_stats"]
    # conv (out, in, kh, kw) -> HWIO; Linear / SE 1x1 conv -> (in, out); heads' convs.{2k}
    np.testing.assert_array_equal(p["input_layer"]["conv"]["kernel"],
                                  s["input_layer.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["body"]["block_3"]["shortcut_conv"]["kernel"],
                                  s["body.3.shortcut_layer.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["body"]["block_5"]["se"]["fc1"]["kernel"],
                                  s["body.5.res_layer.5.fc1.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(p["body"]["block_5"]["prelu"]["alpha"],
                                  s["body.5.res_layer.2.weight"])
    np.testing.assert_array_equal(p["styles_8"]["convs_2"]["kernel"],
                                  s["styles.8.convs.4.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["styles_8"]["linear"]["kernel"], s["styles.8.linear.weight"].T)
    np.testing.assert_array_equal(p["latlayer2"]["bias"], s["latlayer2.bias"])
    np.testing.assert_array_equal(bs["body"]["block_7"]["bn2"]["var"],
                                  s["body.7.res_layer.4.running_var"])
    np.testing.assert_array_equal(p["body"]["block_7"]["bn1"]["scale"],
                                  s["body.7.res_layer.0.weight"])
    # the generator is a generator directory of its own
    for path in (os.path.join(converted_dir, "generator"), converted_dir):
        g = e4e_jax.load_generator(path)
        assert g.resolution == 64 and g.n_latent == 10
    inv = e4e_jax.load_encoder(converted_dir)
    assert inv.input_size == (256, 256) and inv.n_latent == 10


@pytest.mark.slow
def test_official_key_names_round_trip():
    """Every official key of an IR-SE-50 e4e encoder maps to one Flax leaf and back."""
    fx_keys = fu.load_fixture("e4e_encoder").manifest["tensors"]
    official = {k[len("encoder."):] for k in fx_keys
                if k.startswith("encoder.") and not k.endswith("num_batches_tracked")}
    layout = conv.official_layout(encoder_shapes(conv.encoder_config_from_opts(
        {"encoder_type": "Encoder4Editing", "stylegan_size": 64}, {})))
    assert set(layout) == official
    for key, (_, _, _, shape) in layout.items():
        assert tuple(fx_keys["encoder." + key]["shape"]) == shape, key


def test_ir_backbone_converter(e4e_fx):
    """convert_ir_backbone (also used for the ArcFace network) reads input_layer.* / body.*."""
    s = {k[len("encoder."):]: v for k, v in e4e_fx.state.items() if k.startswith("encoder.")}
    v = conv.convert_ir_backbone(s)
    assert sorted(v["params"]) == ["body", "input_layer"]
    assert len(v["params"]["body"]) == 24
    np.testing.assert_array_equal(v["batch_stats"]["input_layer"]["bn"]["mean"],
                                  s["input_layer.1.running_mean"])
    with pytest.raises(ConversionError, match=r"missing keys \(1\): body\.23\.res_layer\.3"):
        conv.convert_ir_backbone({k: x for k, x in s.items() if k != "body.23.res_layer.3.weight"})


def _with(container, state=None, **top):
    out = dict(container)
    if state is not None:
        out["state_dict"] = state
    out.update(top)
    return out


@pytest.mark.slow
def test_wrong_files(e4e_fx, tmp_path, capsys):
    c = e4e_fx.container()
    st = c["state_dict"]

    def fails(obj, pattern):
        with pytest.raises(ConversionError, match=pattern):
            conv.convert_e4e(obj)

    fails(_with(c, {k: v for k, v in st.items() if k != "encoder.body.4.res_layer.1.weight"}),
          r"encoder: .*\n  missing keys \(1\): body\.4\.res_layer\.1\.weight")
    fails(_with(c, dict(st, **{"encoder.styles.3.extra.weight": np.zeros(3, np.float32)})),
          r"unexpected keys \(1\): styles\.3\.extra\.weight")
    fails(_with(c, dict(st, **{"encoder.latlayer1.bias": np.zeros(7, np.float32)})),
          r"wrong shape for latlayer1\.bias: expected \(512,\), found \(7,\)")
    fails(_with(c, dict(st, **{"head.x": np.zeros(1)})), r"outside encoder\.\* / decoder\.\*")
    # opts and the weights disagree on the generator size
    fails(_with(c, opts=dict(c["opts"], stylegan_size=128)),
          r"10 style heads .*stylegan_size'\] = 128 implies 12.*missing key 'styles\.10'")
    no_heads_8_9 = {k: v for k, v in st.items()
                    if not k.startswith(("encoder.styles.8.", "encoder.styles.9."))}
    fails(_with(c, no_heads_8_9, opts=dict(c["opts"], stylegan_size=32)),
          r"decoder: the weights are a 64x64 generator, but 32 was expected")
    fails(_with(c, opts=dict(c["opts"], encoder_type="ResNetEncoder")), r"not one of")
    fails({k: v for k, v in c.items() if k != "opts"}, r"no 'opts' entry")
    fails({"g_ema": {}}, r"use `e4e-jax convert stylegan2`")
    fails(_with(c, latent_avg=np.zeros((7, 512), np.float32)), r"latent_avg has shape \(7, 512\)")
    fails({k: v for k, v in c.items() if k != "latent_avg"}, r"has no latent_avg")
    # a single-row latent_avg (older pSp files) is repeated for every W+ row
    one = conv.convert_e4e(_with(c, latent_avg=e4e_fx.extra["latent_avg"][0]))
    np.testing.assert_array_equal(one["latent_avg"],
                                  np.repeat(e4e_fx.extra["latent_avg"][:1], 10, 0))
    # the CLI reports a corrupt file without a traceback
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert conv.main([str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.pt" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("manifest,size,heads,input_size,crop", [
    ("e4e_ffhq_encode.json", 1024, 18, (256, 256), None),
    ("e4e_cars_encode.json", 512, 16, (192, 256), [32, 224]),
    ("e4e_256.json", 256, 14, (256, 256), None),
])
@pytest.mark.slow
def test_full_size_conversion(manifest, size, heads, input_size, crop):
    man, state, extra = fu.load_real_size(manifest)
    container = fu.build_container(man, state, extra)
    out = conv.convert_e4e(container)
    cfg = out["config"]
    assert cfg["encoder"]["n_styles"] == heads and tuple(cfg["encoder"]["input_size"]) == input_size
    assert cfg["crop_rows"] == crop and cfg["stylegan_size"] == size
    assert out["generator_config"]["resolution"] == size
    checkpoints.check_tree(encoder_shapes(cfg["encoder"]), out["encoder_variables"], manifest)
    assert out["latent_avg"].shape == (heads, 512)
    n_enc = sum(v.size for k, v in state.items() if k.startswith("encoder.")
                and not k.endswith("num_batches_tracked"))
    assert sum(np.size(x) for x in jax.tree_util.tree_leaves(out["encoder_variables"])) == n_enc
    if size == 1024:
        # the user error behind "unexpected key styles.16": an 18-head encoder with a 512 size
        with pytest.raises(ConversionError, match=r"18 style heads .*unexpected key 'styles\.16'"):
            conv.convert_e4e(_with(container, opts=dict(container["opts"], stylegan_size=512)))


@pytest.mark.slow
def test_full_size_round_trip_through_torch_and_cli(tmp_path):
    """The real FFHQ file format at full size: torch.save -> CLI -> directory -> load_encoder;
    the model is checked by shape only (jax.eval_shape), not run."""
    man, state, extra = fu.load_real_size("e4e_ffhq_encode.json")
    src = fu.save_torch(fu.build_container(man, state, extra), str(tmp_path / "e4e_ffhq.pt"))
    del state
    assert conv.main([src, str(tmp_path / "converted")]) == 0
    os.remove(src)
    inv = e4e_jax.load_encoder(str(tmp_path / "converted"))
    assert inv.generator.resolution == 1024 and inv.n_latent == 18
    np.testing.assert_array_equal(inv.latent_avg, extra["latent_avg"])
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    w, img = jax.eval_shape(lambda v, x: inv.apply_invert(v, x, resize=True), inv.variables, x)
    assert w.shape == (2, 18, 512) and img.shape == (2, 256, 256, 3)
