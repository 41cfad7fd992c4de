r"""Rebuilds tests/fixtures/pti_tuning from PTI's official single-image pivotal tuning.

Official code: danielroich/PTI at commit da94d59 (https://github.com/danielroich/PTI), imported
unchanged and run through its entry point; the generator is a tiny official StyleGAN2-ADA
`training/networks.py Generator` of NVlabs/stylegan2-ada-pytorch at commit d72cc7d
(https://github.com/NVlabs/stylegan2-ada-pytorch); LPIPS is the `lpips` package 0.1.4 that PTI
imports (`from lpips import LPIPS`).

Official functions whose outputs are saved: scripts/run_pti.py `run_PTI(run_name='fixture',
use_wandb=False, use_multi_id_training=False)` -> utils/ImagesDataset.py + DataLoader ->
training/coaches/single_id_coach.py `SingleIDCoach.train()` (with base_coach.py `BaseCoach.calc_loss`,
criteria/l2_loss.py, criteria/localitly_regulizer.py `Space_Regulizer`), three times: `main` (plain
tuning), `early_stop` (a threshold that stops at a known step) and `locality` (with the locality
regularizer). Saved: the per-step losses, the image at the pivot before tuning
(utils/models_utils.py `load_old_G().synthesis`) and after (`coach.forward`), every tuned
`G.synthesis` parameter, and for `locality` the regularizer's terms, sampled and morphed w.

How it is driven, without editing the official files:
- PTI is configured the way it expects, by assigning its configs/{hyperparameters, paths_config,
  global_config}.py module attributes (restored afterwards); the repository defaults the fixture
  relies on are checked first. The pivot is supplied through `use_last_w_pivots=True` (PTI reads
  embeddings/<id>/PTI/<image>/0.pt), because PTI's W projector returns 18 W+ rows for 1024 px
  generators only.
- The generator is written as a pickle {'G_ema': G} (deep-copied, eval, no grad, as the ADA
  training loop saves snapshot entries) that PTI's `load_old_G` reads.
- The per-step values are PTI's own local variables, read with a sys.settrace tap (LocalsTap).
- LPIPS's two downloads (torchvision's ImageNet AlexNet, the package's lin file) are answered with
  the synthetic weights; wandb and requests are inert stand-ins when they are not installed
  (use_wandb=False never calls wandb, nothing is downloaded); the CUDA plugins of PTI's
  torch_utils are not built; device 'cpu'.

Run it (needs torch, torchvision, lpips==0.1.4; checkouts of both official repositories):

    git clone https://github.com/danielroich/PTI /tmp/official/PTI
    git -C /tmp/official/PTI checkout da94d59
    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/official/stylegan2-ada-pytorch
    git -C /tmp/official/stylegan2-ada-pytorch checkout d72cc7d
    pip install --no-deps lpips==0.1.4
    python tests/parity/generate/pti_tuning.py --official /tmp/official/PTI \
        --ada /tmp/official/stylegan2-ada-pytorch --out tests/fixtures/pti_tuning

Add `--compare tests/fixtures/pti_tuning` (with --out elsewhere) to check a rebuild against the
committed fixture.
"""
import collections
import contextlib
import copy
import inspect
import json
import os
import pickle
import shutil
import sys
import tempfile
import types
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import lpips_criterion  # noqa: E402
import stylegan2_ada_generator as ada  # noqa: E402

FAMILY = "pti_tuning"
SEED = 1201
RESOLUTION = 32
CHANNEL_BASE = 512
CHANNEL_MAX = 32
STEPS = 10            # main and early_stop
LOCALITY_STEPS = 8
EARLY_STOP_MIN_STEP = 3
IMAGE_NAME = "target"
RUN_NAME = "fixture"
DATA_ID = "fixture_data"
PICKLE_NAME = "snapshot_G_ema.pkl"
# the repository defaults of configs/hyperparameters.py this fixture depends on
EXPECTED_DEFAULTS = dict(
    lpips_type="alex", first_inv_type="w", optim_type="adam", latent_ball_num_of_samples=1,
    locality_regularization_interval=1, use_locality_regularization=False, regulizer_l2_lambda=0.1,
    regulizer_lpips_lambda=0.1, regulizer_alpha=30, pt_l2_lambda=1, pt_lpips_lambda=1,
    LPIPS_value_threshold=0.06, max_pti_steps=350, first_inv_steps=450, max_images_to_invert=30,
    pti_learning_rate=3e-4, first_inv_lr=5e-3, train_batch_size=1, use_last_w_pivots=False)


