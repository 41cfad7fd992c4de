"""One reader for every command (e4e_jax.data.image_io.read_rgb / to_rgb): each mode PIL opens
gives the picture of its 8-bit version. A 16-bit grey PNG used to come out almost white (PIL's
convert("RGB") clips at 255)."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from e4e_jax.data import image_io


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W, C) uint16 values (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA),
    written by hand because PIL writes no 16-bit colour PNGs."""
    h, w, c = values.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.fixture
def picture():
    """An 8-bit RGB picture with every channel value used, and its grey version."""
    y, x = np.mgrid[0:16, 0:16]
    rgb = np.stack([(y * 16 + x), (255 - y * 16 - x), ((x * 37 + y * 11) % 256)], -1)
    rgb = rgb.astype(np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    return rgb, grey


def _read(data: bytes, tmp_path, name="x.png") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return np.asarray(image_io.read_rgb(str(path)))


def _save(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_every_mode_reads_as_its_8_bit_picture(picture, tmp_path):
    rgb, grey = picture
    grey3 = np.repeat(grey[..., None], 3, -1)
    wide = grey.astype(np.uint16) * 257                      # the same grey on 0..65535
    opaque = np.full(grey.shape, 65535, np.uint16)
    cases = {
        "16-bit grey": (png16(wide[..., None]), grey3),
        "16-bit grey + alpha": (png16(np.stack([wide, opaque], -1)), grey3),
        "16-bit colour": (png16(rgb.astype(np.uint16) * 257), rgb),
        "16-bit colour + alpha": (png16(np.concatenate(
            [rgb.astype(np.uint16) * 257, opaque[..., None]], -1)), rgb),
        "32-bit integer grey": (_save(Image.fromarray(wide.astype(np.int32), "I"), "TIFF"),
                                grey3),
        "32-bit float grey": (_save(Image.fromarray(grey.astype(np.float32) / 255.0, "F"),
                                    "TIFF"), grey3),
        "grey + alpha": (_save(Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1),
                                               "LA")), grey3),
        "CMYK": (_save(Image.fromarray(rgb).convert("CMYK"), "TIFF"), rgb),
        "8-bit grey": (_save(Image.fromarray(grey, "L")), grey3),
    }
    for name, (data, want) in cases.items():
        got = _read(data, tmp_path, "x.tif" if data[:2] in (b"II", b"MM") else "x.png")
        assert got.shape == want.shape and got.dtype == np.uint8, name
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name   # float rounding


def test_transparency_is_dropped_as_the_official_convert_drops_it(tmp_path):
    """The official test transform's convert('RGB'): a transparent pixel keeps its colour."""
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([30, 40, 50, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 1)
    data = _save(palette, transparency=0)                    # index 0 transparent
    got = _read(data, tmp_path)
    assert tuple(got[0, 0]) == (200, 10, 10) and tuple(got[1, 1]) == (30, 40, 50)
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert tuple(np.asarray(image_io.to_rgb(rgba))[0, 0]) == (10, 20, 30)


def test_load_image_of_a_16_bit_png_is_the_8_bit_one(picture, tmp_path):
    """What encode, invert, eval, edit and training feed the encoder (load_image)."""
    _, grey = picture
    (tmp_path / "wide.png").write_bytes(png16((grey.astype(np.uint16) * 257)[..., None]))
    Image.fromarray(grey, "L").save(tmp_path / "narrow.png")
    wide = image_io.load_image(str(tmp_path / "wide.png"), (8, 8))
    narrow = image_io.load_image(str(tmp_path / "narrow.png"), (8, 8))
    np.testing.assert_array_equal(wide, narrow)
    assert (wide > 0.99).mean() < 0.1                        # not the saturated white of before
