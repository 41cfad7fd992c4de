"""StyleGAN3 generator: parity with the official outputs (configs T and R, a conditional T),
conversion of official snapshot pickles and of stylegan3-editing .pt state dicts through
`e4e-jax convert stylegan3`, the safe reading of the pickles, and the refusals.

The fixture (tests/fixtures/stylegan3_generator, made by tests/parity/generate/
stylegan3_generator.py from NVlabs/stylegan3 c233a91) holds three official snapshot pickles;
they are converted by the command line and the loaded generators must reproduce the official
outputs within a relative error of 2e-4 (max abs error / max |expected|) at precision "highest".
Config R's synthesis takes ~30 s to compile on 2 CPU cores: its parity test is marked slow; its
conversion, filters and a radial filtered_lrelu layer are checked in the fast tests.
"""
import io
import os
import pickle
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import tests.support.ada_pickle_writer as writer
import tests.support.fixtures as fu
from tests.support.paths import REPO

from e4e_jax.cli.convert import main as convert_main
from e4e_jax.convert import stylegan3 as conv
from e4e_jax.convert.common import ConversionError
from e4e_jax.convert.safe_pickle import UnsafePickleError, load_network_pickle
from e4e_jax.models.stylegan3_ops import (filtered_lrelu, layer_filters, synthesis_schedule)
from e4e_jax.nets.stylegan3 import init_stylegan3, load_stylegan3

FIX = "stylegan3_generator"
REL_TOL = 2e-4
FIX_DIR = os.path.join(fu.FIXTURES, FIX)


def snapshot_path(name):
    return os.path.join(FIX_DIR, f"network-snapshot-{name}.pkl")


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture(FIX)


def state_of(fixture, name):
    """The G_ema state dict of generator `name` (numpy, official keys)."""
    p = name + "/"
    return {k[len(p):]: v for k, v in fixture.state.items() if k.startswith(p)}


def convert(tmp_path_factory, src, *extra):
    out = tmp_path_factory.mktemp("sg3") / "converted"
    assert convert_main(["stylegan3", str(src), str(out), *extra]) == 0
    return load_stylegan3(str(out), precision="highest")


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = convert(tmp_path_factory, snapshot_path(name))
        return cache[name]
    return get


def check(fixture, key, got, nchw=False):
    got = np.asarray(got)
    if nchw:
        got = fu.nhwc_to_nchw(got)
    want = fixture.expected[key]
    fu.assert_close(key, got, want, atol=REL_TOL * float(np.abs(want).max()))


def labels(fixture, name):
    return fixture.inputs.get(f"{name}_c")


def check_generator(g, fixture, name):
    """Every stored output of generator `name`."""
    p, inp = name + "_", fixture.inputs
    z, c, ws = inp[p + "z"], labels(fixture, name), inp[p + "ws"]
    psi, psi_cut = float(inp["truncation_psi"]), float(inp["truncation_psi_cutoff"])
    cutoff = int(inp["truncation_cutoff"])
    check(fixture, p + "ws_z", g.mapping(z, c))
    check(fixture, p + "ws_z_trunc", g.mapping(z, c, truncation_psi=psi))
    check(fixture, p + "ws_z_trunc_cutoff", g.mapping(z, c, psi_cut, truncation_cutoff=cutoff))
    check(fixture, p + "img_ws", g.synthesis(ws), nchw=True)
    check(fixture, p + "img_z", g(z, c, truncation_psi=psi), nchw=True)
    check(fixture, p + "img_ws_transform", g.synthesis(ws, transform=inp["transform"]), nchw=True)
    check(fixture, p + "img_ws_transform_batched", g.synthesis(ws, transform=inp["transforms"]),
          nchw=True)


# ------------------------------------------------------------------ parity through the CLI

@pytest.mark.parametrize("name", ["t", "c"])
def test_snapshot_parity(gens, fixture, name):
    """Config T and the conditional T: mapping with / without truncation (and a cutoff),
    synthesis from W+, z -> image, one user transform, a batch of transforms."""
    check_generator(gens(name), fixture, name)


@pytest.mark.slow
def test_snapshot_parity_config_r(gens, fixture):
    check_generator(gens("r"), fixture, "r")


