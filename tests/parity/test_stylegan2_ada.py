"""StyleGAN2-ADA snapshots: safe loading, parity with the official G_ema, the ADA semantics on
tiny generators (against an independent numpy reference), refused files, and training over a
converted ADA generator.

The always-on tests read a pickle that tests/support/ada_pickle_writer.py writes from the fixture's
manifest (same structure as the official file, placeholder source); the official file itself is
read where ../shared/fixtures exists.
"""
import collections
import os
import pickletools
import subprocess
import sys

import jax
import numpy as np
import pytest

import tests.support.ada_pickle_writer as writer
import tests.support.fixtures as fu

import e4e_jax
from e4e_jax.convert import stylegan2_ada as conv
from e4e_jax.convert.common import ConversionError
from e4e_jax.convert.safe_pickle import (PersistentObject, UnsafePickleError,
                                          load_network_pickle)

FIX = "stylegan2_ada_generator"
from tests.support.paths import REPO as ROOT  # noqa: E402
REAL_SNAPSHOT = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", FIX,
                             "network-snapshot.pkl")


@pytest.fixture(scope="module")
def fixture():
    return fu.load_fixture(FIX)


@pytest.fixture(scope="module")
def snapshot(fixture, tmp_path_factory):
    return writer.write_fixture_snapshot(str(tmp_path_factory.mktemp("ada") / "snap.pkl"),
                                         fixture)


@pytest.fixture(scope="module")
def g(snapshot, tmp_path_factory):
    out = tmp_path_factory.mktemp("ada_out") / "converted"
    assert conv.main([snapshot, str(out)]) == 0
    return e4e_jax.load_generator(str(out))


def nchw(x):
    return fu.nhwc_to_nchw(np.asarray(x))


def check_all_outputs(gen, fixture):
    """Every stored output of the fixture from a loaded generator."""
    inp, exp = fixture.inputs, fixture.expected
    psi = float(inp["truncation_psi"])

    def check(name, got):
        fu.assert_close(name, got, exp[name], fu.suggested_atol(FIX, name))

    w = gen.mapping(inp["z"])
    check("ws_z", gen.broadcast(w))
    check("ws_z_trunc", gen.truncate_wplus(gen.broadcast(w), psi))
    check("img_ws_const", nchw(gen.synthesis(inp["ws"], noise="const")))
    check("img_ws_none", nchw(gen.synthesis(inp["ws"], noise="none")))
    check("img_z_const", nchw(gen(inp["z"], noise="const")))
    check("img_z_trunc_const", nchw(gen(inp["z"], truncation=psi, noise="const")))


# ------------------------------------------------------------------ parity with the fixture

def test_fixture_parity_through_the_cli(g, fixture):
    check_all_outputs(g, fixture)


