"""Workarounds for known XLA bugs, set through XLA_FLAGS before the backend starts.

jaxlib 0.10.2 and 0.11.0 on x86-64 CPUs: XLA:CPU's YNNPACK fusions (`__ynn_fusion` in the
optimized HLO, on by default from 0.10.2) crash some programs while they run, with a SIGSEGV or
SIGABRT on one of XLA's worker threads (jax-ml/jax issues 39257 and 40412; fixed in XNNPACK after
0.11.0 was built). The crash is asynchronous: Python's traceback points at whatever the main
thread was doing then, typically compiling the next program. e4e_jax's programs contain such
fusions (the PTI loop, ReStyle over StyleGAN3, the training step), and the test suite lost about
one process in a thousand tests to it. An empty `--xla_cpu_experimental_ynn_fusion_type=` turns
those fusions off; XLA then emits its own loops for them.

`import e4e_jax` applies this (disable_ynn_fusion_if_affected) to `os.environ`, so the process and
the processes it starts get it. It takes effect if it runs before the first JAX computation,
which is when XLA reads XLA_FLAGS. A user who sets the flag in XLA_FLAGS themselves (any value)
keeps their setting, and E4E_JAX_XLA_WORKAROUNDS=0 leaves XLA_FLAGS alone.
"""
from __future__ import annotations

import importlib.metadata
import os
import re

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib releases with the YNNPACK fusion crash (inclusive)
YNN_AFFECTED = ((0, 10, 2), (0, 11, 0))


def jaxlib_version() -> tuple[int, ...] | None:
    """The installed jaxlib's (major, minor, patch), or None when it is not installed."""
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def disable_ynn_fusion_if_affected(environ=None, version=None) -> bool:
    """Appends `--xla_cpu_experimental_ynn_fusion_type=` to environ["XLA_FLAGS"] when jaxlib is
    an affected release (YNN_AFFECTED), XLA_FLAGS does not mention the flag yet and
    E4E_JAX_XLA_WORKAROUNDS is not "0".

    environ: the mapping to change (default os.environ); version: the jaxlib version tuple
    (default: the installed one). Returns True when it added the flag. Never raises."""
    environ = os.environ if environ is None else environ
    if environ.get("E4E_JAX_XLA_WORKAROUNDS", "1") == "0":
        return False
    version = jaxlib_version() if version is None else version
    if version is None or not YNN_AFFECTED[0] <= tuple(version) <= YNN_AFFECTED[1]:
        return False
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
    return True