# ------------------------------------------------------------------------------------------------
# reading official local variables
# ------------------------------------------------------------------------------------------------
def _copy_value(value):
    """A snapshot of a local variable: tensors and arrays copied, containers walked."""
    if hasattr(value, "detach"):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_value(v) for v in value)
    return value


class LocalsTap:
    """Reads local variables of official functions while they run, through sys.settrace, so the
    code itself is neither edited nor wrapped.

    tap(function, at={label: (source line prefix, [names])}, at_return=[names]): each time the
    interpreter is about to run the one source line of `function` that starts with the prefix, a
    copy of the named locals is appended to self.lines[label]; each time the function returns, the
    named locals (not copied) and the return value are appended to self.returns[function name]."""

    def __init__(self):
        self._watched = {}
        self.lines = {}
        self.returns = {}

    def tap(self, function, at=None, at_return=()):
        source, first_line = inspect.getsourcelines(function)
        by_line = {}
        for label, (prefix, names) in (at or {}).items():
            matches = [first_line + i for i, text in enumerate(source) if text.strip().startswith(prefix)]
            if len(matches) != 1:
                raise RuntimeError(f"{function.__qualname__}: {len(matches)} lines start with {prefix!r}")
            by_line[matches[0]] = (label, names)
            self.lines[label] = []
        self._watched[function.__code__] = (function.__name__, by_line, tuple(at_return))
        self.returns[function.__name__] = []

    def _on_call(self, frame, event, arg):
        return self._in_function if frame.f_code in self._watched else None

    def _in_function(self, frame, event, arg):
        name, by_line, at_return = self._watched[frame.f_code]
        if event == "line" and frame.f_lineno in by_line:
            label, names = by_line[frame.f_lineno]
            self.lines[label].append({n: _copy_value(frame.f_locals[n]) for n in names})
        elif event == "return":
            self.returns[name].append({"__return__": arg, **{n: frame.f_locals.get(n) for n in at_return}})
        return self._in_function

    @contextlib.contextmanager
    def active(self):
        previous = sys.gettrace()
        sys.settrace(self._on_call)
        try:
            yield self
        finally:
            sys.settrace(previous)


def scalar(value) -> float:
    return float(value.detach()) if hasattr(value, "detach") else float(value)


# ------------------------------------------------------------------------------------------------
# the two official trees
# ------------------------------------------------------------------------------------------------
class Trees:
    """The ADA tree (to build and pickle the generator) and the PTI tree (to run), entered one at
    a time: they share the names dnnlib, torch_utils and training."""

    def __init__(self, pti_dir: str, ada_dir: str):
        self.pti = common.OfficialTree(pti_dir)
        self.ada = common.OfficialTree(ada_dir)
        common.stub_missing_packages(["wandb", "click", "requests"])

    @contextlib.contextmanager
    def in_ada(self):
        with self.ada:
            common.disable_ada_plugins()
            yield

    @contextlib.contextmanager
    def in_pti(self):
        with self.pti:
            common.disable_ada_plugins()
            yield


