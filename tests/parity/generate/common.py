r"""Shared plumbing of the parity-fixture generators (tests/parity/generate/*.py).

Every generator in this folder runs OFFICIAL PyTorch code on the CPU, with synthetic weights, and
writes one folder of tests/fixtures/: `manifest.json` (how to rebuild the weights), `inputs.npz`
(everything the official call received) and `expected.npz` (what it returned). The JAX tests then
load the same weights and inputs and compare against those outputs.

This module holds what the generators have in common:

1. the official repositories and the commits they are pinned to, how to get a checkout of one
   (`git clone` + `git checkout`, or `python common.py extract` from a bare mirror), and a check
   that the path handed to a generator is that commit;
2. importing an official tree unchanged (several trees share top-level package names such as
   `training` or `models`, so each tree's modules are swapped in and out of sys.modules);
3. stand-ins, on the harness side only, for what the official code needs but a CPU machine lacks:
   the CUDA extensions of e4e's StyleGAN2 (`models/stylegan2/op`), `.cuda()` calls, the CUDA plugin
   builds of StyleGAN2-ADA's torch_utils, and a few optional packages that are imported but never
   used by the computations here;
4. synthetic weights: one (scale, offset) per tensor chosen from the layer type, the values drawn
   by tests/support/synth_weights.py from the tensor's key and the fixture's seed;
5. deterministic inputs (Gaussian arrays from the same uniform generator, smooth pattern images);
6. writing the folder in the exact format of the committed fixtures, and comparing a freshly
   written folder with the committed one, array by array;
7. the command line every generator shares (--official, --out, --compare, --threads, --isa), with
   the CPU-kernel pinning that bit-identical rebuilds need (see CPU_KERNEL_ENV).

Nothing here is collected by pytest (see conftest.py in this folder). It needs torch; the
generators that use torchvision, lpips or pytorch-fid say so in their docstrings.

Getting an official checkout at its pinned commit:

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505

or, from a bare mirror whose history is complete but which lacks a few large blobs (then
`git archive` fails; this writes the tree file by file and lists what was missing):

    python tests/parity/generate/common.py extract --git-dir MIRROR.git --commit 99ea505 \
        --dest /tmp/official/encoder4editing
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib.machinery
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import types
import urllib.parse
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
FIXTURES_DIR = os.path.join(TESTS_DIR, "fixtures")



def _load_synth_weights():
    """The project's own synthetic-weight module, the very one the JAX tests rebuild the weights
    with, so generators and tests cannot drift apart. Loaded from its file (tests/support/ in the
    package layout of the test suite, tests/ before it) rather than imported as part of the tests
    package, which would pull in the suite's conftest-level imports (jax)."""
    for relative in (os.path.join("support", "synth_weights.py"), "synth_weights.py"):
        path = os.path.join(TESTS_DIR, relative)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("parity_synth_weights", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"synth_weights.py not found under {TESTS_DIR}")


synth_weights = _load_synth_weights()

# The committed fixtures were made with 2 CPU threads; some CPU kernels split reductions by
# thread, so the same count is the default here.
DEFAULT_THREADS = 2


# ------------------------------------------------------------------------------------------------
# 1. official repositories, pinned
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pin:
    """One official repository at the commit (or release) the fixtures were made from."""

    repo: str          # owner/name on GitHub
    commit: str        # abbreviated commit, or a release version for pip-installed packages
    probe: str         # a file that must exist in a checkout, to catch a wrong --official path

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}"


E4E = Pin("omertov/encoder4editing", "99ea505", "models/stylegan2/model.py")
ADA = Pin("NVlabs/stylegan2-ada-pytorch", "d72cc7d", "training/networks.py")
PTI = Pin("danielroich/PTI", "da94d59", "training/coaches/single_id_coach.py")
PYTORCH_FID = Pin("mseitzer/pytorch-fid", "0.3.0", "src/pytorch_fid/inception.py")

COMMIT_MARKER = ".parity_commit"  # written by extract_commit: checkouts without a .git folder


