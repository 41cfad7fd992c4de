r"""Rebuilds tests/fixtures/fid_inception from pytorch-fid 0.3.0 (its Inception-v3 and FID).

Official code: pytorch-fid 0.3.0 (https://github.com/mseitzer/pytorch-fid, tag v0.3.0; the same
files as the PyPI release `pip install pytorch-fid==0.3.0`), imported unchanged, on torchvision's
`Inception3`.

Official functions whose outputs are saved:
- pytorch_fid/inception.py `InceptionV3([3], resize_input=True, normalize_input=True,
  use_fid_inception=True)` (pool3, 2048-d), built by `fid_inception_v3()`, whose weight download
  (`load_state_dict_from_url` as bound in pytorch_fid.inception) returns the synthetic state dict,
  loaded by the official code with strict=True: `model(x)` for a batch of 4 images;
- pytorch_fid/fid_score.py `get_activations` and `calculate_activation_statistics` on two folders
  of 8 PNG files (the official data path: PIL, ToTensor, one batch of 8), then
  `calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b)`, including whether its
  singular-product fallback fired.

Run it (needs torch, torchvision, scipy, Pillow and pytorch-fid 0.3.0, either installed or as a
checkout passed with --official):

    pip install --no-deps pytorch-fid==0.3.0
    python tests/parity/generate/fid_inception.py --out tests/fixtures/fid_inception

    # or from a checkout of the repository at the release tag
    git clone https://github.com/mseitzer/pytorch-fid /tmp/official/pytorch-fid
    git -C /tmp/official/pytorch-fid checkout v0.3.0
    python tests/parity/generate/fid_inception.py --official /tmp/official/pytorch-fid \
        --out tests/fixtures/fid_inception

Add `--compare tests/fixtures/fid_inception` (with --out elsewhere) to check a rebuild against the
committed fixture. The FID itself depends on scipy's sqrtm; the committed value was computed with
scipy 1.17.1.
"""
import collections
import contextlib
import io
import math
import os
import sys
import tempfile
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAMILY = "fid_inception"
SEED = 1001
BATCH = 4          # images of the plain forward
SET_SIZE = 8       # images in each of the two FID sets
IMAGE_SIZE = 128   # the model resizes to 299 itself (bilinear)
SIGMA_STRIDE = 16  # the stored covariance block sigma[::16, ::16]; the full one is 16 MB
RELU_GAIN = math.sqrt(2.0)
# Deep random ReLU networks with global pooling send all images to nearly parallel features
# (cosine 0.996-0.999 with He scales). In the last four blocks each filter instead gets a negative
# mean (it subtracts a multiple of the local mean of its non-negative input), which keeps those
# units sparse and image-selective.
SELECTIVE_BLOCKS = ("Mixed_6e.", "Mixed_7a.", "Mixed_7b.", "Mixed_7c.")
SELECTIVE_GAIN = 3.2
SELECTIVE_SHIFT = 3.0
MODEL = ("pytorch_fid/inception.py fid_inception_v3() (pytorch-fid 0.3.0): torchvision "
         "Inception3(num_classes=1008, aux_logits=False, init_weights=False) with Mixed_5b/5c/5d = "
         "FIDInceptionA, Mixed_6b..6e = FIDInceptionC, Mixed_7b = FIDInceptionE_1, Mixed_7c = "
         "FIDInceptionE_2")


def weight_rule(key, owner, attr, tensor):
    if type(owner).__name__ == "Conv2d" and attr == "weight":  # BasicConv2d convs have no bias
        fan_in = int(np.prod(tensor.shape[1:]))
        if key.startswith(SELECTIVE_BLOCKS):
            return common.spec(common.fan_in_scale(tensor, SELECTIVE_GAIN), -SELECTIVE_SHIFT * SELECTIVE_GAIN / fan_in)
        return common.spec(common.fan_in_scale(tensor, RELU_GAIN))
    return common.default_rule(key, owner, attr, tensor)  # BatchNorm, the (unused) fc


def import_pytorch_fid(checkout: str | None):
    """pytorch_fid from a checkout (its src/ folder) or the installed package; must be 0.3.0."""
    if checkout:
        source = os.path.join(os.path.abspath(checkout), "src")
        if not os.path.exists(os.path.join(source, "pytorch_fid", "inception.py")):
            raise SystemExit(f"{checkout} is not a checkout of {common.PYTORCH_FID.repo}")
        sys.path.insert(0, source)
    import pytorch_fid
    from pytorch_fid import fid_score
    from pytorch_fid import inception as fid_inception

    if pytorch_fid.__version__ != common.PYTORCH_FID.commit:
        raise SystemExit(f"pytorch-fid {pytorch_fid.__version__} found, the fixture was made with "
                         f"{common.PYTORCH_FID.commit}")
    return fid_inception, fid_score


