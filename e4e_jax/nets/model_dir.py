"""Converted model directories: the on-disk form every loader of the package reads.

A model directory holds

    config.json          {"kind", "format_version", "config", "source", "arrays": [...]}
    variables.msgpack    the Flax variables (nested dicts of float32 arrays), flax msgpack
    <name>.npy           optional loose arrays (e.g. latent_avg)
    <sub>/               optional nested model directories (an e4e directory holds generator/)

Converters and the training export write it with `save_model_dir`; `load_model_dir` reads it back
and checks the kind, so a user who points a loader at the wrong directory is told what it holds.
Writes go to a temporary sibling directory that is renamed into place, so an interrupted
conversion never leaves a half-written directory that looks valid.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Mapping

import numpy as np
from flax import serialization

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
VARIABLES_FILE = "variables.msgpack"


class ModelDirError(ValueError):
    """A model directory is missing, of the wrong kind, or does not match its model."""


@dataclasses.dataclass
class ModelDir:
    path: str
    kind: str
    config: dict
    variables: dict | None
    arrays: dict[str, np.ndarray]
    source: str | None


def _to_numpy_tree(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def check_replaceable(path: str, kind: str | None = None) -> None:
    """Refuses to write a model directory at `path` over anything but an empty folder or an
    earlier model directory (of `kind`, when given): a folder of images, a file or another
    model must never be replaced silently by a conversion. Raises ModelDirError naming what is
    there and the way out."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        what = "is a file"
    elif not os.listdir(path):
        return
    else:
        cfg = os.path.join(path, CONFIG_FILE)
        try:
            with open(cfg) as f:
                existing = json.load(f).get("kind")
        except (OSError, ValueError, AttributeError):
            existing = None
        if existing is None:
            what = "is a folder that is not a model directory"
        elif kind is not None and existing != kind:
            what = f"holds a model of kind {existing!r}"
        else:
            return                      # an earlier model directory of this kind: replaced
    target = f"a {kind!r} model" if kind else "a model directory"
    raise ModelDirError(f"{path!r} {what}; writing {target} there would replace it: give a new "
                        f"output path, or move it away first.")


def save_model_dir(
    path: str,
    kind: str,
    config: Mapping[str, Any],
    variables: Mapping[str, Any] | None = None,
    arrays: Mapping[str, Any] | None = None,
    source: str | None = None,
    subdirs: Mapping[str, str] | None = None,
) -> str:
    """Writes a model directory atomically and returns its path.

    `subdirs` maps a name to an already written model directory (e.g. a temporary one) that is
    moved inside, so composite models (encoder + generator) are written in one atomic rename.
    An earlier model directory of the same `kind` at `path` is replaced; anything else there
    (a file, a non-empty folder that is no model directory, another kind) raises ModelDirError
    (check_replaceable) before anything is written.
    """
    check_replaceable(path, kind)
    path = os.path.abspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        # mkdtemp makes the directory 0700; the renamed result must follow the umask like
        # any other output (0755 under the usual 022).
        os.chmod(tmp, 0o777 & ~_current_umask())
        meta = {
            "kind": kind,
            "format_version": FORMAT_VERSION,
            "config": dict(config),
            "source": source,
            "arrays": sorted(arrays) if arrays else [],
            "subdirs": sorted(subdirs) if subdirs else [],
        }
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        if variables is not None:
            data = serialization.msgpack_serialize(_to_numpy_tree(variables))
            with open(os.path.join(tmp, VARIABLES_FILE), "wb") as f:
                f.write(data)
        for name, value in (arrays or {}).items():
            np.save(os.path.join(tmp, name + ".npy"), np.asarray(value))
        for name, src in (subdirs or {}).items():
            shutil.copytree(src, os.path.join(tmp, name))
        if os.path.exists(path):
            old = path + ".old-" + os.path.basename(tmp)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def workdir_hint(path: str) -> str:
    """" It holds an export/ folder: pass 'PATH/export' ..." when `path` looks like a training
    workdir, else "". Every command that takes a model directory gives this same hint."""
    export = os.path.join(path, "export")
    if os.path.isfile(os.path.join(export, CONFIG_FILE)) or os.path.isdir(export):
        return (f" It is a training workdir holding an export/ folder: pass {export!r} "
                f"(WORKDIR/export, the run's inference directory).")
    return ""


