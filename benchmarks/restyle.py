"""ReStyle inversion time (`e4e_jax.restyle.invert`): 1 and 5 iterations, compile once each.

    python benchmarks/restyle.py                               # fixture size, batch 2
    python benchmarks/restyle.py --sizes fixture 1024 --batch 1 --repeats 2
    python benchmarks/restyle.py --encoder ResNetBackboneEncoder --iterations 1 3 5
    nice python benchmarks/restyle.py --sizes 1024 --batch 1 --repeats 1 \
        --official /tmp/official/restyle-encoder        # side by side with the official code

Sizes (random weights, float32, the generator's stored noise):
    fixture  the tests/fixtures/restyle models: official encoder widths (IR-SE-50 or ResNet-34,
             10 style heads) on 256x256 inputs, 64x64 StyleGAN2 generator (channel multiplier 2,
             512 channels at every resolution)
    1024     the released FFHQ models: the same encoder with 18 heads, 1024x1024 generator
    256      a 256x256 generator (StyleGAN3 above all: the same encoder, 16 heads)
--generator stylegan3-r | stylegan3-t: ReStyle over a full-width StyleGAN3 (benchmarks/
stylegan3.py's official widths, random official initialisation) as yuval-alaluf/stylegan3-editing
runs it: 16 style heads, the identity transform, raw generator images (resize_outputs False, that
project's default).
One call runs all iterations in one compiled lax.scan (the average image included); per
(size, iterations): compile time (lower + compile), the number of XLA compilations during
lower + compile and during the timed calls (one and zero: the loop is not unrolled or retraced
per iteration), the median call time over --repeats calls after one warm-up, seconds per image and
per image-iteration, XLA's buffer estimate. Prints the device, the thread count and the load
average (2-core machines shared with other jobs give noisy numbers: compare rows measured back to
back).

--official CHECKOUT (yuval-alaluf/restyle-encoder at commit 5e80276, imported unchanged; only the
ReStyle-e4e encoders, ProgressiveBackboneEncoder by default) also times the official
utils/inference_utils.py `run_on_batch` in the same process, right after e4e_jax's row: the
official models/e4e.py e4e net (the encoder, opts.output_size = the size's generator, 18 or 10
heads), random weights of the same sizes (torch's default and the official StyleGAN2
initialisation, heads' last linear layer x0.02 and latent_avg 0.1 N(0, 1) as on e4e_jax's side),
torch on the CPU with --torch-threads threads, eval mode, torch.no_grad(), resize_outputs=True,
the same batch. The StyleGAN2 CUDA ops run as the CPU stand-ins of tests/parity/generate/common.py
(the official upfirdn2d_native, leaky_relu(x + b) * sqrt(2)), the net is built as
tests/parity/generate/restyle.py builds it (its official_opts, no checkpoint to load) and
get_average_image's `.to('cuda')` stays on the CPU. The official average image is computed once,
outside the timed calls (as scripts/inference_iterative.py does once per run), and timed
separately; e4e_jax's call includes it (one more generator pass than the official column).
Official warm-up: --official-warmup untimed 1-iteration calls per size, then --official-repeats
timed calls per iteration count (median; PyTorch has no compilation). Needs torch (torchvision
only for the ResNet encoders; an inert stand-in is installed when it is missing).

With --generator stylegan3-*, --official CHECKOUT is yuval-alaluf/stylegan3-editing at commit
36ce2b4 (imported unchanged): its inversion/models/e4e3.py ReStyle-e4e net, the decoder its
models/stylegan3/networks_stylegan3.py Generator of the same config and size built in place of the
checkpoint's (random official initialisation), latent_avg 0.1 N(0, 1) of shape (512,) as the
official checkpoints store it, utils/inference_utils.py `get_average_image` and `run_on_batch`;
the stand-ins of tests/parity/generate/restyle_sg3.py (CUDA calls stay on the CPU, the reference
filtered_lrelu / bias_act / upfirdn2d) and inert torchvision / imageio / wandb modules where those
are missing (their functions are never called). Needs torch and scipy.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO_ROOT)

SIZES = {"fixture": 64, "256": 256, "1024": 1024}
GENERATORS = ("stylegan2", "stylegan3-t", "stylegan3-r")
HEAD_SCALE = 0.02      # the style heads' last linear layer: bounded residuals on both sides
LATENT_AVG_STD = 0.1
OFFICIAL_ENCODERS = ("ProgressiveBackboneEncoder", "ResNetProgressiveBackboneEncoder")


def random_generator(resolution: int):
    """A rosinality generator of official widths with N(0, 1) raw weights drawn by numpy
    (seconds to build, where jax.random would compile a graph per parameter)."""
    from e4e_jax.models.stylegan2 import official_channels
    from e4e_jax.nets.generator import LoadedGenerator, expected_variables, module_from_config
    config = dict(resolution=resolution, channels=list(official_channels(resolution, 2, None)),
                  style_dim=512, n_mlp=8, lr_mlp=0.01, blur_kernel=[1, 3, 3, 1])
    module = module_from_config(config)
    rng = np.random.default_rng(0)

    def fill(node, path):
        out = {}
        for name, leaf in node.items():
            if isinstance(leaf, dict):
                out[name] = fill(leaf, path + (name,))
            elif name == "bias" and "modulation" in path:
                out[name] = np.ones(leaf.shape, np.float32)      # official bias_init=1
            elif name in ("bias", "noise_strength"):
                out[name] = np.zeros(leaf.shape, np.float32)
            else:
                out[name] = rng.standard_normal(leaf.shape, np.float32)
        return out

    variables = fill(dict(expected_variables(module)), ())
    return LoadedGenerator(module, variables, config)


def random_stylegan3(config: str, resolution: int):
    """A full-width StyleGAN3 (benchmarks/stylegan3.py's official widths) with the official
    initialisation."""
    from e4e_jax.nets.stylegan3 import init_stylegan3
    return init_stylegan3(jax.random.key(0), _bench_module("stylegan3").generator_kwargs(
        config, resolution))


def build_model(size: str, encoder_type: str, generator: str = "stylegan2"):
    from e4e_jax.models.encoders import encoder_config, init_encoder
    from e4e_jax.nets.encoder import Inverter
    if generator == "stylegan2":
        g = random_generator(SIZES[size])
    else:
        g = random_stylegan3(generator[-1].upper(), SIZES[size])
    cfg = encoder_config(encoder_type, g.n_latent, (256, 256))
    v = init_encoder(jax.random.PRNGKey(0), cfg)
    # small heads: bounded residuals, as the fixture's synthetic weights
    for name, node in v["params"].items():
        if name.startswith("styles_"):
            node["linear"]["kernel"] = node["linear"]["kernel"] * HEAD_SCALE
    if generator == "stylegan2":
        la = LATENT_AVG_STD * np.random.default_rng(1).standard_normal((g.n_latent, 512))
    else:   # one w repeated, as stylegan3-editing's latent_avg (the mapping's w_avg)
        la = np.broadcast_to(LATENT_AVG_STD * np.random.default_rng(1).standard_normal(512),
                             (g.n_latent, 512))
    return Inverter(cfg, v, g, la.astype(np.float32))


def inputs(batch: int) -> np.ndarray:
    """(batch, 256, 256, 3) float32 in [-1, 1], NHWC; the official side gets the same, NCHW."""
    return np.random.default_rng(2).uniform(-1, 1, (batch, 256, 256, 3)).astype(np.float32)


class CompileCounter:
    """Counts XLA backend compilations (jax.monitoring's backend-compile duration events)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1


def bench(model, batch: int, iterations: int, repeats: int, counter: CompileCounter,
          resize: bool = True) -> dict:
    from e4e_jax.inversion import restyle
    x = jnp.asarray(inputs(batch))
    args = (model.variables, model.generator.variables, jnp.asarray(model.latent_avg), x)
    fn = jax.jit(functools.partial(restyle.apply_restyle, model),
                 static_argnames=("iterations", "resize"))
    jax.block_until_ready(args)
    before = counter.count
    t0 = time.perf_counter()
    compiled = fn.lower(*args, iterations=iterations, resize=resize).compile()
    compile_s = time.perf_counter() - t0
    compiles = counter.count - before
    mib = None
    try:
        ma = compiled.memory_analysis()
        mib = (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes) / 2**20
    except Exception:  # not every backend reports it
        pass
    before = counter.count
    out = jax.block_until_ready(compiled(*args))   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    call_compiles = counter.count - before
    if not all(bool(jnp.isfinite(o).all()) for o in out):
        raise RuntimeError("e4e_jax: non-finite ReStyle output")
    call = statistics.median(times)
    return dict(iterations=iterations, batch=batch, compile_s=compile_s, compiles=compiles,
                call_compiles=call_compiles, call_s=call, s_per_image=call / batch,
                s_per_image_iteration=call / batch / iterations, xla_mib=mib)


# ----------------------------------------------------------------------------- the official side

def _load_file(folder: str, name: str, prefix: str):
    """folder/<name>.py, loaded under the private name prefix_<name> (this script is restyle.py
    too, and neither folder is a package)."""
    spec = importlib.util.spec_from_file_location(f"{prefix}_{name}",
                                                  os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _bench_module(name: str):
    """benchmarks/<name>.py."""
    return _load_file(os.path.join(REPO_ROOT, "benchmarks"), name, "benchmarks")


@functools.lru_cache(maxsize=None)
def _parity_module(name: str):
    """tests/parity/generate/<name>.py."""
    folder = os.path.join(REPO_ROOT, "tests", "parity", "generate")
    if folder not in sys.path:
        sys.path.insert(0, folder)    # its files `import common`
    return _load_file(folder, name, "parity_generate")


class Official:
    """The official ReStyle-e4e net of one size, random weights, ready for run_on_batch."""

    def __init__(self, checkout: str, size: str, encoder_type: str, threads: int):
        self.parity = parity = _parity_module("restyle")
        common = parity.common
        common.require_checkout(checkout, parity.RESTYLE)
        self.torch = torch = common.setup_torch(threads)
        if encoder_type == "ResNetProgressiveBackboneEncoder":
            parity.install_torchvision_standin()
        else:
            _torchvision_standin()
        if os.path.abspath(checkout) not in sys.path:   # once per process (several sizes)
            common.OfficialTree(checkout).activate()
            common.install_e4e_op_standin(checkout)
        from models.e4e import e4e
        from options.test_options import TestOptions

        opts = parity.official_opts("e4e", encoder_type, "ffhq_encode")
        opts.update(vars(TestOptions().parser.parse_args([])))
        opts.update(output_size=SIZES[size], resize_outputs=True, device="cpu",
                    checkpoint_path=None, exp_dir="experiment")
        self.opts = argparse.Namespace(**opts)

        class RandomE4E(e4e):
            """The official net with its initial (random) weights: nothing to load."""

            def load_weights(self):
                pass

        torch.manual_seed(0)
        net = RandomE4E(self.opts)
        with torch.no_grad():
            for style in net.encoder.styles:
                style.linear.weight.mul_(HEAD_SCALE)
        net.latent_avg = torch.from_numpy(LATENT_AVG_STD * np.random.default_rng(1).standard_normal(
            (net.n_styles, 512)).astype(np.float32))
        self.net = net.eval()
        from utils.inference_utils import get_average_image, run_on_batch
        self._run_on_batch = run_on_batch
        with torch.no_grad(), parity.tensor_cuda_stays_on_cpu():
            t0 = time.perf_counter()
            self.avg_image = get_average_image(self.net, self.opts)
            self.avg_image_s = time.perf_counter() - t0

    def run(self, x_nchw, iterations: int) -> float:
        """Seconds of one run_on_batch call with n_iters_per_batch = iterations."""
        torch = self.torch
        self.opts.n_iters_per_batch = iterations
        with torch.no_grad():
            t0 = time.perf_counter()
            images, latents = self._run_on_batch(x_nchw, self.net, self.opts, self.avg_image)
            seconds = time.perf_counter() - t0
        last = torch.stack([images[i][-1] for i in images])
        if len(images[0]) != iterations or not bool(torch.isfinite(last).all()):
            raise RuntimeError("official run_on_batch: unexpected or non-finite output")
        return seconds


class OfficialStyleGAN3(Official):
    """stylegan3-editing's ReStyle-e4e net (e4e3) over a full-width StyleGAN3 of one config and
    size, random weights, ready for its run_on_batch."""

    def __init__(self, checkout: str, size: str, config: str, encoder_type: str, threads: int):
        self.parity = parity = _parity_module("restyle_sg3")
        common = parity.common
        common.require_checkout(checkout, parity.EDITING)
        self.torch = torch = common.setup_torch(threads)
        _torchvision_standin()
        if os.path.abspath(checkout) not in sys.path:   # once per process (several sizes)
            common.OfficialTree(checkout).activate()
            common.install_e4e_op_standin(checkout)
            common.stub_missing_packages(["imageio", "wandb"])
            parity.install_standins()
        from inversion.models.e4e3 import e4e
        from models.stylegan3.networks_stylegan3 import Generator

        from inversion.options.e4e_train_options import e4eTrainOptions
        opts = parity.official_opts("e4e", encoder_type)
        opts.update(output_size=SIZES[size], checkpoint_path=None, n_iters_per_batch=1)
        # a dataclass, as run_on_batch reads it with dataclasses.asdict
        self.opts = e4eTrainOptions(**opts)
        self.opts.resize_outputs = False
        kwargs = _bench_module("stylegan3").generator_kwargs(config, SIZES[size])

        class RandomE4E3(e4e):
            """The official net with the official initial (random) weights: nothing to load."""

            def load_weights(self):
                self.decoder = Generator(**kwargs)
                self.latent_avg = torch.from_numpy(LATENT_AVG_STD * np.random.default_rng(
                    1).standard_normal(512).astype(np.float32))

        torch.manual_seed(0)
        net = RandomE4E3(self.opts)
        with torch.no_grad():
            for style in net.encoder.styles:
                style.linear.weight.mul_(HEAD_SCALE)
        self.net = net.eval()
        from utils.inference_utils import get_average_image, run_on_batch
        self._run_on_batch = run_on_batch
        with torch.no_grad():
            t0 = time.perf_counter()
            self.avg_image = get_average_image(self.net)
            self.avg_image_s = time.perf_counter() - t0


def _torchvision_standin():
    """Inert torchvision modules where it is missing: the official files import resnet34 and
    build `transforms` pipelines at import time; the IR-SE-50 encoders and run_on_batch never
    call them."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet = types.ModuleType("torchvision.models.resnet")
    tv.models.resnet34 = tv.models.resnet.resnet34 = _no_torchvision
    tv.transforms = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "Resize", "ToTensor", "Normalize"):
        setattr(tv.transforms, name, lambda *args, **kwargs: None)
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models,
                        "torchvision.models.resnet": tv.models.resnet,
                        "torchvision.transforms": tv.transforms})


def _no_torchvision(*args, **kwargs):
    raise RuntimeError("torchvision is not installed: the ResNet-34 encoders need it")


def official_time(official: Official, x_nchw, iterations: int, repeats: int) -> float:
    return statistics.median(official.run(x_nchw, iterations) for _ in range(max(1, repeats)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["fixture"], choices=sorted(SIZES))
    parser.add_argument("--encoder", default="ProgressiveBackboneEncoder",
                        choices=["BackboneEncoder", "ResNetBackboneEncoder",
                                 "ProgressiveBackboneEncoder", "ResNetProgressiveBackboneEncoder"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generator", default="stylegan2", choices=GENERATORS,
                        help="StyleGAN3: full-width T or R, as stylegan3-editing (sizes 256, "
                             "1024)")
    parser.add_argument("--official", default=None, metavar="CHECKOUT",
                        help="also time the official run_on_batch (a yuval-alaluf/restyle-encoder "
                             "checkout at 5e80276; with --generator stylegan3-*, "
                             "yuval-alaluf/stylegan3-editing at 36ce2b4)")
    parser.add_argument("--official-repeats", type=int, default=1,
                        help="timed official calls per iteration count (median)")
    parser.add_argument("--official-warmup", type=int, default=1,
                        help="untimed 1-iteration official calls per size")
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.official is not None and args.encoder not in OFFICIAL_ENCODERS:
        parser.error(f"--official times the official ReStyle-e4e net: pass --encoder "
                     f"{' or '.join(OFFICIAL_ENCODERS)} (got {args.encoder})")
    if (args.official is not None and args.encoder == "ResNetProgressiveBackboneEncoder"
            and importlib.util.find_spec("torchvision") is None):
        parser.error("the official ResNet-34 encoder needs torchvision: pip install torchvision, "
                     "or time --encoder ProgressiveBackboneEncoder")
    stylegan3 = args.generator != "stylegan2"
    if stylegan3 and "fixture" in args.sizes:
        parser.error("--generator stylegan3-*: pass --sizes 256 and/or 1024 (the fixture size is a "
                     "StyleGAN2 one)")
    if stylegan3 and args.encoder != "ProgressiveBackboneEncoder" and args.official is not None:
        parser.error("--generator stylegan3-* --official times stylegan3-editing's e4e3 with the "
                     "IR-SE-50 encoder: pass --encoder ProgressiveBackboneEncoder")
    if args.official is not None and not os.path.isdir(args.official):
        parser.error(f"--official {args.official}: no such folder; pass a checkout of "
                     + ("yuval-alaluf/stylegan3-editing at 36ce2b4" if stylegan3
                        else "yuval-alaluf/restyle-encoder at 5e80276"))
    counter = CompileCounter()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', '')}, CPU threads "
          f"{os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, encoder {args.encoder}, "
          f"generator {args.generator}")
    header = (f"{'size':>8} {'iters':>5} {'batch':>5} {'compile s':>9} {'compiles':>8} "
              f"{'call s':>8} {'s/image':>8} {'s/img/iter':>10} {'XLA MiB':>8}")
    if args.official:
        header += f" {'official s/image':>16} {'speed-up':>8} {'load':>5}"
    print(header)
    for size in args.sizes:
        model = build_model(size, args.encoder, args.generator)
        official = x_nchw = None
        if args.official and stylegan3:
            official = OfficialStyleGAN3(args.official, size, args.generator[-1].upper(),
                                         args.encoder, args.torch_threads)
        elif args.official:
            official = Official(args.official, size, args.encoder, args.torch_threads)
        if official is not None:
            x_nchw = official.torch.from_numpy(
                np.ascontiguousarray(inputs(args.batch).transpose(0, 3, 1, 2)))
            for _ in range(args.official_warmup):
                official.run(x_nchw, 1)
            print(f"{size:>8} official get_average_image (once per run, not in its rows): "
                  f"{official.avg_image_s:.2f} s; torch {official.torch.__version__}, "
                  f"{official.torch.get_num_threads()} threads", flush=True)
        for iterations in args.iterations:
            r = bench(model, args.batch, iterations, args.repeats, counter,
                      resize=not stylegan3)
            mib = f"{r['xla_mib']:.0f}" if r["xla_mib"] is not None else "-"
            line = (f"{size:>8} {iterations:>5} {args.batch:>5} {r['compile_s']:>9.1f} "
                    f"{r['compiles']:>4}/{r['call_compiles']:<3} "
                    f"{r['call_s']:>8.2f} {r['s_per_image']:>8.2f} "
                    f"{r['s_per_image_iteration']:>10.2f} {mib:>8}")
            if official is not None:
                o = official_time(official, x_nchw, iterations, args.official_repeats) / args.batch
                line += (f" {o:>16.2f} {o / r['s_per_image']:>7.2f}x "
                         f"{os.getloadavg()[0]:>5.2f}")
            print(line, flush=True)
    print("compiles: XLA compilations during lower+compile / during the warm-up and timed calls")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
