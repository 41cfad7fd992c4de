"""`e4e-jax convert stylegan2`: fixture-size and full-size round trips, and refused files."""
import pickle

import jax
import numpy as np
import pytest

import tests.support.fixtures as fu

import e4e_jax
from e4e_jax.convert import stylegan2 as conv
from e4e_jax.convert.common import ConversionError
from e4e_jax.nets.model_dir import flatten_tree


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture("stylegan2_generator")


def test_fixture_roundtrip_preserves_every_tensor(fixture, tmp_path):
    src = fu.save_torch(fixture.container(), str(tmp_path / "g.pt"))
    assert conv.main([src, str(tmp_path / "out")]) == 0
    g = e4e_jax.load_generator(str(tmp_path / "out"))
    assert g.config["channel_multiplier"] == 2 and g.config["n_mlp"] == 8
    s = fixture.state
    p = g.variables["params"]
    # spot-check the layout changes against the official tensors
    np.testing.assert_array_equal(p["mapping"]["dense_3"]["kernel"], s["style.4.weight"].T)
    np.testing.assert_array_equal(p["convs_2"]["kernel"],
                                  np.transpose(s["convs.2.conv.weight"][0], (2, 3, 1, 0)))
    np.testing.assert_array_equal(p["input"]["const"], np.transpose(s["input.input"], (0, 2, 3, 1)))
    np.testing.assert_array_equal(g.variables["noises"]["noise_5"][0, :, :, 0],
                                  s["noises.noise_5"][0, 0])
    n_official = sum(np.size(v) for k, v in s.items() if not k.endswith("kernel")
                     or k.endswith("weight"))
    n_ours = sum(np.size(v) for v in flatten_tree(g.variables).values())
    assert n_ours == n_official  # every value converted, nothing invented (FIR buffers are code)


@pytest.mark.slow
def test_full_size_ffhq_config_f(tmp_path):
    """The 1024x1024, channel-multiplier-2 FFHQ generator: shapes of every converted tensor."""
    manifest, state, extra = fu.load_real_size("stylegan2_ffhq_config_f.json")
    ckpt = fu.build_container(manifest, state, extra)
    src = fu.save_torch(ckpt, str(tmp_path / "ffhq.pt"))
    assert conv.main([src, str(tmp_path / "ffhq")]) == 0
    g = e4e_jax.load_generator(str(tmp_path / "ffhq"))  # checks every shape against the module
    assert (g.resolution, g.n_latent, g.config["channel_multiplier"]) == (1024, 18, 2)
    assert g.module.channels == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    out = jax.eval_shape(lambda v, w: g.module.apply(v, w), g.variables,
                         jax.ShapeDtypeStruct((2, 18, 512), np.float32))
    assert out.shape == (2, 1024, 1024, 3)


def _ckpt(fixture):
    return {"g_ema": dict(fixture.state), "latent_avg": fixture.extra["latent_avg"]}


def test_missing_key_is_named(fixture):
    ckpt = _ckpt(fixture)
    del ckpt["g_ema"]["convs.3.noise.weight"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\): convs.3.noise.weight"):
        conv.convert_checkpoint(ckpt)


def test_unexpected_key_is_named(fixture):
    ckpt = _ckpt(fixture)
    ckpt["g_ema"]["style.1.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): style.1.extra"):
        conv.convert_checkpoint(ckpt)


def test_wrong_shape_is_named(fixture):
    ckpt = _ckpt(fixture)
    ckpt["g_ema"]["convs.1.activate.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ConversionError, match=r"wrong shape for convs.1.activate.bias: "
                                              r"expected \(512,\), found \(7,\)"):
        conv.convert_checkpoint(ckpt)


def test_wrong_latent_avg(fixture):
    ckpt = _ckpt(fixture)
    ckpt["latent_avg"] = np.zeros(100, np.float32)
    with pytest.raises(ConversionError, match="latent_avg has 100 values"):
        conv.convert_checkpoint(ckpt)


def test_not_a_generator_checkpoint(fixture):
    with pytest.raises(ConversionError, match="no 'g_ema' entry.*e4e/pSp checkpoint"):
        conv.convert_checkpoint({"state_dict": {"decoder.style.1.weight": np.zeros(1)}})
    with pytest.raises(ConversionError, match="bare generator state dict"):
        conv.convert_checkpoint(dict(fixture.state))
    with pytest.raises(ConversionError, match="not a rosinality StyleGAN2"):
        conv.convert_checkpoint({"g_ema": {"features.0.weight": np.zeros(1)}})


def test_expected_resolution_mismatch(fixture):
    with pytest.raises(ConversionError, match="64x64 generator, but 1024 was expected"):
        conv.convert_generator(fixture.state, expected_resolution=1024)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    assert conv.main([str(bad), str(tmp_path / "out")]) == 2
    assert "Could not read" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert conv.main([str(tmp_path / "nope.pt"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "evil.pt"
    f.write_bytes(pickle.dumps({"g_ema": _Evil()}))
    assert conv.main([str(f), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "pwned").exists()
    err = capsys.readouterr().err
    assert "system" in err and "Nothing from the file was executed" in err
    assert "weights_only=False" not in err and "\x1b" not in err


def test_existing_output_survives_a_failed_conversion(fixture, tmp_path):
    src = fu.save_torch(fixture.container(), str(tmp_path / "g.pt"))
    assert conv.main([src, str(tmp_path / "out")]) == 0
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert conv.main([str(bad), str(tmp_path / "out")]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    e4e_jax.load_generator(str(tmp_path / "out"))
