"""The package's layout (docs/architecture.md): layers import downwards only, no module takes
another module's private names, nothing inside the package uses an old path, and every old
path of e4e_jax/aliases.py still imports, as the very module that holds the code now."""
from __future__ import annotations

import ast
import importlib
import os

import pytest

from e4e_jax import aliases
from tests.support.paths import REPO

PACKAGE = os.path.join(REPO, "e4e_jax")

# bottom to top: a module may import its own layer and the layers before it
LAYERS = ["core", "models", "nets", "convert", "data", "outputs", "losses", "editing",
          "inversion", "evaluation", "train", "align", "apps", "cli"]

# the upward references there are, each for a reason
ALLOWED_UPWARD = {
    # a converter's `main` is a command: it borrows the shared command-line conventions
    ("e4e_jax.convert.common", "e4e_jax.cli"),
    # `python -m e4e_jax.align` and the flat layout's `e4e_jax.align.main`
    ("e4e_jax.align.__main__", "e4e_jax.cli.align"),
    ("e4e_jax.align", "e4e_jax.cli"),
}


def _modules():
    for dirpath, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield (name[:-len(".__init__")] if name.endswith(".__init__") else name), path


def _imports(path):
    """(imported module, imported names) of every import statement, nested ones included."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "e4e_jax" and len(parts) > 1 and parts[1] in LAYERS else None


def test_layers_import_downwards_only():
    upward = []
    for name, path in _modules():
        mine = _layer(name)
        if mine is None:
            continue
        for module, names in _imports(path):
            targets = [f"{module}.{n}" for n in names] if module == "e4e_jax" else [module]
            for target in targets:
                theirs = _layer(target)
                if theirs and LAYERS.index(theirs) > LAYERS.index(mine) and \
                        not any(name == a and target.startswith(b) for a, b in ALLOWED_UPWARD):
                    upward.append(f"{name} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_module_takes_another_modules_private_names():
    private = [f"{name}: from {module} import {n}"
               for name, path in _modules() for module, names in _imports(path)
               if module.startswith(("e4e_jax", "convert_weights"))
               for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private, "\n".join(private)


def test_the_package_uses_no_old_path():
    old = [f"{name}: {module}" for name, path in _modules() if name != "e4e_jax.aliases"
           for module, names in _imports(path)
           for target in [module] + [f"{module}.{n}" for n in names]
           if target in aliases.MOVED]
    assert not old, "\n".join(old)


@pytest.mark.parametrize("old", sorted(aliases.MOVED))
def test_every_old_path_is_the_module_itself(old):
    assert importlib.import_module(old) is importlib.import_module(aliases.MOVED[old])


def test_no_import_cycles_between_modules():
    """Top-level imports only (a function-level import runs after both modules loaded)."""
    graph = {}
    for name, path in _modules():
        tree = ast.parse(open(path, encoding="utf-8").read())
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("e4e_jax"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    deps.add(full if importlib.util.find_spec(node.module) and
                             _is_module(full) else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("e4e_jax."))
        # a package may import its own submodules in __init__; those are not cycles
        graph[name] = {d for d in deps if d != name and not d.startswith(name + ".")}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in graph.get(node, ()):
            visit(dep)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
