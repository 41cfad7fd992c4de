"""Face alignment without dlib: MediaPipe landmarks (detect.py) and the FFHQ crop (crop.py).

    from e4e_jax.align import align_faces, ffhq_align
"""
from e4e_jax.align.crop import (eye_mouth_points, ffhq_align, ffhq_quad,  # noqa: F401
                                ffhq_template)
from e4e_jax.data.image_io import to_rgb  # noqa: F401
from e4e_jax.align.detect import (  # noqa: F401
                                IMAGE_EXTENSIONS,
                                INSTALL_HINT,
                                MANIFEST,
                                MESH_EYE_LEFT,
                                MESH_EYE_RIGHT,
                                MESH_MOUTH_LEFT,
                                MESH_MOUTH_RIGHT,
                                DetectedFace,
                                FaceAligner,
                                align_faces,
                                detect_face_points,
                                list_images,
                                mesh_to_points,
                                open_image,
)


def __getattr__(name: str):
    # `e4e_jax.align.main` of the flat layout: the command lives above this layer (cli/align.py)
    if name in ("main", "build_parser"):
        from e4e_jax.cli import align as command
        return getattr(command, name)
    raise AttributeError(f"module 'e4e_jax.align' has no attribute {name!r}")
