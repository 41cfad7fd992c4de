"""Edit command: inversions and edits of images (or saved latents) as labelled PNG grids.

    python -m e4e_jax.edit --checkpoint runs/demo/export --images photos/ \\
        --edit sefa:0 --edit interfacegan:age.pt --strengths -3 0 3 --out edits/
    python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode --latents enc/latents.npy \\
        --edit ganspace:ffhq_pca.pt:54,7,8 --strengths -5 5 --out edits/
    python -m e4e_jax.edit --checkpoint runs/demo/export --synthetic 4 --edit sefa:0 --out e/

Writes
    OUT/<image>.png          one grid per image: a row per edit, columns source | inversion |
                             the edit at each strength, every cell captioned (with --latents
                             there is no source column, and the title says so)
    OUT/edited_latents.npy   (N, n_edits, n_strengths, n_latent, 512) float32 W+ codes
    OUT/latents.npy, files.txt   the inversions (not with --latents), as `python -m e4e_jax.encode`
    OUT/edits.json           the axes of edited_latents.npy: names, edits, strengths

Edit specs (the same syntax serves eval.py's --edits / --lec_edit):

    interfacegan:PATH[:STRENGTH]            w + STRENGTH * direction (a (1, 512) W or
                                            (1, n_latent, 512) W+ direction: .pt, .npy, .npz)
    ganspace:PATH:IDX,START,END[,STRENGTH]  the official GANSpace tuple: component IDX of the
                                            PCA file on W+ rows START..END-1, coordinate set
                                            to STRENGTH (standard deviations)
    sefa:SEMANTIC[:STRENGTH[:LAYERS]]       SeFa eigenvector SEMANTIC (0 = largest eigenvalue)
                                            of the generator's own weights, moved by STRENGTH;
                                            LAYERS 'all' (default), '2-5' or '2,3,4,5'

A STRENGTH in the spec is its default strength (eval.py uses it; defaults: interfacegan 3, the
official LEC example; ganspace and sefa 5). The command's --strengths give the columns of every
edit; without --strengths the columns are the union over the specs of their own strength (-3,
0, 3 for a spec without one): `--edit sefa:0:10` alone gives one column at +10.

Edited images are decoded like the inversion (stored noise, face_pool, cars crop); cells smaller
than --min_cell pixels (the 16-32 px demo) are magnified by nearest neighbour for display only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from e4e_jax import image_io

EDIT_KINDS = ("interfacegan", "ganspace", "sefa")
DEFAULT_STRENGTH = {"interfacegan": 3.0, "ganspace": 5.0, "sefa": 5.0}
DEFAULT_STRENGTHS = (-3.0, 0.0, 3.0)
SPEC_HELP = ("interfacegan:PATH[:STRENGTH] | ganspace:PATH:IDX,START,END[,STRENGTH] | "
             "sefa:SEMANTIC[:STRENGTH[:LAYERS]] (LAYERS: all, 2-5 or 2,3,4,5)")


class EditError(ValueError):
    """A bad argument of the edit command (missing input, wrong latents shape)."""


class EditSpecError(EditError):
    """An edit spec string that does not parse, or does not fit the model."""


# ----------------------------------------------------------------------------------------------
# Specs


@dataclasses.dataclass(frozen=True)
class EditSpec:
    """A parsed edit spec (see the module docstring for the syntax)."""
    kind: str
    text: str
    path: str | None = None
    index: int = 0                            # ganspace component / sefa semantic
    rows: tuple[int, int] | None = None       # ganspace W+ rows start..end-1
    layers: Any = "all"                       # sefa: 'all' or a tuple of layer indices
    strength: float | None = None             # None: the kind's default

    @property
    def default_strength(self) -> float:
        return DEFAULT_STRENGTH[self.kind] if self.strength is None else self.strength

    @property
    def name(self) -> str:
        """A short label without the strength (captions, metric keys)."""
        if self.kind == "interfacegan":
            return f"interfacegan:{_stem(self.path)}"
        if self.kind == "ganspace":
            return f"ganspace:{_stem(self.path)}:{self.index},{self.rows[0]},{self.rows[1]}"
        layers = "" if self.layers == "all" else ":" + _layers_text(self.layers)
        return f"sefa:{self.index}{layers}"

    def describe(self, strength: float) -> str:
        """The label of this edit at `strength`, e.g. 'sefa:0 +5'."""
        return f"{self.name} {_fmt(strength)}"


def _stem(path: str | None) -> str:
    return os.path.splitext(os.path.basename(path or ""))[0]


def _fmt(strength: float) -> str:
    return f"{float(strength):+g}"


def _layers_text(layers) -> str:
    layers = list(layers)
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(i) for i in layers)


def _float(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: {what} must be a number, got {text!r}. "
                            f"Syntax: {SPEC_HELP}.") from None
    if not math.isfinite(value):
        raise EditSpecError(f"edit spec {spec!r}: {what} must be finite, got {text!r}.")
    return value


def _int(text: str, spec: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: {what} must be an integer, got {text!r}. "
                            f"Syntax: {SPEC_HELP}.") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _parse_layers(text: str, spec: str):
    if text == "all":
        return "all"
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            layers = tuple(range(lo, hi + 1))
        else:
            layers = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise EditSpecError(f"edit spec {spec!r}: LAYERS must be 'all', a range like '2-5' or a "
                            f"list like '2,3,4,5', got {text!r}.") from None
    if not layers or min(layers) < 0:
        raise EditSpecError(f"edit spec {spec!r}: LAYERS {text!r} selects no valid layer.")
    return layers


def parse_edit_spec(text: str) -> EditSpec:
    """Parses 'interfacegan:...', 'ganspace:...' or 'sefa:...' (see the module docstring)."""
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind not in EDIT_KINDS or not sep or not rest:
        raise EditSpecError(f"cannot parse edit spec {text!r}: expected one of {SPEC_HELP}.")
    if kind == "interfacegan":
        path, strength = rest, None
        head, _, tail = rest.rpartition(":")
        if head and _is_number(tail):
            path, strength = head, _float(tail, text, "STRENGTH")
        return EditSpec(kind, text, path=path, strength=strength)
    if kind == "ganspace":
        path, _, numbers = rest.rpartition(":")
        if not path:
            raise EditSpecError(f"edit spec {text!r}: GANSpace needs PATH:IDX,START,END[,STRENGTH]"
                                f" (the official tuple, e.g. ganspace:ffhq_pca.pt:54,7,8,5).")
        parts = numbers.split(",")
        if len(parts) not in (3, 4):
            raise EditSpecError(f"edit spec {text!r}: GANSpace takes IDX,START,END[,STRENGTH], "
                                f"got {numbers!r}.")
        idx, start, end = (_int(p, text, w) for p, w in zip(parts[:3], ("IDX", "START", "END")))
        strength = _float(parts[3], text, "STRENGTH") if len(parts) == 4 else None
        if idx < 0 or not 0 <= start < end:
            raise EditSpecError(f"edit spec {text!r}: need IDX >= 0 and 0 <= START < END.")
        return EditSpec(kind, text, path=path, index=idx, rows=(start, end), strength=strength)
    parts = rest.split(":")
    if len(parts) > 3:
        raise EditSpecError(f"edit spec {text!r}: SeFa takes SEMANTIC[:STRENGTH[:LAYERS]].")
    semantic = _int(parts[0], text, "SEMANTIC")
    if semantic < 0:
        raise EditSpecError(f"edit spec {text!r}: SEMANTIC must be >= 0.")
    strength = _float(parts[1], text, "STRENGTH") if len(parts) > 1 and parts[1] else None
    layers = _parse_layers(parts[2], text) if len(parts) > 2 else "all"
    return EditSpec(kind, text, index=semantic, layers=layers, strength=strength)


# ----------------------------------------------------------------------------------------------
# Edits bound to a model


class PreparedEdit:
    """An EditSpec with its data loaded and checked against a model's W+ shape.

    `apply(w_plus, strengths)` -> (N, len(strengths), n_latent, S): the official edit at each
    strength (InterFaceGAN w + s d; GANSpace's coordinate set to s; SeFa w + s v on the rows of
    its layers), jitted once per batch shape. `linear(strength)` -> an invertible
    `editing.LinearEdit` for the Latent Editing Consistency.
    """

    def __init__(self, spec: EditSpec, generator, n_latent: int,
                 sefa_cache: dict | None = None):
        import jax
        from e4e_jax import editing
        self.spec = spec
        self.n_latent = int(n_latent)
        self.style_dim = int(generator.style_dim)
        self._editing = editing
        try:
            if spec.kind == "interfacegan":
                self.direction = editing.load_interfacegan_direction(spec.path)
            elif spec.kind == "ganspace":
                self.pca = editing.load_ganspace_pca(spec.path)
                k = self.pca["std"].shape[0]
                if spec.index >= k:
                    raise EditSpecError(f"edit spec {spec.text!r}: the PCA has {k} components "
                                        f"(IDX 0..{k - 1}), got IDX {spec.index}.")
                if spec.rows[1] > self.n_latent:
                    raise EditSpecError(f"edit spec {spec.text!r}: rows {spec.rows[0]}.."
                                        f"{spec.rows[1] - 1} do not fit the {self.n_latent} W+ "
                                        f"rows of this model.")
            else:
                count = self.n_latent - 1  # style convolutions: conv1 + convs
                if spec.layers != "all" and max(spec.layers) >= count:
                    raise EditSpecError(f"edit spec {spec.text!r}: this generator has style "
                                        f"layers 0..{count - 1}, got {list(spec.layers)}.")
                cache = {} if sefa_cache is None else sefa_cache
                if spec.layers not in cache:      # one factorization per layer set
                    cache[spec.layers] = editing.sefa(generator, spec.layers)
                _, vectors = cache[spec.layers]
                if spec.index >= vectors.shape[0]:
                    raise EditSpecError(f"edit spec {spec.text!r}: SEMANTIC must be < "
                                        f"{vectors.shape[0]}.")
                self.vector = vectors[spec.index]
            # shape problems (a 512-d direction on a 32-d model, 18 rows on 14) show up here
            self._impl(np.zeros((1, self.n_latent, self.style_dim), np.float32), (1.0,))
        except EditSpecError:
            raise
        except FileNotFoundError as e:
            raise EditSpecError(f"edit spec {spec.text!r}: {e}") from e
        except (ValueError, TypeError, ImportError) as e:
            raise EditSpecError(f"edit spec {spec.text!r} does not fit this model: {e}") from e
        self._jitted: dict[tuple, Callable] = {}
        self._jax = jax

    def _impl(self, w, strengths: tuple[float, ...]):
        import jax.numpy as jnp
        ed, spec = self._editing, self.spec
        n = w.shape[0]
        shape = (n, len(strengths), self.n_latent, self.style_dim)
        if spec.kind == "interfacegan":
            out = [ed.interfacegan_edit(w, self.direction, factor=s) for s in strengths]
            return jnp.stack(out, axis=1)
        if spec.kind == "ganspace":
            edits = [(spec.index, spec.rows[0], spec.rows[1], s) for s in strengths]
            return ed.ganspace_edit(w, self.pca, edits).reshape(shape)        # code-major
        return ed.sefa_edit(w, self.vector, 0, spec.layers, distances=strengths).reshape(shape)

    def apply(self, w_plus, strengths: Sequence[float]):
        strengths = tuple(float(s) for s in strengths)
        fn = self._jitted.get(strengths)
        if fn is None:
            fn = self._jitted[strengths] = self._jax.jit(lambda w: self._impl(w, strengths))
        return fn(w_plus)

    def linear(self, strength: float | None = None):
        """The invertible version for LEC: InterFaceGAN and SeFa are shifts already; GANSpace
        becomes a shift by `strength` standard deviations (see editing.LinearEdit.ganspace)."""
        ed, spec = self._editing, self.spec
        s = spec.default_strength if strength is None else float(strength)
        if spec.kind == "interfacegan":
            return ed.LinearEdit.interfacegan(self.direction, s)
        if spec.kind == "ganspace":
            return ed.LinearEdit.ganspace(self.pca, spec.index, spec.rows[0], spec.rows[1], s,
                                          self.n_latent)
        return ed.LinearEdit.sefa(self.vector, s, spec.layers, self.n_latent)


def prepare_edits(specs: Sequence[str | EditSpec], generator, n_latent: int
                  ) -> list[PreparedEdit]:
    """Parses and loads edit specs for a model (SeFa factorizations computed once per layer
    set); raises EditSpecError naming the bad one."""
    out, cache = [], {}
    for s in specs:
        spec = s if isinstance(s, EditSpec) else parse_edit_spec(s)
        out.append(PreparedEdit(spec, generator, n_latent, sefa_cache=cache))
    return out


# ----------------------------------------------------------------------------------------------
# Labelled grids


def _font():
    from PIL import ImageFont
    return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def display_scale(height: int, width: int, min_cell: int = 128) -> int:
    """Integer nearest-neighbour magnification that makes small cells (e.g. the 16-32 px demo)
    wide enough for their captions; 1 for real-size images."""
    return max(1, -(-int(min_cell) // max(1, max(height, width))))


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """Geometry of a labelled grid: `box(r, c)` -> (top, left, height, width) of a cell's image."""
    rows: int
    cols: int
    cell_h: int          # after magnification
    cell_w: int
    scale: int           # nearest-neighbour magnification of the images
    text_h: int
    title_h: int
    pad: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.title_h + self.rows * (self.text_h + self.cell_h + self.pad) + self.pad,
                self.cols * (self.cell_w + self.pad) + self.pad)

    def caption_xy(self, r: int, c: int) -> tuple[int, int]:
        return (self.pad + c * (self.cell_w + self.pad),
                self.title_h + self.pad + r * (self.text_h + self.cell_h + self.pad))

    def box(self, r: int, c: int) -> tuple[int, int, int, int]:
        x, y = self.caption_xy(r, c)
        return y + self.text_h, x, self.cell_h, self.cell_w