def test_converted_config(g, fixture):
    assert (g.resolution, g.n_latent, g.num_layers, g.style_dim, g.z_dim) == (64, 10, 9, 512, 512)
    assert g.variant == "ada" and g.config["variant"] == "ada"
    assert g.config["channels"] == [128, 64, 32, 16, 8]       # min(512 // res, 256)
    assert g.config["conv_clamp"] is None and g.config["ada"]["num_fp16_res"] == 0
    assert g.config["ada"]["init_kwargs"] == fixture.manifest["container"]["G_ema"]["init_kwargs"]
    np.testing.assert_array_equal(g.latent_avg, fixture.state["mapping.w_avg"])
    p = g.variables["params"]
    np.testing.assert_array_equal(p["mapping"]["dense_0"]["kernel"],
                                  fixture.state["mapping.fc0.weight"].T)
    np.testing.assert_array_equal(p["convs_3"]["kernel"], np.transpose(
        fixture.state["synthesis.b16.conv1.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(g.variables["noises"]["noise_5"][0, :, :, 0],
                                  fixture.state["synthesis.b32.conv0.noise_const"])
    assert "ADA" in repr(g) or "ada" in repr(g)


def test_g_ema_is_converted_not_g(snapshot, fixture):
    snap = load_network_pickle(snapshot)
    g_params = snap["G"].state_dict()["mapping.fc0.weight"]
    assert not np.array_equal(g_params, fixture.state["mapping.fc0.weight"])
    gen = conv.convert_snapshot(snap)
    np.testing.assert_array_equal(gen.variables["params"]["mapping"]["dense_0"]["kernel"],
                                  fixture.state["mapping.fc0.weight"].T)


README_GLOBALS = {
    ("collections", "OrderedDict"), ("dnnlib.util", "EasyDict"),
    ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("torch_utils.persistence", "_reconstruct_persistent_obj")}
CLASS_COUNTS = {
    "G": {"Generator": 1, "SynthesisNetwork": 1, "SynthesisBlock": 5, "SynthesisLayer": 9,
          "FullyConnectedLayer": 22, "ToRGBLayer": 5, "MappingNetwork": 1},
    "D": {"Discriminator": 1, "DiscriminatorBlock": 4, "Conv2dLayer": 14,
          "DiscriminatorEpilogue": 1, "MinibatchStdLayer": 1, "FullyConnectedLayer": 2},
    "augment_pipe": {"AugmentPipe": 1}}


def pickle_globals(path):
    """(module, name) of every global the top-level pickle names (pickletools; nothing run)."""
    found, pushed, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(open(path, "rb").read()):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif op.name == "STACK_GLOBAL":
            found.add((pushed[-2], pushed[-1]))
        elif op.name == "GLOBAL":
            found.add(tuple(arg.split(" ")))
        elif op.name != "FRAME":
            pushed.append(None)
    return found


def class_counts(obj):
    counts = collections.Counter()

    def walk(o):
        counts[o.class_name] += 1
        for child in o.modules.values():
            walk(child)
    walk(obj)
    return dict(counts)


def structure(o, path=""):
    """Module paths -> (class, __dict__ keys in order, parameter / buffer names)."""
    out = {path: (o.class_name, tuple(o.state), tuple(o.parameters), tuple(o.buffers))}
    for name, child in o.modules.items():
        out.update(structure(child, f"{path}.{name}"))
    return out


def test_generated_pickle_has_the_snapshot_structure(snapshot):
    """The writer reproduces the README's container: keys, globals, persistent classes, meta."""
    assert pickle_globals(snapshot) == README_GLOBALS
    snap = load_network_pickle(snapshot)
    assert list(snap) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    for key in ("G", "G_ema", "D", "augment_pipe"):
        want = CLASS_COUNTS["G" if key == "G_ema" else key]
        assert class_counts(snap[key]) == want, key
    g_ema = snap["G_ema"]
    assert g_ema.version == 6 and isinstance(g_ema.module_src, str)
    assert type(g_ema.init_kwargs["mapping_kwargs"]).__name__ == "EasyDict"
    assert isinstance(g_ema.modules["synthesis"].modules["b4"].modules["conv1"].state["act_gain"],
                      np.float64)


# ------------------------------------------------------------------ the official file

needs_real = pytest.mark.skipif(
    not os.path.isfile(REAL_SNAPSHOT),
    reason=f"the official snapshot pickle is not in this checkout's ../shared ({REAL_SNAPSHOT}); "
           f"the generated pickle covers the same tests")


@needs_real
def test_official_snapshot_parity(fixture, tmp_path):
    assert conv.main([REAL_SNAPSHOT, str(tmp_path / "real")]) == 0
    check_all_outputs(e4e_jax.load_generator(str(tmp_path / "real")), fixture)


@needs_real
def test_official_snapshot_matches_the_generated_one(snapshot, fixture):
    real, ours = load_network_pickle(REAL_SNAPSHOT), load_network_pickle(snapshot)
    assert pickle_globals(REAL_SNAPSHOT) == README_GLOBALS
    assert list(real) == list(ours)
    for key in ("G", "G_ema", "D", "augment_pipe"):
        assert class_counts(real[key]) == class_counts(ours[key])
    for key in ("G", "G_ema"):
        assert structure(real[key]) == structure(ours[key])
        r, o = real[key].state_dict(), ours[key].state_dict()
        assert list(r) == list(o)
        for k in r:
            np.testing.assert_array_equal(r[k], o[k], err_msg=k)
    assert real["G_ema"].init_kwargs == ours["G_ema"].init_kwargs
    assert len(real["G_ema"].module_src) == 37391     # the embedded source stays text


# ------------------------------------------------------------------ safety

def _tiny_snapshot_bytes(module_src=writer.PLACEHOLDER_SOURCE, protocol=4):
    kw = writer.tiny_init_kwargs(resolution=8, w_dim=8, channel_base=32, channel_max=4)
    state = writer.synthetic_generator_state(kw)
    return writer.dumps({"G_ema": writer.generator_object(state, kw, module_src)}, protocol)


def _refused(tmp_path, payload: bytes, capsys, match):
    f = tmp_path / "evil.pkl"
    f.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=match):
        load_network_pickle(str(f))
    assert conv.main([str(f), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Nothing from the file was executed" in err
    assert not (tmp_path / "out").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_reduce_calling_os_system_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    import pickle
    payload = pickle.dumps({"G_ema": _Evil()}, protocol=4)
    _refused(tmp_path, payload, capsys, r"refused to load global (posix|os|nt)\.system")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("builtins", "exec"),
                                         ("builtins", "getattr"), ("subprocess", "Popen"),
                                         ("training.networks", "Generator")])
def test_other_globals_are_refused(tmp_path, capsys, module, name):
    payload = writer.dumps({"G_ema": writer.Call(writer.Global(module, name), ("1",))})
    _refused(tmp_path, payload, capsys, rf"refused to load global {module}\.{name}\b")


def test_hostile_global_inside_a_storage_blob_is_refused(tmp_path):
    import pickle
    blob = pickle.dumps(_Evil(), protocol=2)
    payload = writer.dumps(writer.Call(writer.LOAD_FROM_BYTES, (blob,)))
    f = tmp_path / "evil.pkl"
    f.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"system inside a tensor storage blob"):
        load_network_pickle(str(f))


