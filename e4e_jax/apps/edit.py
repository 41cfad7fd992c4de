"""The edit command's library: inputs, batched edits, grids and outputs, callable without argv.

    summary = run_edits("runs/demo/export", "edits/", ["sefa:0"], synthetic=4)

`run_edits` = `check_request` (arguments) -> `open_inputs` (images, latents or synthetic
images as (names, array) batches) -> per batch `edit_batch` (model calls: invert or decode,
apply every edit at every strength, decode) and `edit_grid` PNGs -> `write_arrays`
(edited_latents.npy, latents.npy + files.txt) and edits.json. See e4e_jax/edit.py for the files.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from e4e_jax.data import image_io
from e4e_jax.data.codes import (CodesError, describe_rows, non_finite_rows, read_codes,
                                 split_key)
from e4e_jax.editing.prepared import prepare_edits
from e4e_jax.editing.spec import (
    DEFAULT_STRENGTHS,
    SPEC_HELP,
    EditError,
    EditSpec,
    format_number,
    parse_edit_spec,
)
from e4e_jax.inversion import restyle
from e4e_jax.outputs.grids import labelled_grid


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


class NothingEditedError(RuntimeError):
    """The edit command ran but no input could be read (exit code 1)."""


def _grid_name(name: str, taken=None) -> str:
    """'sub/a.jpg' -> 'sub/a.png'; 'a.jpg#face1' -> 'a_face1.png' (encode's naming); with
    `taken` (an OutputNames of the run) clashing names get the unique form (output_names)."""
    from e4e_jax.outputs.names import OutputNames
    return (taken if taken is not None else OutputNames()).row(name)


def read_latents(path: str, files: str | None = None, num: int | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """W+ codes (N, n_latent, S) and their row names.

    `path`: latents.npy as `e4e-jax encode` / `invert` write it, a per-image code
    (OUT/latents/<name>.npy), the official inference's latents.pt, or an .npz / .pt holding one
    array (`FILE:KEY` names one of several) (e4e_jax.data.codes.read_codes). Names: files.txt
    beside the file (or `files`); else, for a one-row file, the file's stem (so a per-image PTI
    code keeps its image's name); else latent_00000, ... Raises FileNotFoundError, EditError
    (wrong shape, unreadable, NaN / Inf rows named).
    """
    file_path, _ = split_key(path)
    if os.path.isdir(file_path):
        inside = os.path.join(file_path, "latents.npy")
        fix = (f"pass --latents {inside}" if os.path.isfile(inside)
               else "pass a latents file inside it (encode's latents.npy or a per-image .npy)")
        raise EditError(f"--latents {file_path!r} is a folder, not a latents file; {fix}.")
    if not os.path.isfile(file_path):
        raise FileNotFoundError(f"latents file {file_path!r} does not exist.")
    try:
        w = read_codes(path)
    except CodesError as e:
        raise EditError(str(e)) from None
    except (ValueError, OSError) as e:
        raise EditError(f"{path!r} is not a readable codes file: {e}") from e
    if w.ndim != 3:
        raise EditError(f"{path!r} holds an array of shape {w.shape}; expected W+ codes "
                        f"(N, n_latent, 512) as `e4e-jax encode` writes them.")
    if files is not None and not os.path.isfile(files):
        raise FileNotFoundError(f"--files {files!r} does not exist.")
    files = files or os.path.join(os.path.dirname(os.path.abspath(file_path)), "files.txt")
    names = None
    if os.path.isfile(files):
        with open(files) as f:
            names = [line.rstrip("\n") for line in f if line.strip()]
        if len(names) != len(w):
            print(f"warning: {files} lists {len(names)} names for {len(w)} latents; naming the "
                  f"grids by row instead.", file=sys.stderr)
            names = None
    if names is None and len(w) == 1:
        names = [os.path.splitext(os.path.basename(file_path))[0]]
    if names is None:
        names = [f"latent_{i:05d}" for i in range(len(w))]
    if num:
        w, names = w[:num], names[:num]
    return w, names


def _image_batches(folder: str, size, batch_size: int, num: int | None, skipped: list):
    """(names, images) batches of the first `num` readable files (all by default) under
    `folder`, read by the one loader (e4e_jax.data.loader.SourceImages: decoded in threads, in
    order); unreadable files are reported and appended to `skipped`."""
    from e4e_jax.data.loader import SourceImages
    from e4e_jax.data.prepared import list_inputs
    from e4e_jax.data.sources import make_source
    files = list_inputs(folder)                 # an image folder or a prepared dataset
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) under "
                                f"{folder!r}.")
    images = SourceImages(make_source(folder), folder, num, fill=True,
                          on_skip=lambda rel, e: print(f"skipping {rel}: {e}", file=sys.stderr))
    count = 0
    for batch in images.read(size, batch_size):
        count += batch.valid
        yield batch.names, batch.images[:batch.valid]
    skipped.extend(images.skipped)
    if count == 0:
        raise NothingEditedError(f"none of the {len(files)} image files under {folder!r} could "
                                 f"be read; nothing was written.")


def columns(specs: Sequence[EditSpec], strengths: Sequence[float] | None) -> tuple[float, ...]:
    """--strengths, else the union of each spec's own strength (or -3, 0, 3 without one)."""
    if strengths:
        return tuple(float(s) for s in strengths)
    out: list[float] = []
    for s in specs:
        for v in ((s.strength,) if s.strength is not None else DEFAULT_STRENGTHS):
            if v not in out:
                out.append(v)
    return tuple(sorted(out))


def check_request(edits: Sequence[str], images: str | None, latents: str | None,
                  synthetic: int | None, batch_size: int) -> list[EditSpec]:
    """Checks the edit command's arguments before any model is loaded; returns the parsed specs.

    Raises EditError (exactly one input, >= 1 edit, positive sizes), FileNotFoundError (a
    missing --input folder) or EditSpecError (a spec that does not parse).
    """
    if sum(v is not None for v in (images, latents, synthetic)) != 1:
        raise EditError("give exactly one of --input FOLDER, --latents FILE.npy and "
                        "--synthetic N.")
    if synthetic is not None and synthetic < 1:
        raise EditError(f"--synthetic must be >= 1, got {synthetic}.")
    if not edits:
        raise EditError(f"give at least one --edit SPEC ({SPEC_HELP}).")
    if batch_size < 1:
        raise EditError(f"--batch-size must be >= 1, got {batch_size}.")
    if images is not None and not os.path.isdir(images):
        raise FileNotFoundError(f"--input {images!r} is not a directory.")
    return [parse_edit_spec(e) for e in edits]


def open_inputs(inv, images: str | None, latents: str | None, files: str | None,
                synthetic: int | None, batch_size: int, num_images: int | None, seed: int,
                skipped: list):
    """(batches, total): an iterator of (names, array) and the image count (None: unknown).

    Arrays are (n <= batch_size, H, W, 3) model-range images for `images` / `synthetic`, or
    (n, n_latent, style_dim) W+ codes for `latents` (checked against the model: EditError).
    Unreadable image files are appended to `skipped`.
    """
    from e4e_jax.data.synthetic import SyntheticImages
    if images is not None:
        return _image_batches(images, inv.input_size, batch_size, num_images, skipped), None
    if synthetic is not None:
        total = min(synthetic, num_images or synthetic)
        return ((b.names, b.images[:b.valid])
                for b in SyntheticImages(total, seed).batches(inv, batch_size)), total
    style_dim = inv.generator.style_dim
    w_all, names_all = read_latents(latents, files, num_images)
    if w_all.shape[1:] != (inv.n_latent, style_dim):
        raise EditError(f"{latents!r} holds codes of shape {w_all.shape[1:]}, but this model "
                        f"takes W+ codes {(inv.n_latent, style_dim)} (were they encoded with "
                        f"another model?).")
    total = len(w_all)
    return ((names_all[i:i + batch_size], w_all[i:i + batch_size])
            for i in range(0, total, batch_size)), total


def edit_batch(inv, decode, prepared, arr: np.ndarray, m: int, cols: Sequence[float],
               has_source: bool):
    """Model calls of one padded batch: (w, rec8, edited_w, edited8).

    arr: (batch_size, H, W, 3) images (has_source) or (batch_size, n_latent, S) W+ codes, the
    first `m` rows real. Returns the W+ codes (batch_size, n_latent, S) float32, the uint8
    inversions (m, H', W', 3), edited codes (m, E, S_cols, n_latent, S) and uint8 edited images
    (m, E, S_cols, H', W', 3), decoded like the inversion (stored noise, face_pool, crop).
    """
    gv = inv.generator.variables
    if has_source and restyle.is_restyle(inv):
        # the official inference default (run_on_batch's n_iters_per_batch); the last iteration
        ws, recs = restyle.invert(inv, arr, iterations=restyle.DEFAULT_ITERATIONS)
        w, rec = ws[-1], recs[-1]
    elif has_source:
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
    edited8 = image_io.to_uint8(np.stack(edited_img, axis=1))      # (m, E, S, H, W, 3)
    return w, rec8, np.stack(edited_w, axis=1), edited8


def write_arrays(out: str, edited_all: np.ndarray, inverted: np.ndarray | None,
                 names: Sequence[str]) -> None:
    """OUT/edited_latents.npy (N, E, S, n_latent, style_dim) float32 and, when `inverted` (N,
    n_latent, style_dim) is given, OUT/latents.npy + files.txt as the encode command writes.
    Codes that came out NaN / Inf (broken weights) are still written, with a warning naming
    their images: their grids show black where the images are not finite."""
    for label, array in (("inverted codes", inverted), ("edited codes", edited_all)):
        bad = non_finite_rows(array) if array is not None else ()
        if len(bad):
            print(f"warning: the {label} of {len(bad)} image(s) hold NaN or Inf "
                  f"({describe_rows(bad, names)}); check the model's weights.", file=sys.stderr)
    np.save(os.path.join(out, "edited_latents.npy"), edited_all)
    if inverted is not None:
        np.save(os.path.join(out, "latents.npy"), inverted)
        with open(os.path.join(out, "files.txt"), "w") as f:
            f.write("".join(name + "\n" for name in names))


def use_generator(inv, path: str):
    """`inv` decoding with the generator directory `path` (a PTI-tuned generator, or any
    save_generator output of the same architecture): a new Inverter (Inverter.with_generator),
    whose generator computes under the checkpoint's dtype / precision (--dtype, --precision).
    Raises FileNotFoundError / ModelDirError / EditError (a generator whose W+ shape or
    resolution differs from the checkpoint's)."""
    from e4e_jax.nets.generator import load_generator
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--generator {path!r} is not a directory.")
    _refuse_generator_folder(path)
    g, old = load_generator(path), inv.generator
    if (g.resolution, g.n_latent, g.style_dim) != (old.resolution, old.n_latent, old.style_dim):
        raise EditError(f"--generator {path!r} is a {g.resolution}px generator with W+ "
                        f"({g.n_latent}, {g.style_dim}); the checkpoint's is {old.resolution}px "
                        f"with ({old.n_latent}, {old.style_dim}).")
    return inv.with_generator(g)


def _refuse_generator_folder(path: str) -> None:
    """EditError when `path` is not a model directory but holds model directories, as
    `invert --method pti`'s OUT/generators/ holds one tuned generator per image: the message
    names the per-image directory to pass (and its pivot, OUT/latents/<name>.npy)."""
    from e4e_jax.nets.model_dir import CONFIG_FILE
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return
    names = sorted(n for n in os.listdir(path)
                   if os.path.isfile(os.path.join(path, n, CONFIG_FILE)))
    if not names:
        return                         # load_generator says what a model directory is
    folder = path.rstrip("/" + os.sep) or path
    example = os.path.join(folder, names[0])
    pivot = os.path.join(os.path.dirname(folder), "latents", names[0] + ".npy")
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
    raise EditError(f"--generator {path!r} is a folder of per-image generators ({shown}), as "
                    f"`invert --method pti` writes them; pass one of them, e.g. --generator "
                    f"{example} (with its pivot --latents {pivot}).")


def check_pti_pair(generator: str | None, latents: str | None) -> None:
    """EditError when `generator` is one image's PTI-tuned generator (OUT/generators/NAME, as
    `invert --method pti` writes it, with its pivot OUT/latents/NAME.npy beside) and `latents`
    is not that pivot: all-pivots OUT/latents.npy (several rows) or another image's code would
    be decoded by a generator tuned to NAME only."""
    if generator is None or latents is None:
        return
    folder = os.path.normpath(generator)
    parent = os.path.dirname(folder)
    if os.path.basename(parent) != "generators":
        return
    name = os.path.basename(folder)
    pivot = os.path.join(os.path.dirname(parent), "latents", name + ".npy")
    file_path, _ = split_key(latents)
    if not os.path.isfile(pivot) or not os.path.isfile(file_path):
        return
    if os.path.samefile(pivot, file_path):
        return
    same_run = os.path.samefile(os.path.dirname(os.path.abspath(file_path)),
                                os.path.dirname(pivot))
    rows = None
    if file_path.endswith(".npy"):
        try:
            rows = int(np.load(file_path, mmap_mode="r").shape[0])
        except (ValueError, OSError, IndexError):
            rows = None
    if same_run or (rows or 0) > 1:
        what = f"holds {rows} codes" if rows and rows > 1 else "is another image's code"
        raise EditError(f"--generator {generator} is PTI's generator tuned to {name!r} only, but "
                        f"--latents {latents} {what}; pass --latents {pivot} (its pivot), or "
                        f"drop --generator to edit them all with the checkpoint's generator.")


def _check_synthetic(inv, synthetic: int | None) -> None:
    """--synthetic maps z: refuse a class-conditional generator (EditError naming the way)."""
    if synthetic is not None and inv.generator.c_dim:
        raise EditError(f"--synthetic maps z through the generator, but this one is "
                        f"class-conditional (c_dim={inv.generator.c_dim}) and the edit command "
                        f"has no class option: give --input FOLDER (e.g. the samples of "
                        f"`python -m e4e_jax.sample --class K`) or --latents FILE.npy.")


def describe_generator(checkpoint: str, generator: str | None, loaded) -> str:
    """Which generator decodes the inversions and edits, for the console: the checkpoint's
    own (the export's), or the --generator directory (e.g. a PTI-tuned one) with its path."""
    what = f"{loaded.resolution}px, W+ ({loaded.n_latent}, {loaded.style_dim})"
    if generator is None:
        from e4e_jax.nets.encoder import GENERATOR_SUBDIR
        return f"the checkpoint's own ({os.path.join(checkpoint, GENERATOR_SUBDIR)}; {what})"
    return f"--generator {generator} ({what}), replacing the checkpoint's own"


def _summary(checkpoint, source, has_source, names, written, out, specs, cols, shape, skipped,
             seconds) -> dict:
    """The content of OUT/edits.json."""
    return {
        "checkpoint": os.path.abspath(checkpoint), "input": source,
        "has_source_column": has_source,
        "names": names, "grids": [os.path.relpath(p, out).replace(os.sep, "/") for p in written],
        "edits": [s.text for s in specs], "edit_labels": [s.name for s in specs],
        "strengths": list(cols), "edited_latents_shape": list(shape),
        "edited_latents_axes": ["image", "edit", "strength", "w_plus_row", "style"],
        "skipped": skipped, "seconds": round(seconds, 3),
    }


def _check_out(out: str, has_source: bool, overwrite: bool) -> None:
    """Refuses (EditError) an `out` that is a file, and files an earlier run left in `out`
    without --overwrite."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise EditError(f"--output {out!r} is a file; give a folder (it is created if "
                        f"missing).")
    names = ["edits.json", "edited_latents.npy"] + (["latents.npy", "files.txt"] if has_source
                                                     else [])
    found = [n for n in names if os.path.exists(os.path.join(out, n))]
    if found and not overwrite:
        raise EditError(f"--output {out!r} already holds {', '.join(found)} of an earlier "
                        f"run; pass --overwrite to replace them, or choose another --output.")


def run_edits(checkpoint: str, out: str, edits: Sequence[str], images: str | None = None,
              latents: str | None = None, files: str | None = None,
              strengths: Sequence[float] | None = None, batch_size: int = 8,
              num_images: int | None = None, min_cell: int = 128,
              synthetic: int | None = None, seed: int = 0, log=None,
              loader_kwargs: dict | None = None, generator: str | None = None,
              overwrite: bool = False) -> dict:
    """Runs the edit command; returns its summary (also OUT/edits.json).

    Input: `images` (a folder), `latents` (latents.npy) or `synthetic` (that many images
    G(mapping(z)) of the checkpoint's own generator, as eval.py's --data synthetic).
    Raises EditError / EditSpecError / FileNotFoundError / ModelDirError for bad arguments,
    NothingEditedError when no input could be read. `loader_kwargs` (dtype / precision) go
    to load_encoder. Grids are named by e4e_jax.outputs.names (unique, case-insensitively).
    `generator`: a generator directory (e.g. a PTI-tuned one from `python -m e4e_jax.invert`)
    that replaces the checkpoint's generator for decoding and edits (`use_generator`).
    An OUT that already holds this run's arrays (edits.json, edited_latents.npy, and with a
    source column latents.npy / files.txt, e.g. an encode run's) is refused (EditError) unless
    `overwrite`.
    """
    from e4e_jax.outputs.names import OutputNames
    log = log or sys.stderr
    from e4e_jax.data.loader import pad_batch
    from e4e_jax.nets.encoder import check_checkpoint, load_encoder, make_decoder

    specs = check_request(edits, images, latents, synthetic, batch_size)
    with_own = [s.text for s in specs if s.strength is not None]
    if strengths and with_own:
        raise EditError(f"--strengths replaces the strength written in {', '.join(with_own)}: "
                        f"drop --strengths to use the spec's own, or drop the strength from the "
                        f"spec to sweep --strengths.")
    check_pti_pair(generator, latents)
    _check_out(out, latents is None, overwrite)
    check_checkpoint(checkpoint)
    cols = columns(specs, strengths)
    t0 = time.perf_counter()
    inv = load_encoder(checkpoint, **(loader_kwargs or {}))
    _check_synthetic(inv, synthetic)
    if generator is not None:
        inv = use_generator(inv, generator)
    prepared = prepare_edits(specs, inv.generator, inv.n_latent)
    skipped: list[str] = []
    batches, total = open_inputs(inv, images, latents, files, synthetic, batch_size,
                                 num_images, seed, skipped)
    decode = make_decoder(inv)
    os.makedirs(out, exist_ok=True)
    one = total == 1
    what = ("images under " + images if images
            else ("synthetic image" if one else "synthetic images") if synthetic
            else ("latent code" if one else "latent codes"))
    print(f"editing {total or 'the'} {what} "
          f"with {inv}: {', '.join(s.name for s in specs)} at strengths "
          f"{', '.join(format_number(s) for s in cols)}", file=log)
    print(f"generator: {describe_generator(checkpoint, generator, inv.generator)}", file=log)
    if latents is None and restyle.is_restyle(inv):
        print(f"ReStyle encoder: images are encoded with {restyle.DEFAULT_ITERATIONS} "
              f"iterations, the official default (another count: `e4e-jax invert --method "
              f"restyle --iterations N`, then edit --latents OUT/latents.npy)", file=log)
    has_source = latents is None
    edited_rows, inverted_rows, names, written = [], [], [], []
    grid_names = OutputNames()
    for batch_names, arr in batches:
        m = len(batch_names)
        arr = pad_batch(arr, batch_size)
        w, rec8, edited_w, edited8 = edit_batch(inv, decode, prepared, arr, m, cols, has_source)
        edited_rows.append(edited_w)                                   # (m, E, S, n, style)
        inverted_rows.append(w[:m])
        for i, name in enumerate(batch_names):
            src = image_io.to_uint8(arr[i]) if has_source else None
            grid = edit_grid(name, src, rec8[i], edited8[i], specs, cols, min_cell)
            written.append(image_io.save_png(grid, os.path.join(out, _grid_name(name, grid_names))))
        names += batch_names
        rate = len(names) / (time.perf_counter() - t0)
        print(f"  {len(names)}{'/' + str(total) if total else ''} images edited "
              f"({rate:.2f}/s)", file=log)
    if not edited_rows:
        raise NothingEditedError(f"no image could be read ({len(skipped)} unreadable file(s): "
                                 f"{', '.join(skipped[:5])}); nothing was written.")
    edited_all = np.concatenate(edited_rows)
    write_arrays(out, edited_all, np.concatenate(inverted_rows) if has_source else None, names)
    seconds = time.perf_counter() - t0
    source = f"synthetic (seed {seed})" if synthetic else os.path.abspath(images or latents)
    summary = _summary(checkpoint, source, latents is None, names, written, out, specs, cols,
                       edited_all.shape, skipped, seconds)
    # None: the checkpoint's own generator decoded the inversions and edits
    summary["generator"] = os.path.abspath(generator) if generator else None
    with open(os.path.join(out, "edits.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {len(written)} grid{'' if len(written) == 1 else 's'} ({len(specs)} edit(s) "
          f"x {len(cols)} strength(s)) and "
          f"edited_latents.npy {tuple(edited_all.shape)} to {out} in {seconds:.1f} s"
          f"{f' with the generator {generator}' if generator else ''}"
          f"{f'; skipped {len(skipped)} unreadable file(s)' if skipped else ''}", file=log)
    return summary
