"""The FFHQ crop: an oriented square from the eyes and mouth corners, resampled (pure numpy/PIL).

    quad, qsize = ffhq_quad(points)                  # (4, 2) eye centres + mouth corners, or dlib 68
    face = ffhq_align(image, points, size=256)       # PIL RGB size x size

Reproduces NVlabs/ffhq-dataset `recreate_aligned_images` (copied into the official e4e
`utils/alignment.py`): quad from the eye and mouth midpoints, shrink for large faces, crop,
reflect-pad with a blurred seam, quad transform, resize. Landmark detection (MediaPipe) and the
command are in e4e_jax/align.py; this module needs neither.
"""
from __future__ import annotations

import numpy as np
import PIL.Image

from e4e_jax.data.image_io import to_rgb

# Where the FFHQ crop puts the face, derived from `ffhq_quad` itself. The crop square of an aligned
# image of side S is the whole image: centre c = (S/2, S/2), half-side vectors x = (S/2, 0) and
# y = (0, S/2) (continuous coordinates, 0 at the image's top-left edge). For a face whose
# eye-to-eye vector e = (a, 0) is level and whose eye-to-mouth vector m = (0, b) is perpendicular to
# it, x = e - flipud(m) * [-1, 1] = (a + b, 0) is horizontal, |x| = max(2a, 1.8b) = S/2, and
# c = eye_avg + 0.1 m. Hence, in the aligned output:
#   eye midpoint   = (S/2, S/2 - 0.1 b)
#   mouth midpoint = (S/2, S/2 + 0.9 b)
#   eye distance a = S/4 (eyes at x = 3S/8 and 5S/8: 96 and 160 at S = 256) whenever the eyes are
#                    wide enough that 2a >= 1.8b, i.e. b <= S/3.6 -- the case for frontal faces;
#                    otherwise b = S/3.6 and a = 1.8b/2 < S/4.
# b itself is the face's own eye-to-mouth/eye-to-eye ratio times a: the crop fixes the scale from
# the larger of the two lengths, not both. Landmarks use pixel indices (pixel centres at integers,
# as dlib reports them and as `ffhq_align` expects), so `ffhq_template` subtracts half a pixel.



def ffhq_template(eye_to_mouth: float, size: int = 256) -> dict[str, np.ndarray]:
    """FFHQ positions (pixel indices) of the eye centres and mouth midpoint in a `size` crop.

    `eye_to_mouth` is the face's eye-to-mouth length divided by its eye-to-eye length (the only
    shape parameter the FFHQ crop depends on); see the derivation above.
    """
    ratio = float(eye_to_mouth)
    if not ratio > 0:
        raise ValueError(f"eye_to_mouth ratio must be positive, got {eye_to_mouth!r}")
    half = size / 2.0
    # |x| = max(2a, 1.8b) = S/2 with b = ratio * a
    a = half / max(2.0, 1.8 * ratio)
    b = ratio * a
    eye_avg = np.array([half, half - 0.1 * b]) - 0.5
    return {
        "eye_left": eye_avg - [a / 2.0, 0.0],
        "eye_right": eye_avg + [a / 2.0, 0.0],
        "eye_avg": eye_avg,
        "mouth_avg": np.array([half, half + 0.9 * b]) - 0.5,
    }


