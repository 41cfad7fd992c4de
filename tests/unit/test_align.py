"""FFHQ face alignment: the crop math (always) and MediaPipe detection (with the [align] extra)."""
from __future__ import annotations

import os
import re
import sys
import threading
import types

import numpy as np
import PIL.Image
import pytest

from e4e_jax import align
from tests.support.paths import DATA
from e4e_jax.align import detect as align_detect
from e4e_jax.apps import align as align_app
from e4e_jax.cli import align as align_cli
from e4e_jax.outputs.names import face_filename, output_names

IMAGES = os.path.join(DATA, "images")

FACE = os.path.join(IMAGES, "input_img.jpg")  # the official FFHQ-aligned 1024x1024 photo
NO_FACE = os.path.join(IMAGES, "church_img.jpg")


def _full_quad(size: float) -> np.ndarray:
    """Corners of a whole size x size image in pixel-index coordinates (TL, BL, BR, TR)."""
    lo, hi = -0.5, size - 0.5
    return np.array([[lo, lo], [lo, hi], [hi, hi], [hi, lo]])


def _template_points(ratio: float, size: float, mouth_width: float = 0.45) -> np.ndarray:
    """(4, 2) eye/mouth points of a face already FFHQ-aligned at `size` (pixel indices)."""
    t = align.ffhq_template(ratio, size)
    a = t["eye_right"][0] - t["eye_left"][0]
    half_mouth = mouth_width * a
    return np.stack([t["eye_left"], t["eye_right"],
                     t["mouth_avg"] - [half_mouth, 0.0], t["mouth_avg"] + [half_mouth, 0.0]])


def _similarity(points: np.ndarray, angle_deg: float, scale: float, centre, size: float = 256
                ) -> np.ndarray:
    """Rotate/scale pixel-index points about the middle of a `size` image, moving it to `centre`."""
    t = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (rot @ (points + 0.5 - size / 2.0).T).T + np.asarray(centre, dtype=np.float64) - 0.5


# ---------------------------------------------------------------------------------------------
# Crop math, no MediaPipe needed


@pytest.mark.parametrize("ratio", [0.8, 1.0, 1.3])
@pytest.mark.parametrize("size", [256, 1024])
def test_template_is_the_fixed_point_of_the_ffhq_quad(ratio, size):
    # Both regimes of max(2|e2e|, 1.8|e2m|): eye distance (0.8, 1.0) and eye-to-mouth (1.3).
    quad, qsize = align.ffhq_quad(_template_points(ratio, size))
    np.testing.assert_allclose(quad, _full_quad(size), atol=1e-9)
    assert qsize == pytest.approx(size)
    t = align.ffhq_template(1.0, 256)
    np.testing.assert_allclose(t["eye_left"][0] + 0.5, 96.0)
    np.testing.assert_allclose(t["eye_right"][0] + 0.5, 160.0)


@pytest.mark.parametrize("angle", [0.0, 30.0, -70.0, 150.0])
def test_quad_follows_rotation_scale_and_shift(angle):
    pts = _template_points(1.05, 256)
    quad, qsize = align.ffhq_quad(_similarity(pts, angle, 2.5, (700.0, 500.0)))
    np.testing.assert_allclose(quad, _similarity(_full_quad(256), angle, 2.5, (700.0, 500.0)),
                               atol=1e-9)
    np.testing.assert_allclose(quad.mean(axis=0), [699.5, 499.5], atol=1e-9)
    assert qsize == pytest.approx(640.0)


