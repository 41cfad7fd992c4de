"""The checkpoint containers people have, through every converter's loader (issue 13, item 2).

Training checkpoints are written with torch.save exactly as the official training codes write
them (rosinality's train.py; encoder4editing's Coach.__get_save_dict), with real torch optimizer
states, from small synthetic weights (synth_weights), then converted; files carrying any other
class are refused with a message naming the class and the fix, without a traceback.
"""
import argparse
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tests.support.ada_pickle_writer as ada_writer  # noqa: E402
import tests.support.fixtures as fu  # noqa: E402
from tests.support.synth_weights import synth  # noqa: E402

import e4e_jax  # noqa: E402
from e4e_jax.convert import arcface
from e4e_jax.convert import e4e
from e4e_jax.convert import fid_inception
from e4e_jax.convert import lpips
from e4e_jax.convert import moco
from e4e_jax.convert import stylegan2  # noqa: E402
from e4e_jax.convert.common import (ConversionError, UnsafeCheckpointError,  # noqa: E402
                                     load_torch_file)
from e4e_jax.convert.pickle_scan import file_kind, pickle_globals  # noqa: E402
from e4e_jax.nets.model_dir import flatten_tree  # noqa: E402

from tests.support.paths import REPO as ROOT  # noqa: E402
MARKER = "marker_written_by_setstate"


class TrainingOptions:
    """A plain options class of some training code: not on the allow-list."""

    def __init__(self):
        self.size = 8
        self.lr = 0.002

    def __setstate__(self, state):  # would run if the unpickler built it
        open(MARKER, "w").close()
        self.__dict__.update(state)


def tiny_generator_state(seed: int) -> dict:
    """A rosinality Generator state dict at 8x8, 16 channels, n_mlp 2 (synthetic values)."""
    shapes = stylegan2.expected_generator_shapes(8, [16, 16], 2, 16)
    state = {k: synth(k, s, seed, 0.5) for k, s in shapes.items()}
    for k in state:
        if k.endswith(("blur.kernel", "upsample.kernel")):
            state[k] = stylegan2.official_fir_kernel()
    return state


def adam_state(named: dict, lr: float, betas=(0.0, 0.99)) -> dict:
    """A real torch.optim.Adam state_dict after one step over these tensors."""
    params = [torch.nn.Parameter(torch.from_numpy(np.array(v, np.float32))) for v in named.values()]
    opt = torch.optim.Adam(params, lr=lr, betas=betas)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def rosinality_args() -> argparse.Namespace:
    """`args` of rosinality's train.py (its parser's options plus what main() sets)."""
    return argparse.Namespace(
        path="lmdb/ffhq", arch="stylegan2", iter=800000, batch=16, n_sample=64, size=8, r1=10.0,
        path_regularize=2.0, path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9,
        ckpt=None, lr=0.002, channel_multiplier=2, wandb=False, local_rank=0, augment=True,
        augment_p=0.0, ada_target=0.6, ada_length=500000, ada_every=256, distributed=False,
        latent=512, n_mlp=8, start_iter=0)


@pytest.fixture(scope="module")
def rosinality_files(tmp_path_factory):
    """(train.py checkpoint, its plain {'g_ema'} file, legacy-format train.py checkpoint)."""
    d = tmp_path_factory.mktemp("rosinality")
    g_ema, g = tiny_generator_state(1), tiny_generator_state(2)
    disc = {"convs.0.0.weight": synth("d0", (16, 3, 1, 1), 3, 0.5),
            "final_linear.1.bias": synth("d1", (1,), 3, 0.5)}
    ckpt = {"g": fu.to_torch(g), "d": fu.to_torch(disc), "g_ema": fu.to_torch(g_ema),
            "g_optim": adam_state(g, 0.002 * 4 / 5, (0.0, 0.99 ** (4 / 5))),
            "d_optim": adam_state(disc, 0.002 * 16 / 17, (0.0, 0.99 ** (16 / 17))),
            "args": rosinality_args(), "ada_aug_p": 0.0625}
    train = d / "000100.pt"
    torch.save(ckpt, train)
    legacy = d / "000100_legacy.pt"
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    plain = fu.save_torch({"g_ema": g_ema}, str(d / "g_ema.pt"))
    return str(train), plain, str(legacy)


def _converted(src: str, dst: str):
    assert stylegan2.main([src, dst]) == 0
    return e4e_jax.load_generator(dst)