def test_converted_generators(gens, fixture):
    expect = {"t": ("T", 32, 16, 0, 32), "r": ("R", 64, 16, 0, 32), "c": ("T", 32, 10, 5, 24)}
    for name, (cfg, res, n_latent, c_dim, z_dim) in expect.items():
        g = gens(name)
        assert (g.config_name, g.resolution, g.n_latent, g.c_dim, g.z_dim, g.w_dim) == \
            (cfg, res, n_latent, c_dim, z_dim, 32), name
        assert g.config["source_code"].startswith("official (NVlabs/stylegan3")
        assert g.config["init_kwargs"] == fixture.manifest["configs"][name]["init_kwargs"]
        st = state_of(fixture, name)
        np.testing.assert_array_equal(g.latent_avg, st["mapping.w_avg"])
        np.testing.assert_array_equal(g.transform, np.eye(3))
        first = g.config["layer_names"][0]
        np.testing.assert_array_equal(
            g.variables["params"]["synthesis"][first]["kernel"],
            np.transpose(st[f"synthesis.{first}.weight"], (2, 3, 1, 0)))
        assert g.config["filter_max_deviation_from_design"] < 1e-6
    assert gens("c").config["output_scale"] == 0.5 and gens("c").config["conv_clamp"] == 2.0
    assert "LoadedStyleGAN3(config='R'" in repr(gens("r"))


def test_g_ema_is_converted_not_g(fixture):
    snap = load_network_pickle(snapshot_path("t"))
    assert not np.array_equal(snap["G"].state_dict()["mapping.fc0.weight"],
                              state_of(fixture, "t")["mapping.fc0.weight"])
    g = conv.convert_snapshot(snap)
    np.testing.assert_array_equal(g.variables["params"]["mapping"]["fc0"]["kernel"],
                                  state_of(fixture, "t")["mapping.fc0.weight"].T)


def test_filters_are_the_official_design(fixture):
    """The filter design reproduces the official buffers (stored exactly in the fixture)."""
    for name in ("t", "r"):
        kw = conv.generator_kwargs(fixture.manifest["configs"][name]["init_kwargs"])
        _, layers = conv.schedule_of(conv.config_from_kwargs(kw))
        st = state_of(fixture, name)
        for s in layers:
            for which, f in zip(("up_filter", "down_filter"), layer_filters(s)):
                key = f"synthesis.{s.name}.{which}"
                assert (f is None) == (key not in st), key
                if f is not None:
                    np.testing.assert_allclose(f, st[key], rtol=0, atol=1e-7, err_msg=key)
        assert any(np.ndim(v) == 2 for k, v in st.items() if "down_filter" in k) == (name == "r")


# ------------------------------------------------------------------ stylegan3-editing .pt

def test_pt_state_dict_in_the_stylegan3_editing_layout(tmp_path_factory, fixture, gens):
    """torch.save(G.state_dict()) as stylegan3-editing's SG3Generator loads it: hyper-parameters
    inferred from the shapes; the outputs equal the pickle's."""
    d = tmp_path_factory.mktemp("pt")
    src = fu.save_torch(state_of(fixture, "t"), str(d / "sg3-t.pt"))
    g = convert(tmp_path_factory, src)
    assert g.config["init_kwargs"]["channel_base"] == 128
    assert g.config["init_kwargs"]["channel_max"] == 16
    assert g.config_name == "T" and "source_code" not in g.config
    check(fixture, "t_img_ws_transform_batched",
          g.synthesis(fixture.inputs["t_ws"], transform=fixture.inputs["transforms"]), nchw=True)


def test_pt_needs_init_kwargs_for_what_shapes_cannot_tell(tmp_path_factory, fixture, capsys):
    """The conditional generator has output_scale 0.5 and conv_clamp 2: invisible in a state
    dict. With --init-kwargs it converts and matches; an e4e3 / psp3 checkpoint's decoder.*
    entries are taken; a stored batch of transforms falls back to the identity."""
    d = tmp_path_factory.mktemp("pt_c")
    st = state_of(fixture, "c")
    st["synthesis.input.transform"] = np.stack([np.eye(3, dtype=np.float32)] * 2)
    ckpt = {"state_dict": {"decoder." + k: v for k, v in st.items()},
            "latent_avg": st["mapping.w_avg"]}
    src = fu.save_torch(ckpt, str(d / "e4e3.pt"))
    g = convert(tmp_path_factory, src, "--init-kwargs",
                '{"output_scale": 0.5, "conv_clamp": 2}')
    assert "replaced by the identity" in capsys.readouterr().out
    assert (g.config["margin_size"], g.config["num_layers"], g.c_dim) == (6, 8, 5)
    check(fixture, "c_img_z", g(fixture.inputs["c_z"], fixture.inputs["c_c"], 0.7), nchw=True)