def grid_layout(n_rows: int, n_cols: int, image_h: int, image_w: int, title: bool = True,
                min_cell: int = 128, pad: int = 4) -> GridLayout:
    k = display_scale(image_h, image_w, min_cell)
    box = _font().getbbox("Ag|")
    text_h = box[3] - box[1] + 4
    return GridLayout(n_rows, n_cols, image_h * k, image_w * k, k, text_h,
                      text_h + pad if title else 0, pad)


def labelled_grid(rows: Sequence[Sequence[tuple[np.ndarray | None, str]]],
                  title: str | None = None, min_cell: int = 128, pad: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) grid of captioned cells (geometry: `grid_layout`).

    `rows`: per row a list of (uint8 image or None for an empty cell, caption). Cells smaller
    than `min_cell` are magnified by an integer factor (nearest neighbour) for display; captions
    (PIL's default font) are drawn above each cell and shortened with '...' to fit.
    """
    from PIL import Image, ImageDraw
    images = [im for row in rows for im, _ in row if im is not None]
    if not images:
        raise ValueError("labelled_grid needs at least one image.")
    layout = grid_layout(len(rows), max(len(r) for r in rows),
                         max(im.shape[0] for im in images), max(im.shape[1] for im in images),
                         bool(title), min_cell, pad)
    height, width = layout.shape
    font = _font()
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), _fit_text(draw, title, font, width - 2 * pad), fill=(0, 0, 0),
                  font=font)
    k = layout.scale
    for r, row in enumerate(rows):
        for c, (im, caption) in enumerate(row):
            x, y = layout.caption_xy(r, c)
            draw.text((x, y), _fit_text(draw, caption, font, layout.cell_w), fill=(0, 0, 0),
                      font=font)
            top, left, h, w = layout.box(r, c)
            if im is None:
                draw.rectangle([left, top, left + w - 1, top + h - 1], outline=(200, 200, 200))
                continue
            big = np.repeat(np.repeat(np.asarray(im, np.uint8), k, axis=0), k, axis=1)
            canvas.paste(Image.fromarray(big), (left, top))
    return np.asarray(canvas)


def edit_grid(name: str, source: np.ndarray | None, inversion: np.ndarray,
              edited: np.ndarray, edits: Sequence[EditSpec], strengths: Sequence[float],
              min_cell: int = 128) -> np.ndarray:
    """The grid of one image: a row per edit: [source |] inversion | edit at each strength.

    source / inversion: uint8 (H, W, 3) (source None: inverted from saved latents);
    edited: uint8 (n_edits, n_strengths, H, W, 3).
    """
    rows = []
    for e, spec in enumerate(edits):
        row = [] if source is None else [(source, "source")]
        row.append((inversion, "inversion"))
        row += [(edited[e, j], spec.describe(s)) for j, s in enumerate(strengths)]
        rows.append(row)
    if source is None:
        title = f"{name}: inversion from saved latents (no source image) | edits"
    else:
        title = f"{name}: source | inversion | edits"
    return labelled_grid(rows, title=title, min_cell=min_cell)


# ----------------------------------------------------------------------------------------------
# The command


def _grid_name(name: str) -> str:
    """'sub/a.jpg' -> 'sub/a.png'; 'a.jpg#face1' -> 'a_face1.png' (encode's naming)."""
    base, _ = os.path.splitext(name.split("#face")[0])
    if "#face" in name:
        base += "_face" + name.split("#face")[1]
    return base + ".png"


def read_latents(path: str, files: str | None = None, num: int | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """latents.npy (N, n_latent, S) and its row names (files.txt beside it, as
    `python -m e4e_jax.encode` writes them; else latent_00000, ...)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"latents file {path!r} does not exist.")
    try:
        w = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EditError(f"{path!r} is not a readable .npy array: {e}") from e
    if w.ndim != 3 or len(w) == 0:
        raise EditError(f"{path!r} holds an array of shape {w.shape}; expected W+ codes "
                        f"(N, n_latent, 512) as `python -m e4e_jax.encode` writes them.")
    if files is not None and not os.path.isfile(files):
        raise FileNotFoundError(f"--files {files!r} does not exist.")
    files = files or os.path.join(os.path.dirname(os.path.abspath(path)), "files.txt")
    names = None
    if os.path.isfile(files):
        with open(files) as f:
            names = [line.rstrip("\n") for line in f if line.strip()]
        if len(names) != len(w):
            print(f"warning: {files} lists {len(names)} names for {len(w)} latents; naming the "
                  f"grids by row instead.", file=sys.stderr)
            names = None
    if names is None:
        names = [f"latent_{i:05d}" for i in range(len(w))]
    if num:
        w, names = w[:num], names[:num]
    return np.asarray(w, np.float32), names


def _image_batches(folder: str, size, batch_size: int, num: int | None, skipped: list):
    """(names, images) batches of the readable files under `folder`, at most `num` images."""
    files = image_io.list_images(folder)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) under "
                                f"{folder!r}.")
    names, rows, count = [], [], 0
    for rel in files:
        if num and count >= num:
            break
        try:
            rows.append(image_io.load_image(os.path.join(folder, rel), size))
        except image_io.ImageReadError as e:
            skipped.append(rel)
            print(f"skipping {rel}: {e}", file=sys.stderr)
            continue
        names.append(rel)
        count += 1
        if len(rows) == batch_size:
            yield names, np.stack(rows)
            names, rows = [], []
    if rows:
        yield names, np.stack(rows)
    if count == 0:
        raise FileNotFoundError(f"none of the {len(files)} image files under {folder!r} could "
                                f"be read.")


def _columns(specs: Sequence[EditSpec], strengths: Sequence[float] | None) -> tuple[float, ...]:
    """--strengths, else the union of each spec's own strength (or -3, 0, 3 without one)."""
    if strengths:
        return tuple(float(s) for s in strengths)
    out: list[float] = []
    for s in specs:
        for v in ((s.strength,) if s.strength is not None else DEFAULT_STRENGTHS):
            if v not in out:
                out.append(v)
    return tuple(sorted(out))


def run_edits(checkpoint: str, out: str, edits: Sequence[str], images: str | None = None,
              latents: str | None = None, files: str | None = None,
              strengths: Sequence[float] | None = None, batch_size: int = 8,
              num_images: int | None = None, min_cell: int = 128,
              synthetic: int | None = None, seed: int = 0, log=None) -> dict:
    """Runs the edit command; returns its summary (also OUT/edits.json).

    Input: `images` (a folder), `latents` (latents.npy) or `synthetic` (that many images
    G(mapping(z)) of the checkpoint's own generator, as eval.py's --data synthetic).
    """
    log = log or sys.stderr
    from e4e_jax.evaluation import SyntheticImages, check_checkpoint, make_decoder, pad_batch
    from e4e_jax.inverter import load_encoder

    if sum(v is not None for v in (images, latents, synthetic)) != 1:
        raise EditError("give exactly one of --images FOLDER, --latents FILE.npy and "
                        "--synthetic N.")
    if synthetic is not None and synthetic < 1:
        raise EditError(f"--synthetic must be >= 1, got {synthetic}.")
    if not edits:
        raise EditError(f"give at least one --edit SPEC ({SPEC_HELP}).")
    if batch_size < 1:
        raise EditError(f"--batch_size must be >= 1, got {batch_size}.")
    if images is not None and not os.path.isdir(images):
        raise FileNotFoundError(f"--images {images!r} is not a directory.")
    specs = [parse_edit_spec(e) for e in edits]
    check_checkpoint(checkpoint)
    cols = _columns(specs, strengths)
    t0 = time.perf_counter()
    inv = load_encoder(checkpoint)
    prepared = prepare_edits(specs, inv.generator, inv.n_latent)
    style_dim = inv.generator.style_dim
    skipped: list[str] = []
    if images is not None:
        batches = _image_batches(images, inv.input_size, batch_size, num_images, skipped)
        total = None
    elif synthetic is not None:
        total = min(synthetic, num_images or synthetic)
        batches = ((b.names, b.images[:b.valid])
                   for b in SyntheticImages(total, seed).batches(inv, batch_size))
    else:
        w_all, names_all = read_latents(latents, files, num_images)
        if w_all.shape[1:] != (inv.n_latent, style_dim):
            raise EditError(f"{latents!r} holds codes of shape {w_all.shape[1:]}, but this model "
                            f"takes W+ codes {(inv.n_latent, style_dim)} (were they encoded with "
                            f"another model?).")
        total = len(w_all)
        batches = ((names_all[i:i + batch_size], w_all[i:i + batch_size])
                   for i in range(0, total, batch_size))
    decode = make_decoder(inv)
    gv = inv.generator.variables
    os.makedirs(out, exist_ok=True)
    what = ("images under " + images if images else "synthetic images" if synthetic
            else "latent codes")
    print(f"editing {total or 'the'} {what} "
          f"with {inv}: {', '.join(s.name for s in specs)} at strengths "
          f"{', '.join(_fmt(s) for s in cols)}", file=log)
    edited_rows, inverted_rows, names, written = [], [], [], []
    for batch_names, arr in batches:
        m = len(batch_names)
        arr = pad_batch(arr, batch_size)
        has_source = latents is None
        if has_source:
            w, rec = inv.invert(arr)
        else:
            w = arr
            rec = decode(gv, w)
        w = np.asarray(w)
        rec8 = image_io.to_uint8(np.asarray(rec)[:m])
        edited_w, edited_img = [], []
        for p in prepared:
            we = np.asarray(p.apply(w, cols))                          # (B, S, n, style)
            imgs = np.asarray(decode(gv, we.reshape((-1,) + we.shape[2:])))
            edited_w.append(we[:m])
            edited_img.append(imgs.reshape(we.shape[:2] + imgs.shape[1:])[:m])
        edited_rows.append(np.stack(edited_w, axis=1))                 # (m, E, S, n, style)
        edited8 = image_io.to_uint8(np.stack(edited_img, axis=1))      # (m, E, S, H, W, 3)
        inverted_rows.append(w[:m])
        for i, name in enumerate(batch_names):
            src = image_io.to_uint8(arr[i]) if has_source else None
            grid = edit_grid(name, src, rec8[i], edited8[i], specs, cols, min_cell)
            written.append(image_io.save_png(grid, os.path.join(out, _grid_name(name))))
        names += batch_names
        rate = len(names) / (time.perf_counter() - t0)
        print(f"  {len(names)}{'/' + str(total) if total else ''} images edited "
              f"({rate:.2f}/s)", file=log)
    edited_all = np.concatenate(edited_rows)
    np.save(os.path.join(out, "edited_latents.npy"), edited_all)
    if latents is None:
        np.save(os.path.join(out, "latents.npy"), np.concatenate(inverted_rows))
        with open(os.path.join(out, "files.txt"), "w") as f:
            f.write("".join(name + "\n" for name in names))
    seconds = time.perf_counter() - t0
    summary = {
        "checkpoint": os.path.abspath(checkpoint),
        "input": f"synthetic (seed {seed})" if synthetic else os.path.abspath(images or latents),
        "has_source_column": latents is None,
        "names": names, "grids": [os.path.relpath(p, out).replace(os.sep, "/") for p in written],
        "edits": [s.text for s in specs], "edit_labels": [s.name for s in specs],
        "strengths": list(cols), "edited_latents_shape": list(edited_all.shape),
        "edited_latents_axes": ["image", "edit", "strength", "w_plus_row", "style"],
        "skipped": skipped, "seconds": round(seconds, 3),
    }
    with open(os.path.join(out, "edits.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {len(written)} grids ({len(specs)} edit(s) x {len(cols)} strength(s)) and "
          f"edited_latents.npy {tuple(edited_all.shape)} to {out} in {seconds:.1f} s"
          f"{f'; skipped {len(skipped)} unreadable file(s)' if skipped else ''}", file=log)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e4e_jax.edit",
        description="Invert images (or take saved latents), apply latent edits and write one "
                    "labelled PNG grid per image.",
        epilog=f"Edit specs: {SPEC_HELP}.")
    parser.add_argument("--checkpoint", required=True,
                        help="inverter directory (convert_weights/e4e.py output or WORKDIR/export)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (searched recursively)")
    src.add_argument("--latents", help="latents.npy as written by `python -m e4e_jax.encode`")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N images G(mapping(z)) of the checkpoint's own generator (the demo "
                          "domain; no files needed)")
    parser.add_argument("--files", help="names for --latents rows (default: files.txt next to it)")
    parser.add_argument("--edit", action="append", required=True, metavar="SPEC",
                        help="an edit spec; repeat for several edits (one grid row each)")
    parser.add_argument("--strengths", type=float, nargs="+",
                        help="strengths of every edit (default: the union of the specs' own "
                             "strengths, -3 0 3 for a spec without one)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8)
    parser.add_argument("--num_images", type=int, default=None, help="edit at most this many")
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic images")
    parser.add_argument("--min_cell", type=int, default=128,
                        help="smaller cells are magnified (nearest) to this size for display")
    args = parser.parse_args(argv)
    from e4e_jax.checkpoints import ModelDirError
    try:
        run_edits(args.checkpoint, args.out, args.edit, images=args.images, latents=args.latents,
                  files=args.files, strengths=args.strengths, batch_size=args.batch_size,
                  num_images=args.num_images, min_cell=args.min_cell,
                  synthetic=args.synthetic, seed=args.seed)
    except (ModelDirError, EditError, FileNotFoundError, image_io.ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
