r"""Rebuilds tests/fixtures/stylegan2_generator from the official e4e StyleGAN2 generator.

Official code: omertov/encoder4editing at commit 99ea505 (https://github.com/omertov/encoder4editing),
imported unchanged; its two CUDA ops run as the pure-PyTorch stand-ins of common.py.

Official functions whose outputs are saved:
- models/stylegan2/model.py `Generator(64, 512, 8, channel_multiplier=2)`, loaded with
  `load_state_dict(strict=True)` from the `g_ema` entry of a checkpoint written with torch.save:
  `get_latent(z)` -> w; `forward` (`g([z], ...)`) with the stored noise buffers, with truncation,
  from W+ (`input_is_latent=True`), with style mixing (`inject_index=3`) and with an explicit noise
  list -> images and W+ latents;
- editings/sefa.py `factorize_weight(g, 'all')` -> SeFa layers, eigenvectors, eigenvalues.

Run it (needs torch; a checkout of the official repository at the pinned commit):

    git clone https://github.com/omertov/encoder4editing /tmp/official/encoder4editing
    git -C /tmp/official/encoder4editing checkout 99ea505
    python tests/parity/generate/stylegan2_generator.py --official /tmp/official/encoder4editing \
        --out tests/fixtures/stylegan2_generator

To check a rebuild against the committed fixture instead of overwriting it:

    python tests/parity/generate/stylegan2_generator.py --official /tmp/official/encoder4editing \
        --out /tmp/fixtures/stylegan2_generator --compare tests/fixtures/stylegan2_generator
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "stylegan2_generator"
SEED = 101
SIZE = 64
CHANNEL_MULTIPLIER = 2
BATCH = 3
TRUNCATION = 0.7
INJECT_INDEX = 3
# The truncation latent is the mean w of this many z draws (as the official mean_latent does, but
# from a reproducible batch instead of torch.randn, so a test can recompute it).
TRUNCATION_BATCH = 4096


def noise_resolution(layer: int) -> int:
    """Side of noise map `layer` of the official generator: 4, 8, 8, 16, 16, ..."""
    return 2 ** ((layer + 5) // 2)


def generate(e4e_dir: str) -> common.Fixture:
    import torch

    common.OfficialTree(e4e_dir).activate()
    common.install_e4e_op_standin(e4e_dir)
    from editings import sefa
    from models.stylegan2.model import Generator

    def new_generator():
        return Generator(SIZE, 512, 8, channel_multiplier=CHANNEL_MULTIPLIER)

    skeleton = new_generator()
    n_latent, num_layers = skeleton.n_latent, skeleton.num_layers
    manifest = {
        "seed": SEED,
        "model": f"models/stylegan2/model.py Generator(size={SIZE}, style_dim=512, n_mlp=8, "
                 f"channel_multiplier={CHANNEL_MULTIPLIER})",
        "container": {"g_ema": "<all keys in tensors>", "latent_avg": "<extra_tensors['latent_avg']>"},
        "tensors": common.tensor_entries(skeleton),
        # rosinality checkpoints carry the mean w beside g_ema; not used by these calls
        "extra_tensors": {"latent_avg": {"shape": [512], "dtype": "float32", "scale": 1.0, "offset": 0.0}},
    }
    del skeleton

    # the checkpoint file goes through torch.save / torch.load like a real one
    checkpoint = os.path.join(tempfile.mkdtemp(prefix="parity_sg2_"), "stylegan2.pt")
    torch.save({"g_ema": common.build_tensors(manifest),
                "latent_avg": common.build_tensors(manifest, "extra_tensors")["latent_avg"]}, checkpoint)
    g = new_generator()
    g.load_state_dict(torch.load(checkpoint, map_location="cpu")["g_ema"], strict=True)
    g.eval()

    inputs = {
        "z": common.gaussian("z", (BATCH, 512), SEED),
        "z2": common.gaussian("z2", (BATCH, 512), SEED),
        "wplus": common.gaussian("wplus", (BATCH, n_latent, 512), SEED),
        "truncation": np.float32(TRUNCATION),
        "inject_index": np.int64(INJECT_INDEX),
    }
    for layer in range(num_layers):
        side = noise_resolution(layer)
        inputs[f"noise_{layer:02d}"] = common.gaussian(f"noise_{layer}", (1, 1, side, side), SEED)
    with torch.no_grad():
        z_batch = torch.from_numpy(common.gaussian("truncation_z", (TRUNCATION_BATCH, 512), SEED))
        inputs["truncation_latent"] = g.get_latent(z_batch).mean(0, keepdim=True).numpy()

    def tensor(name):
        return torch.from_numpy(np.asarray(inputs[name]))

    z, z2 = tensor("z"), tensor("z2")
    noise = [tensor(f"noise_{layer:02d}") for layer in range(num_layers)]
    out = {}
    with torch.no_grad():
        out["w"] = g.get_latent(z)
        out["img_z"], out["latent_z"] = g([z], randomize_noise=False, return_latents=True)
        out["img_trunc"], _ = g([z], truncation=TRUNCATION, truncation_latent=tensor("truncation_latent"),
                                randomize_noise=False)
        out["img_wplus"], _ = g([tensor("wplus")], input_is_latent=True, randomize_noise=False)
        out["img_mix"], out["latent_mix"] = g([z, z2], inject_index=INJECT_INDEX, randomize_noise=False,
                                              return_latents=True)
        out["img_noise"], _ = g([z], noise=noise)  # an explicit noise list overrides randomize_noise

    layers, eigenvectors, eigenvalues = sefa.factorize_weight(g, "all")
    # numpy's eig returns a complex result only when some eigenvalue is complex; for the symmetric
    # matrix of SeFa they are real, so a complex dtype must carry zero imaginary parts
    for name, value in (("eigenvalues", eigenvalues), ("eigenvectors", eigenvectors)):
        if np.iscomplexobj(value) and np.abs(np.imag(value)).max() != 0:
            raise RuntimeError(f"SeFa {name} have imaginary parts")
    out["sefa_eigenvalues"] = np.real(eigenvalues)
    out["sefa_eigenvectors"] = np.real(eigenvectors)
    out["sefa_layers"] = np.asarray(layers, dtype=np.int64)
    # eig returns the pairs unsorted: the descending order, for tests that compare sorted pairs
    out["sefa_order_desc"] = np.argsort(-np.real(eigenvalues).astype(np.float64), kind="stable").astype(np.int64)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    args = common.parse_args(common.argument_parser(__doc__, FAMILY, "checkout of omertov/encoder4editing at 99ea505"))
    e4e_dir = common.require_checkout(args.official, common.E4E, args.allow_other_commit)
    return common.finish(generate(e4e_dir), args)


if __name__ == "__main__":
    sys.exit(main())
