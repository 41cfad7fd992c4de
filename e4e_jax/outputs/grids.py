"""Image grids shared by every command: plain grids, side-by-side pairs, and captioned grids.

    save_png(make_grid(list(to_uint8(samples)), ncols=8), "samples.png")        # sample
    save_png(labelled_reconstruction_grid(x, y_hat, 8, "step 100"), "g.png")   # training
    save_png(labelled_grid([[(src, "a.jpg"), (rec, "inversion")]]), "g.png")   # eval, edit

Every function takes uint8 (H, W, 3) images (except `reconstruction_grid`, which converts
model-range images with the official tensor2im) and returns a uint8 (H', W', 3) array.
Captioned cells smaller than `min_cell` pixels (the 16-32 px demo) are magnified by an integer
nearest-neighbour factor for display only; the stored numbers are never resampled.
This module imports no command or loop module (train, eval, edit, encode, sample import it).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from e4e_jax.data.image_io import to_uint8


def side_by_side(images: Sequence[np.ndarray], pad: int = 0) -> np.ndarray:
    """uint8 images (H_i, W_i, 3) next to each other, top-aligned on a black canvas."""
    h = max(im.shape[0] for im in images)
    w = sum(im.shape[1] for im in images) + pad * (len(images) - 1)
    canvas = np.zeros((h, w, 3), np.uint8)
    x = 0
    for im in images:
        canvas[:im.shape[0], x:x + im.shape[1]] = im
        x += im.shape[1] + pad
    return canvas


def make_grid(images: Sequence[np.ndarray], ncols: int = 4, pad: int = 2) -> np.ndarray:
    """uint8 images of one size as a grid of `ncols` columns."""
    if not len(images):
        raise ValueError("make_grid needs at least one image.")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // ncols)
    cols = min(ncols, len(images))
    grid = np.zeros((rows * h + pad * (rows - 1), cols * w + pad * (cols - 1), 3), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im
    return grid


def reconstruction_grid(x: np.ndarray, y_hat: np.ndarray, n: int) -> np.ndarray:
    """Rows of input | reconstruction for the first `n` images.

    x, y_hat: (N, H, W, 3) model-range images (around [-1, 1]); the two may differ in size
    (cells are top-aligned). Returns uint8 (rows, W, 3); used for the training image summaries.
    """
    rows = []
    for i in range(min(n, len(x))):
        a = to_uint8(x[i])
        b = to_uint8(y_hat[i])
        rows.append(side_by_side([a, b], pad=2))
    return make_grid(rows, ncols=1, pad=2)


def labelled_reconstruction_grid(x: np.ndarray, y_hat: np.ndarray, n: int,
                                 title: str | None = None, min_cell: int = 128) -> np.ndarray:
    """Rows of input | reconstruction for the first `n` images, with the column captions
    ("input", "reconstruction") and small images magnified for display (`labelled_grid`).

    x, y_hat: (N, H, W, 3) model-range images (around [-1, 1]; official tensor2im); used for
    the training image summaries. Returns uint8 (H', W', 3).
    """
    rows = [[(to_uint8(x[i]), "input"), (to_uint8(y_hat[i]), "reconstruction")]
            for i in range(min(n, len(x)))]
    return labelled_grid(rows, title=title, min_cell=min_cell)


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
        """(x, y) pixel position of the caption of cell (r, c)."""
        return (self.pad + c * (self.cell_w + self.pad),
                self.title_h + self.pad + r * (self.text_h + self.cell_h + self.pad))

    def box(self, r: int, c: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the image of cell (r, c)."""
        x, y = self.caption_xy(r, c)
        return y + self.text_h, x, self.cell_h, self.cell_w


def grid_layout(n_rows: int, n_cols: int, image_h: int, image_w: int, title: bool = True,
                min_cell: int = 128, pad: int = 4) -> GridLayout:
    """The geometry `labelled_grid` uses for n_rows x n_cols images of (image_h, image_w)
    pixels: cells magnified by `display_scale`, a caption line above each, a title line."""
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