@contextlib.contextmanager
def configured(assignments):
    """Assign attributes of PTI's config modules, [(module, {name: value})], restoring them after;
    every name must already exist (a typo must not silently add a new setting)."""
    saved = []
    try:
        for module, values in assignments:
            for name, value in values.items():
                if not hasattr(module, name):
                    raise AttributeError(f"{module.__name__} has no setting {name}")
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, value)
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def generator_manifest_parts(trees: Trees, resolution: int, channel_base: int, channel_max: int):
    """(tensor entries, info) of the tiny official generator built with train.py's kwargs."""
    with trees.in_ada():
        import dnnlib

        _, g_kwargs, _, _, common_kwargs = ada.official_kwargs(resolution, channel_base, channel_max,
                                                                dataset_size=1)
        G = dnnlib.util.construct_class_by_name(**g_kwargs, **common_kwargs).eval()
        info = dict(num_ws=int(G.num_ws), block_resolutions=list(G.synthesis.block_resolutions),
                    init_kwargs=json.loads(json.dumps(G.init_kwargs)),
                    parameter_names=[name for name, _ in G.named_parameters()],
                    noise_buffers=[name for name, _ in G.synthesis.named_buffers() if "noise_const" in name])
        return common.tensor_entries(G, rule=ada.ada_weight_rule), info


def write_generator_pickle(trees: Trees, manifest: dict, resolution: int, channel_base: int, channel_max: int,
                           path: str) -> str:
    """{'G_ema': G} with the synthetic weights, pickled as the ADA training loop pickles its
    snapshot entries."""
    with trees.in_ada():
        import dnnlib

        _, g_kwargs, _, _, common_kwargs = ada.official_kwargs(resolution, channel_base, channel_max,
                                                                dataset_size=1)
        G = dnnlib.util.construct_class_by_name(**g_kwargs, **common_kwargs).eval().requires_grad_(False)
        ada.load_exactly(G, common.build_tensors(manifest))
        with open(path, "wb") as f:
            pickle.dump({"G_ema": copy.deepcopy(G).eval().requires_grad_(False).cpu()}, f)
    return path


def lpips_alex_entries() -> dict:
    return {**lpips_criterion.backbone_entries("alex"), **lpips_criterion.lin_entries("alex")}


@contextlib.contextmanager
def lpips_package_served(manifest: dict, section: str):
    """While active, `lpips.LPIPS(net='alex')` gets the synthetic weights from `section`: the
    package's `tv.alexnet(pretrained=True)` returns torchvision's alexnet(weights=None) with the
    synthetic `features.*`, and its `torch.load(<package>/weights/v0.1/alex.pth)` returns the
    synthetic lin file (keys lin{i}.model.1.weight, as in the real file)."""
    import torch
    import torchvision
    from lpips import pretrained_networks

    weights = common.build_tensors(manifest, section)
    backbone = {k: v for k, v in weights.items() if k.startswith("features.")}
    lin_file = collections.OrderedDict((k, v) for k, v in weights.items() if k.startswith("lin"))

    def alexnet(pretrained=False):
        if pretrained is not True:
            raise RuntimeError("lpips asks for the pretrained AlexNet")
        model = torchvision.models.alexnet(weights=None)
        result = model.load_state_dict(backbone, strict=False)
        if result.unexpected_keys or any(not k.startswith("classifier.") for k in result.missing_keys):
            raise RuntimeError(f"backbone keys do not match: {result}")
        return model

    real_load = torch.load

    def load(f, *args, **kwargs):
        if isinstance(f, str) and f.replace(os.sep, "/").endswith("lpips/weights/v0.1/alex.pth"):
            return collections.OrderedDict((k, v.clone()) for k, v in lin_file.items())
        return real_load(f, *args, **kwargs)

    with mock.patch.object(pretrained_networks, "tv", types.SimpleNamespace(alexnet=alexnet)), \
            mock.patch.object(torch, "load", load):
        yield


def load_old_generator(pickle_path: str):
    """PTI's own loader (utils/models_utils.load_old_G) on our pickle; call inside the PTI tree."""
    from configs import global_config, paths_config
    from utils.models_utils import load_old_G

    with configured([(paths_config, dict(stylegan2_ada_ffhq=pickle_path)), (global_config, dict(device="cpu"))]):
        return load_old_G()