def test_embedded_source_is_never_run(tmp_path, monkeypatch):
    """A snapshot whose embedded module source would write a file: converting it writes none."""
    monkeypatch.chdir(tmp_path)
    src = "open('source_was_run', 'w').write('x')\nimport os\nos.system('touch source_ran')\n"
    f = tmp_path / "snap.pkl"
    f.write_bytes(_tiny_snapshot_bytes(module_src=src))
    assert conv.main([str(f), str(tmp_path / "out")]) == 0
    assert not (tmp_path / "source_was_run").exists() and not (tmp_path / "source_ran").exists()
    assert load_network_pickle(str(f))["G_ema"].module_src == src   # kept as inert text
    e4e_jax.load_generator(str(tmp_path / "out"))


def test_conversion_needs_no_torch(snapshot, tmp_path):
    code = ("import sys; from convert_weights import stylegan2_ada as c; "
            f"assert c.main([{snapshot!r}, {str(tmp_path / 'o')!r}]) == 0; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', "
            "'torch_utils', 'dnnlib', 'training'))]; "
            "assert not bad, bad; print('ok')")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_older_pickle_spellings_are_read():
    """Protocol 3 (GLOBAL opcodes), numpy 1.x's numpy.core.multiarray.scalar, OrderedDict
    module containers (older torch)."""
    old_scalar = writer.Call(writer.Global("numpy.core.multiarray", "scalar"),
                             (np.dtype("float64"), np.float64(0.25).tobytes()))
    data = writer.dumps({"x": old_scalar, "od": collections.OrderedDict(a=1)}, protocol=3)
    import io
    out = load_network_pickle(io.BytesIO(data))
    assert out["x"] == 0.25 and isinstance(out["x"], np.float64)
    assert isinstance(out["od"], collections.OrderedDict)
    back = load_network_pickle(io.BytesIO(_tiny_snapshot_bytes(protocol=3)))
    assert isinstance(back["G_ema"], PersistentObject) and back["G_ema"].state_dict()
    objdt = writer.Call(writer.Global("numpy", "dtype"), ("O", False, True))
    with pytest.raises(UnsafePickleError, match="not a plain number type"):
        load_network_pickle(io.BytesIO(writer.dumps(objdt)))