@pytest.mark.parametrize("which", [0, 2], ids=["zip", "legacy"])
def test_rosinality_train_checkpoint_converts_like_plain_g_ema(rosinality_files, which,
                                                                tmp_path):
    plain = _converted(rosinality_files[1], str(tmp_path / "plain"))
    train = _converted(rosinality_files[which], str(tmp_path / "train"))
    assert train.config == plain.config and train.resolution == 8
    a, b = flatten_tree(train.variables), flatten_tree(plain.variables)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_rosinality_train_checkpoint_contents_survive_loading(rosinality_files):
    ckpt = load_torch_file(rosinality_files[0])
    assert sorted(ckpt) == ["ada_aug_p", "args", "d", "d_optim", "g", "g_ema", "g_optim"]
    assert ckpt["args"] == vars(rosinality_args())  # the Namespace as a dict of its attributes
    assert ckpt["ada_aug_p"] == 0.0625
    state = ckpt["g_optim"]["state"]
    assert len(state) == len(ckpt["g"]) and isinstance(state[0]["exp_avg"], np.ndarray)
    assert ckpt["g_optim"]["param_groups"][0]["betas"] == (0.0, 0.99 ** (4 / 5))


def _refused_checks(err: str):
    name = f"{TrainingOptions.__module__}.TrainingOptions"
    assert name in err, err
    assert "What to do" in err and "plain.pt" in err and "Nothing from the file was executed" in err
    assert "weights_only=False" not in err and "\x1b" not in err and "Traceback" not in err
    assert not os.path.exists(MARKER)


def test_unknown_class_is_refused_by_the_cli(rosinality_files, tmp_path, monkeypatch):
    """`e4e-jax convert stylegan2` on a file with a non-allowed class: exit 2, the
    class named with what to do, no traceback, no colour codes, nothing of it run."""
    monkeypatch.chdir(tmp_path)
    ckpt = torch.load(rosinality_files[1], weights_only=True)
    ckpt["args"] = TrainingOptions()
    torch.save(ckpt, tmp_path / "custom.pt")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "e4e_jax.convert.stylegan2", "custom.pt", "out"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: 'custom.pt' refers to Python classes")
    _refused_checks(proc.stderr)
    assert "'g_ema'" in proc.stderr  # the converter's own example of what to keep
    assert not (tmp_path / "out").exists()


CONVERTERS = {
    "e4e": lambda src, dst: e4e.main([src, dst]),
    "moco": lambda src, dst: moco.main([src, dst]),
    "arcface": lambda src, dst: arcface.main([src, dst]),
    "fid_inception": lambda src, dst: fid_inception.main([src, dst]),
    "lpips": lambda src, dst: lpips.main(["--net", "alex", "--backbone", src, "--lin", src, dst]),
}


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_every_converter_refuses_unknown_classes_the_same_way(name, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "opts": TrainingOptions()}, "f.pt")
    assert CONVERTERS[name]("f.pt", "out") == 2
    err = capsys.readouterr().err
    _refused_checks(err)
    assert err.count("error:") == 1 and not os.path.exists("out")


def test_whole_pickled_model_and_numpy_object_arrays(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2), "ids": np.array([1, None], object)},
               tmp_path / "m.pt")
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_file(str(tmp_path / "m.pt"))
    assert "torch.nn.modules.linear.Linear" in info.value.refused
    assert "whole pickled model" in str(info.value)


def e4e_training_container(state_dict: dict, latent_avg, opts: dict) -> dict:
    """Coach.__get_save_dict with save_training_data and a latent discriminator, `opts` as a
    Namespace (forks store the Namespace itself rather than vars(opts))."""
    disc = {"mlp.0.weight": synth("m0", (4, 4), 5, 0.5), "mlp.0.bias": synth("m1", (4,), 5, 0.5)}
    some = dict(list(state_dict.items())[:3])
    return {"state_dict": fu.to_torch(state_dict), "opts": argparse.Namespace(**opts),
            "latent_avg": fu.to_torch(latent_avg), "global_step": 20000,
            "optimizer": adam_state(some, 1e-4, (0.95, 0.999)),
            "best_val_loss": np.float64(0.3125),
            "discriminator_state_dict": fu.to_torch(disc),
            "discriminator_optimizer_state_dict": adam_state(disc, 2e-5)}