def test_eye_mouth_points_formats():
    four = np.array([[10.0, 20.0], [50.0, 21.0], [15.0, 60.0], [45.0, 61.0]])
    np.testing.assert_array_equal(align.eye_mouth_points(four), four)
    five = np.insert(four, 2, [[30.0, 40.0]], axis=0)  # nose in the middle, ignored
    np.testing.assert_array_equal(align.eye_mouth_points(five), four)
    dlib68 = np.zeros((68, 2))
    dlib68[36:42] = four[0] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    dlib68[42:48] = four[1] + np.array([[-3, 0], [-1, -1], [1, -1], [3, 0], [1, 1], [-1, 1]])
    dlib68[48], dlib68[54] = four[2], four[3]
    np.testing.assert_allclose(align.eye_mouth_points(dlib68), four)
    with pytest.raises(ValueError, match=r"\(7, 2\)"):
        align.eye_mouth_points(np.zeros((7, 2)))
    with pytest.raises(ValueError, match="NaN"):
        align.eye_mouth_points(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="degenerate"):
        align.ffhq_quad(np.zeros((4, 2)))


def test_mesh_to_points_uses_the_eye_rings_and_mouth_corners():
    mesh = np.zeros((468, 2))
    mesh[list(align.MESH_EYE_LEFT)] = [100.0, 200.0]
    mesh[list(align.MESH_EYE_RIGHT)] = [300.0, 190.0]
    mesh[align.MESH_MOUTH_LEFT] = [130.0, 400.0]
    mesh[align.MESH_MOUTH_RIGHT] = [270.0, 405.0]
    np.testing.assert_allclose(align.mesh_to_points(mesh),
                               [[100, 200], [300, 190], [130, 400], [270, 405]])
    assert len(set(align.MESH_EYE_LEFT) | set(align.MESH_EYE_RIGHT)) == 32
    with pytest.raises(ValueError, match="468"):
        align.mesh_to_points(np.zeros((68, 2)))


