"""Installs e4e_jax. `pip install -e .[convert]` adds torch for the weight converters."""
from setuptools import find_packages, setup

setup(
    name="e4e_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of e4e (Designing an Encoder for StyleGAN Image Manipulation)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["e4e_jax", "e4e_jax.*", "convert_weights", "convert_weights.*"]),
    # one command on the PATH: `e4e-jax train | eval | encode | invert | edit | sample | align |
    # convert` (e4e_jax/cli/main.py)
    entry_points={"console_scripts": ["e4e-jax = e4e_jax.cli.main:main"]},
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.6",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets imports it when building / preparing datasets, without declaring it
        "importlib_resources",
        # tf.data for the input pipeline and the TensorBoard writer behind clu's default writer;
        # the CPU build is enough: TensorFlow never touches an accelerator here.
        "tensorflow-cpu>=2.16",
        "tensorboard>=2.16",
        "clu>=0.0.12",
        "pillow>=10",
        "scipy>=1.10",
        "ml_collections>=0.1.1",
        # the linear SVM of InterFaceGAN's train_boundary (`e4e-jax directions`,
        # e4e_jax/editing/boundaries.py), the very classifier the official code fits
        "scikit-learn>=1.3",
        # the path layer (e4e_jax/core/fs.py) for buckets and any protocol it speaks
        "fsspec>=2024.6",
        # ArrayRecord shards of `e4e-jax prepare` (random access by index, as TFDS writes them)
        "array_record>=0.5",
    ],
    extras_require={
        # Only the converters import torch, and only to read checkpoint files.
        "convert": ["torch>=2.6"],
        # pytest and pytest-xdist (the suite runs in 2 worker processes, `-n 2`), nbclient /
        # nbformat / ipykernel to run notebooks/ headless in the tests, and a GCS emulator on
        # 127.0.0.1 to test the bucket paths against (tests/unit/test_fs.py)
        "test": ["pytest>=7", "pytest-xdist>=3.5", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6",
                 "gcp-storage-emulator>=2024.8", "gcsfs>=2025.3,<2025.12"],
        # `gs://` paths. gcsfs 2025.12 and newer need protobuf>=6, which tensorflow-cpu 2.19 and
        # mediapipe refuse; older ones speak the same JSON API.
        "gcs": ["gcsfs>=2025.3,<2025.12"],
        # Face alignment (e4e_jax.align). mediapipe 0.10.14 is the last release with its face
        # models inside the wheel; it needs protobuf<5, so pip settles on an older TensorFlow
        # beside it. tensorflow-metadata 1.21 declares protobuf>=4.25.2 but its generated code
        # needs protobuf>=5.26, so it must stay below 1.18 alongside mediapipe.
        "align": ["mediapipe==0.10.14", "tensorflow-metadata<1.18"],
        # Building the documentation site (mkdocs.yml, docs/): `mkdocs serve`, `mkdocs build`;
        # tests/e2e/test_docs.py builds it in strict mode.
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
    },
)
