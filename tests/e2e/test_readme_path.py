"""The README's path after the demo, run verbatim: every ```bash block of its section "After the
demo: one path, no downloads" is executed as written (bash -e, from a folder laid out like the
repository root after the demo), on the export of a short tiny training run standing in for
runs/demo/export. The README cannot promise a command that does not work."""
import os
import re
import subprocess
import sys

import pytest

from tests.support.paths import REPO

SECTION = "## After the demo: one path, no downloads"


def readme_path_blocks(readme: str) -> list[str]:
    """The ```bash blocks of the README section SECTION, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end > 0 else None]
    return re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)


def test_the_section_has_the_promised_steps():
    blocks = readme_path_blocks(open(os.path.join(REPO, "README.md"), encoding="utf-8").read())
    text = "\n".join(blocks)
    for step in ("e4e-jax eval", "e4e-jax edit", "e4e-jax encode", "--method projector",
                 "--method pti", "--generator runs/demo/pti/generators/",
                 "--latents runs/demo/pti/latents/"):
        assert step in text, step


@pytest.mark.slow
def test_the_readme_path_after_the_demo_runs_verbatim(tmp_path):
    from e4e_jax import train as trainer
    from tests.support.train_utils import tiny_config
    root = tmp_path / "checkout"
    root.mkdir()
    os.symlink(os.path.join(REPO, "tests"), root / "tests")
    # the demo's 32 px: LPIPS-alex (the projector's and PTI's loss) needs 31 px and up
    config = tiny_config(max_steps=4, **{"data.input_size": (32, 32),
                                         "generator.init.resolution": 32,
                                         "output.face_pool": 32})
    trainer.train_and_evaluate(config, str(root / "runs" / "demo"))
    blocks = readme_path_blocks(open(os.path.join(REPO, "README.md"), encoding="utf-8").read())
    env = dict(os.environ, PYTHONPATH=REPO,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for block in blocks:
        if block.lstrip().startswith(("pip install", "jupyter")):
            continue                     # installing software is not the path's business
        r = subprocess.run(["bash", "-e", "-c", block], cwd=root, env=env, capture_output=True,
                           text=True, timeout=1200)
        assert r.returncode == 0, (block, r.stdout[-3000:], r.stderr[-3000:])
    for made in ("runs/demo/eval/report.md", "runs/demo/encoded/latents.npy",
                 "runs/demo/projected/latents.npy", "runs/demo/pti/latents.npy",
                 "runs/demo/pti_edits/input_img.png"):
        assert (root / made).exists(), made
