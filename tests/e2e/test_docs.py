"""The documentation site builds, and every repository path the pages cite exists.

1. `mkdocs build --strict` of mkdocs.yml (docs/ plus the API reference generated from the
   docstrings by mkdocstrings) exits 0. Strict mode turns every warning into an error: with the
   `validation` settings of mkdocs.yml that is a link to a page or an anchor that does not exist,
   a link out of docs/ (`../benchmarks/RESULTS.md`), a page missing from the nav, an API entry
   (`::: module.name`) that does not resolve, or a docstring griffe cannot parse.
   `test_validation_settings_catch_broken_links` builds a two-page site with the same settings to
   show that a broken link and a broken anchor do fail.
2. Every repository path cited in docs/*.md exists, relative to the repository root:
   a. in ```bash blocks, by the rule of tests/e2e/test_readme.py (its docstring; the README's
      commands and the pages' commands are checked alike);
   b. in inline code (`...`) and in the string literals of ```python blocks, every word (split
      at whitespace, ':' and '=') that starts with e4e_jax/, configs/, tests/, benchmarks/,
      notebooks/, docs/ or convert_weights/, or is train.py, eval.py, setup.py or mkdocs.yml.
      Placeholders are not paths: words with <, >, {, }, *, [, ] or ..., and the upper-case
      names the pages use for arguments (FORMAT, NAME, SRC, DST, DIR, ...).
   "Exists" means a file or folder in the checkout (tracked, or new and not yet committed).

mkdocs comes with the `docs` extra (pip install -e .[docs]); without it the build test fails,
saying so, rather than skipping.
"""
import functools
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.e2e.test_readme import (
    IGNORED_DIRS,
    bash_blocks,
    missing_paths,
    tracked_files,
)
from tests.support.paths import REPO

DOCS = os.path.join(REPO, "docs")
PREFIXES = ("e4e_jax/", "configs/", "tests/", "benchmarks/", "notebooks/", "docs/",
            "convert_weights/")
ROOT_FILES = {"train.py", "eval.py", "setup.py", "mkdocs.yml"}
PLACEHOLDER = re.compile(r"[<>{}*\[\]]|\.\.\.|\b(FORMAT|NAME|FILE|DIR|SRC|DST|OUT|PATH|WORKDIR|"
                         r"FOLDER|CONFIG)\b")
INSTALL_HINT = "pip install -e .[docs]"


def pages():
    return sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))


@functools.lru_cache(maxsize=None)
def existing_files(root=REPO):
    """Repository-relative paths of every file in the checkout: the tracked ones that exist,
    and the new ones on disk (outside build / run folders)."""
    found = {f for f in tracked_files(root) if os.path.exists(os.path.join(root, f))}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in IGNORED_DIRS and x != "site"
                   and not x.endswith(".egg-info")]
        found |= {os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/") for f in files}
    return tuple(sorted(found))


def fenced_blocks(markdown, language):
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.S | re.M)


def without_fences(markdown):
    return re.sub(r"^```.*?^```[^\n]*$", "", markdown, flags=re.S | re.M)


def cited_words(markdown):
    """The words of the inline code spans and of the ```python blocks' string literals."""
    spans = re.findall(r"`([^`\n]+)`", without_fences(markdown))
    for block in fenced_blocks(markdown, "python"):
        spans += re.findall(r"""["']([^"'\n]+)["']""", block)
    words = []
    for span in spans:
        for word in span.split():
            for part in re.split(r"[:=]", word):
                part = part.strip(".,;()\"'")
                if part:
                    words.append(part)
    return words


def cited_path_problems(markdown, root=REPO):
    """Paths cited in inline code / python strings (rule 2b) that do not exist."""
    problems = []
    for word in cited_words(markdown):
        if not (word.startswith(PREFIXES) or word in ROOT_FILES) or PLACEHOLDER.search(word):
            continue
        if not os.path.exists(os.path.join(root, os.path.normpath(word))):
            problems.append(f"`{word}` does not exist")
    return list(dict.fromkeys(problems))


