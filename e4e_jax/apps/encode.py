"""The encode command's library: loading the model, streaming outputs, batched encoding.

    files, inv, batch_size, align_faces = open_run(ckpt, "photos/", "out/", 8, False, False)
    out = FolderOutputs("out/", (inv.n_latent, 512), save_images=False)
    w, rec, seconds = encode_batch(inv, batch, save_images=False)     # a loader Batch
    out.add(batch.names, batch.images[:batch.valid], w, rec); out.close()

Files are read by the one loader (e4e_jax.data.loader: decoded in threads, in file order) and
encoded in fixed-size batches with its padding rule (the last batch padded with zero rows, which
are dropped). `LatentWriter` keeps OUT/latents.npy a valid .npy file after every batch (an
interrupted run keeps its rows). The loop over files is `encode_folder`.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Iterator

import numpy as np

from e4e_jax.core import fs
from e4e_jax.data import image_io, prepared
from e4e_jax.data.loader import Batch, fixed_batches, read_in_order
from e4e_jax.outputs import grids
from e4e_jax.outputs.progress import AfterCompileRate

_NPY_HEADER_BYTES = 128


class LatentWriter:
    """Appends rows to an .npy file whose header is rewritten after each append, so the file
    is always a valid array of the rows written so far."""

    def __init__(self, path: str, row_shape: tuple[int, ...]):
        self.path = path
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._f = open(path, "wb")
        self._write_header()

    def _write_header(self) -> None:
        header = repr({"descr": "<f4", "fortran_order": False,
                       "shape": (self.rows,) + self.row_shape}).encode("latin1")
        body_len = _NPY_HEADER_BYTES - 10
        header = header + b" " * (body_len - len(header) - 1) + b"\n"
        self._f.seek(0)
        self._f.write(b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + header)
        self._f.seek(0, os.SEEK_END)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype="<f4")
        assert rows.shape[1:] == self.row_shape
        self._f.write(rows.tobytes())
        self._f.flush()
        self.rows += rows.shape[0]
        self._write_header()
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class Progress:
    """A dependency-free progress line on stderr.

    Its rate is the summary's `images_per_s`: latents written / wall seconds since the loop
    started, compile time of the first batch included (one definition in both places). Its ETA
    leaves the first (compiling) batch out: files per second from the end of the first batch on
    (e4e_jax.outputs.progress), "ETA after compile" until a second batch is written."""

    def __init__(self, total: int, stream=sys.stderr, clock=time.perf_counter):
        self.total = total
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.clock = clock
        self.start = clock()
        self._last_line = -1.0
        self._rows_seen = 0
        self.after_compile = AfterCompileRate(clock)

    def line(self, done: int, rows: int) -> str:
        """The progress line after `done` files and `rows` latents written."""
        if rows > self._rows_seen:            # a batch was written: a timing point
            self._rows_seen = rows
            self.after_compile.mark(done)
        elapsed = self.clock() - self.start
        rate = rows / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * done / max(self.total, 1))
        # a finished line has nothing left to estimate: its elapsed time instead of an ETA
        tail = (f"done in {elapsed:.1f} s" if done >= self.total
                else self.after_compile.eta_text(self.total))
        return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} files, "
                f"{rows} latents, {rate:.2f} images/s incl. compile, {tail}")

    def update(self, done: int, rows: int, final: bool = False) -> None:
        line = self.line(done, rows)
        elapsed = self.clock() - self.start
        if self.tty:
            self.stream.write("\r" + line)
        elif elapsed - self._last_line >= 10 or final:
            self.stream.write(line + "\n")
            self._last_line = elapsed
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class MissingExtrasError(SystemExit):
    """--align without the face-alignment extras (exit code 1, as `python -m e4e_jax.align`)."""


def import_align():
    try:
        from e4e_jax.align import align_faces
    except ImportError as e:
        raise MissingExtrasError(f"error: --align needs the face-alignment extras ({e}). "
                                 f"Install them with `pip install .[align]` (from the e4e_jax "
                                 f"source folder) or run without --align on already aligned "
                                 f"images.")
    return align_faces


def image_name(row_name: str) -> str:
    """The image name of a files.txt row when it clashes with no other (see output_names)."""
    from e4e_jax.outputs.names import OutputNames
    return OutputNames().row(row_name)


def open_run(checkpoint: str, input_dir: str, output_dir: str, batch_size: int,
             align: bool, overwrite: bool, loader_kwargs: dict | None = None):
    """Checks the request and loads the model: (files, inv, batch_size, align_faces).

    The batch size is rounded up to a multiple of the local device count. Raises SystemExit
    with an "error: ..." message (no images, existing latents without --overwrite, --align
    without its extras) and ModelDirError for a bad checkpoint (a training workdir gets the
    shared "pass WORKDIR/export" hint). `loader_kwargs` (dtype / precision) go to load_encoder.
    """
    import jax

    from e4e_jax.nets.encoder import check_checkpoint, load_encoder
    check_checkpoint(checkpoint)
    files = prepared.list_inputs(input_dir)      # an image folder or a prepared dataset
    if not files:
        raise SystemExit(f"error: no image files ({', '.join(image_io.IMAGE_EXTENSIONS)}) "
                         f"under {input_dir!r}.")
    latents_path = fs.join(output_dir, "latents.npy")
    if fs.exists(latents_path) and not overwrite:
        raise SystemExit(f"error: {latents_path!r} exists; pass --overwrite to replace it.")
    align_faces = import_align() if align else None
    inv = load_encoder(checkpoint, **(loader_kwargs or {}))
    from e4e_jax.inversion.restyle import is_restyle
    if is_restyle(inv):
        raise SystemExit(f"error: {checkpoint} holds a ReStyle encoder "
                         f"({inv.encoder_config['encoder_type']}), which encodes iteratively: "
                         f"use `e4e-jax invert --method restyle --iterations N`.")
    n_dev = jax.local_device_count()
    batch_size = max(1, int(batch_size))
    batch_size = -(-batch_size // n_dev) * n_dev
    return files, inv, batch_size, align_faces


def side_by_side_grid(name: str, input8: np.ndarray, reconstruction8: np.ndarray,
                      min_cell: int = 128) -> np.ndarray:
    """OUT/side_by_side/<name>.png of one row: uint8 input (H, W, 3) | reconstruction
    (H', W', 3), captioned "input" / "reconstruction" under the title "<name>: input |
    reconstruction", small cells magnified by nearest neighbour to `min_cell` pixels like every
    other command's grids (e4e_jax.outputs.grids.labelled_grid). The smaller of the two (the
    input of a model whose face_pool is larger than its input size) is first magnified by the
    integer factor that brings it closest to the other's height, so both show at one scale.
    Returns uint8 (H'', W'', 3)."""
    h = max(input8.shape[0], reconstruction8.shape[0])
    cells = []
    for image in (input8, reconstruction8):
        k = max(1, h // image.shape[0])
        cells.append(np.repeat(np.repeat(image, k, axis=0), k, axis=1) if k > 1 else image)
    return grids.labelled_grid([[(cells[0], "input"), (cells[1], "reconstruction")]],
                               title=f"{name}: input | reconstruction", min_cell=min_cell)


class FolderOutputs:
    """The files of one run: OUT/latents.npy (streamed rows), files.txt, skipped.txt and, with
    save_images, OUT/reconstructions/ and OUT/side_by_side/ PNGs named by e4e_jax.outputs.names
    (unique, case-insensitively) with OUT/images.txt giving each row's PNG name (row k of
    files.txt <-> line k of images.txt). Close it in a `finally`."""

    def __init__(self, output_dir: str, shape: tuple[int, int], save_images: bool):
        os.makedirs(output_dir, exist_ok=True)
        self.output_dir, self.save_images = output_dir, save_images
        self.latents_path = os.path.join(output_dir, "latents.npy")
        self.writer = LatentWriter(self.latents_path, shape)
        self.names_f = open(os.path.join(output_dir, "files.txt"), "w")
        self.skipped_f = open(os.path.join(output_dir, "skipped.txt"), "w")
        self.skipped: list[tuple[str, str]] = []
        from e4e_jax.outputs.names import OutputNames
        self.image_names = OutputNames()
        self.images_f = (open(os.path.join(output_dir, "images.txt"), "w") if save_images
                         else None)

    def add(self, names: list[str], inputs: list[np.ndarray], w: np.ndarray, rec) -> None:
        """Appends the codes w (n, n_latent, S) and names; writes the PNGs of `rec` (n, H, W, 3)
        when saving images (rec None otherwise)."""
        self.writer.append(w)
        self.names_f.write("".join(name + "\n" for name in names))
        self.names_f.flush()
        if self.save_images:
            for name, inp, r in zip(names, inputs, rec):
                out_name = self.image_names.row(name)
                self.images_f.write(out_name + "\n")
                self.images_f.flush()
                r8 = image_io.to_uint8(r)
                image_io.save_png(r8, os.path.join(self.output_dir, "reconstructions", out_name))
                image_io.save_png(side_by_side_grid(name, image_io.to_uint8(inp), r8),
                                  os.path.join(self.output_dir, "side_by_side", out_name))

    def skip(self, rel: str, err: str) -> None:
        """Records an unreadable file in skipped.txt."""
        self.skipped.append((rel, err))
        self.skipped_f.write(f"{rel}\t{err}\n")
        self.skipped_f.flush()

    def close(self) -> None:
        """Closes latents.npy (its header then holds the row count) and the text files."""
        self.writer.close()
        self.names_f.close()
        self.skipped_f.close()
        if self.images_f is not None:
            self.images_f.close()


def encode_batch(inv, batch: Batch, save_images: bool):
    """(w (valid, n_latent, S), rec (valid, H, W, 3) or None, seconds) of one padded Batch:
    every batch has one shape, so the model compiles once."""
    m = batch.valid
    tb = time.perf_counter()
    rec = None
    if save_images:
        w, rec = inv.invert(batch.images)
        rec = np.asarray(rec[:m])
    else:
        w = inv.encode(batch.images)
    w = np.asarray(w[:m])
    return w, rec, time.perf_counter() - tb


def run_summary(files, files_done, out: FolderOutputs, seconds, first_batch_s, batch_size, n_dev,
             interrupted, inv, save_images) -> dict:
    rows = out.writer.rows
    return {
        "files": len(files), "files_processed": files_done, "latents": rows,
        "skipped": len(out.skipped), "seconds": round(seconds, 3),
        "images_per_s": round(rows / seconds, 3) if seconds > 0 else None,
        "first_batch_seconds_incl_compile": None if first_batch_s is None
        else round(first_batch_s, 3),
        "images_per_s_after_first_batch": round((rows - min(rows, batch_size))
                                                / (seconds - first_batch_s), 3)
        if first_batch_s is not None and rows > batch_size else None,
        "batch_size": batch_size, "devices": n_dev, "interrupted": interrupted,
        "compilations": inv.runtime.compilations,
        "latents_shape": [rows, inv.n_latent, inv.generator.style_dim],
    }


def load_rows(path: str, rel: str, size: tuple[int, int], align_faces) -> list[tuple[str, np.ndarray]]:
    """The model inputs of one file: one row, or one per face with --align."""
    img = image_io.read_rgb(path, name=rel)
    if align_faces is None:
        return [(rel, image_io.load_image(img, size))]
    try:
        faces = align_faces(img, max(size))
    except ImportError as e:
        raise MissingExtrasError(f"error: --align needs the face-alignment extras ({e}); "
                         f"`pip install .[align]`.")
    if not faces:
        raise image_io.ImageReadError("no face found")
    return [(rel if k == 0 else f"{rel}#face{k}", image_io.load_image(face, size))
            for k, face in enumerate(faces)]


def _iter_loaded(folder: str, files: list[str], size, align_faces, workers: int, prefetch: int
                 ) -> Iterator[tuple[str, list | None, str | None]]:
    """(relative path, rows or None, error or None) in file order, decoded in threads by the
    loader's read_in_order."""
    def job(rel):
        try:
            src = prepared.input_file(folder, rel)      # a path, or a prepared record
            return rel, load_rows(src, rel, size, align_faces), None
        except image_io.ImageReadError as e:
            return rel, None, e.named(rel)      # image_io's one wording, named as given
    return read_in_order(job, files, workers, prefetch)