def test_e4e_training_container_loads(tmp_path):
    """Fast: the container of an e4e training checkpoint reads as plain data (the weights here
    are a stand-in; the slow test below converts the real fixture)."""
    opts = dict(encoder_type="Encoder4Editing", stylegan_size=64, progressive_steps=[0, 2000],
                device="cuda:0", checkpoint_path=None, save_training_data=True)
    src = tmp_path / "iteration_20000.pt"
    torch.save(e4e_training_container({"encoder.a": np.ones(3, np.float32),
                                       "decoder.b": np.zeros(2, np.float32)},
                                      np.zeros((10, 4), np.float32), opts), src)
    ckpt = load_torch_file(str(src), keep=e4e.KEEP)
    assert ckpt["opts"] == opts and ckpt["global_step"] == 20000
    assert ckpt["best_val_loss"] == 0.3125
    assert set(ckpt["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    np.testing.assert_array_equal(ckpt["state_dict"]["encoder.a"], np.ones(3, np.float32))


@pytest.mark.slow
def test_e4e_training_checkpoint_converts_like_the_plain_file(tmp_path):
    """The IR-SE-50 fixture (~700 MB of weights) saved as a training checkpoint, converted by the
    CLI, equals the conversion of the plain official container."""
    fx = fu.load_fixture("e4e_encoder")
    plain = fx.container()
    src = tmp_path / "best_model.pt"
    torch.save(e4e_training_container(plain["state_dict"], plain["latent_avg"], plain["opts"]),
               src)
    assert e4e.main([str(src), str(tmp_path / "train")]) == 0
    os.remove(src)
    want = e4e.convert_e4e(plain)
    got = e4e_jax.load_encoder(str(tmp_path / "train"))
    np.testing.assert_array_equal(got.latent_avg, want["latent_avg"])
    a, b = flatten_tree(got.variables), flatten_tree(want["encoder_variables"])
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ga, gb = flatten_tree(got.generator.variables), flatten_tree(want["generator_variables"])
    assert sorted(ga) == sorted(gb)
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k], err_msg=k)


def test_moco_training_container(tmp_path):
    """moco_v2_800ep_pretrain.pth.tar: epoch, arch, state_dict, SGD optimizer state."""
    state = {"module.encoder_q.conv1.weight": np.ones((2, 3, 1, 1), np.float32),
             "module.encoder_k.conv1.weight": np.zeros((2, 3, 1, 1), np.float32),
             "module.queue": np.zeros((4, 2), np.float32)}
    params = [torch.nn.Parameter(torch.ones(2))]
    sgd = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    params[0].grad = torch.ones(2)
    sgd.step()
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": fu.to_torch(state),
                "optimizer": sgd.state_dict()}, tmp_path / "moco.pth.tar")
    kept = moco.moco_state_dict(load_torch_file(str(tmp_path / "moco.pth.tar"), keep=moco.KEEP))
    assert list(kept) == ["conv1.weight"]


def test_stylegan2_ada_pickle_given_to_the_rosinality_converter(tmp_path, capsys):
    kw = ada_writer.tiny_init_kwargs(resolution=8, w_dim=8, channel_max=8)
    pkl = ada_writer.write_snapshot(str(tmp_path / "network-snapshot-000100.pkl"),
                                    ada_writer.synthetic_generator_state(kw), kw)
    assert stylegan2.main([pkl, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "torch_utils.persistence._reconstruct_persistent_obj" in err
    assert "e4e-jax convert stylegan2_ada" in err and "Warning" not in err


@pytest.mark.parametrize("payload,cause", [
    (b"<!DOCTYPE html><html>Not Found</html>", "not a torch.save file"),
    (None, "truncated or damaged"),  # the first 300 bytes of a real checkpoint
    (pickle.dumps({"w": [1.0, 2.0]}), "plain pickle"),
])
def test_unreadable_files_say_why(rosinality_files, tmp_path, payload, cause):
    f = tmp_path / "x.pt"
    f.write_bytes(payload if payload is not None else open(rosinality_files[1], "rb").read()[:300])
    with pytest.raises(ConversionError, match="Could not read") as info:
        load_torch_file(str(f))
    msg = str(info.value)
    assert cause in msg and "\x1b" not in msg and "weights_only=False" not in msg
    assert "\n" not in msg


def test_pickle_scan_names_every_global(tmp_path):
    """STACK_GLOBAL names come back through the memo (the second class of the same module)."""
    f = tmp_path / "p.pkl"
    f.write_bytes(pickle.dumps([TrainingOptions, TrainingOptions, argparse.Namespace,
                                pickle.PickleError], protocol=4))
    mod = TrainingOptions.__module__
    assert pickle_globals(str(f)) == {f"{mod}.TrainingOptions", "argparse.Namespace",
                                      f"{pickle.PickleError.__module__}.PickleError"}
    assert file_kind(str(f)) == "pickle"
    torch.save({"a": TrainingOptions()}, tmp_path / "z.pt")
    assert f"{mod}.TrainingOptions" in pickle_globals(str(tmp_path / "z.pt"))
    assert file_kind(str(tmp_path / "z.pt")) == "zip"
