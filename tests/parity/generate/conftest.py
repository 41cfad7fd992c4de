"""Keeps pytest out of this folder.

The scripts here rebuild tests/fixtures/ by running the official PyTorch repositories; they are run
by hand (they need torch, torchvision and a checkout of the official code) and are never part of
the test suite, so none of them may be collected or imported by pytest.
"""

collect_ignore_glob = ["*.py"]