# ------------------------------------------------------------------------------------------------
# one official PTI run
# ------------------------------------------------------------------------------------------------
def run_pti(trees: Trees, work: str, pickle_path: str, manifest: dict, target_u8: np.ndarray,
            w_pivot: np.ndarray, steps: int, threshold: float, locality: bool, np_seed: int) -> dict:
    """run_PTI on one image with a given pivot. Returns the tapped per-step locals, the
    regularizer's, the tuned G's image at the pivot and its parameters."""
    import torch
    from PIL import Image

    case = os.path.join(work, "run")
    shutil.rmtree(case, ignore_errors=True)
    input_dir = os.path.join(case, "input")
    os.makedirs(input_dir)
    Image.fromarray(target_u8).save(os.path.join(input_dir, IMAGE_NAME + ".png"))  # lossless
    embeddings = os.path.join(case, "embeddings")
    pivot_dir = os.path.join(embeddings, DATA_ID, "PTI", IMAGE_NAME)  # where load_inversions looks
    os.makedirs(pivot_dir)
    torch.save(torch.from_numpy(w_pivot), os.path.join(pivot_dir, "0.pt"))

    saved_cwd = os.getcwd()
    saved_env = {k: os.environ.get(k) for k in ("CUDA_DEVICE_ORDER", "CUDA_VISIBLE_DEVICES")}  # run_PTI sets them
    with trees.in_pti():
        from configs import global_config, hyperparameters, paths_config
        from criteria.localitly_regulizer import Space_Regulizer
        from scripts.run_pti import run_PTI
        from training.coaches.single_id_coach import SingleIDCoach

        for name, value in EXPECTED_DEFAULTS.items():
            if getattr(hyperparameters, name) != value:
                raise RuntimeError(f"configs/hyperparameters.py: {name} = {getattr(hyperparameters, name)!r}, "
                                   f"the fixture expects {value!r}")
        tap = LocalsTap()
        tap.tap(SingleIDCoach.train,
                at={"step": ("self.optimizer.zero_grad()", ["i", "loss", "l2_loss_val", "loss_lpips"]),
                    "update": ("loss.backward()", ["i"])},
                at_return=["self"])
        tap.tap(Space_Regulizer.ball_holder_loss_lazy,
                at_return=["z_samples", "w_samples", "territory_indicator_ws", "l2_loss_val", "loss_lpips"])
        settings = [
            (hyperparameters, dict(max_pti_steps=steps, LPIPS_value_threshold=threshold,
                                   use_locality_regularization=locality, use_last_w_pivots=True)),
            (paths_config, dict(stylegan2_ada_ffhq=pickle_path, checkpoints_dir=os.path.join(case, "checkpoints"),
                                embedding_base_dir=embeddings, input_data_path=input_dir, input_data_id=DATA_ID)),
            (global_config, dict(device="cpu")),
        ]
        os.chdir(case)
        try:
            with configured(settings), lpips_package_served(manifest, "lpips_tensors"):
                np.random.seed(np_seed)  # the regularizer's only source of randomness
                with tap.active():
                    run_name = run_PTI(run_name=RUN_NAME, use_wandb=False, use_multi_id_training=False)
        finally:
            os.chdir(saved_cwd)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if run_name != RUN_NAME:
            raise RuntimeError(f"run_PTI returned run name {run_name!r}")
        coach = tap.returns["train"][-1]["self"]
        with torch.no_grad():
            image_after = coach.forward(torch.from_numpy(w_pivot))  # G.synthesis(w, 'const', force_fp32=True)
        # the tuned G that single_id_coach saved must be coach.G
        saved = torch.load(os.path.join(case, "checkpoints", f"model_{RUN_NAME}_{IMAGE_NAME}.pt"),
                           weights_only=False)
        if not all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), coach.G.state_dict().values())):
            raise RuntimeError("the saved checkpoint differs from coach.G")
        parameters = {name: p.detach().clone() for name, p in coach.G.named_parameters()}
    return dict(steps=tap.lines["step"], updates=tap.lines["update"],
                regularizer=tap.returns.get("ball_holder_loss_lazy", []), image_after=image_after,
                parameters=parameters)


