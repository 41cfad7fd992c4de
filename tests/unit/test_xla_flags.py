"""e4e_jax/core/xla_flags.py: `import e4e_jax` turns XLA:CPU's YNNPACK fusions off on the jaxlib
releases where they crash programs (0.10.2 to 0.11.0), and leaves every other setting alone."""
import os
import subprocess
import sys

import pytest

from e4e_jax.core import xla_flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FLAG = "--xla_cpu_experimental_ynn_fusion_type="


@pytest.mark.parametrize("version", [(0, 10, 2), (0, 11, 0)])
def test_affected_releases_get_the_flag_after_the_users_flags(version):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_flags.disable_ynn_fusion_if_affected(env, version)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"
    env = {}
    assert xla_flags.disable_ynn_fusion_if_affected(env, version)
    assert env == {"XLA_FLAGS": FLAG}


@pytest.mark.parametrize("env", [
    {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"},  # the user's
    {"E4E_JAX_XLA_WORKAROUNDS": "0"},                                                  # opted out
])
def test_a_users_own_setting_is_kept(env):
    before = dict(env)
    assert not xla_flags.disable_ynn_fusion_if_affected(env, (0, 10, 2))
    assert env == before


@pytest.mark.parametrize("version", [(0, 10, 1), (0, 11, 1), (0, 4, 38)])
def test_other_releases_are_left_alone(version):
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert not xla_flags.disable_ynn_fusion_if_affected(env, version)
    assert env == {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}


# jax-ml/jax issue 40412's program: on jaxlib 0.10.2 (x86-64) it dies with SIGSEGV while it runs
# unless the YNNPACK fusions are off
CRASHER = """
import jax, jax.numpy as jnp
import e4e_jax
shape = (3, 1, 2, 2, 8, 8, 8)
u = jax.random.normal(jax.random.PRNGKey(0), shape, dtype=jnp.float32)
v = jax.random.normal(jax.random.PRNGKey(1), shape, dtype=jnp.float32)
total = float(jax.jit(lambda a, b: jnp.sum(a * b, axis=3))(u, v).sum())
import os
print("XLA_FLAGS", os.environ.get("XLA_FLAGS"), "SUM", total)
"""


def test_import_e4e_jax_before_the_first_computation_keeps_a_crashing_program_alive():
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "E4E_JAX_XLA_WORKAROUNDS")}
    env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", CRASHER], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.split()[-2] == "SUM" and abs(float(line.split()[-1])) < 1e6, line
    affected = xla_flags.jaxlib_version() is not None and (
        xla_flags.YNN_AFFECTED[0] <= xla_flags.jaxlib_version() <= xla_flags.YNN_AFFECTED[1])
    assert (FLAG in line) == affected, line
