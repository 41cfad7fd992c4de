"""benchmarks/device_check.sh --smoke: the whole accelerator check at tiny sizes (CPU)."""
import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO as ROOT  # noqa: E402


@pytest.mark.slow
def test_device_check_smoke_writes_a_complete_report(tmp_path):
    out = tmp_path / "report"
    # the interpreter running the tests, whatever `python` is on PATH
    # XLA's LLVM optimisation off: the same programs compiled ~2x faster (the smoke run checks
    # that every stage runs and reports, not its speed)
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""),
                                 "--xla_backend_optimization_level=0") if f)
    env = dict(os.environ, DEVICE_CHECK_TIMEOUT="300", PYTHON=sys.executable, XLA_FLAGS=flags)
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"), "--smoke",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    print(r.stdout[-3000:], r.stderr[-2000:])
    assert r.returncode == 0, r.stdout[-2000:]
    report = json.loads((out / "device_report.json").read_text())
    assert report["parity"]["passed"] and report["ok"] and not report["missing"]
    for dtype in ("float32", "bfloat16"):
        cases = report["invert"][dtype]["cases"]
        assert [c["batch"] for c in cases] == [2, 4]
        assert all(c["images_per_s"] > 0 and c["compile_s"] > 0 for c in cases)
        assert sorted(report["train_step"]) == ["bfloat16_2", "float32_2"]
        for b in (2,):
            t = report["train_step"][f"{dtype}_{b}"]
            assert t["dtype"] == dtype and t["batch"] == b and t["step_s"] > 0
            assert t["xla_bytes"]["total"] > 0
    md = (out / "device_report.md").read_text()
    assert "Training step" in md and "bfloat16" in md
    # a second run never overwrites the first report
    again = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"),
                            "--smoke", "--out", str(out)], capture_output=True, text=True, env=env)
    assert again.returncode == 2 and "already holds a report" in again.stderr