def pick_early_stop(lpips_values, first_step: int):
    """(k, threshold): the first step k >= first_step whose LPIPS is clearly below all earlier
    ones, and a threshold halfway between (rounded to float32), so that PTI's `loss_lpips <=
    threshold` test fires for the first time at step k."""
    values = np.asarray(lpips_values, np.float64)
    for k in range(first_step, len(values) - 1):
        best_before = values[:k].min()
        if best_before - values[k] > max(1e-5, 1e-4 * best_before):
            threshold = float(np.float32((best_before + values[k]) / 2))
            if not values[k] < threshold < best_before:
                raise RuntimeError("float32 rounding moved the threshold out of the gap")
            return k, threshold
    raise RuntimeError(f"no clear LPIPS drop after step {first_step}: {values}")


def generate(pti_dir: str, ada_dir: str) -> common.Fixture:
    import torch

    trees = Trees(pti_dir, ada_dir)
    work = tempfile.mkdtemp(prefix="parity_pti_")
    g_entries, info = generator_manifest_parts(trees, RESOLUTION, CHANNEL_BASE, CHANNEL_MAX)
    manifest = {
        "seed": SEED,
        "model": (f"G: training/networks.py Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution={RESOLUTION}, "
                  f"img_channels=3, mapping_kwargs={{'num_layers': 8}}, synthesis_kwargs={{'channel_base': "
                  f"{CHANNEL_BASE}, 'channel_max': {CHANNEL_MAX}, 'num_fp16_res': 0, 'conv_clamp': None}}) of "
                  f"NVlabs/stylegan2-ada-pytorch; LPIPS: lpips 0.1.4 LPIPS(net='alex', version='0.1')"),
        "container": {
            "G": {"file": f"{PICKLE_NAME} (harness scratch, not stored): pickle.dump({{'G_ema': G}}), read by "
                          f"PTI's utils/models_utils.load_old_G (pickle.load(f)['G_ema'].eval().float())",
                  "class": "training.networks.Generator", "init_kwargs": info["init_kwargs"],
                  "state": "<all keys in tensors>"},
            "lpips": {
                "backbone": {"file": "torchvision alexnet ImageNet state dict (alexnet-owt-7be5be79.pth)",
                             "layout": "<keys in lpips_tensors starting with 'features.'>"},
                "lin": {"file": "lpips package lpips/weights/v0.1/alex.pth",
                        "layout": "<keys in lpips_tensors starting with 'lin'>"}},
        },
        "tensors": g_entries,
        "lpips_tensors": lpips_alex_entries(),
    }
    pickle_path = write_generator_pickle(trees, manifest, RESOLUTION, CHANNEL_BASE, CHANNEL_MAX,
                                         os.path.join(work, PICKLE_NAME))

    target_u8 = common.pattern_images_u8(1, RESOLUTION, SEED * 1000 + 7)[0]
    z_pivot = common.gaussian("z_pivot", (1, 512), SEED)
    with trees.in_pti():
        G = load_old_generator(pickle_path)
        with torch.no_grad():
            # a W pivot (all rows equal), as PTI's W projector would produce
            w_pivot = G.mapping(torch.from_numpy(z_pivot), None).numpy().astype(np.float32)
            image_before = G.synthesis(torch.from_numpy(w_pivot), noise_mode="const", force_fp32=True)
        initial = {name: p.detach().clone() for name, p in G.named_parameters()}
    inputs = {
        "target_u8": target_u8,
        "target": common.u8_to_input(target_u8[None]),
        "z_pivot": z_pivot,
        "w_pivot": w_pivot,
        "num_steps": np.int64(STEPS),
        "locality_num_steps": np.int64(LOCALITY_STEPS),
        "locality_np_seed": np.int64(SEED),
    }
    synthesis_names = [n for n in info["parameter_names"] if n.startswith("synthesis.")]
    mapping_names = [n for n in info["parameter_names"] if not n.startswith("synthesis.")]

    def case_outputs(case: str, run: dict) -> dict:
        result = {
            f"{case}.loss": np.array([scalar(s["loss"]) for s in run["steps"]]),
            f"{case}.l2": np.array([scalar(s["l2_loss_val"]) for s in run["steps"]]),
            f"{case}.lpips": np.array([scalar(s["loss_lpips"]) for s in run["steps"]]),
            f"{case}.num_updates": np.int64(len(run["updates"])),
            f"{case}.img_after": run["image_after"],
        }
        for name in mapping_names:  # w_pivot is fixed: no gradient reaches the mapping network
            if not torch.equal(run["parameters"][name], initial[name]):
                raise RuntimeError(f"{case}: mapping parameter {name} changed")
        for name in synthesis_names:
            result[f"{case}.param.{name}"] = run["parameters"][name]
        return result

    out = {"img_before": image_before}
    # 1. plain tuning; threshold 0 never fires (LPIPS > 0)
    run = run_pti(trees, work, pickle_path, manifest, target_u8, w_pivot, STEPS, 0.0, False, SEED)
    if len(run["steps"]) != STEPS or len(run["updates"]) != STEPS:
        raise RuntimeError("main run: unexpected number of steps")
    out.update(case_outputs("main", run))

    # 2. early stop at a known step, with a threshold read off the main run
    stop_step, threshold = pick_early_stop(out["main.lpips"], EARLY_STOP_MIN_STEP)
    inputs["early_stop_threshold"] = np.float64(threshold)
    inputs["early_stop_step"] = np.int64(stop_step)
    run = run_pti(trees, work, pickle_path, manifest, target_u8, w_pivot, STEPS, threshold, False, SEED)
    if len(run["steps"]) != stop_step + 1 or len(run["updates"]) != stop_step:
        raise RuntimeError("early-stop run did not stop at the chosen step")
    out.update(case_outputs("early_stop", run))
    for quantity in ("loss", "l2", "lpips"):  # the same computation as main's first steps
        if not np.array_equal(out[f"early_stop.{quantity}"], out[f"main.{quantity}"][:stop_step + 1]):
            raise RuntimeError(f"early_stop.{quantity} differs from main's")

    # 3. locality regularization (np.random seeded just before run_PTI; its draws recorded)
    run = run_pti(trees, work, pickle_path, manifest, target_u8, w_pivot, LOCALITY_STEPS, 0.0, True, SEED)
    if len(run["steps"]) != LOCALITY_STEPS or len(run["regularizer"]) != LOCALITY_STEPS:
        raise RuntimeError("locality run: unexpected number of steps")
    out.update(case_outputs("locality", run))
    regularizer = run["regularizer"]
    inputs["locality_z"] = np.concatenate([r["z_samples"] for r in regularizer], 0)
    out["locality.reg_loss"] = np.array([scalar(r["__return__"]) for r in regularizer])
    out["locality.reg_l2"] = np.array([scalar(r["l2_loss_val"]) for r in regularizer])
    out["locality.reg_lpips"] = np.array([scalar(r["loss_lpips"]) for r in regularizer])
    out["locality.w_sample"] = np.concatenate([common.to_numpy(r["w_samples"]) for r in regularizer], 0)
    out["locality.w_morphed"] = np.concatenate(
        [common.to_numpy(torch.cat(list(r["territory_indicator_ws"]), 0)) for r in regularizer], 0)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, FAMILY, "checkout of danielroich/PTI at da94d59",
                                    default_isa="native")
    parser.add_argument("--ada", required=True, help="checkout of NVlabs/stylegan2-ada-pytorch at d72cc7d")
    args = common.parse_args(parser)
    pti_dir = common.require_checkout(args.official, common.PTI, args.allow_other_commit)
    ada_dir = common.require_checkout(args.ada, common.ADA, args.allow_other_commit)
    return common.finish(generate(pti_dir, ada_dir), args)


if __name__ == "__main__":
    sys.exit(main())