def extract_commit(git_dir: str, commit: str, dest: str) -> list[str]:
    """Write the tree of `commit` from the (bare) repository `git_dir` into `dest`, file by file.

    `git archive` stops at the first blob it cannot read, and mirrors that skip large binary files
    (a teaser image, a notebook) have such blobs; none of them is code the generators run, so they
    are skipped and listed. The full commit id and the skipped paths go to dest/.parity_commit,
    which `checkout_commit` reads back. Returns the skipped paths."""
    git = ["git", f"--git-dir={git_dir}"]
    full = subprocess.check_output(git + ["rev-parse", f"{commit}^{{commit}}"], text=True).strip()
    listing = subprocess.check_output(git + ["ls-tree", "-r", "-z", full], text=True)
    skipped = []
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, obj = meta.split()
        if kind != "blob":
            continue  # submodules: none of the pinned repositories needs one
        blob = subprocess.run(git + ["cat-file", "blob", obj], capture_output=True, check=False)
        if blob.returncode != 0:
            skipped.append(path)
            continue
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if mode == "120000":  # symlink: the blob is the link target
            if os.path.lexists(target):
                os.remove(target)
            os.symlink(blob.stdout.decode(), target)
            continue
        with open(target, "wb") as f:
            f.write(blob.stdout)
        if mode == "100755":
            os.chmod(target, 0o755)
    with open(os.path.join(dest, COMMIT_MARKER), "w") as f:
        f.write(full + "\n" + "".join(f"skipped {p}\n" for p in skipped))
    return skipped