def encode_folder(checkpoint: str, input_dir: str, output_dir: str, batch_size: int = 8,
                  save_images: bool = False, align: bool = False, overwrite: bool = False,
                  workers: int | None = None, log=sys.stderr,
                  loader_kwargs: dict | None = None) -> dict:
    """Runs the command; returns the summary (also written to OUT/summary.json).

    `open_run` (checks, model) -> files decoded in threads (`_iter_loaded`) -> the loader's
    fixed-size batches (`fixed_batches`) through `encode_batch` -> `FolderOutputs`. An
    interrupt keeps every row written so far (and re-raises KeyboardInterrupt after the
    summary, its args the summary line it printed).
    """
    import jax
    files, inv, batch_size, align_faces = open_run(checkpoint, input_dir, output_dir,
                                                   batch_size, align, overwrite,
                                                   loader_kwargs)
    n_dev = jax.local_device_count()
    print(f"encoding {len(files)} files from {input_dir} with {inv} on {n_dev} "
          f"{jax.devices()[0].platform} device(s), batch {batch_size}", file=log)
    # a bucket --output is written to a local staging folder and uploaded as it grows
    stage = fs.OutputFolder(output_dir)
    out = FolderOutputs(stage.local, (inv.n_latent, inv.generator.style_dim), save_images)
    progress = Progress(len(files), log)
    t0 = time.perf_counter()
    first_batch_s, files_done, interrupted = None, 0, False

    def rows():
        """(name, image) rows of the readable files; records skips and reports progress."""
        nonlocal files_done
        for rel, file_rows, err in _iter_loaded(input_dir, files, inv.input_size, align_faces,
                                                workers or min(4, os.cpu_count() or 1),
                                                prefetch=2 * batch_size):
            files_done += 1
            if err is not None:
                out.skip(rel, err)
                print(("\n" if progress.tty else "") + f"skipping {rel}: {err}", file=log)
            else:
                yield from file_rows
            # latents written so far: rows still waiting for their batch are not counted, so
            # the rate is the summary's (written latents per wall second, compile included)
            progress.update(files_done, out.writer.rows)

    try:
        for batch in fixed_batches(rows(), batch_size):
            w, rec, dt = encode_batch(inv, batch, save_images)
            first_batch_s = dt if first_batch_s is None else first_batch_s
            out.add(batch.names, batch.images[:batch.valid], w, rec)
            stage.sync()
        progress.update(files_done, out.writer.rows, final=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        out.close()
        stage.close()       # uploads what a bucket --output still lacks
    seconds = time.perf_counter() - t0
    summary = run_summary(files, files_done, out, seconds, first_batch_s, batch_size, n_dev,
                       interrupted, inv, save_images)
    fs.write_bytes(fs.join(output_dir, "summary.json"), json.dumps(summary, indent=2).encode())
    line = (f"{'interrupted: ' if interrupted else ''}encoded {out.writer.rows} latents from "
            f"{files_done - len(out.skipped)} of {len(files)} files in {seconds:.1f} s "
            f"({summary['images_per_s']} images/s incl. compile; first batch "
            f"{summary['first_batch_seconds_incl_compile']} s); skipped {len(out.skipped)}"
            f"{' (see skipped.txt)' if out.skipped else ''}; wrote {stage.path('latents.npy')} "
            f"{tuple(summary['latents_shape'])} and files.txt")
    print(line, file=log)
    if interrupted:
        raise KeyboardInterrupt(line)  # the line just printed: a CLI prints no other
    return summary
