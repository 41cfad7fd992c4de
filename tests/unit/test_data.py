"""e4e_jax.data: the one loader (order, padding rule, skipped files, training's stream) and the one
definition of synthetic images (the same set for training and for eval / edit)."""
import os
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from e4e_jax.data import image_io
from e4e_jax.data.loader import (Batch, BatchLoader, BatchSpec, SourceImages, batches_of,
                                 fixed_batches, pad_batch, read_in_order)
from e4e_jax.data.sources import FolderSource
from e4e_jax.data.synthetic import SyntheticImages, synthetic_images
from e4e_jax.nets.generator import init_generator


def write_folder(folder, n, corrupt=()):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        path = os.path.join(folder, f"img_{i:02d}.png")
        if i in corrupt:
            with open(path, "wb") as f:
                f.write(b"not a png")
        else:
            Image.fromarray(rng.randint(0, 255, (12, 10, 3), np.uint8)).save(path)
    return folder


# ------------------------------------------------------------------ the padding rule

def test_the_padding_rule_is_zero_rows_and_a_count():
    x = np.ones((3, 2, 2, 3), np.float32)
    padded = pad_batch(x, 5)
    assert padded.shape == (5, 2, 2, 3) and (padded[3:] == 0).all()
    np.testing.assert_array_equal(padded[:3], x)
    assert pad_batch(x, 3) is x
    rows = [(f"r{i}", np.full((2, 2, 3), i, np.float32)) for i in range(7)]
    batches = list(fixed_batches(rows, 3))
    assert [b.valid for b in batches] == [3, 3, 1]
    assert all(b.images.shape == (3, 2, 2, 3) for b in batches)        # one compiled shape
    last = batches[-1]
    assert last.names == ["r6"] and (last.images[1:] == 0).all()
    np.testing.assert_array_equal(last.mask, [True, False, False])
    same = list(batches_of(np.stack([r for _, r in rows]), 3, [n for n, _ in rows]))
    for a, b in zip(batches, same):
        np.testing.assert_array_equal(a.images, b.images)
        assert (a.valid, a.names) == (b.valid, b.names)


def test_read_in_order_keeps_order_and_bounds_what_is_in_flight():
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 * ((7 * i) % 5))        # later items often finish first
        with lock:
            running[0] -= 1
        return i * i

    assert list(read_in_order(slow, range(20), workers=4, prefetch=6)) == \
        [i * i for i in range(20)]
    assert peak[0] <= 4

    def fails_at_3(i):
        if i == 3:
            raise ValueError("three")
        return i

    got = []
    with pytest.raises(ValueError, match="three"):
        for v in read_in_order(fails_at_3, range(10), workers=2):
            got.append(v)
    assert got == [0, 1, 2]                      # raised at its own position


# ------------------------------------------------------------------ source images

def test_source_images_skip_unreadable_files_once_and_count_slots(tmp_path):
    folder = write_folder(str(tmp_path / "imgs"), 7, corrupt=(2,))
    reported = []
    images = SourceImages(FolderSource(folder), folder, num_images=6,
                          on_skip=lambda name, e: reported.append(name))
    for _ in range(2):                                         # two passes, one report
        batches = list(images.read((8, 8), 4))
        assert [b.valid for b in batches] == [4, 1]            # 6 slots, 5 readable
        assert batches[0].names == ["img_00.png", "img_01.png", "img_03.png", "img_04.png"]
        assert images.skipped == ["img_02.png"]
    assert reported == ["img_02.png"]
    want = image_io.load_image(os.path.join(folder, "img_05.png"), (8, 8))
    np.testing.assert_array_equal(batches[1].images[0], want)  # the official transform
    assert (batches[1].images[1:] == 0).all()
    # fill: the count is of readable images (edit, training's sets): the broken file's place
    # goes to the next one
    filled = SourceImages(FolderSource(folder), folder, num_images=6, fill=True,
                          on_skip=lambda name, e: None)
    batches = list(filled.read((8, 8), 4))
    assert [b.valid for b in batches] == [4, 2] and batches[1].names == ["img_05.png",
                                                                         "img_06.png"]
    assert filled.skipped == ["img_02.png"]


def test_the_training_stream_is_a_function_of_the_step(tmp_path):
    folder = write_folder(str(tmp_path / "imgs"), 9)
    loader = BatchLoader(FolderSource(folder), BatchSpec(4, (8, 8), seed=3, flip_prob=0.5),
                         workers=3)
    streamed = list(loader.iterate(start_step=2, num_steps=5))
    assert len(streamed) == 5
    for k, x in enumerate(streamed):
        np.testing.assert_array_equal(x, loader.batch(2 + k))   # resumable: same batches
    assert streamed[0].shape == (4, 8, 8, 3) and streamed[0].dtype == np.float32


# ------------------------------------------------------------------ the synthetic domain

@pytest.fixture(scope="module")
def generator():
    return init_generator(jax.random.key(5), 16, max_channels=16, n_mlp=1,
                          with_latent_avg=False)


def test_one_definition_of_synthetic_images(generator):
    """A set generated in one call (training's sets, like a training batch) is the definition
    exactly; generated batch by batch (eval, edit) it agrees to float32 rounding, whatever the
    batch size, with the loader's padding rule."""
    g = generator
    want, w = jax.jit(lambda v, k: synthetic_images(g, v, k, 7, "const", (8, 8)))(
        g.variables, jax.random.key(11))
    assert want.shape == (7, 8, 8, 3) and w.shape == (7, g.style_dim)
    images = SyntheticImages(7, seed=11)
    whole = list(images.generate(g, g.variables, (8, 8), 4, in_one_call=True))
    np.testing.assert_array_equal(np.concatenate([b.images[:b.valid] for b in whole]), want)
    for batch_size in (3, 7):
        batches = list(images.generate(g, g.variables, (8, 8), batch_size))
        assert all(isinstance(b, Batch) and len(b.images) == batch_size for b in batches)
        assert sum(b.valid for b in batches) == 7
        assert batches[0].names[0] == "synthetic_00000"
        assert all((b.images[b.valid:] == 0).all() for b in batches)
        got = np.concatenate([b.images[:b.valid] for b in batches])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # not clamped: the generator's own values are the encoder's inputs
    raw = jax.jit(lambda v, k: synthetic_images(g, v, k, 7, "const"))(g.variables,
                                                                        jax.random.key(11))[0]
    assert raw.shape == (7, 16, 16, 3)
