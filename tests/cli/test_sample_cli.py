"""`e4e-jax sample` over a StyleGAN3 generator: the official gen_images.py input transform
(--translate X Y, --rotate DEG) and its refusal for StyleGAN2 generators."""
import os

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax.cli import sample
from e4e_jax.nets.stylegan3 import input_transform, make_transform
from tests.support.tiny_sg3 import save_tiny_sg3


@pytest.fixture(scope="module")
def sg3_dir(tmp_path_factory):
    return save_tiny_sg3(str(tmp_path_factory.mktemp("sg3") / "gen"))


def test_make_transform_is_the_official_matrix():
    # gen_images.py: m[0] = (c, s, tx), m[1] = (-s, c, ty); the buffer is its inverse
    m = make_transform((0.3, -1.0), 90.0)
    np.testing.assert_allclose(m, [[0, 1, 0.3], [-1, 0, -1.0], [0, 0, 1]], atol=1e-12)
    inv = input_transform((0.3, -1.0), 90.0)
    np.testing.assert_allclose(inv @ m, np.eye(3), atol=1e-6)
    np.testing.assert_array_equal(input_transform(), np.eye(3, dtype=np.float32))


def test_translate_and_rotate_render_with_the_inverse_transform(sg3_dir, tmp_path, capsys):
    import e4e_jax
    from e4e_jax.apps.sample import sample_grid
    g = e4e_jax.load_generator(sg3_dir)
    grid, _ = sample_grid(sg3_dir, n=2, seed=3, truncation=0.7, translate=(0.25, -0.1),
                          rotate=30.0)
    # the same pixels as the library with gen_images.py's buffer, and unlike the identity
    want = g.sample(jax.random.key(4), 2, truncation=0.7,
                    transform=np.linalg.inv(make_transform((0.25, -0.1), 30.0)))
    plain, _ = sample_grid(sg3_dir, n=2, seed=3, truncation=0.7)
    ref, _ = sample_grid(sg3_dir, n=2, seed=3, truncation=0.7, translate=(0, 0), rotate=0)
    np.testing.assert_array_equal(plain, ref)
    from e4e_jax.data.image_io import to_uint8
    from e4e_jax.outputs.grids import make_grid
    np.testing.assert_array_equal(grid, make_grid(list(to_uint8(np.asarray(want))), ncols=2))
    assert np.abs(grid.astype(int) - plain.astype(int)).max() > 2    # the transform took effect

    out = str(tmp_path / "t.png")
    assert sample.main(["--generator", sg3_dir, "--n", "2", "--translate", "0.25", "-0.1",
                        "--rotate", "30", "--out", out]) == 0
    assert Image.open(out).size[1] == g.resolution
    assert "translate (0.25, -0.1), rotate 30.0 deg" in capsys.readouterr().out


def test_stylegan2_refuses_the_input_transform(tmp_path, capsys):
    out = str(tmp_path / "s.png")
    assert sample.main(["--n", "1", "--resolution", "8", "--rotate", "10", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--rotate: only a StyleGAN3 generator has an input transform" in err
    assert not os.path.exists(out)


def test_non_finite_transform_and_noise_on_stylegan3_are_refused(sg3_dir, tmp_path, capsys):
    """A NaN angle used to write a black image; --noise changed nothing on StyleGAN3."""
    out = tmp_path / "s.png"
    for flags, message in ((["--rotate", "nan"], "--translate / --rotate must be finite"),
                           (["--translate", "inf", "0"], "--translate / --rotate must be finite"),
                           (["--noise", "random"], "--noise random: this generator (StyleGAN3) "
                                                   "has no noise inputs")):
        assert sample.main(["--generator", sg3_dir, "--n", "1", "--out", str(out)] + flags) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (flags, err)
        assert not out.exists()