def checkout_commit(path: str) -> str | None:
    """The commit a checkout holds: from git when it is a clone, from .parity_commit when it was
    written by extract_commit, else None (e.g. an unpacked release archive)."""
    marker = os.path.join(path, COMMIT_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            return f.readline().strip()
    if os.path.exists(os.path.join(path, ".git")):
        res = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        if res.returncode == 0:
            return res.stdout.strip()
    return None


def require_checkout(path: str, pin: Pin, allow_other_commit: bool = False) -> str:
    """Absolute path of an official checkout, after checking that it is `pin`'s repository at
    `pin`'s commit. A checkout whose commit cannot be told is accepted with a warning; a different
    commit is refused unless allow_other_commit (its fixtures would not be the committed ones)."""
    path = os.path.abspath(path)
    if not os.path.exists(os.path.join(path, pin.probe)):
        raise SystemExit(f"{path} is not a checkout of {pin.repo}: {pin.probe} is missing")
    found = checkout_commit(path)
    if found is None:
        print(f"warning: cannot tell which commit {path} holds; expected {pin.repo} at {pin.commit}",
              file=sys.stderr)
    elif not found.startswith(pin.commit):
        msg = f"{path} holds {pin.repo} at {found[:12]}, the fixtures were made at {pin.commit}"
        if not allow_other_commit:
            raise SystemExit(msg + " (pass --allow-other-commit to go on anyway)")
        print("warning: " + msg, file=sys.stderr)
    return path


# ------------------------------------------------------------------------------------------------
# 2. importing an official tree unchanged
# ------------------------------------------------------------------------------------------------
class OfficialTree:
    """An official checkout made importable, its files untouched.

    The pinned repositories reuse top-level names (`training`, `models`, `configs`, `dnnlib`,
    `torch_utils`, ...), so a generator that needs two of them (PTI + StyleGAN2-ADA) cannot simply
    put both on sys.path. While a tree is active (`with tree:` or `tree.activate()`), its folder is
    first on sys.path and sys.modules holds its own modules under those names; leaving it stores
    them away and puts back whatever was there before."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.top_names = set()
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if os.path.isdir(full) and name.isidentifier():
                self.top_names.add(name)
            elif name.endswith(".py"):
                self.top_names.add(name[:-3])
        self._own_modules: dict = {}
        self._displaced: list[dict] = []

    def _ours(self, module_name: str) -> bool:
        return module_name.split(".", 1)[0] in self.top_names

    def __enter__(self):
        displaced = {k: sys.modules.pop(k) for k in list(sys.modules) if self._ours(k)}
        self._displaced.append(displaced)
        sys.modules.update(self._own_modules)
        sys.path.insert(0, self.path)
        return self

    def __exit__(self, *exc):
        sys.path.remove(self.path)
        self._own_modules = {k: sys.modules.pop(k) for k in list(sys.modules) if self._ours(k)}
        sys.modules.update(self._displaced.pop())
        return False

    def activate(self):
        """Enter for the rest of the process (single-tree generators)."""
        self.__enter__()
        return self


# ------------------------------------------------------------------------------------------------
# 3. stand-ins (harness side; the official files are never edited)
# ------------------------------------------------------------------------------------------------
def _empty_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _refuse(what):
    def call(*args, **kwargs):
        raise RuntimeError(f"{what} is an inert stand-in in the parity generators and must not be called")
    return call


def stub_missing_packages(names) -> list[str]:
    """Inert modules for optional packages that official files import at top level but that the
    computations here never call (wandb with use_wandb=False, click's decorators in legacy.py,
    imageio in projector.py, requests in dnnlib's downloader). Installed packages are left alone.
    Returns the names that were stubbed."""
    makers = {
        "wandb": lambda m: m.__dict__.update(init=_refuse("wandb.init"), log=_refuse("wandb.log"),
                                             Image=_refuse("wandb.Image")),
        "imageio": lambda m: m.__dict__.update(get_writer=_refuse("imageio.get_writer")),
        # dnnlib.util.open_url parses the URL with requests.compat before it looks in its cache,
        # where the generators put whatever it would download; nothing is ever fetched
        "requests": lambda m: m.__dict__.update(
            compat=types.SimpleNamespace(urlparse=urllib.parse.urlparse, urljoin=urllib.parse.urljoin),
            Session=_refuse("requests.Session"), get=_refuse("requests.get")),
        "click": lambda m: m.__dict__.update(
            # decorators only: legacy.py / projector.py decorate their command-line entry points
            command=lambda *a, **k: (lambda f: f), option=lambda *a, **k: (lambda f: f),
            argument=lambda *a, **k: (lambda f: f), group=lambda *a, **k: (lambda f: f),
            pass_context=lambda f: f, Choice=lambda *a, **k: None),
    }
    stubbed = []
    for name in names:
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        module = _empty_module(name)
        makers.get(name, lambda m: None)(module)
        sys.modules[name] = module
        stubbed.append(name)
    return stubbed


def stub_tensorboard_if_missing():
    """torch.utils.tensorboard raises at import without the tensorboard package; e4e's
    training/coach.py imports its SummaryWriter but the static loss functions used here do not."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        module = _empty_module("torch.utils.tensorboard")
        module.SummaryWriter = _refuse("SummaryWriter")
        sys.modules["torch.utils.tensorboard"] = module


def load_function_from_file(path: str, name: str, namespace: dict):
    """Compile and return one top-level function of a source file, without running the rest of it.

    e4e's op/upfirdn2d.py builds its CUDA extension at import time, but the same file also defines
    `upfirdn2d_native`, the pure-PyTorch reference of that kernel; this takes only that function's
    definition, so the official arithmetic is used verbatim. `namespace` supplies the globals the
    function refers to (the file uses `F` without importing it: its CUDA path never needs it)."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(nodes) != 1:
        raise RuntimeError(f"{path}: expected one top-level function {name}, found {len(nodes)}")
    scope = dict(namespace)
    exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), scope)
    return scope[name]


def install_e4e_op_standin(e4e_dir: str):
    """Register a CPU `models.stylegan2.op` package for e4e's generator (models/stylegan2/model.py).

    The official package compiles two CUDA kernels when imported. The stand-in provides the same
    three names:
    - upfirdn2d: the official `upfirdn2d_native` (taken from the official file, see
      load_function_from_file), called with the layout of the official CUDA wrapper (each channel
      a separate (H, W, 1) image, padding (x0, x1, y0, y1) = (pad0, pad1, pad0, pad1));
    - fused_leaky_relu(x, b) = leaky_relu(x + b, slope) * scale, the CPU formula later versions of
      rosinality's stylegan2-pytorch (which this code is taken from) use themselves;
    - FusedLeakyReLU: a module with the official constructor and a `bias` parameter, so the state
      dict keys are the official ones."""
    if "models.stylegan2.op" in sys.modules:
        return
    import torch
    import torch.nn.functional as F
    from torch import nn

    native = load_function_from_file(os.path.join(e4e_dir, "models", "stylegan2", "op", "upfirdn2d.py"),
                                     "upfirdn2d_native", {"torch": torch, "F": F})

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        _, channel, in_h, in_w = input.shape
        out = native(input.reshape(-1, in_h, in_w, 1), kernel, up, up, down, down,
                     pad[0], pad[1], pad[0], pad[1])
        return out.reshape(-1, channel, out.shape[1], out.shape[2])

    def fused_leaky_relu(input, bias, negative_slope=0.2, scale=2 ** 0.5):
        broadcast = (1, bias.shape[0]) + (1,) * (input.ndim - 2)
        return F.leaky_relu(input + bias.view(broadcast), negative_slope=negative_slope) * scale

    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(channel))
            self.negative_slope = negative_slope
            self.scale = scale

        def forward(self, input):
            return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    package = _empty_module("models.stylegan2.op")
    package.__path__ = []  # a package, so `from models.stylegan2.op import ...` resolves here
    sub_up = _empty_module("models.stylegan2.op.upfirdn2d")
    sub_act = _empty_module("models.stylegan2.op.fused_act")
    for module in (package, sub_up, sub_act):
        module.upfirdn2d = upfirdn2d
        module.upfirdn2d_native = native
        module.fused_leaky_relu = fused_leaky_relu
        module.FusedLeakyReLU = FusedLeakyReLU
        sys.modules[module.__name__] = module


@contextlib.contextmanager
def cuda_requests_stay_on_cpu():
    """Official constructors that move themselves to the GPU (e4e's LPIPS `.to("cuda")`, MocoLoss
    `.cuda()`) stay on the CPU; every other `.to(...)` works as usual."""
    import torch
    from torch import nn

    real_to, real_cuda = nn.Module.to, nn.Module.cuda

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, str):  # a string argument of Module.to is always a device
            target = torch.device(target)
        if isinstance(target, torch.device) and target.type == "cuda":
            return self
        return real_to(self, *args, **kwargs)

    nn.Module.to = to
    nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        nn.Module.to, nn.Module.cuda = real_to, real_cuda


def disable_ada_plugins():
    """StyleGAN2-ADA's torch_utils compiles CUDA plugins on first use. On CPU tensors its ops take
    their reference ('ref') path anyway; pinning `_init` to False makes sure no build is even
    attempted. Call inside the tree (ADA's or PTI's copy, which is identical)."""
    from torch_utils import custom_ops
    from torch_utils.ops import bias_act, upfirdn2d

    custom_ops.get_plugin = _refuse("torch_utils.custom_ops.get_plugin")
    bias_act._init = lambda: False
    upfirdn2d._init = lambda: False


# CPU kernels. oneDNN (torch's convolutions), ATen's vectorized loops, MKL and OpenBLAS (numpy's
# LAPACK, e.g. the eig of SeFa) pick their kernels from the CPU's instruction set, and an AVX-512
# kernel sums in another order than an AVX2 one: the results then differ in the last bits (~1e-5
# on generator images, another eigenpair order from np.linalg.eig). The committed fixtures were
# not all made on the same kind of machine: those of the e4e code (stylegan2_generator, the three
# encoders, latent_discriminator, lpips_*, arcface_ir_se50, moco_resnet50, ranger_optimizer) came
# from AVX2 kernels, those of stylegan2_ada_generator, fid_inception, pti_tuning and w_projector
# from AVX-512 ones. Each generator's --isa default is the one that reproduces its committed
# fixture bit for bit on an AVX-512 machine: 'avx2' caps every library at AVX2 (Haswell) with the
# variables below, 'native' leaves the machine's own kernels. A variable already set in the
# environment is respected.
CPU_KERNEL_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
_REEXEC_MARK = "PARITY_CPU_KERNELS_PINNED"


def pin_cpu_kernels(isa: str):
    """For isa 'avx2', restart the current script with CPU_KERNEL_ENV in its environment.

    The libraries read these variables once, when they are loaded, which has already happened by
    the time a generator parses its arguments; so the process re-executes itself (once) with the
    variables set. isa 'native' keeps the machine's own kernels."""
    if isa == "native" or os.environ.get(_REEXEC_MARK):
        return
    env = dict(os.environ)
    for name, value in CPU_KERNEL_ENV.items():
        env.setdefault(name, value)
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps the interpreter's own options (-W, -X ...) as well as the script's arguments
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def setup_torch(threads: int = DEFAULT_THREADS):
    """CPU, float32 by default, a fixed thread count."""
    import torch

    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float32)
    return torch


# ------------------------------------------------------------------------------------------------
# 4. synthetic weights
# ------------------------------------------------------------------------------------------------
SQRT3 = math.sqrt(3.0)   # uniform [-1, 1) times sqrt(3) has unit variance
RELU_GAIN = 2 ** 0.5     # He gain, for stacks of ReLUs


def spec(scale=0.0, offset=0.0) -> dict:
    """A tensor drawn as offset + scale * uniform[-1, 1)."""
    return {"scale": float(scale), "offset": float(offset)}


def fixed(tensor) -> dict:
    """A buffer whose exact value goes into the manifest (FIR kernels, AugmentPipe matrices)."""
    return {"fixed": tensor}


def fan_in_scale(tensor, gain=1.0) -> float:
    """Variance-preserving uniform scale for a torch Conv2d / Linear weight, times `gain`."""
    fan_in = int(np.prod(tensor.shape[1:]))
    return gain * math.sqrt(3.0 / fan_in)


def default_rule(key, owner, attr, tensor, conv_gain=1.0, bias_scale=0.1) -> dict:
    """(scale, offset) for one tensor of the e4e / torchvision modules, from its owner's class.

    StyleGAN2's equalized-learning-rate layers store raw weights with unit variance (the official
    code scales them at run time); the mapping network's raw values are divided by lr_mul, as the
    official initialisation does. Plain torch layers get fan-in scaled weights so activations keep
    their size through deep stacks. BatchNorm statistics sit near (0, 1), PReLU slopes near 0.25,
    noise strengths are non-zero so every noise input changes the output."""
    import torch

    cls = type(owner).__name__
    if tensor.dtype == torch.int64:  # BatchNorm's num_batches_tracked: not used in eval mode
        return {"scale": 0.0, "offset": 0}
    if cls in ("Blur", "Upsample", "Downsample") and attr == "kernel":
        return fixed(tensor)
    if cls == "EqualLinear":
        if attr == "weight":
            return spec(SQRT3 / owner.lr_mul)
        if key.endswith("modulation.bias"):  # the official bias_init=1 of the style modulation
            return spec(0.1, 1.0)
        return spec(bias_scale / owner.lr_mul)
    if cls == "EqualConv2d":
        return spec(SQRT3 if attr == "weight" else bias_scale)
    if cls == "ModulatedConv2d" and attr == "weight":
        return spec(SQRT3)
    if cls == "NoiseInjection":
        return spec(0.1, 0.15)  # strengths in [0.05, 0.25)
    if cls == "FusedLeakyReLU" or (cls == "ToRGB" and attr == "bias"):
        return spec(bias_scale)
    if cls == "ConstantInput":
        return spec(SQRT3)
    if attr.startswith("noise_"):  # the generator's stored noise maps: unit variance
        return spec(SQRT3)
    if cls in ("Conv2d", "Linear"):
        return spec(fan_in_scale(tensor, conv_gain) if attr == "weight" else bias_scale)
    if cls in ("BatchNorm1d", "BatchNorm2d"):
        return {"weight": spec(0.2, 1.0), "bias": spec(0.1), "running_mean": spec(0.1),
                "running_var": spec(0.3, 1.0)}[attr]
    if cls == "PReLU":
        return spec(0.05, 0.25)
    raise KeyError(f"no weight rule for {key} ({cls}.{attr}, shape {tuple(tensor.shape)})")


SE_GAIN = 3.0


def ir_se_rule(key, owner, attr, tensor, conv_gain=1.0, **kwargs) -> dict:
    """default_rule for the IR-SE-50 backbones, with the squeeze-excitation 1x1 convs
    (`res_layer.5.fc1` / `fc2` of bottleneck_IR_SE) SE_GAIN times larger: with plain fan-in scales
    their sigmoid gates all sit near 0.5 and the SE path would not be tested."""
    if ".res_layer.5.fc" in "." + key and attr == "weight":
        conv_gain = SE_GAIN
    return default_rule(key, owner, attr, tensor, conv_gain=conv_gain, **kwargs)


def _state_owners(module) -> dict:
    """state_dict key -> (owning submodule, attribute name)."""
    owners = {}
    for path, sub in module.named_modules():
        base = path + "." if path else ""
        for attr, value in sub._parameters.items():
            if value is not None:
                owners[base + attr] = (sub, attr)
        for attr, value in sub._buffers.items():
            if value is not None and attr not in sub._non_persistent_buffers_set:
                owners[base + attr] = (sub, attr)
    return owners


def tensor_entries(module, rule=default_rule, prefix="", **rule_kwargs) -> dict:
    """The manifest's `tensors` section for `module.state_dict()`: key -> {shape, dtype, scale,
    offset[, value]}, in state_dict order (the order the official checkpoint files use)."""
    import torch

    owners = _state_owners(module)
    entries = {}
    for key, tensor in module.state_dict().items():
        owner, attr = owners[key]
        choice = rule(key, owner, attr, tensor, **rule_kwargs)
        is_int = tensor.dtype == torch.int64
        entry = {"shape": list(tensor.shape), "dtype": "int64" if is_int else "float32"}
        if "fixed" in choice:
            entry.update(scale=0.0, offset=0.0, value=choice["fixed"].detach().cpu().numpy().tolist())
        else:
            entry.update(scale=choice["scale"], offset=int(choice["offset"]) if is_int else choice["offset"])
        entries[prefix + key] = entry
    return entries


def build_tensors(manifest: dict, section: str = "tensors") -> dict:
    """{key: torch.Tensor} for one section of a manifest (tests/support/synth_weights.py draws the values;
    entries with "value" take that exact value)."""
    import torch

    entries = manifest[section]
    arrays = synth_weights.build_state_dict({"seed": manifest["seed"], "tensors": entries})
    out = {}
    for key, array in arrays.items():
        entry = entries[key]
        if "value" in entry:
            array = np.asarray(entry["value"], dtype=entry["dtype"]).reshape(entry["shape"])
        out[key] = torch.from_numpy(np.ascontiguousarray(array))
    return out


# ------------------------------------------------------------------------------------------------
# 5. deterministic inputs
# ------------------------------------------------------------------------------------------------
def gaussian(key: str, shape, seed: int) -> np.ndarray:
    """Standard-normal float32 array, a pure function of (key, shape, seed).

    Box-Muller on two streams of synth_weights.uniform (keys `key/u1`, `key/u2`), in float64:
    r = sqrt(-2 ln(1 - (u1 + 1) / 2)), value = r cos(pi (u2 + 1)). The same formula is documented
    in tests/fixtures/README.md, so inputs that are not stored can be recomputed from it."""
    u1 = synth_weights.uniform(key + "/u1", shape, seed)
    u2 = synth_weights.uniform(key + "/u2", shape, seed)
    radius = np.sqrt(-2.0 * np.log(1.0 - (u1 + 1.0) / 2.0))
    return (radius * np.cos(np.pi * (u2 + 1.0))).astype(np.float32)


def pattern_images_u8(count: int, size: int, seed: int) -> np.ndarray:
    """`count` smooth RGB test images, uint8 NHWC: per channel three sinusoid gratings plus an
    elliptic blob shared by the channels, stretched to a random sub-range of [0, 255].

    Smooth, structured images exercise convolutions and poolings better than white noise. Every
    random number comes from numpy's default_rng(seed), in a fixed order, so the images are the
    same on every platform; the order and the float64 arithmetic must not change, or the committed
    images would no longer be reproduced."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    images = []
    for _ in range(count):
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        ax, ay = rng.uniform(0.35, 0.7, 2)
        blob = np.exp(-(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2) * 1.5)
        channels = []
        for _channel in range(3):
            value = np.zeros_like(xx)
            for _grating in range(3):
                fx, fy = rng.uniform(0.5, 4.0, 2)
                phase = rng.uniform(0, 2 * np.pi)
                value += rng.uniform(0.2, 0.5) * np.sin(np.pi * (fx * xx + fy * yy) + phase)
            # one expression (blob weight, then offset, summed before adding): keeps the rounding
            value += rng.uniform(-1.0, 1.0) * blob + rng.uniform(-0.3, 0.3)
            channels.append(value)
        image = np.stack(channels, -1)
        image = (image - image.min()) / (image.max() - image.min() + 1e-12)
        low, high = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
        image = low + (high - low) * image
        images.append(np.round(image * 255.0).astype(np.uint8))
    return np.stack(images, 0)


def u8_to_unit(u8_nhwc: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1], computed by torch exactly as ToTensor() does."""
    import torch

    return torch.from_numpy(u8_nhwc).permute(0, 3, 1, 2).contiguous().float().div(255).numpy()


def u8_to_input(u8_nhwc: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [-1, 1]: ToTensor() then Normalize(0.5, 0.5), the official test
    transform, with torch's own float32 arithmetic."""
    import torch

    return torch.from_numpy(u8_to_unit(u8_nhwc)).sub(0.5).div(0.5).numpy()


def to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_stored(outputs: dict) -> dict:
    """Outputs as the fixtures store them: floating values in float32 (official numpy results in
    float64, Python floats), integers unchanged, scalars as 0-d arrays."""
    stored = {}
    for name, value in outputs.items():
        array = to_numpy(value)
        stored[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return stored


# ------------------------------------------------------------------------------------------------
# 6. writing and comparing fixture folders
# ------------------------------------------------------------------------------------------------
def write_npz(path: str, arrays: dict):
    """An .npz readable by np.load, with reproducible bytes: members in name order, deflated, all
    dated 1980-01-01 (np.savez would stamp the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            # copy(order="C") rather than ascontiguousarray, which would turn 0-d scalars into (1,)
            np.lib.format.write_array(member, np.asarray(arrays[name]).copy(order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def write_json(path: str, obj, trailing_newline: bool = True):
    """JSON as the committed fixtures have it: one-space indent, keys in insertion order."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        if trailing_newline:
            f.write("\n")


@dataclasses.dataclass
class Fixture:
    """What a generator produces: the files of one tests/fixtures/<family>/ folder (README.md
    excepted, which is written by hand)."""

    inputs: dict
    expected: dict
    manifest: dict | None = None                        # -> manifest.json
    json_files: dict = dataclasses.field(default_factory=dict)  # other JSON files: name -> object
    json_trailing_newline: bool = True

    def write(self, out_dir: str):
        os.makedirs(out_dir, exist_ok=True)
        if self.manifest is not None:
            write_json(os.path.join(out_dir, "manifest.json"), self.manifest)
        for name, obj in self.json_files.items():
            write_json(os.path.join(out_dir, name), obj, self.json_trailing_newline)
        write_npz(os.path.join(out_dir, "inputs.npz"), {k: np.asarray(v) for k, v in self.inputs.items()})
        write_npz(os.path.join(out_dir, "expected.npz"), as_stored(self.expected))


def compare_folders(new_dir: str, ref_dir: str) -> bool:
    """Print, for every array of inputs.npz and expected.npz and every JSON file, how a freshly
    written folder differs from a reference one (max |new - ref|; `identical` = same dtype, shape
    and bits). Returns True when everything is identical."""
    all_same = True
    print(f"comparing {new_dir} with {ref_dir}")
    for name in sorted(os.listdir(ref_dir)):
        if not name.endswith(".json"):
            continue
        new_path = os.path.join(new_dir, name)
        if not os.path.exists(new_path):
            print(f"  {name}: MISSING in the new folder")
            all_same = False
            continue
        with open(new_path, "rb") as a, open(os.path.join(ref_dir, name), "rb") as b:
            new_bytes, ref_bytes = a.read(), b.read()
        same_content = json.loads(new_bytes) == json.loads(ref_bytes)
        verdict = "identical" if new_bytes == ref_bytes else ("same content" if same_content else "DIFFERENT")
        all_same &= same_content
        print(f"  {name}: {verdict}")
    for file_name in ("inputs.npz", "expected.npz"):
        new = np.load(os.path.join(new_dir, file_name))
        ref = np.load(os.path.join(ref_dir, file_name))
        missing = sorted(set(ref.files) - set(new.files))
        extra = sorted(set(new.files) - set(ref.files))
        if missing or extra:
            print(f"  {file_name}: missing {missing}, extra {extra}")
            all_same = False
        worst = 0.0
        for key in sorted(set(ref.files) & set(new.files)):
            a, b = new[key], ref[key]
            if a.shape != b.shape or a.dtype != b.dtype:
                print(f"  {file_name}:{key}: shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
                all_same = False
                continue
            same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
            diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            worst = max(worst, diff)
            all_same &= same
            if not same:
                scale = float(np.max(np.abs(b.astype(np.float64)))) if b.size else 0.0
                print(f"  {file_name}:{key}: max abs diff {diff:.3e} (max |ref| {scale:.3e})")
        print(f"  {file_name}: {len(ref.files)} arrays, max abs diff over all {worst:.3e}")
    print("  => " + ("bit-identical" if all_same else "NOT identical"))
    return all_same


# ------------------------------------------------------------------------------------------------
# 7. command line shared by the generators
# ------------------------------------------------------------------------------------------------
def argument_parser(doc: str, family: str, official_help: str | None = "path to the official checkout",
                    default_isa: str = "avx2"):
    """The options every generator takes: --official CHECKOUT, --out FOLDER, --compare FOLDER,
    --threads, --isa, --allow-other-commit. --compare defaults to nothing; pass
    tests/fixtures/<family> to check a rebuild against the committed fixture. `default_isa`:
    the CPU kernels the committed fixture was made with (see CPU_KERNEL_ENV)."""
    # the whole docstring: --help then shows the official calls and the exact commands
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if official_help is not None:
        parser.add_argument("--official", required=True, help=official_help)
    parser.add_argument("--out", required=True,
                        help=f"folder to write (the committed one is tests/fixtures/{family})")
    parser.add_argument("--compare", default=None,
                        help=f"after writing, compare with this folder (e.g. tests/fixtures/{family}); "
                             f"exit status 1 unless bit-identical")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch CPU threads (the committed fixtures used 2)")
    parser.add_argument("--allow-other-commit", action="store_true",
                        help="accept a checkout at another commit than the pinned one")
    parser.add_argument("--isa", choices=("avx2", "native"), default=default_isa,
                        help=f"CPU kernels: 'avx2' caps oneDNN, ATen, MKL and OpenBLAS at AVX2, 'native' "
                             f"uses the machine's own (default {default_isa}, what the committed fixture "
                             f"was made with; see CPU_KERNEL_ENV in common.py)")
    return parser


def parse_args(parser):
    """Parse the command line, restart with the chosen CPU kernels (pin_cpu_kernels) and fix the
    torch thread count."""
    args = parser.parse_args()
    pin_cpu_kernels(args.isa)
    setup_torch(args.threads)
    return args


def finish(fixture: Fixture, args) -> int:
    """Write the folder, optionally compare it; the generator's exit status."""
    fixture.write(args.out)
    print(f"wrote {os.path.abspath(args.out)}")
    if args.compare:
        return 0 if compare_folders(args.out, args.compare) else 1
    return 0


def _main():
    parser = argparse.ArgumentParser(description="Helpers of the parity-fixture generators.")
    sub = parser.add_subparsers(dest="command", required=True)
    extract = sub.add_parser("extract", help="write one commit of a (bare) git repository to a folder")
    extract.add_argument("--git-dir", required=True)
    extract.add_argument("--commit", required=True)
    extract.add_argument("--dest", required=True)
    compare = sub.add_parser("compare", help="compare two fixture folders array by array")
    compare.add_argument("new")
    compare.add_argument("ref")
    args = parser.parse_args()
    if args.command == "extract":
        skipped = extract_commit(args.git_dir, args.commit, args.dest)
        print(f"extracted {args.commit} into {args.dest}" + (f"; skipped unreadable blobs: {skipped}" if skipped else ""))
        return 0
    return 0 if compare_folders(args.new, args.ref) else 1


if __name__ == "__main__":
    sys.exit(_main())