def test_inference_of_the_official_full_size_configs():
    """stylegan3-editing's two generator configs (models/stylegan3/model.py): R at 1024
    (channel_base 65536, channel_max 1024, conv_kernel 1, radial) and the landscape T at 256;
    shapes and filters only."""
    for kw in (dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                    channel_base=65536, channel_max=1024, conv_kernel=1,
                    use_radial_filters=True, mapping_kwargs={"num_layers": 2}),
               dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                    channel_base=32768, channel_max=512, mapping_kwargs={"num_layers": 2})):
        config = conv.config_from_kwargs(conv.generator_kwargs(kw))
        _, layers = conv.schedule_of(config)
        state = {k: np.zeros(s, np.float32) for k, s in conv.expected_shapes(config).items()}
        for s in layers:
            for which, f in zip(("up_filter", "down_filter"), layer_filters(s)):
                if f is not None:
                    state[f"synthesis.{s.name}.{which}"] = f
        inferred = conv.infer_kwargs(state, "full size")
        for key in ("channel_base", "channel_max", "conv_kernel", "use_radial_filters"):
            assert inferred[key] == kw.get(key, conv.LAYER_DEFAULTS.get(key)), key
        assert config["num_ws"] == 16
        assert config["layer_names"][-1].endswith(f"_{kw['img_resolution']}_3")


# ------------------------------------------------------------------ refusals

def refused(capsys, argv, match):
    """exit 2, one line on stderr naming the problem, no traceback."""
    assert convert_main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert match in err, err
    return err


def test_refuses_a_stylegan2_ada_pickle(tmp_path, capsys):
    kw = writer.tiny_init_kwargs(resolution=8, w_dim=8, channel_base=32, channel_max=4)
    src = writer.write_snapshot(str(tmp_path / "ada.pkl"), writer.synthetic_generator_state(kw),
                                kw)
    refused(capsys, ["stylegan3", src, str(tmp_path / "o")], "e4e-jax convert stylegan2_ada")