def _draw_discs(canvas_size, centres, radius, colours, background=128):
    """Discs with exact (continuous-coordinate) centres at pixel-index positions."""
    w, h = canvas_size
    img = np.full((h, w, 3), background, dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for (cx, cy), colour in zip(centres, colours):
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = colour
    return PIL.Image.fromarray(img)


# weight of a pixel for each disc colour: zero on the grey background and on the other colours
_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
_WEIGHTS = [
    lambda a: a[..., 0] - np.maximum(a[..., 1], a[..., 2]),
    lambda a: a[..., 1] - np.maximum(a[..., 0], a[..., 2]),
    lambda a: a[..., 2] - np.maximum(a[..., 0], a[..., 1]),
    lambda a: np.minimum(a[..., 0], a[..., 1]) - a[..., 2],
]


def _centroid(arr, weight_fn, near, window):
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    wgt = np.clip(weight_fn(arr), 0.0, None)
    wgt[(np.abs(xx - near[0]) > window) | (np.abs(yy - near[1]) > window)] = 0.0
    assert wgt.sum() > 0, "disc not found in the aligned crop"
    return np.array([(wgt * xx).sum(), (wgt * yy).sum()]) / wgt.sum()


@pytest.mark.parametrize(
    "angle, scale, centre, canvas, ratio, path",
    [
        (0.0, 1.5, (300.0, 280.0), (600, 560), 1.0, "crop"),
        (30.0, 2.0, (450.0, 400.0), (900, 800), 1.3, "crop"),  # eye-to-mouth sets the size
        (-70.0, 1.2, (130.0, 520.0), (640, 650), 0.95, "pad"),  # quad leaves the image
        (150.0, 5.0, (1100.0, 1000.0), (2200, 2000), 1.0, "shrink"),  # qsize 1280 = 5 x 256
    ],
)
def test_ffhq_align_puts_landmarks_on_the_template(angle, scale, centre, canvas, ratio, path):
    size = 256
    target = _template_points(ratio, size)
    source = _similarity(target, angle, scale, centre)
    quad, qsize = align.ffhq_quad(source)
    np.testing.assert_allclose(qsize, scale * size)
    leaves = quad.min() < 0 or (quad > np.array(canvas) - 1).any()
    assert leaves == (path == "pad")
    assert (int(qsize / size * 0.5) > 1) == (path == "shrink")
    img = _draw_discs(canvas, source, radius=0.025 * qsize, colours=_COLOURS)
    out = align.ffhq_align(img, source, size=size)
    assert out.size == (size, size) and out.mode == "RGB"
    arr = np.asarray(out, dtype=np.float64)
    for point, weight in zip(target, _WEIGHTS):
        found = _centroid(arr, weight, point, window=0.06 * size)
        assert np.hypot(*(found - point)) < 0.25, (found, point)


def test_ffhq_align_of_an_aligned_image_is_the_identity_inside():
    # Template landmarks on an aligned image give the full-image quad, so the crop must reproduce
    # the image; only the outer band is touched by FFHQ's blurred padding of the 1-pixel overhang.
    img = PIL.Image.open(FACE).convert("RGB").resize((256, 256), PIL.Image.Resampling.LANCZOS)
    out = align.ffhq_align(img, _template_points(1.0, 256), size=256)
    got, want = np.asarray(out, dtype=np.int16), np.asarray(img, dtype=np.int16)
    inner = slice(40, 216)
    assert np.abs(got[inner, inner] - want[inner, inner]).max() <= 1
    # a 3-pixel shift of the eyes must show up as a clearly different crop
    shifted = align.ffhq_align(img, _template_points(1.0, 256) + [3.0, 0.0], size=256)
    assert np.abs(np.asarray(shifted, np.int16)[inner, inner] - want[inner, inner]).mean() > 5


def test_transform_size_supersamples_and_is_checked():
    img = PIL.Image.open(FACE).convert("RGB").resize((512, 512), PIL.Image.Resampling.LANCZOS)
    pts = _template_points(1.0, 512)
    plain = np.asarray(align.ffhq_align(img, pts, size=128), np.float64)
    fine = np.asarray(align.ffhq_align(img, pts, size=128, transform_size=512), np.float64)
    assert fine.shape == plain.shape == (128, 128, 3)
    assert 0 < np.abs(fine - plain).mean() < 8
    with pytest.raises(ValueError, match="transform_size"):
        align.ffhq_align(img, pts, size=128, transform_size=64)
    with pytest.raises(ValueError, match="size"):
        align.ffhq_align(img, pts, size=4)
    with pytest.raises(TypeError, match="PIL"):
        align.ffhq_align(np.asarray(img), pts)


def test_to_rgb_handles_grayscale_alpha_palette_and_16_bit():
    rgba = PIL.Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (5, 6, 7, 0))  # fully transparent: its stored colour (official)
    out = align.to_rgb(rgba)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (5, 6, 7) and out.getpixel((1, 1)) == (10, 20, 30)
    gray = align.to_rgb(PIL.Image.new("L", (4, 4), 77))
    assert gray.mode == "RGB" and gray.getpixel((2, 2)) == (77, 77, 77)
    la = align.to_rgb(PIL.Image.new("LA", (4, 4), (77, 0)))
    assert la.getpixel((2, 2)) == (77, 77, 77)
    pal = align.to_rgb(PIL.Image.new("RGB", (4, 4), (200, 10, 10)).convert("P"))
    assert pal.mode == "RGB" and pal.getpixel((0, 0))[0] > 150
    deep = PIL.Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert align.to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)


def test_ffhq_align_accepts_grayscale_and_rgba():
    pts = _template_points(1.0, 256)
    base = PIL.Image.open(FACE).convert("RGB").resize((256, 256), PIL.Image.Resampling.LANCZOS)
    ref = np.asarray(align.ffhq_align(base, pts), np.float64)
    for image in (base.convert("L"), base.convert("RGBA"), base.convert("LA")):
        out = align.ffhq_align(image, pts)
        assert out.mode == "RGB" and out.size == (256, 256)
        got = np.asarray(out, np.float64)
        if image.mode.startswith("L"):
            ref_gray = np.asarray(PIL.Image.fromarray(ref.astype(np.uint8)).convert("L"), np.float64)
            assert np.abs(got[..., 0] - ref_gray).mean() < 1.0
            assert np.array_equal(got[..., 0], got[..., 2])
        else:
            assert np.abs(got - ref).max() <= 1