def read_meta(path: str) -> dict:
    """config.json of the model directory `path` (ModelDirError with a hint when it is none)."""
    cfg = os.path.join(path, CONFIG_FILE)
    if not os.path.isdir(path):
        raise ModelDirError(f"{path!r} is not a directory; expected a converted model directory "
                            f"(the output of `e4e-jax convert ...` or of train.py's export).")
    if not os.path.isfile(cfg) and workdir_hint(path):
        raise ModelDirError(f"{path!r} has no {CONFIG_FILE}; it is not a model directory."
                            + workdir_hint(path))
    if not os.path.isfile(cfg):
        raise ModelDirError(f"{path!r} has no {CONFIG_FILE}; it is not a converted model "
                            f"directory. Convert the official file first (see the README's "
                            f"converter commands).")
    with open(cfg) as f:
        meta = json.load(f)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelDirError(f"{path!r} was written by a newer e4e_jax (format "
                            f"{meta['format_version']} > {FORMAT_VERSION}); upgrade e4e_jax.")
    return meta


def load_model_dir(path: str, kind: str | Iterable[str] | None = None) -> ModelDir:
    """Reads a model directory, checking that it holds one of the expected `kind`s."""
    path = os.fspath(path)
    meta = read_meta(path)
    if kind is not None:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        if meta["kind"] not in kinds:
            raise ModelDirError(f"{path!r} holds a model of kind {meta['kind']!r}, expected "
                                f"{' or '.join(repr(k) for k in kinds)}.")
    variables = None
    var_file = os.path.join(path, VARIABLES_FILE)
    if os.path.isfile(var_file):
        with open(var_file, "rb") as f:
            variables = serialization.msgpack_restore(f.read())
    arrays = {}
    for name in meta.get("arrays", []):
        file = os.path.join(path, name + ".npy")
        if not os.path.isfile(file):
            raise ModelDirError(f"{path!r} is incomplete: {name}.npy is listed in {CONFIG_FILE} "
                                f"but missing.")
        arrays[name] = np.load(file)
    return ModelDir(path=path, kind=meta["kind"], config=meta["config"], variables=variables,
                    arrays=arrays, source=meta.get("source"))


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_tree(v, key))
        else:
            out[key] = v
    return out


def describe_mismatch(expected: Mapping[str, tuple], found: Mapping[str, tuple],
                      what: str, missing_word: str = "missing",
                      unexpected_word: str = "unexpected") -> str | None:
    """A message naming missing, unexpected and mis-shaped entries, or None when they match.

    `expected` / `found` map names to shapes; order of `expected` is kept for missing names.
    """
    missing = [k for k in expected if k not in found]
    unexpected = sorted(set(found) - set(expected))
    shapes = [k for k in expected if k in found and tuple(expected[k]) != tuple(found[k])]
    if not (missing or unexpected or shapes):
        return None
    lines = [what]
    for word, names in ((missing_word, missing), (unexpected_word, unexpected)):
        if names:
            lines.append(f"  {word} ({len(names)}): " + ", ".join(names[:20])
                         + (" ..." if len(names) > 20 else ""))
    for k in shapes[:20]:
        lines.append(f"  wrong shape for {k}: expected {tuple(expected[k])}, "
                     f"found {tuple(found[k])}")
    return "\n".join(lines)


def check_tree(expected: Mapping[str, Any], found: Mapping[str, Any], what: str) -> None:
    """Raises ModelDirError naming missing, unexpected and mis-shaped leaves of `found`.

    `expected` may hold arrays or shape structs (anything with `.shape`), e.g. the output of
    `jax.eval_shape(module.init, ...)`.
    """
    exp = {k: tuple(np.shape(v)) if not hasattr(v, "shape") else tuple(v.shape)
           for k, v in flatten_tree(expected).items()}
    got = {k: tuple(np.shape(v)) for k, v in flatten_tree(found).items()}
    message = describe_mismatch(exp, got, f"{what} does not match the model:")
    if message:
        raise ModelDirError(message)