def test_stylegan2_ada_converter_names_this_one(tmp_path, capsys):
    assert convert_main(["stylegan2_ada", snapshot_path("t"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "StyleGAN3" in err and "e4e-jax convert stylegan3" in err and "Traceback" not in err


def test_refuses_globals_outside_the_allow_list(tmp_path, capsys):
    f = tmp_path / "evil.pkl"
    f.write_bytes(writer.dumps({"G_ema": writer.Call(
        writer.Global("training.networks_stylegan3", "Generator"), ())}))
    refused(capsys, ["stylegan3", str(f), str(tmp_path / "o")],
            "refused to load global training.networks_stylegan3.Generator")


def test_refuses_unknown_persistent_classes(tmp_path, capsys):
    """A snapshot whose SynthesisInput is another class (same-length rename in the bytes)."""
    data = open(snapshot_path("t"), "rb").read().replace(b"SynthesisInput", b"SynthesisInpuX")
    f = tmp_path / "renamed.pkl"
    f.write_bytes(data)
    refused(capsys, ["stylegan3", str(f), str(tmp_path / "o")],
            "unknown class 'SynthesisInpuX' at synthesis.input (expected SynthesisInput)")


def test_refuses_a_missing_key(tmp_path, fixture, capsys):
    st = state_of(fixture, "t")
    del st["synthesis.L3_36_16.bias"]
    src = fu.save_torch(st, str(tmp_path / "missing.pt"))
    refused(capsys, ["stylegan3", src, str(tmp_path / "o")],
            "missing keys (1): synthesis.L3_36_16.bias")
    snap = load_network_pickle(snapshot_path("t"))
    layer = snap["G_ema"].modules["synthesis"].modules["L3_36_16"]
    del layer.state["_parameters"]["bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\): synthesis\.L3_36_16\.bias"):
        conv.convert_snapshot(snap)


def test_refuses_layers_that_disagree_with_init_kwargs():
    snap = load_network_pickle(snapshot_path("t"))
    snap["G_ema"].modules["synthesis"].modules["L5_52_13"].state["padding"] = [0, 0, 0, 0]
    with pytest.raises(ConversionError, match=r"L5_52_13\.padding=\[0, 0, 0, 0\] "
                                              r"\(init_kwargs give \[-6, -9, -6, -9\]\)"):
        conv.convert_snapshot(snap)


def test_refuses_unknown_options_and_foreign_sources():
    kw = dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=32, img_channels=3, synthesis_kwargs={})
    with pytest.raises(ConversionError, match=r"unknown synthesis options \['synthesis_kwargs'\]"):
        conv.generator_kwargs(kw)
    snap = load_network_pickle(snapshot_path("c"))
    snap["G_ema"].module_src = "# training/networks_stylegan2.py\n"
    with pytest.raises(ConversionError, match="not a networks_stylegan3.py"):
        conv.convert_snapshot(snap)
    snap["G_ema"].module_src = conv.SOURCE_MARKERS[0] + "\n" + "\n".join(conv.SOURCE_MARKERS)
    assert conv.convert_snapshot(snap).config["source_code"].startswith("a modified")


def test_refuses_files_that_are_not_generators(tmp_path, capsys):
    (tmp_path / "junk.pkl").write_bytes(b"<html>not found</html>")
    refused(capsys, ["stylegan3", str(tmp_path / "junk.pkl"), str(tmp_path / "o")],
            "neither a network pickle nor a torch.save file")
    src = fu.save_torch({"g_ema": {"convs.0.conv.weight": np.zeros((1, 1, 1, 1, 1), np.float32)}},
                        str(tmp_path / "sg2.pt"))
    refused(capsys, ["stylegan3", src, str(tmp_path / "o")], "expected a StyleGAN3 Generator")
    refused(capsys, ["stylegan3", snapshot_path("t"), str(tmp_path / "o"), "--init-kwargs",
                     "{}x"], "--init-kwargs is not JSON")


# ------------------------------------------------------------------ safe reading

def test_numpy_arrays_in_pickles_are_data_only():
    """StyleGAN3 layers pickle their sizes as numpy arrays: number arrays load (protocols 4
    and 5), object arrays stay refused."""
    a = np.broadcast_to(np.asarray(36), [2])
    for protocol in (3, 4, 5):  # 3: torch.save's and python < 3.8's pickle.dump default
        out = load_network_pickle(io.BytesIO(pickle.dumps({"size": a, "f": np.arange(3.0)},
                                                          protocol=protocol)))
        assert list(out["size"]) == [36, 36] and list(out["f"]) == [0.0, 1.0, 2.0]
    with pytest.raises(UnsafePickleError, match="not a plain number type"):
        load_network_pickle(io.BytesIO(pickle.dumps(np.array([1, "a"], dtype=object))))


def test_conversion_needs_no_torch_and_runs_nothing(tmp_path):
    code = ("import sys; from convert_weights import stylegan3 as c; "
            f"assert c.main([{snapshot_path('t')!r}, {str(tmp_path / 'o')!r}]) == 0; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', "
            "'torch_utils', 'dnnlib', 'training', '_imported_module_'))]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------ building blocks

def _ref_upfirdn_1d(x, f, up, down, p0, p1, axis, gain=1.0):
    """numpy upfirdn along one axis (the official op's definition), float64."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    u = np.zeros(x.shape[:-1] + (n * up,))
    u[..., ::up] = x
    if p0 < 0:
        u = u[..., -p0:]
    if p1 < 0:
        u = u[..., :u.shape[-1] + p1]
    u = np.pad(u, [(0, 0)] * (u.ndim - 1) + [(max(p0, 0), max(p1, 0))])
    y = np.apply_along_axis(lambda r: np.convolve(r, np.asarray(f, np.float64) * gain,
                                                  mode="valid"), -1, u)
    return np.moveaxis(y[..., ::down], -1, axis)


def _ref_filtered_lrelu(x, fu_, fd, b, up, down, padding, gain, slope, clamp):
    import scipy.signal
    x = x.astype(np.float64) + b
    px0, px1, py0, py1 = padding
    x = _ref_upfirdn_1d(x, fu_, up, 1, py0, py1, 1, up)
    x = _ref_upfirdn_1d(x, fu_, up, 1, px0, px1, 2, up)
    x = np.where(x >= 0, x, x * slope) * gain
    x = np.clip(x, -clamp, clamp)
    if fd.ndim == 1:
        x = _ref_upfirdn_1d(x, fd, 1, down, 0, 0, 1)
        return _ref_upfirdn_1d(x, fd, 1, down, 0, 0, 2)
    out = np.stack([np.stack([scipy.signal.convolve2d(x[n, :, :, c], fd, mode="valid")
                              for c in range(x.shape[3])], -1) for n in range(x.shape[0])])
    return out[:, ::down, ::down]


@pytest.mark.parametrize("radial,index", [(False, 5), (False, 13), (True, 3)])
def test_filtered_lrelu_against_numpy(radial, index):
    """One layer's filtered leaky ReLU (up 4 with cropping; the cropping critical layer; the
    radial 2-D down-sampling filter of config R) against a float64 numpy definition."""
    _, layers = synthesis_schedule(32, 3, 128, 16, use_radial_filters=radial)
    s = layers[index]
    fu_, fd = layer_filters(s)
    assert (fd.ndim == 2) == radial
    rng = np.random.default_rng(index)
    size = s.in_size + s.conv_kernel - 1
    x = rng.standard_normal((2, size, size, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    import jax
    run = jax.jit(lambda x, fu_, fd, b: filtered_lrelu(x, fu_, fd, b, s.up_factor, s.down_factor,
                                                       s.padding, np.sqrt(2), 0.2, 1.5))
    got = run(jnp.asarray(x), jnp.asarray(fu_), jnp.asarray(fd), jnp.asarray(b))
    want = _ref_filtered_lrelu(x, fu_, fd, b, s.up_factor, s.down_factor, s.padding,
                               np.sqrt(2), 0.2, 1.5)
    assert got.shape == (2, s.out_size, s.out_size, 4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5)


def test_fourier_grid_is_torchs_affine_grid():
    """SynthesisInput's sample positions equal torch's affine_grid bit for bit."""
    torch = pytest.importorskip("torch")
    from e4e_jax.models.stylegan3 import affine_grid_positions
    for size, rate in ((36, 16), (52, 32), (276, 256), (1044, 1024)):
        theta = torch.eye(2, 3)
        theta[0, 0] = theta[1, 1] = 0.5 * size / rate
        grid = torch.nn.functional.affine_grid(theta[None], [1, 1, size, size],
                                               align_corners=False)[0].numpy()
        ours = affine_grid_positions(size, 0.5 * size / rate)
        np.testing.assert_array_equal(grid[0, :, 0], ours)
        np.testing.assert_array_equal(grid[:, 0, 1], ours)


# ------------------------------------------------------------------ the loaded wrapper

def test_wrapper_verbs(gens, fixture):
    g = gens("t")
    inp = fixture.inputs
    ws = g.mapping(inp["t_z"])
    w = ws[:, 0]
    np.testing.assert_array_equal(g.broadcast(w), ws)
    np.testing.assert_allclose(g.truncate(g.broadcast(w), 0.6, cutoff=4),
                               g.mapping(inp["t_z"], None, 0.6, 4), atol=1e-6)
    np.testing.assert_allclose(g.truncate(w, 0.7), g.mapping(inp["t_z"], None, 0.7)[:, 0],
                               atol=1e-6)
    import jax
    imgs = g.sample(jax.random.key(0), 3, truncation_psi=0.5)
    assert imgs.shape == (3, 32, 32, 3) and np.isfinite(np.asarray(imgs)).all()
    bf = g.with_policy(dtype="bfloat16")
    assert bf.variables is g.variables and bf.module.dtype == jnp.bfloat16
    assert g.mean_latent(64).shape == (1, 32)
    with pytest.raises(ValueError, match="unconditional"):
        g.mapping(inp["t_z"], np.zeros((3, 5)))
    with pytest.raises(ValueError, match="conditional"):
        gens("c").mapping(inp["c_z"])
    with pytest.raises(ValueError, match=r"transform must have shape \(3, 3\) or \(3, 3, 3\)"):
        g.synthesis(inp["t_ws"], transform=np.eye(4))
    with pytest.raises(ValueError, match=r"W\+ codes must have shape \(N, 16, 32\)"):
        g.synthesis(inp["t_ws"][:, :10])


def test_random_init_and_model_dir_round_trip(tmp_path):
    import jax
    from e4e_jax.nets import model_dir
    from e4e_jax.nets.stylegan3 import save_stylegan3
    g = init_stylegan3(jax.random.key(1), dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=16,
                                               channel_base=64, channel_max=8, num_layers=4))
    assert np.array_equal(g.transform, np.eye(3)) and g.n_latent == 6
    path = save_stylegan3(g, str(tmp_path / "g"))
    back = load_stylegan3(path)
    assert back.config == g.config and back.c_dim == 2
    model_dir.save_model_dir(str(tmp_path / "other"), "stylegan2_generator", {})
    with pytest.raises(model_dir.ModelDirError, match="holds a model of kind 'stylegan2_generator'"):
        load_stylegan3(str(tmp_path / "other"))


def test_command_line_help_and_listing(capsys):
    import convert_weights.stylegan3 as alias
    assert alias is conv
    try:
        code = alias.main(["--help"])
    except SystemExit as e:  # argparse's exit
        code = e.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: e4e-jax convert stylegan3")
    assert "examples:\n  e4e-jax convert stylegan3" in out and "--init-kwargs" in out
    assert convert_main(["--help"]) == 0
    assert "stylegan3" in capsys.readouterr().out