def require_mkdocs():
    """Fails (not skips) when the docs extra is missing: CI installs it."""
    missing = []
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "yaml"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(module)
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: the documentation needs the docs extra, "
                    f"{INSTALL_HINT}", pytrace=False)


def mkdocs_build(config, site_dir, cwd):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           config, "--site-dir", site_dir], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_site_builds_in_strict_mode(tmp_path):
    require_mkdocs()
    result = mkdocs_build(os.path.join(REPO, "mkdocs.yml"), str(tmp_path / "site"), REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, (
        "mkdocs build --strict failed (every WARNING below is an error in strict mode):\n"
        + "\n".join(line for line in log.splitlines() if "WARNING" in line or "ERROR" in line
                    or "Error" in line) + "\n---- full log ----\n" + log[-6000:])
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_validation_settings_catch_broken_links(tmp_path):
    """A page linking to a missing page, a missing anchor and a file outside docs/ fails the
    strict build under mkdocs.yml's own validation settings."""
    require_mkdocs()
    import yaml
    with open(os.path.join(REPO, "mkdocs.yml"), encoding="utf-8") as f:
        validation = yaml.safe_load(f)["validation"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.md").write_text("# B\n\n## Real heading\n")
    config = {"site_name": "t", "strict": True, "validation": validation,
              "nav": ["a.md", "b.md"], "markdown_extensions": ["toc"]}
    for link, what in [("b.md#real-heading", None), ("b.md#no-such-heading", "anchor"),
                       ("nope.md", "not found"), ("../benchmarks/RESULTS.md", "not found")]:
        (docs / "a.md").write_text(f"# A\n\n[link]({link})\n")
        (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
        result = mkdocs_build(str(tmp_path / "mkdocs.yml"), str(tmp_path / "site"), tmp_path)
        if what is None:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0 and link in result.stderr, (link, result.stderr)


def test_every_page_is_checked():
    names = {os.path.basename(p) for p in pages()}
    assert {"index.md", "api.md", "cli.md", "architecture.md"} <= names, names


@pytest.mark.parametrize("page", [os.path.basename(p) for p in pages()])
def test_cited_repository_paths_exist(page):
    with open(os.path.join(DOCS, page), encoding="utf-8") as f:
        markdown = f.read()
    problems = missing_paths(markdown, list(existing_files())) + cited_path_problems(markdown)
    checked = sum(1 for w in cited_words(markdown) if w.startswith(PREFIXES) or w in ROOT_FILES)
    print(f"{page}: {len(bash_blocks(markdown))} bash blocks, {checked} cited paths")
    assert not problems, f"docs/{page}:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, expected", [
    ("the generator is `e4e_jax/generator_nope.py`", "`e4e_jax/generator_nope.py` does not exist"),
    ("run `python benchmarks/nope.py --x`", "`benchmarks/nope.py` does not exist"),
    ("`e4e-jax train --config configs/nope.py:A`", "`configs/nope.py` does not exist"),
    ("`--config.generator.path=tests/nope`", "`tests/nope` does not exist"),
    ("```python\nload('tests/data/editings/nope.pt')\n```\n",
     "`tests/data/editings/nope.pt` does not exist"),
])
def test_the_rule_finds_wrong_paths(text, expected):
    assert cited_path_problems(text) == [expected]


@pytest.mark.parametrize("text", [
    "`e4e_jax/nets/generator.py`, `configs/cars_encode.py:A`, `tests/data/editings/`",
    "`python convert_weights/FORMAT.py SRC DST`, `e4e_jax/cli/<name>.py`, `configs/*.py`",
    "`e4e_jax/models/{lpips,arcface}.py`, `benchmarks/RESULTS.md`, `train.py`, `mkdocs.yml`",
    "`converted/e4e_ffhq_encode`, `runs/demo/export`, `OUT/latents/<name>.npy`",
    "```bash\ne4e-jax edit --checkpoint x --latents tests/nope.npy\n```\n",  # bash: rule 2a
])
def test_the_rule_accepts_real_paths_and_placeholders(text):
    assert cited_path_problems(text) == []
