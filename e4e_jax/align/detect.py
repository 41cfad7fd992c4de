"""FFHQ-style face alignment without dlib: MediaPipe Face Mesh landmarks + the FFHQ crop.

The official e4e face models were trained on FFHQ crops and expect the same framing at inference.
The FFHQ dataset script (NVlabs/ffhq-dataset `recreate_aligned_images`, copied with dlib into the
official e4e `utils/alignment.py`) builds an oriented square from four points of the face -- the
two eye centres and the two mouth corners -- and resamples it. dlib's 68-point predictor is a
separate large download, so landmarks come from MediaPipe's face detector and face mesh instead,
which `mediapipe==0.10.14` ships inside its wheel (later releases download models at run time).

Two layers, so the crop math is testable without MediaPipe:
  * `ffhq_quad` / `ffhq_align` (crop.py): pure numpy/PIL/scipy, fed with eye and mouth points
    (or dlib's 68 landmarks, or a 5-point set);
  * `detect_face_points` / `align_faces`: MediaPipe detection, imported only when called
    (`pip install .[align]`).

Command line: `e4e-jax align --input FOLDER --output FOLDER [--size 256]` (e4e_jax/cli/align.py).
"""
from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageOps

from e4e_jax.align.crop import ffhq_align, ffhq_quad
from e4e_jax.data.image_io import to_rgb
from e4e_jax.outputs.names import (  # noqa: F401
    NAMING_HELP,
    OutputNames,
    face_filename,
    output_names,
    write_manifest,
)

INSTALL_HINT = 'pip install .[align]  (or: pip install "e4e_jax[align]")'

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# MediaPipe Face Mesh vertex ids standing in for dlib's 68-point eye and mouth landmarks. dlib
# averages six points spread around each eyelid contour (36-41 and 42-47) and takes the outer mouth
# corners 48 and 54. The mesh's eye contour rings (16 vertices each, spread around the lid margin)
# give the matching centre; averaging the whole ring rather than the six vertices nearest dlib's
# came closer to dlib's eye centres on the photos we compared (README, face alignment section).
# "Left" is the eye on the image's left (the subject's right), as in dlib's numbering.
MESH_EYE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MESH_EYE_RIGHT = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
MESH_MOUTH_LEFT = 61  # dlib 48, outer lip corner
MESH_MOUTH_RIGHT = 291  # dlib 54, outer lip corner


# --------------------------------------------------------------------------------------------
# Landmark detection (MediaPipe, optional extra)


def _import_mediapipe():
    # MediaPipe's C++ side logs through glog/absl to stderr; keep only errors unless asked.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe
    except ImportError as err:
        raise ImportError(
            f"Face alignment needs MediaPipe, which is not installed ({err}). Install the extra: "
            f"{INSTALL_HINT}; it pins mediapipe==0.10.14, the last release that ships its face "
            "models inside the wheel."
        ) from err
    return mediapipe


def _quiet_protobuf_warning() -> None:
    # MediaPipe 0.10.14 calls a protobuf API deprecated in protobuf 4 on every image. A targeted
    # filter rather than catch_warnings(), which is not thread-safe; re-adding an identical filter
    # only moves it to the front, so calling this often is harmless.
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated",
                            category=UserWarning)


@dataclass
class DetectedFace:
    """One face: eye/mouth points for the FFHQ crop plus the full mesh, in pixel indices."""

    points: np.ndarray  # (4, 2): eye_left, eye_right, mouth_left, mouth_right
    mesh: np.ndarray  # (478, 2): every Face Mesh vertex (468) and the two irises (5 each)
    score: float  # face detector confidence
    qsize: float  # side of the FFHQ crop square; faces are ranked by it

    @property
    def eye_left(self) -> np.ndarray:
        return self.points[0]

    @property
    def eye_right(self) -> np.ndarray:
        return self.points[1]


