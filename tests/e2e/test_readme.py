"""Every path in the README's shell commands that names something in this repository exists,
relative to the repository root (where the README says to run them).

Which words are checked (the rule, applied to every ```bash block of README.md):
1. Lines are joined at trailing backslashes, comments dropped, split into words (shlex); a word
   `--flag=value` is checked as `value`, and words are also split at ':' so that edit specs
   (`interfacegan:PATH:3`) and configs with an argument (`configs/cars_encode.py:A`) are checked
   by their path parts. `python -m pkg.mod` checks that pkg/mod.py (or pkg/mod/) exists.
2. A word is a path when it contains '/' or ends in a file extension.
3. Outputs are skipped: the value of an output option (--out, --output, --workdir) and the last
   argument of a converter (`e4e-jax convert X ... DST`) are created by the commands, so
   these paths and everything under them are not looked for.
4. A path is a repository path, and must exist, when
   a. its first component is a top-level entry the repository tracks (tests/, configs/, train.py,
      ...), or
   b. its file name is the name of exactly one file the repository tracks (age.pt,
      input_img.jpg, ...): a command naming a file the project ships must point to where it is.
   Anything else (a downloaded official file such as e4e_ffhq_encode.pt, your photos/, a
   converted/ directory made by an earlier command) is the user's and is not checked.
"""
import os
import re
import shlex
import subprocess

import pytest

from tests.support.paths import REPO  # noqa: E402
OUTPUT_FLAGS = ("--out", "--output", "--workdir")
EXT = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
IGNORED_DIRS = {".git", "runs", "__pycache__", ".pytest_cache", ".ci-venv", ".venv", "venv",
                "build", "dist"}


def tracked_files(root=REPO):
    """Repository-relative paths of the tracked files (git), or of the files on disk outside
    build / run folders when this is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.split()
        if out:
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in IGNORED_DIRS and not x.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return found


def bash_blocks(markdown):
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M)


def commands(block):
    """Shell commands of a block: continuation lines joined, comments dropped, split at
    && ; |."""
    text = re.sub(r"\\\n", " ", block)
    out = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        cmd = []
        for w in words:
            if w in ("&&", ";", "|", "||"):
                out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
        out.append(cmd)
    return [c for c in out if c]


def _value(word):
    return word.split("=", 1)[1] if word.startswith("-") and "=" in word else word


def outputs(cmds):
    """Paths the commands create (rule 3)."""
    made = set()
    for cmd in cmds:
        for i, w in enumerate(cmd):
            flag = w.split("=", 1)[0]
            if flag in OUTPUT_FLAGS:
                value = _value(w) if "=" in w else (cmd[i + 1] if i + 1 < len(cmd) else "")
                made.add(value)
        if len(cmd) > 2 and cmd[0].startswith("python") and cmd[1].startswith("convert_weights/"):
            made.add(cmd[-1])
        if len(cmd) > 3 and cmd[:2] == ["e4e-jax", "convert"]:
            made.add(cmd[-1])
    return {os.path.normpath(m) for m in made if m and not m.startswith("-")}


def candidate_paths(cmd):
    """(word, path) for every path-like part of a command's words (rules 1 and 2)."""
    found = []
    for i, w in enumerate(cmd):
        if i > 0 and cmd[i - 1] == "-m":
            found.append((w, w.replace(".", "/") + ".py|" + w.replace(".", "/")))
            continue
        if w.startswith("-") and "=" not in w:
            continue
        for part in _value(w).split(":"):
            if part in (".", "..") or part.startswith(("http", "-", "$")) or "[" in part:
                continue
            if "/" in part or EXT.search(part):
                found.append((w, part))
    return found


def missing_paths(markdown, files):
    """README words that name a repository path which does not exist (rule 4)."""
    top = {f.split("/", 1)[0] for f in files}
    names = {}
    for f in files:
        names.setdefault(os.path.basename(f), []).append(f)
    unique = {n: fs[0] for n, fs in names.items() if len(fs) == 1}
    tracked = set(files) | {os.path.dirname(f) for f in files}
    for f in files:  # every directory on the way
        parts = f.split("/")
        tracked |= {"/".join(parts[:k]) for k in range(1, len(parts))}
    cmds = [c for b in bash_blocks(markdown) for c in commands(b)]
    made = outputs(cmds)
    problems = []
    for cmd in cmds:
        for word, path in candidate_paths(cmd):
            options = [os.path.normpath(p) for p in path.split("|")]
            if any(p == m or p.startswith(m + os.sep) for p in options for m in made):
                continue
            first = options[0].split(os.sep, 1)[0]
            name = os.path.basename(options[0])
            if first not in top and name not in unique:
                continue
            if not any(p in tracked for p in options):
                hint = f" (the repository has it at {unique[name]})" if name in unique else ""
                problems.append(f"{' '.join(cmd)!r}: {path.split('|')[0]} does not exist{hint}")
    return list(dict.fromkeys(problems))


def test_readme_shell_paths_exist():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        markdown = f.read()
    blocks = bash_blocks(markdown)
    assert len(blocks) >= 10, "the README's commands belong in ```bash blocks"
    files = tracked_files()
    problems = missing_paths(markdown, files)
    checked = sum(len(candidate_paths(c)) for b in blocks for c in commands(b))
    print(f"{len(blocks)} bash blocks, {checked} path-like words checked")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line, expected", [
    # the paths of the official repository's layout are refused, with the right location
    ("python -m e4e_jax.edit --checkpoint m --edit interfacegan:editings/interfacegan_directions/"
     "age.pt:3 --out e/", "tests/data/editings/interfacegan_directions/age.pt"),
    ("python train.py --config configs/nope.py --workdir runs/x", "configs/nope.py does not exist"),
    ("python -m e4e_jax.nope --help", "e4e_jax/nope.py does not exist"),
    ("python convert_weights/nope.py a.pt out/", "convert_weights/nope.py does not exist"),
])
def test_the_rule_finds_wrong_paths(line, expected):
    problems = missing_paths(f"```bash\n{line}\n```\n", tracked_files())
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize("line", [
    "pip install -e \".[convert,test]\" && python train.py --config configs/demo.py "
    "--workdir runs/demo",
    "python eval.py --checkpoint runs/demo/export --data synthetic --out runs/demo/eval",
    "e4e-jax convert e4e e4e_ffhq_encode.pt converted/e4e_ffhq_encode\n"
    "python -m e4e_jax.encode --checkpoint converted/e4e_ffhq_encode --input photos/ --output o/",
    "python train.py --config configs/cars_encode.py:A --workdir runs/cars_A \\\n"
    "    --config.data.train=/data/cars  # a comment naming nothing/here.pt",
])
def test_the_rule_accepts_outputs_and_user_files(line):
    assert missing_paths(f"```bash\n{line}\n```\n", tracked_files()) == []