# ------------------------------------------------------------------ refused / wrong files

def _snap(kw=None, **over):
    kw = kw or writer.tiny_init_kwargs(resolution=8, w_dim=8, channel_base=32, channel_max=4)
    state = writer.synthetic_generator_state(kw)
    state.update(over)
    return {"G_ema": writer.generator_object(state, kw)}, kw, state


def _roundtrip(obj):
    import io
    return load_network_pickle(io.BytesIO(writer.dumps(obj)))


def test_wrong_files_are_named(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04this is not a pickle")
    assert conv.main([str(corrupt), str(tmp_path / "o")]) == 2
    assert "not a readable network pickle" in capsys.readouterr().err
    zipped = tmp_path / "rosinality.pt"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert conv.main([str(zipped), str(tmp_path / "o")]) == 2
    assert "`e4e-jax convert stylegan2`" in capsys.readouterr().err
    assert conv.main([str(tmp_path / "missing.pkl"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ConversionError, match=r"no 'G_ema' entry \(found: \['D', 'G'\]\)"):
        conv.convert_snapshot({"G": None, "D": None})


def test_init_kwargs_that_disagree_with_the_tensors(tmp_path):
    snap, kw, state = _snap()
    bad = dict(kw, synthesis_kwargs=dict(kw["synthesis_kwargs"], channel_max=8))
    with pytest.raises(ConversionError, match=r"wrong shape for synthesis\.b4\.const: "
                                              r"expected \(8, 4, 4\), found \(4, 4, 4\)"):
        conv.convert_ada_generator(state, bad)
    missing = {k: v for k, v in state.items() if k != "synthesis.b8.conv0.noise_const"}
    with pytest.raises(ConversionError, match=r"missing keys \(1\): synthesis\.b8\.conv0\."
                                              r"noise_const"):
        conv.convert_ada_generator(missing, kw)
    mods = lambda o: o.state["_modules"]  # noqa: E731  (the writer's objects)
    mods(mods(mods(snap["G_ema"])["synthesis"])["b8"])["conv0"].state["conv_clamp"] = 256
    with pytest.raises(ConversionError, match=r"b8\.conv0\.conv_clamp=256 but init_kwargs "
                                              r"conv_clamp=None"):
        conv.convert_snapshot(_roundtrip(snap))


@pytest.mark.parametrize("key,value,match", [
    ("architecture", "resnet", "unsupported architecture 'resnet'"),
    ("resample_filter", [1, 2, 1], r"unsupported resample_filter \[1, 2, 1\]"),
    ("magnitude_ema_beta", 0.999, r"unknown synthesis_kwargs \['magnitude_ema_beta'\].*StyleGAN3"),
])
def test_unsupported_generators(key, value, match):
    kw = writer.tiny_init_kwargs(resolution=8, w_dim=8, channel_base=32, channel_max=4)
    kw["synthesis_kwargs"][key] = value
    with pytest.raises(ConversionError, match=match):
        conv.generator_kwargs(kw)


def test_stylegan3_generator_is_named():
    snap, kw, _ = _snap()
    syn = snap["G_ema"].state["_modules"]["synthesis"]
    syn.state["_modules"] = {"input": writer.Persistent("SynthesisInput", writer.module_state(
        {}, {}, {}, {}), "")}
    with pytest.raises(ConversionError, match="StyleGAN3 \\(alias-free\\)"):
        conv.convert_snapshot(_roundtrip(snap))


# ------------------------------------------------------------------ ADA semantics, tiny models

def _lrelu(x):
    return np.where(x >= 0, x, 0.2 * x) * np.sqrt(2.0)


def _fc(x, st, prefix, lr=1.0):
    w, b = st[f"{prefix}.weight"].astype(np.float64), st[f"{prefix}.bias"].astype(np.float64)
    return x @ (w * (lr / np.sqrt(w.shape[1]))).T + b * lr


def _norm2(x):
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def ref_mapping(st, kw, z, c=None):
    """ADA MappingNetwork.forward in float64, written from its semantics."""
    m = kw["mapping_kwargs"]
    lr = m.get("lr_multiplier", 0.01)
    x = _norm2(np.asarray(z, np.float64))
    if kw["c_dim"]:
        x = np.concatenate([x, _norm2(_fc(np.asarray(c, np.float64), st, "mapping.embed"))], 1)
    for i in range(m["num_layers"]):
        x = _lrelu(_fc(x, st, f"mapping.fc{i}", lr))
    return x


def _fir(x, pad0, pad1, up=1, gain=4.0):
    """upfirdn2d with the [1,3,3,1] filter (a convolution; the filter is symmetric), NCHW."""
    if up > 1:
        n, c, h, w = x.shape
        y = np.zeros((n, c, h * up, w * up))
        y[:, :, ::up, ::up] = x
        x = y
    x = np.pad(x, ((0, 0), (0, 0), (pad0, pad1), (pad0, pad1)))
    f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0 * gain
    h, w = x.shape[2] - 3, x.shape[3] - 3
    return sum(x[:, :, a:a + h, b:b + w] * f[a, b] for a in range(4) for b in range(4))


def _modconv(x, weight, styles, demod, up):
    """Per-sample weights (ADA's fused path); up: stride-2 transposed conv + FIR."""
    wt = weight[None].astype(np.float64) * styles[:, None, :, None, None]
    if demod:
        wt = wt / np.sqrt((wt ** 2).sum(axis=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    n, _, h, w = x.shape
    k = wt.shape[-1]
    if up:
        out = np.zeros((n, wt.shape[1], 2 * h + k - 2, 2 * w + k - 2))
        for a in range(k):
            for b in range(k):
                out[:, :, a:a + 2 * h:2, b:b + 2 * w:2] += np.einsum("nihw,noi->nohw", x,
                                                                      wt[:, :, :, a, b])
        return _fir(out, 1, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    return sum(np.einsum("nihw,noi->nohw", xp[:, :, a:a + h, b:b + w], wt[:, :, :, a, b])
               for a in range(k) for b in range(k))


def ref_synthesis(st, kw, ws, noise_mode="const"):
    """ADA SynthesisNetwork.forward (skip architecture) in float64, NCHW out."""
    clamp = kw["synthesis_kwargs"].get("conv_clamp")
    use_noise = kw["synthesis_kwargs"].get("use_noise", True)
    ws = np.asarray(ws, np.float64)

    def layer(p, x, w, up):
        x = _modconv(x, st[f"{p}.weight"], _fc(w, st, f"{p}.affine"), True, up)
        if use_noise and noise_mode == "const":
            x = x + st[f"{p}.noise_const"].astype(np.float64) * float(st[f"{p}.noise_strength"])
        x = _lrelu(x + st[f"{p}.bias"][None, :, None, None])
        return x if clamp is None else np.clip(x, -clamp, clamp)

    def torgb(p, x, w):
        s = _fc(w, st, f"{p}.affine") / np.sqrt(x.shape[1])
        y = _modconv(x, st[f"{p}.weight"], s, False, False) + st[f"{p}.bias"][None, :, None, None]
        return y if clamp is None else np.clip(y, -clamp, clamp)

    x = img = None
    res = kw["img_resolution"]
    for i, r in enumerate(2 ** j for j in range(2, int(np.log2(res)) + 1)):
        b = f"synthesis.b{r}"
        if r == 4:
            x = np.repeat(st[f"{b}.const"][None].astype(np.float64), len(ws), 0)
            x = layer(f"{b}.conv1", x, ws[:, 0], False)
            row = 1
        else:
            x = layer(f"{b}.conv0", x, ws[:, 2 * i - 1], True)
            x = layer(f"{b}.conv1", x, ws[:, 2 * i], False)
            row = 2 * i + 1
        if img is not None:
            img = _fir(img, 2, 1, up=2)
        y = torgb(f"{b}.torgb", x, ws[:, row])
        img = y if img is None else img + y
    return img


TINY_A = writer.tiny_init_kwargs(resolution=16, w_dim=32, z_dim=24, c_dim=5, num_layers=3,
                                 channel_base=128, channel_max=16, conv_clamp=0.5,
                                 embed_features=12, layer_features=20)
TINY_B = writer.tiny_init_kwargs(resolution=8, w_dim=16, num_layers=2, channel_base=64,
                                 channel_max=8, img_channels=1, use_noise=False,
                                 w_avg_beta=None)


def _convert_tiny(kw, seed=3):
    state = writer.synthetic_generator_state(kw, seed)
    snap = _roundtrip({"G_ema": writer.generator_object(state, kw)})
    return conv.convert_snapshot(snap), state


def test_conditional_clamped_generator_matches_the_reference():
    """c_dim > 0 (label embedding), z_dim != w_dim, layer_features, conv_clamp active."""
    gen, st = _convert_tiny(TINY_A)
    assert (gen.z_dim, gen.c_dim, gen.n_latent) == (24, 5, 6)
    rs = np.random.RandomState(0)
    z, c = rs.randn(3, 24).astype(np.float32), np.eye(5, dtype=np.float32)[[0, 3, 4]]
    w = gen.mapping(z, c)
    fu.assert_close("tiny mapping", w, ref_mapping(st, TINY_A, z, c), 2e-5)
    ws = rs.randn(3, 6, 32).astype(np.float32)
    for mode in ("const", "none"):
        want = ref_synthesis(st, TINY_A, ws, mode)
        fu.assert_close(f"tiny synthesis {mode}", nchw(gen.synthesis(ws, noise=mode)), want, 2e-5)
    layer_out = ref_synthesis(st, TINY_A, ws, "const")
    assert np.abs(layer_out).max() > 0.5          # the clamp is active and the test can fail
    # truncation with a cutoff: only the first 2 rows move toward w_avg
    psi, cutoff = 0.6, 2
    wr = np.repeat(ref_mapping(st, TINY_A, z, c)[:, None], 6, 1)
    avg = st["mapping.w_avg"].astype(np.float64)
    wr[:, :cutoff] = avg + psi * (wr[:, :cutoff] - avg)
    img = gen(z, c=c, truncation=psi, truncation_cutoff=cutoff)
    fu.assert_close("tiny truncation_cutoff", nchw(img), ref_synthesis(st, TINY_A, wr), 5e-5)
    with pytest.raises(ValueError, match="conditional"):
        gen.mapping(z)
    with pytest.raises(ValueError, match=r"\(N, 24\)"):
        gen.mapping(np.zeros((3, 32), np.float32), c)


def test_grayscale_noiseless_generator_matches_the_reference():
    """img_channels=1, use_noise=False (zero noise strength), no w_avg (no latent_avg)."""
    gen, st = _convert_tiny(TINY_B)
    assert gen.latent_avg is None and gen.config["ada"]["use_noise"] is False
    rs = np.random.RandomState(1)
    ws = rs.randn(2, gen.n_latent, 16).astype(np.float32)
    out = nchw(gen.synthesis(ws, noise="random", rng=jax.random.key(0)))
    assert out.shape == (2, 1, 8, 8)
    fu.assert_close("tiny grayscale", out, ref_synthesis(st, TINY_B, ws), 2e-5)
    with pytest.raises(ValueError, match="no latent_avg"):
        gen(rs.randn(2, 16), truncation=0.5)


def test_ada_epsilon_placement_is_the_variant_difference():
    """With tiny styles the demodulation epsilon matters: ADA adds it to the raw sum of squares,
    rosinality to the fan_in-scaled one. Both variants are checked against the numpy formula."""
    from e4e_jax.models.stylegan2 import modulated_conv
    rs = np.random.RandomState(2)
    x = rs.randn(2, 6, 6, 4).astype(np.float32)
    kernel = rs.randn(3, 3, 4, 5).astype(np.float32)
    style = (rs.rand(2, 4).astype(np.float32) + 0.5) * 1e-4
    w_oi = np.transpose(kernel, (3, 2, 0, 1)).astype(np.float64)
    want_ada = _modconv(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), w_oi, style, True,
                        False)
    got_ada = nchw(modulated_conv(x, style, kernel, True, False, weight_gain=False))
    fu.assert_close("modconv ada", got_ada, want_ada, 1e-5)
    gain = 1 / np.sqrt(36)
    want_ros = _modconv(np.transpose(x, (0, 3, 1, 2)).astype(np.float64), w_oi * gain, style,
                        True, False)
    got_ros = nchw(modulated_conv(x, style, kernel, True, False))
    fu.assert_close("modconv rosinality", got_ros, want_ros, 1e-5)
    assert np.abs(want_ada - want_ros).max() > 0.05


@pytest.mark.slow
def test_random_noise_is_per_sample(g):
    w_plus = np.repeat(np.asarray(g.broadcast(g.mapping(np.ones((1, 512))))), 2, 0)
    a = np.asarray(g.synthesis(w_plus, noise="random", rng=jax.random.key(0)))
    b = np.asarray(g.synthesis(w_plus, noise="random", rng=jax.random.key(0)))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0] - a[1]).max() > 1e-3               # same code, different noise
    none = np.asarray(g.synthesis(w_plus, noise="none"))
    assert np.abs(a[0] - none[0]).max() > 1e-3


@pytest.mark.slow
def test_extrapolation_and_sampling(g):
    """ADA truncates for any psi != 1 (psi > 1 extrapolates); rosinality only for psi < 1."""
    z = np.random.RandomState(3).randn(2, 512).astype(np.float32)
    w = np.asarray(g.mapping(z), np.float64)
    want = g.latent_avg + 1.5 * (w - g.latent_avg)
    got = np.asarray(g.truncate_wplus(g.broadcast(g.mapping(z)), 1.5))[:, 0]
    fu.assert_close("psi 1.5", got, want, 2e-5)
    imgs = g.sample(jax.random.key(0), 2, truncation=0.7)
    assert imgs.shape == (2, 64, 64, 3) and np.isfinite(np.asarray(imgs)).all()


# ------------------------------------------------------------------ encoders over ADA generators

STEPS = 24


@pytest.mark.slow
def test_training_over_a_converted_ada_generator(tmp_path):
    """train.py's loop (tiny demo config) with generator.path = a converted ADA snapshot."""
    from tests.support.train_utils import tiny_config
    from e4e_jax import train as trainer
    kw = writer.tiny_init_kwargs(resolution=16, w_dim=64, num_layers=2, channel_base=256,
                                 channel_max=16, conv_clamp=256)
    state = writer.synthetic_generator_state(kw, seed=11)
    # a trained snapshot's w_avg is the running mean of W (the encoder starts from it)
    z = np.random.RandomState(0).randn(4096, 64)
    state["mapping.w_avg"] = ref_mapping(state, kw, z).mean(0).astype(np.float32)
    pkl = writer.write_snapshot(str(tmp_path / "snap.pkl"), state, kw)
    assert conv.main([pkl, str(tmp_path / "gen")]) == 0
    config = tiny_config(max_steps=STEPS)
    config.generator.init.resolution = 0
    config.generator.path = str(tmp_path / "gen")
    # Ranger's rectified warm-up and lookahead need more steps than a short test affords
    config.optimizer.name, config.optimizer.lr = "adam", 3e-3
    summary = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    print("[train over ADA]", summary)
    assert summary["steps"] == STEPS
    assert np.isfinite(summary["mse_after"])
    # the unclamped held-out figure (the converted generator's values reach past [-1, 1])
    assert summary["holdout_mse_raw_after"] < 0.9 * summary["holdout_mse_raw_before"], summary
    inv = e4e_jax.load_encoder(str(tmp_path / "run" / "export"))
    assert inv.generator.variant == "ada"