def eye_mouth_points(landmarks) -> np.ndarray:
    """(4, 2) [eye_left, eye_right, mouth_left, mouth_right] in pixel coordinates.

    Accepts, as (N, 2) x/y arrays:
      * 4 points: eye_left, eye_right, mouth_left, mouth_right (returned as is);
      * 5 points: eye_left, eye_right, nose, mouth_left, mouth_right (the common 5-point layout;
        the nose is not used by the FFHQ crop);
      * 68 points: dlib's layout (eye centres = means of points 36-41 and 42-47, mouth corners 48
        and 54), the input of the official e4e/FFHQ scripts.
    "Left" means the image's left. Coordinates are pixel indices (pixel centres at integers), as
    dlib reports them.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in (4, 5, 68):
        raise ValueError(
            "landmarks must be an (N, 2) array of x/y with N = 4 (eyes, mouth corners), 5 "
            f"(eyes, nose, mouth corners) or 68 (dlib); got shape {pts.shape}"
        )
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or infinite values")
    if pts.shape[0] == 4:
        return pts.copy()
    if pts.shape[0] == 5:
        return pts[[0, 1, 3, 4]].copy()
    return np.stack([pts[36:42].mean(axis=0), pts[42:48].mean(axis=0), pts[48], pts[54]])


def ffhq_quad(landmarks) -> tuple[np.ndarray, float]:
    """The FFHQ oriented crop square: (quad (4, 2) corners, qsize side length), in pixels.

    Corners are ordered top-left, bottom-left, bottom-right, top-right of the output image, as
    PIL's QUAD transform expects.
    """
    eye_left, eye_right, mouth_left, mouth_right = eye_mouth_points(landmarks)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # The square's x axis blends the eye line with the perpendicular of the eye-to-mouth line, so
    # neither a tilted mouth nor a squint alone rotates the crop; its size follows whichever of the
    # two face dimensions is larger relative to FFHQ's proportions.
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not norm > 0:
        raise ValueError("degenerate landmarks: eyes and mouth give no orientation")
    x = x / norm
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(*x) * 2)
    # below a few pixels the padding arithmetic degenerates (zero-width pads)
    if not qsize >= 4.0:
        raise ValueError(f"face too small to align: crop side {qsize:.2f} px")
    return quad, qsize


def ffhq_align(
    image: PIL.Image.Image,
    landmarks,
    size: int = 256,
    transform_size: int | None = None,
    enable_padding: bool = True,
) -> PIL.Image.Image:
    """FFHQ crop of `image` around the face given by `landmarks` (see `eye_mouth_points`).

    The steps of the FFHQ dataset script: oriented quad, shrink large faces by an integer factor,
    crop to the quad plus a border, reflect-pad where the quad leaves the image (blurred and faded
    to the median colour towards the outside), resample the quad bilinearly to
    `transform_size` and downsample to `size` with Lanczos. `transform_size` defaults to `size`, as
    in the official e4e inference (the FFHQ release itself used 4x: 4096 for 1024).
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"output size must be at least 8 pixels, got {size}")
    transform_size = size if transform_size is None else int(transform_size)
    if transform_size < size:
        raise ValueError(f"transform_size ({transform_size}) must be >= size ({size})")
    img = to_rgb(image)
    quad, qsize = ffhq_quad(landmarks)

    # Shrink: halve (or more) images whose face is far larger than the output, so the bilinear
    # resampling below does not alias.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, PIL.Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop to the quad's bounding box plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError("the face crop lies entirely outside the image")
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad where the quad (plus border) leaves the image.
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        img, pad = pad_with_blur(img, pad, qsize)
        quad += pad[:2]

    # PIL maps output pixel corners to the quad's corners; the quad is in pixel-index coordinates
    # (centres at integers), PIL's in continuous ones (centres at +0.5).
    img = img.transform((transform_size, transform_size), PIL.Image.Transform.QUAD,
                        (quad + 0.5).flatten(), PIL.Image.Resampling.BILINEAR)
    if size < transform_size:
        img = img.resize((size, size), PIL.Image.Resampling.LANCZOS)
    return img


def pad_with_blur(img: PIL.Image.Image, pad, qsize: float) -> tuple[PIL.Image.Image, np.ndarray]:
    """Reflect-pad and hide the seam: blur and fade to the median colour towards the outside."""
    import scipy.ndimage  # a jax dependency; imported here to keep module import light

    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    arr = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = arr.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                      1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
    blur = qsize * 0.02
    arr += (scipy.ndimage.gaussian_filter(arr, [blur, blur, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return PIL.Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB"), pad
