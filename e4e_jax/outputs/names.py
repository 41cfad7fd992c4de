"""Unique output file names derived from input names: the one naming rule of every command.

    names = OutputNames()
    names.name("a.jpg")              # 'a.png'
    names.name("a.png")              # 'a_png.png'     (stem 'a' already taken)
    names.name("A.jpg")              # 'A_jpg.png'     (differs only in case: still a clash)
    names.name("two.jpg", face=1)    # 'two_face1.png'
    names.name("two_face1.jpg")      # 'two_face1_jpg.png'

The rule: an output is `<stem>[_face<k>].png`, where stem is the input's path relative to the
input folder without its extension (sub/x.jpg -> sub/x.png). When that name is already taken by
an earlier output of the same run -- compared case-insensitively, since macOS and Windows
filesystems do not tell `A.png` from `a.png` -- the input's extension is kept in the name
(`a_png.png`), then a counter is added (`a_png-2.png`) until it is free. Inputs are named in
the order the command processes them (sorted file order), so the names are deterministic and
a folder without clashes keeps the plain `<stem>.png` names. Commands write the row -> file
mapping down (files.txt rows with the output names, or a manifest) so nothing is guessed.
"""
from __future__ import annotations

import os
from typing import Sequence

NAMING_HELP = ("Output names: <stem>.png (<stem>_face<k>.png for further faces); an input whose "
               "name is taken in this run (a.jpg then a.png; A.png vs a.png; two_face1.jpg "
               "beside a two-face two.jpg) keeps its extension: a_png.png.")


def write_manifest(path: str, rows) -> None:
    """A tab-separated manifest: header `output source face`, then one (output, source,
    face index) row per file written."""
    with open(path, "w") as f:
        f.write("output\tsource\tface\n")
        f.writelines(f"{o}\t{src}\t{k}\n" for o, src, k in rows)


class OutputNames:
    """Hands out unique (case-insensitively) output names in call order."""

    def __init__(self, suffix: str = ".png"):
        self.suffix = suffix
        self._taken: set[str] = set()

    def _free(self, candidate: str) -> bool:
        return candidate.lower() not in self._taken

    def name(self, source: str, face: int = 0) -> str:
        """The output name of `source` (a relative path; `face` k > 0: its k-th face)."""
        source = source.replace(os.sep, "/")
        stem, ext = os.path.splitext(source)
        tail = f"_face{face}" if face else ""
        candidates = [stem + tail + self.suffix]
        if ext:
            candidates.append(f"{stem}_{ext[1:]}{tail}{self.suffix}")
        for c in candidates:
            if self._free(c):
                return self._take(c)
        base = candidates[-1][: -len(self.suffix)]
        k = 2
        while not self._free(f"{base}-{k}{self.suffix}"):
            k += 1
        return self._take(f"{base}-{k}{self.suffix}")

    def row(self, row_name: str) -> str:
        """The output name of a files.txt row: `path` or `path#face<k>` (encode --align)."""
        path, sep, k = row_name.partition("#face")
        return self.name(path, int(k) if sep and k.isdigit() else 0)

    def reserve(self, name: str) -> None:
        """Marks `name` as taken (e.g. a file the command writes itself, like grid.png)."""
        self._taken.add(name.lower())

    def _take(self, name: str) -> str:
        self._taken.add(name.lower())
        return name


def output_names(paths: Sequence[str]) -> dict[str, str]:
    """File stem for each input's largest face, by the shared rule of e4e_jax/output_names.py:
    the plain stem unless an earlier input took it (a.jpg then a.png -> 'a', 'a_png'; compared
    ignoring case). Later faces' names are assigned in `main` with the same rule."""
    taken = OutputNames()
    return {p: taken.name(os.path.basename(p))[: -len(".png")] for p in paths}


def face_filename(stem: str, index: int) -> str:
    """`stem.png` for the largest face, then `stem_face1.png`, `stem_face2.png`, ... (the names
    `python -m e4e_jax.encode --align --save-images` gives the same faces)."""
    return f"{stem}.png" if index == 0 else f"{stem}_face{index}.png"