def test_open_image_applies_exif_orientation_and_reports_bad_files(tmp_path):
    upright = PIL.Image.open(FACE).convert("RGB").resize((96, 128))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels are turned 90 degrees CCW
    upright.transpose(PIL.Image.Transpose.ROTATE_90).save(tmp_path / "phone.png", exif=exif)
    loaded = align.open_image(str(tmp_path / "phone.png"))
    assert loaded.size == (96, 128)
    assert np.array_equal(np.asarray(loaded.convert("RGB")), np.asarray(upright))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image"):
        align.open_image(str(tmp_path / "broken.jpg"))


def test_output_names_and_face_filenames():
    names = output_names(["in/a.jpg", "in/b.png", "in/c.jpg", "in/c.png"])
    assert names == {"in/a.jpg": "a", "in/b.png": "b", "in/c.jpg": "c", "in/c.png": "c_png"}
    assert [face_filename("a", k) for k in range(3)] == ["a.png", "a_face1.png", "a_face2.png"]


def test_import_works_and_align_faces_explains_the_install_without_mediapipe(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    monkeypatch.setattr(align_detect, "_THREAD_LOCAL", threading.local())
    img = PIL.Image.open(FACE)
    with pytest.raises(ImportError, match=r"pip install \.\[align\]"):
        align.align_faces(img)
    with pytest.raises(ImportError, match="mediapipe==0.10.14"):
        align.detect_face_points(img)
    src = tmp_path / "in"
    src.mkdir()
    img.save(src / "face.jpg")
    assert align_cli.main(["--input", str(src), "--output", str(tmp_path / "out")]) == 1
    assert "pip install .[align]" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert align_cli.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "input folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert align_cli.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    assert align_cli.main(["--input", FACE, "--output", str(tmp_path / "o"), "--size", "4"]) == 2
    assert "--size" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# MediaPipe detection (the [align] extra; CI installs it)


@pytest.fixture(scope="module")
def aligner():
    pytest.importorskip("mediapipe", reason="needs the [align] extra: pip install .[align]")
    with align.FaceAligner() as instance:
        yield instance


@pytest.fixture(scope="module")
def face():
    return PIL.Image.open(FACE).convert("RGB")


def _coarse_mad(a: PIL.Image.Image, b: PIL.Image.Image) -> float:
    """Mean abs difference of the central 3/4 at 64x64: sub-pixel landmark jitter barely registers
    there, a misframed crop does; the outer band differs anyway where the copies were padded."""
    def small(img):
        img = img.convert("RGB").resize((64, 64), PIL.Image.Resampling.BOX)
        return np.asarray(img, np.float64)[8:56, 8:56]
    return float(np.abs(small(a) - small(b)).mean())


def _affine_copy(img, angle, scale, canvas, offset):
    """`img` rotated/scaled onto a bigger canvas, plus the map from its pixels back to `img`'s."""
    w, h = img.size
    centre = np.array([w / 2.0, h / 2.0])
    target = np.array(canvas, dtype=np.float64) / 2.0 + offset
    t = np.deg2rad(angle)
    fwd = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    inv = np.linalg.inv(fwd)
    b = centre - inv @ target
    out = img.transform(canvas, PIL.Image.Transform.AFFINE,
                        (inv[0, 0], inv[0, 1], b[0], inv[1, 0], inv[1, 1], b[1]),
                        PIL.Image.Resampling.BICUBIC, fillcolor=(90, 110, 130))

    def back(points):
        return (inv @ (points + 0.5 - target).T).T + centre - 0.5

    return out, back


def test_real_photo_aligns_onto_the_ffhq_template(aligner, face):
    faces = aligner.detect(face)
    assert len(faces) == 1
    # input_img.jpg is already FFHQ-aligned (with dlib) at 1024: its crop is nearly the image.
    # MediaPipe's landmarks make the crop 1.3% larger here (4.5 px at the corners at 256, 2.7 px
    # from the crop dlib's landmarks give on this 1024 copy); a 5% zoom would be 6.4 px.
    quad, qsize = align.ffhq_quad(faces[0].points)
    corner_err = np.abs(quad - _full_quad(1024)).max() / 1024 * 256
    print(f"quad corner error vs the full image: {corner_err:.2f} px at 256; qsize {qsize:.1f}/1024")
    assert corner_err < 5.5
    crop = aligner.align(face)[0]
    assert crop.size == (256, 256) and crop.mode == "RGB"
    # landmarks found again in the aligned crop sit where the FFHQ math puts them
    pts = aligner.detect(crop)[0].points
    eye_avg = pts[:2].mean(axis=0)
    ratio = np.hypot(*(pts[2:].mean(axis=0) - eye_avg)) / np.hypot(*(pts[1] - pts[0]))
    template = align.ffhq_template(ratio, 256)
    errs = [np.hypot(*(pts[0] - template["eye_left"])), np.hypot(*(pts[1] - template["eye_right"])),
            np.hypot(*(pts[2:].mean(axis=0) - template["mouth_avg"]))]
    print("eye_left, eye_right, mouth errors vs FFHQ template (px at 256):", np.round(errs, 2))
    assert max(errs) < 3.0
    # and the crop is the photo itself, up to the small landmark differences: the template
    # landmarks give 0.7, MediaPipe's 6.2, while misframing by a 4 px shift, a 5 degree turn or a 5%
    # zoom at 256 gives 10.4 to 11.0
    mad = _coarse_mad(crop, face)
    print(f"mean abs difference to the photo at 64x64: {mad:.2f}/255")
    assert mad < 9.0


@pytest.mark.parametrize(
    "angle, scale",
    [(25.0, 0.6), (-35.0, 0.9), (10.0, 1.3), (0.0, 0.35)],
)
def test_rotated_and_scaled_copies_align_to_the_same_crop(aligner, face, angle, scale):
    ref_pts = aligner.detect(face)[0].points
    ref_quad, ref_qsize = align.ffhq_quad(ref_pts)
    ref_crop = align.ffhq_align(face, ref_pts)
    img, back = _affine_copy(face, angle, scale, (1400, 1200), (150.0, 80.0))
    faces = aligner.detect(img)
    assert len(faces) == 1
    quad, _ = align.ffhq_quad(back(faces[0].points))
    err = np.abs(quad - ref_quad).max() / ref_qsize * 256
    mad = _coarse_mad(aligner.align(img)[0], ref_crop)
    print(f"angle {angle} scale {scale}: quad corner error {err:.2f} px at 256, crop MAD {mad:.2f}")
    assert err < 4.0
    assert mad < 6.0


def test_images_without_a_face_give_no_crop(aligner):
    for name in ("church_img.jpg", "car_img.jpg"):
        assert aligner.align(PIL.Image.open(os.path.join(IMAGES, name))) == []
    assert aligner.detect(PIL.Image.new("RGB", (300, 200), (30, 140, 60))) == []


def test_grayscale_and_rgba_photos_align(aligner, face):
    color = aligner.align(face)[0].convert("L")
    rgba = face.convert("RGBA")
    rgba.putalpha(255)
    for image in (face.convert("L"), rgba):
        crops = align.align_faces(image)
        assert len(crops) == 1 and crops[0].mode == "RGB" and crops[0].size == (256, 256)
        mad = _coarse_mad(crops[0].convert("L"), color)
        print(f"{image.mode}: crop MAD vs the colour photo's (gray) {mad:.2f}")
        assert mad < 4.0


def test_several_faces_come_largest_first(aligner, face):
    canvas = PIL.Image.new("RGB", (1500, 900), (60, 70, 80))
    canvas.paste(face.resize((300, 300), PIL.Image.Resampling.LANCZOS), (80, 420))
    canvas.paste(face.resize((560, 560), PIL.Image.Resampling.LANCZOS), (820, 120))
    faces = aligner.detect(canvas)
    assert len(faces) == 2
    assert faces[0].qsize > faces[1].qsize
    assert faces[0].eye_left[0] > 820 and faces[1].eye_left[0] < 380
    crops = align.align_faces(canvas, size=128)
    assert [c.size for c in crops] == [(128, 128), (128, 128)]
    assert len(aligner.align(canvas)) == 2
    with align.FaceAligner(max_faces=1) as one:
        assert len(one.detect(canvas)) == 1


def test_align_faces_is_safe_from_several_threads(face):
    # batch encoding calls align_faces from a thread pool; MediaPipe graphs are not re-entrant
    import concurrent.futures as cf

    pytest.importorskip("mediapipe", reason="needs the [align] extra: pip install .[align]")
    small = face.resize((384, 384), PIL.Image.Resampling.LANCZOS)
    want = np.asarray(align.align_faces(small, 128)[0])
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: align.align_faces(small, 128), range(6)))
    for crops in results:
        assert len(crops) == 1 and np.array_equal(np.asarray(crops[0]), want)