def skeleton(fid_inception):
    """The module fid_inception_v3() builds, without its download or weight loading: only to list
    the state-dict keys, shapes and owners."""
    import torchvision

    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: None), \
            mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict",
                              lambda self, *args, **kwargs: None):
        return fid_inception.fid_inception_v3()


def write_pngs(images_u8: np.ndarray, folder: str) -> list:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(images_u8):
        path = os.path.join(folder, f"{i:03d}.png")
        Image.fromarray(np.ascontiguousarray(image)).save(path)  # PNG: lossless
        paths.append(path)
    return paths


def frechet_distance(fid_score, mu_a, sigma_a, mu_b, sigma_b):
    """The official calculate_frechet_distance, and whether it took its eps fallback (it says so
    on stdout and nowhere else)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        distance = fid_score.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    return float(distance), "singular product" in printed.getvalue()


def generate(checkout: str | None) -> common.Fixture:
    import torch

    fid_inception, fid_score = import_pytorch_fid(checkout)
    manifest = {
        "seed": SEED,
        "model": MODEL + ("; used through InceptionV3([3], resize_input=True, normalize_input=True, "
                          "use_fid_inception=True) (pool3, 2048-d)"),
        "container": "<all keys in tensors>",
        "tensors": common.tensor_entries(skeleton(fid_inception), rule=weight_rule),
    }
    image_seed = SEED * 1000 + 29
    x_u8 = common.pattern_images_u8(BATCH, IMAGE_SIZE, image_seed)
    sets_u8 = {"a": common.pattern_images_u8(SET_SIZE, IMAGE_SIZE, image_seed + 1),
               "b": common.pattern_images_u8(SET_SIZE, IMAGE_SIZE, image_seed + 2)}
    inputs = {"x": common.u8_to_unit(x_u8), "x_u8": x_u8, "set_a_u8": sets_u8["a"], "set_b_u8": sets_u8["b"]}

    weights = common.build_tensors(manifest)

    def weight_download(url, *args, **kwargs):
        if url != fid_inception.FID_WEIGHTS_URL:
            raise RuntimeError(f"unexpected download {url}")
        return collections.OrderedDict((k, v.clone()) for k, v in weights.items())

    with mock.patch.object(fid_inception, "load_state_dict_from_url", weight_download):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                          resize_input=True, normalize_input=True, use_fid_inception=True)
    model.eval()

    def pool3(images):
        with torch.no_grad():
            features = model(torch.from_numpy(images))
        return features[0].squeeze(3).squeeze(2).numpy()

    out = {"pool3": pool3(inputs["x"])}
    stats = {}
    png_root = tempfile.mkdtemp(prefix="parity_fid_")
    for tag, images in sets_u8.items():
        files = write_pngs(images, os.path.join(png_root, tag))
        activations = fid_score.get_activations(files, model, batch_size=SET_SIZE, dims=2048, device="cpu",
                                                num_workers=0)
        # the file path (PIL + ToTensor) must see exactly the stored uint8 pixels
        if not np.array_equal(activations, pool3(common.u8_to_unit(images)).astype(np.float64)):
            raise RuntimeError("get_activations differs from the forward pass on the same pixels")
        mu, sigma = fid_score.calculate_activation_statistics(files, model, SET_SIZE, 2048, "cpu", 0)
        out[f"pool3_{tag}"] = activations
        out[f"mu_{tag}"] = mu
        out[f"sigma_{tag}_diag"] = np.diag(sigma).copy()
        out[f"sigma_{tag}_sub"] = sigma[::SIGMA_STRIDE, ::SIGMA_STRIDE].copy()
        stats[tag] = (mu, sigma)
    (mu_a, sigma_a), (mu_b, sigma_b) = stats["a"], stats["b"]
    distance, fallback = frechet_distance(fid_score, mu_a, sigma_a, mu_b, sigma_b)
    mean_term = float((mu_a - mu_b).dot(mu_a - mu_b))
    trace_a, trace_b = float(np.trace(sigma_a)), float(np.trace(sigma_b))
    out["fid"] = np.float64(distance)
    # tr(covmean) is not returned by the official function; recovered from its result
    out["fid_terms"] = np.array([mean_term, trace_a, trace_b, (mean_term + trace_a + trace_b - distance) / 2.0])
    out["fid_singular_branch"] = np.int64(fallback)
    return common.Fixture(inputs=inputs, expected=out, manifest=manifest)


def main() -> int:
    parser = common.argument_parser(__doc__, FAMILY, official_help=None, default_isa="native")
    parser.add_argument("--official", default=None,
                        help="checkout of mseitzer/pytorch-fid at v0.3.0 (default: the installed pytorch_fid)")
    args = common.parse_args(parser)
    return common.finish(generate(args.official), args)


if __name__ == "__main__":
    sys.exit(main())