def mesh_to_points(mesh: np.ndarray) -> np.ndarray:
    """(4, 2) eye centres and mouth corners from Face Mesh vertices, as dlib's would give them."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.ndim != 2 or mesh.shape[0] < 468 or mesh.shape[1] != 2:
        raise ValueError(f"expected (468, 2) or (478, 2) Face Mesh vertices, got {mesh.shape}")
    return np.stack([
        mesh[list(MESH_EYE_LEFT)].mean(axis=0),
        mesh[list(MESH_EYE_RIGHT)].mean(axis=0),
        mesh[MESH_MOUTH_LEFT],
        mesh[MESH_MOUTH_RIGHT],
    ])


def _iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class FaceAligner:
    """Finds faces with MediaPipe and crops them FFHQ-style. Reuse one instance for many images.

    Faces are found by MediaPipe's full-range and short-range face detectors (so both small faces
    in group photos and close-ups are found); Face Mesh then runs on a square window around each
    detection, so every face gets the mesh's full input resolution.
    """

    # window side around a detection box, in box sizes: the mesh's own detector needs context
    WINDOW = 2.0
    # a tile level is searched only where its tiles are at least this side (the full-range
    # detector's input side: smaller tiles would be upsampled, finding nothing new)
    MIN_TILE = 192
    # measured on tests/data/images/input_img.jpg pasted at many sizes into 512-4096 px canvases:
    # a face is found when its crop side is at least about 1/11 of the side of the smallest
    # region searched (the detector resizes a region to 192 px and needs ~18 px of face there),
    # and never below about 12 px
    FACE_FRACTION = 1.0 / 11.0
    MIN_FACE = 12

    def __init__(self, min_confidence: float = 0.5, max_faces: int | None = None,
                 tile_levels: int = 1):
        """min_confidence: the detectors' threshold in (0, 1); max_faces: keep the largest N;
        tile_levels: how finely large images are searched (0: the whole image only; level k adds
        a grid of tiles 1/2^k of the image's side overlapping by half; 1, the default, finds
        faces down to about 1/22 of the image's longer side, each further level halves that
        and costs about 2.5x the time). ValueError for values out of range."""
        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {min_confidence}")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 or None, got {max_faces}")
        if not 0 <= int(tile_levels) <= 4:
            raise ValueError(f"tile_levels must be 0 to 4, got {tile_levels}")
        mp = _import_mediapipe()
        self.min_confidence = float(min_confidence)
        self.max_faces = max_faces
        self.tile_levels = int(tile_levels)
        _quiet_protobuf_warning()
        self._detectors = [
            mp.solutions.face_detection.FaceDetection(
                model_selection=selection, min_detection_confidence=self.min_confidence)
            for selection in (1, 0)  # full range (<= 5 m), short range (<= 2 m)
        ]
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            # the attention model refines the eye and lip contours; its eye centres came out
            # closer to dlib's (a wider gap without it on a face with glasses)
            static_image_mode=True, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=self.min_confidence)

    def close(self) -> None:
        for solution in [*self._detectors, self._mesh]:
            solution.close()
        self._detectors, self._mesh = [], None

    def __enter__(self) -> "FaceAligner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, solution, array: np.ndarray):
        _quiet_protobuf_warning()
        return solution.process(np.ascontiguousarray(array))

    def _levels(self, width: int, height: int) -> int:
        """The tile levels searched in an image of this size (level k needs tiles of at least
        MIN_TILE pixels)."""
        levels = 0
        while levels < self.tile_levels and max(width, height) >= self.MIN_TILE * 2 ** (levels + 1):
            levels += 1
        return levels

    def _regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The whole image, then per tile level k a grid of tiles 1/2^k of its side overlapping
        by half ((2^(k+1) - 1)^2 tiles: 3 x 3 half-size tiles at level 1).

        The detectors see a 192 (full range) or 128 (short range) pixel version of their input, so
        a face a tenth of a large photo's width is only a dozen pixels there; each level gives
        every face twice the resolution, in two positions per axis.
        """
        regions = [(0, 0, width, height)]
        for k in range(1, self._levels(width, height) + 1):
            tw, th = -(-width // 2 ** k), -(-height // 2 ** k)
            n = 2 ** (k + 1) - 1
            for j in range(n):
                y = (height - th) * j // (n - 1)
                for i in range(n):
                    x = (width - tw) * i // (n - 1)
                    regions.append((x, y, x + tw, y + th))
        return regions

    def smallest_face(self, width: int, height: int) -> int:
        """About the smallest face (FFHQ crop side, pixels) this search finds in an image of
        this size; faces below it are missed (more tile_levels lower it)."""
        finest = max(width, height) / 2 ** self._levels(width, height)
        return max(self.MIN_FACE, int(round(finest * self.FACE_FRACTION)))

    def _boxes(self, array: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
        found = []
        for x0, y0, x1, y1 in self._regions(array.shape[1], array.shape[0]):
            tile = array[y0:y1, x0:x1]
            h, w = tile.shape[:2]
            for detector in self._detectors:
                for det in self._run(detector, tile).detections or []:
                    box = det.location_data.relative_bounding_box
                    bx, by = x0 + box.xmin * w, y0 + box.ymin * h
                    found.append((float(det.score[0]),
                                  (bx, by, bx + box.width * w, by + box.height * h)))
        found.sort(key=lambda item: -item[0])
        kept = []
        for score, box in found:
            if all(_iou(box, other) < 0.3 for _, other in kept):
                kept.append((score, box))
        return kept

    def _mesh_in_window(self, image: PIL.Image.Image, box) -> np.ndarray | None:
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        half = max(x1 - x0, y1 - y0) * self.WINDOW / 2.0
        left, top = int(np.floor(cx - half)), int(np.floor(cy - half))
        side = max(int(np.ceil(2 * half)), 16)
        # PIL fills the part of the window outside the image with black
        window = np.asarray(image.crop((left, top, left + side, top + side)))
        result = self._run(self._mesh, window)
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        # MediaPipe's coordinates are fractions of the window, 0 at its left/top edge; dlib's and
        # the FFHQ script's are pixel indices, whose centres sit half a pixel in.
        mesh = np.array([[lm.x, lm.y] for lm in lms], dtype=np.float64) * side
        mesh += [left - 0.5, top - 0.5]
        eye_mid = mesh_to_points(mesh)[:2].mean(axis=0)
        if not (x0 <= eye_mid[0] <= x1 and y0 <= eye_mid[1] <= y1):
            return None  # the mesh locked onto a neighbouring face
        return mesh

    def detect(self, image: PIL.Image.Image) -> list[DetectedFace]:
        """All faces in `image`, largest FFHQ crop first."""
        rgb = to_rgb(image)
        array = np.asarray(rgb)
        faces: list[DetectedFace] = []
        for score, box in self._boxes(array):
            mesh = self._mesh_in_window(rgb, box)
            if mesh is None:
                continue
            points = mesh_to_points(mesh)
            try:
                _, qsize = ffhq_quad(points)
            except ValueError:
                continue  # collapsed mesh on a face a few pixels wide
            eye_mid = points[:2].mean(axis=0)
            eye_dist = np.hypot(*(points[1] - points[0]))
            duplicate = any(
                np.hypot(*(eye_mid - f.points[:2].mean(axis=0))) < 0.5 * max(eye_dist, 1.0)
                for f in faces)
            if not duplicate:
                faces.append(DetectedFace(points, mesh, score, qsize))
        faces.sort(key=lambda f: -f.qsize)
        return faces[: self.max_faces] if self.max_faces else faces

    def align(self, image: PIL.Image.Image, size: int = 256,
              transform_size: int | None = None) -> list[PIL.Image.Image]:
        """FFHQ-aligned `size` x `size` RGB crops of every face, largest first."""
        rgb = to_rgb(image)
        return [self.crop(rgb, face, size, transform_size) for face in self.detect(rgb)]

    @staticmethod
    def crop(image: PIL.Image.Image, face: DetectedFace, size: int = 256,
             transform_size: int | None = None) -> PIL.Image.Image:
        """The FFHQ-aligned `size` x `size` crop of one detected face of `image` (RGB)."""
        return ffhq_align(image, face.points, size, transform_size)


# MediaPipe graphs must not run concurrently, and batch encoding aligns in a thread pool: each
# thread gets its own aligner.
_THREAD_LOCAL = threading.local()


def _default_aligner() -> FaceAligner:
    aligner = getattr(_THREAD_LOCAL, "aligner", None)
    if aligner is None:
        aligner = _THREAD_LOCAL.aligner = FaceAligner()
    return aligner


def detect_face_points(image: PIL.Image.Image) -> list[np.ndarray]:
    """(4, 2) eye/mouth points of every face in `image`, largest first (see `eye_mouth_points`).

    Needs MediaPipe (`pip install .[align]`).
    """
    return [face.points for face in _default_aligner().detect(image)]


def align_faces(image: PIL.Image.Image, size: int = 256,
                transform_size: int | None = None) -> list[PIL.Image.Image]:
    """FFHQ-aligned `size` x `size` RGB crops of every face in `image`, largest first.

    Returns an empty list when no face is found. Needs MediaPipe (`pip install .[align]`); raises
    ImportError saying so otherwise.
    """
    return _default_aligner().align(image, size, transform_size)


def open_image(path: str) -> PIL.Image.Image:
    """Loads an image file upright (EXIF orientation applied, as phone photos need)."""
    try:
        with PIL.Image.open(path) as img:
            img.load()
            return PIL.ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image: {err}") from err


# --------------------------------------------------------------------------------------------
# Command line


def list_images(folder: str) -> list[str]:
    """Image files directly inside `folder` (or `folder` itself if it is a file), sorted."""
    if os.path.isfile(folder):
        return [folder]
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"input folder not found: {folder}")
    return sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name)))


MANIFEST = "manifest.tsv"  # output, source, face per line