def test_cli_writes_one_png_per_face_and_reports_skips(aligner, face, tmp_path, capsys):
    src, dst = tmp_path / "photos", tmp_path / "aligned"
    src.mkdir()
    face.resize((512, 512)).save(src / "person.jpg")
    face.convert("L").save(src / "gray.png")
    face.convert("RGBA").save(src / "rgba.png")
    pair = PIL.Image.new("RGB", (1500, 900), (60, 70, 80))
    pair.paste(face.resize((300, 300)), (80, 420))
    pair.paste(face.resize((560, 560)), (820, 120))
    pair.save(src / "pair.jpg")
    PIL.Image.open(NO_FACE).save(src / "church.jpg")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("ignored")
    code = align_cli.main(["--input", str(src), "--output", str(dst), "--size", "128"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert sorted(os.listdir(dst)) == ["gray.png", "manifest.tsv", "pair.png", "pair_face1.png",
                                       "person.png", "rgba.png"]
    for name in os.listdir(dst):
        if name == "manifest.tsv":
            continue
        with PIL.Image.open(dst / name) as img:
            assert img.size == (128, 128) and img.mode == "RGB"
    assert "[6/6]" in out and re.search(r"pair\.jpg: 2 faces \(smallest \d+ px; finds faces down to ~\d+ px\) -> "
                                   r"pair\.png, pair_face1\.png", out)
    assert "church.jpg: skipped (no face found; faces under ~" in out
    assert "broken.jpg: skipped (cannot read image" in out
    assert "6 image(s), 5 aligned face(s) written" in out and "2 image(s) skipped" in out
    # a folder of faceless images: nothing written, failure exit code
    only = tmp_path / "landscapes"
    only.mkdir()
    PIL.Image.open(NO_FACE).save(only / "church.jpg")
    assert align_cli.main(["--input", str(only), "--output", str(tmp_path / "none")]) == 1
    assert "no face found" in capsys.readouterr().out


def test_cli_output_names_never_collide(tmp_path, monkeypatch, capsys):
    """Same stem, different extensions; a face-suffix clash (two.jpg with two faces beside
    two_face1.jpg); names differing only in case: one PNG per face, manifest.tsv maps them
    (issue 13 item 1). The detector is faked (no MediaPipe needed): a 40 px image has 2 faces."""
    src = tmp_path / "in"
    src.mkdir()
    for name, side in (("a.jpg", 30), ("a.png", 31), ("A.bmp", 32), ("two.jpg", 40),
                       ("two_face1.jpg", 33)):
        PIL.Image.new("RGB", (side, side), (6 * side, 0, 0)).save(src / name)

    class FakeAligner:
        def __init__(self, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def detect(self, image):
            n = 2 if image.size[0] == 40 else 1
            return [types.SimpleNamespace(qsize=image.size[0] / 2) for _ in range(n)]

        def crop(self, image, face, size, transform_size=None):
            return image.resize((size, size))

        def smallest_face(self, width, height):
            return 12

    monkeypatch.setattr(align_app, "FaceAligner", FakeAligner)
    dst = tmp_path / "out"
    assert align_cli.main(["--input", str(src), "--output", str(dst), "--size", "16"]) == 0
    rows = [line.split("\t") for line in (dst / "manifest.tsv").read_text().splitlines()[1:]]
    pngs = [r[0] for r in rows]
    assert len(pngs) == 6 and len({p.lower() for p in pngs}) == 6
    assert sorted(os.listdir(dst)) == sorted(pngs + ["manifest.tsv"])
    assert {(r[1], r[2]): r[0] for r in rows} == {
        ("A.bmp", "0"): "A.png", ("a.jpg", "0"): "a_jpg.png", ("a.png", "0"): "a_png.png",
        ("two.jpg", "0"): "two.png", ("two.jpg", "1"): "two_face1.png",
        ("two_face1.jpg", "0"): "two_face1_jpg.png"}
    # each PNG holds its own source (the colour encodes the source's side)
    for out_name, source, _ in rows:
        side = PIL.Image.open(src / source).size[0]
        assert abs(int(np.asarray(PIL.Image.open(dst / out_name))[0, 0, 0]) - 6 * side) <= 2
    assert "6 aligned face(s) written" in capsys.readouterr().out
    # a second run into the same folder is refused in one line, nothing touched; --overwrite
    # replaces it
    before = {n: (dst / n).read_bytes() for n in os.listdir(dst)}
    assert align_cli.main(["--input", str(src), "--output", str(dst), "--size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier align run" in err[0] and "--overwrite" in err[0], err
    assert {n: (dst / n).read_bytes() for n in os.listdir(dst)} == before
    assert align_cli.main(["--input", str(src), "--output", str(dst), "--size", "8",
                           "--overwrite"]) == 0
    assert PIL.Image.open(dst / "a_png.png").size == (8, 8)


def test_tile_levels_grid_and_smallest_face_size(aligner):
    """Level k adds (2^(k+1) - 1)^2 tiles of 1/2^k the side, only where they are >= 192 px; the
    smallest findable face is ~1/11 of the finest region's longer side, at least 12 px."""
    assert len(aligner._regions(300, 200)) == 1 and aligner.smallest_face(300, 200) == 27
    assert len(aligner._regions(1024, 683)) == 1 + 9
    assert aligner.smallest_face(1024, 683) == 47 and aligner.smallest_face(100, 80) == 12
    finer = align.FaceAligner(tile_levels=2)
    try:
        regions = finer._regions(2048, 1365)
        assert len(regions) == 1 + 9 + 49
        assert all(0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 1365 for x0, y0, x1, y1 in regions)
        assert {x1 - x0 for x0, _, x1, _ in regions} == {2048, 1024, 512}
        assert finer.smallest_face(2048, 1365) == 47
    finally:
        finer.close()
    with pytest.raises(ValueError, match="tile_levels"):
        align.FaceAligner(tile_levels=9)


def test_a_small_face_in_a_large_photo_is_reported_then_found_with_more_tile_levels(tmp_path,
                                                                                    capsys):
    """A 48 px face in a 2048 px photo: the default search says it finds faces down to ~93 px
    and names --tile-levels; with --tile-levels 2 the face is found."""
    pytest.importorskip("mediapipe", reason="needs the [align] extra: pip install .[align]")
    face = PIL.Image.open(FACE).convert("RGB").resize((48, 48))
    photo = PIL.Image.new("RGB", (2048, 1365), (120, 120, 120))
    photo.paste(face, (700, 300))
    src = tmp_path / "in"
    src.mkdir()
    photo.save(src / "group.png")
    assert align_cli.main(["--input", str(src), "--output", str(tmp_path / "a")]) == 1
    out = capsys.readouterr().out
    assert "faces under ~93 px are not found in a 2048x1365 image" in out
    assert "--tile-levels 2" in out
    assert align_cli.main(["--input", str(src), "--output", str(tmp_path / "b"),
                           "--tile-levels", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"group\.png: 1 face \(smallest (4\d|5\d) px; finds faces down to ~47 px\)",
                     out), out
