"""The directions command's library: your own InterFaceGAN direction from codes and a CSV of
scores, and synthetic samples to score, callable without argv.

    summary = train_direction("s/synthetic/latents.npy", "s/synthetic/labels.csv", "bright",
                              "dirs/")                     # dirs/bright.npy + dirs/bright.json
    summary = sample_synthetic("s/", 200, checkpoint="runs/demo/export")
                  # s/synthetic/latents.npy, files.txt, images/*.png, labels.csv (to fill)

`train_direction`: codes (read_codes: .npy / .npz / .pt) of shape (N, w_dim), or W+ codes
(N, n_latent, w_dim) whose rows are equal (reduced to w; InterFaceGAN boundaries live in W), named
row by row by files.txt beside them (as `e4e-jax encode` writes it); a CSV with a header line,
then `name,score` rows (other columns are ignored; an empty score leaves the code unlabelled).
A CSV name matches a files.txt name exactly (after `\\` -> `/` and a leading `./` dropped), or
else by the path without its extension when that is unique on both sides (a score of
`reconstructions/a.png`-style `a.png` finds the code of `a.jpg`). The boundary is trained by
e4e_jax.editing.boundaries.train_boundary (the official InterFaceGAN one), optionally projected
off `conditions` (other directions, each scaled to unit norm first) by project_boundary, and
written as DIR/NAME.npy (1, w_dim) float32 (what `edit --edit interfacegan:DIR/NAME.npy` reads)
with DIR/NAME.json (accuracy, counts, the chosen samples, settings, inputs).

Errors: DirectionsError for bad arguments and input files (the command exits 2),
NothingUsableError when the inputs hold too little to train on (exit 1); FileNotFoundError,
ModelDirError pass through (exit 2).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence

import numpy as np

from e4e_jax.data.codes import CodesError, read_codes, split_key
from e4e_jax.editing.boundaries import (
    OFFICIAL_COMMIT,
    OFFICIAL_REPO,
    BoundaryError,
    project_boundary,
    train_boundary,
)

EQUAL_ROWS_ATOL = 1e-6          # W+ rows closer than this (absolute) count as one w code
DEFAULT_EDIT_STRENGTH = 3       # the strength the printed edit command uses
SYNTHETIC_DIR = "synthetic"
_ATTRIBUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class DirectionsError(ValueError):
    """A bad argument or input file (the message names it and the fix); exit code 2."""


class NothingUsableError(RuntimeError):
    """The inputs are readable but hold too little to train a boundary; exit code 1."""


# ---------------------------------------------------------------------- inputs

def check_attribute(name: str) -> str:
    """`name` when it can be a file stem (letters, digits, _ . + -), else DirectionsError."""
    if name.lower().endswith((".npy", ".json")):
        raise DirectionsError(f"--attribute {name!r}: give the name without an extension "
                              f"(--attribute {os.path.splitext(name)[0]}); the command writes "
                              f"NAME.npy and NAME.json.")
    if not _ATTRIBUTE.fullmatch(name):
        raise DirectionsError(f"--attribute {name!r}: use letters, digits and _ . + - only "
                              f"(it becomes the file name NAME.npy).")
    return name


def w_codes(codes: np.ndarray, what: str, names: Sequence[str] | None = None
            ) -> tuple[np.ndarray, str]:
    """(w codes (N, w_dim), "w" or "W+ with equal rows") of (N, w_dim) codes or of W+ codes
    (N, n_latent, w_dim) whose rows are equal (to EQUAL_ROWS_ATOL); other W+ codes are refused
    naming the largest row difference."""
    if codes.ndim == 2:
        return codes, "w"
    if codes.ndim != 3:
        raise DirectionsError(f"{what} holds an array of shape {codes.shape}; expected w codes "
                              f"(N, w_dim) or W+ codes (N, n_latent, w_dim) with equal rows.")
    diff = np.abs(codes - codes[:, :1]).max(axis=2)               # (N, n_latent)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[worst] > EQUAL_ROWS_ATOL:
        label = repr(names[worst[0]]) if names is not None else f"row {worst[0]}"
        raise DirectionsError(
            f"{what} holds W+ codes {codes.shape[1:]} whose rows differ (max row difference "
            f"{diff[worst]:.4g}, code {label}, W+ row {worst[1]} vs row 0). InterFaceGAN "
            f"boundaries live in W: give w codes (N, w_dim) such as the --synthetic samples, or "
            f"W+ codes with equal rows (the W projector's, `e4e-jax invert --method projector`)."
            f" e4e's own W+ codes cannot be used.")
    return codes[:, 0], "W+ with equal rows"


def normalize_name(name: str) -> str:
    """A row or label name compared by value: stripped, `\\` -> `/`, no leading `./`."""
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def read_names(files: str, count: int) -> list[str]:
    """The row names of files.txt (one per non-empty line); DirectionsError when their number
    differs from `count` or a name repeats."""
    if not os.path.isfile(files):
        raise FileNotFoundError(
            f"{files!r} does not exist: the labels are matched to the codes by the file names "
            f"listed there, one per row of the codes (as `e4e-jax encode` and `e4e-jax "
            f"directions --synthetic` write them); give --files FILE to name another list.")
    with open(files, encoding="utf-8") as f:
        names = [normalize_name(line) for line in f if line.strip()]
    if len(names) != count:
        raise DirectionsError(f"{files!r} lists {len(names)} names for {count} codes; it must "
                              f"name every row, in order.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DirectionsError(f"{files!r} names {name!r} twice (rows {seen[name]} and {i}); "
                                  f"the labels could not tell them apart.")
        seen[name] = i
    return names


def read_labels(path: str) -> list[tuple[int, str, float | None]]:
    """(line number, name, score or None for an empty score) of every data row of the CSV.

    The first non-empty line is the header. DirectionsError for a missing header, an empty
    name, a score that is not a finite number (naming the line)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--labels {path!r} does not exist.")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = None
        for fields in reader:
            if not any(x.strip() for x in fields):
                continue
            line = reader.line_num
            if header is None:
                header = fields
                if len(fields) < 2:
                    raise DirectionsError(f"{path}:{line}: expected a header of two columns "
                                          f"(name,score), got {','.join(fields)!r}.")
                if _number(fields[1]) is not None:
                    raise DirectionsError(
                        f"{path}:{line}: the first line must be a header (name,score), but "
                        f"{','.join(fields)!r} looks like a data row; add the header line.")
                continue
            name = normalize_name(fields[0])
            if not name:
                raise DirectionsError(f"{path}:{line}: the row has no file name.")
            text = fields[1].strip() if len(fields) > 1 else ""
            if not text:
                rows.append((line, name, None))
                continue
            score = _number(text)
            if score is None or not math.isfinite(score):
                raise DirectionsError(f"{path}:{line}: the score {text!r} of {name!r} is not a "
                                      f"finite number.")
            rows.append((line, name, score))
    if header is None:
        raise DirectionsError(f"--labels {path!r} is empty; expected a header line, then "
                              f"name,score rows.")
    return rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def match_labels(names: Sequence[str], labels: Sequence[tuple[int, str, float | None]],
                 labels_path: str, files_path: str) -> tuple[np.ndarray, list[str]]:
    """(scores (N,) float64, NaN where a code has no score; names of the unlabelled codes).

    DirectionsError naming the CSV names that match no code, and the codes scored twice."""
    exact = {n: i for i, n in enumerate(names)}
    by_stem: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_stem.setdefault(_stem(n), []).append(i)
    label_stems: dict[str, int] = {}
    for _, name, _ in labels:
        label_stems[_stem(name)] = label_stems.get(_stem(name), 0) + 1
    scores = np.full(len(names), np.nan)
    row_line: dict[int, int] = {}
    unknown = []
    for line, name, score in labels:
        row = exact.get(name)
        if row is None and len(by_stem.get(_stem(name), ())) == 1 and label_stems[_stem(name)] == 1:
            row = by_stem[_stem(name)][0]
        if row is None:
            unknown.append(f"{name!r} (line {line})")
            continue
        if row in row_line:
            raise DirectionsError(f"{labels_path}: lines {row_line[row]} and {line} both score "
                                  f"the code {names[row]!r}.")
        row_line[row] = line
        if score is not None:
            scores[row] = score
    if unknown:
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        examples = ", ".join(repr(n) for n in names[:3])
        raise DirectionsError(
            f"{len(unknown)} name(s) of {labels_path} match no code of {files_path}: {shown}. "
            f"The CSV names must be those of files.txt (e.g. {examples}), or the same paths "
            f"with another extension.")
    unlabelled = [names[i] for i in np.flatnonzero(np.isnan(scores))]
    return scores, unlabelled


def read_condition(path: str, dim: int) -> tuple[np.ndarray, float]:
    """(unit condition (1, dim) float32, its norm as read) of a direction file (.npy / .npz /
    .pt). W+ directions with equal rows are reduced to W; others are refused."""
    from e4e_jax.editing.files import load_interfacegan_direction
    try:
        d = load_interfacegan_direction(path)
    except (ValueError, CodesError) as e:
        raise DirectionsError(f"--condition: {e}") from None
    if d.ndim == 3:
        d, _ = w_codes(d, f"--condition {path!r}")
    if d.shape != (1, dim):
        raise DirectionsError(f"--condition {path!r} is a direction of shape {d.shape}; the "
                              f"codes are {dim}-d, so a condition must be (1, {dim}).")
    norm = float(np.linalg.norm(d))
    if norm == 0:
        raise DirectionsError(f"--condition {path!r} is the zero vector.")
    return (d / norm).astype(np.float32), norm


def check_output(output: str, attribute: str, overwrite: bool) -> tuple[str, str]:
    """(DIR/NAME.npy, DIR/NAME.json); DirectionsError when DIR is a file or either exists
    without `overwrite`."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise DirectionsError(f"--output {output!r} is a file; give a folder (it is created if "
                              f"missing).")
    npy = os.path.join(output, attribute + ".npy")
    js = os.path.join(output, attribute + ".json")
    found = [p for p in (npy, js) if os.path.exists(p)]
    if found and not overwrite:
        raise DirectionsError(f"{' and '.join(repr(p) for p in found)} already exist; pass "
                              f"--overwrite to replace them, or choose another --attribute or "
                              f"--output.")
    return npy, js


# ---------------------------------------------------------------------- training

def train_direction(latents: str, labels: str, attribute: str, output: str,
                    files: str | None = None, chosen: float = 0.02, split_ratio: float = 0.7,
                    seed: int = 0, invalid_value: float | None = None,
                    conditions: Sequence[str] = (), overwrite: bool = False,
                    log=None, command: str = "e4e-jax directions") -> dict:
    """Trains, projects and writes one direction; returns the content of DIR/NAME.json.

    chosen: InterFaceGAN's chosen_num_or_ratio (a fraction in (0, 1] or a count > 1 of codes
    per side); split_ratio in (0, 1): the training share of the chosen codes; seed: the
    split's shuffle (train_boundary's `seed`); invalid_value: scores equal to it are left out.
    `command` is only used in messages.
    """
    log = log or sys.stdout
    t0 = time.perf_counter()
    check_attribute(attribute)
    if not chosen > 0:
        raise DirectionsError(f"--chosen must be positive (a fraction in (0, 1] or a count), "
                              f"got {chosen}.")
    if not 0 < split_ratio < 1:
        raise DirectionsError(f"--split-ratio must lie strictly between 0 and 1 (the training "
                              f"share), got {split_ratio}.")
    npy_path, json_path = check_output(output, attribute, overwrite)

    file_path, _ = split_key(latents)
    if not os.path.isfile(file_path):
        raise FileNotFoundError(f"--latents {file_path!r} does not exist.")
    try:
        raw = read_codes(latents)
    except CodesError as e:
        raise DirectionsError(str(e)) from None
    except ValueError as e:
        raise DirectionsError(f"--latents {latents!r} is not a readable codes file: {e}") from e
    files = files or os.path.join(os.path.dirname(os.path.abspath(file_path)), "files.txt")
    names = read_names(files, len(raw))
    codes, space = w_codes(raw, f"--latents {latents!r}", names)
    dim = codes.shape[1]
    condition_arrays = [read_condition(c, dim) for c in conditions]

    label_rows = read_labels(labels)
    scores, unlabelled = match_labels(names, label_rows, labels, files)
    labelled = np.flatnonzero(~np.isnan(scores))
    print(f"read {len(codes)} codes ({space}, w_dim {dim}) from {latents}: {len(labelled)} "
          f"scored in {labels}", file=log)
    if unlabelled:
        print(f"warning: {len(unlabelled)} code(s) have no score and are left out: "
              f"{', '.join(unlabelled[:5])}{', ...' if len(unlabelled) > 5 else ''}",
              file=sys.stderr)
    x, s = codes[labelled], scores[labelled]
    kept = s != invalid_value if invalid_value is not None else np.ones(len(s), bool)
    if kept.sum() and np.ptp(s[kept]) == 0:
        raise NothingUsableError(f"every usable score is {s[kept][0]:g}: there is nothing to "
                                 f"separate. Score the images with a classifier whose output "
                                 f"varies.")
    try:
        result = train_boundary(x, s[:, None], chosen, split_ratio, invalid_value, seed=seed)
    except BoundaryError as e:
        raise NothingUsableError(f"{e} Score more codes (`{command} --synthetic N` samples "
                                 f"more) or raise --chosen.") from None
    if result.val_num == 0:
        raise NothingUsableError(
            f"the split leaves no validation sample ({result.chosen_num} chosen per side, "
            f"{result.train_num} for training): score more codes or raise --chosen.")
    weakest_positive = s[result.positive_index[-1]]
    strongest_negative = s[result.negative_index[-1]]
    if weakest_positive <= strongest_negative:
        print(f"warning: the chosen positives and negatives share scores (lowest positive "
              f"{weakest_positive:g}, highest negative {strongest_negative:g}); the labels of "
              f"those codes are arbitrary. Lower --chosen.", file=sys.stderr)

    normal = result.normal
    conditional = None
    if condition_arrays:
        try:
            projected = project_boundary(normal, *[c for c, _ in condition_arrays])
        except np.linalg.LinAlgError as e:
            raise DirectionsError(f"the --condition directions are linearly dependent ({e}); "
                                  f"drop the redundant ones.") from None
        kept_share = float((normal @ projected.T)[0, 0]) if np.all(np.isfinite(projected)) else 0.0
        if not kept_share > 1e-3:
            raise NothingUsableError("the new boundary lies within the span of the --condition "
                                     "directions: nothing is left after projecting them out.")
        conditional = {"cos_to_unconditioned": kept_share,
                       "unconditioned_cos_to_conditions": [float((normal @ c.T)[0, 0])
                                                           for c, _ in condition_arrays]}
        normal = projected.astype(np.float32)

    os.makedirs(output, exist_ok=True)
    np.save(npy_path, normal)
    summary = _summary(attribute, npy_path, normal, result, names, scores, labelled, unlabelled,
                       space, raw.shape, latents, files, labels, chosen, split_ratio, seed,
                       invalid_value, conditions, condition_arrays, conditional,
                       time.perf_counter() - t0)
    with open(json_path, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    acc = summary["validation_accuracy"]
    print(f"chosen {result.chosen_num} per side ({result.train_num} train, {result.val_num} "
          f"validation); validation accuracy {result.val_correct}/{result.val_total} = "
          f"{acc:.4f}" + (f"; remaining {result.remaining_correct}/{result.remaining_num} = "
                          f"{result.remaining_accuracy:.4f}" if result.remaining_num else ""),
          file=log)
    if conditional:
        print(f"projected off {len(conditions)} condition(s): cosine with the unconditioned "
              f"direction {conditional['cos_to_unconditioned']:.4f}", file=log)
    print(f"wrote {npy_path} {normal.shape} and {json_path}\nedit with: e4e-jax edit "
          f"--checkpoint CHECKPOINT --synthetic 4 --edit {summary['edit_spec']} --output EDITS/",
          file=log)
    return summary


def _summary(attribute, npy_path, normal, result, names, scores, labelled, unlabelled, space,
             raw_shape, latents, files, labels, chosen, split_ratio, seed, invalid_value,
             conditions, condition_arrays, conditional, seconds) -> dict:
    def chosen_rows(index, train):
        rows = labelled[index]               # train_boundary's rows -> rows of the codes file
        return [{"name": names[r], "score": float(scores[r]),
                 "split": "train" if t else "validation"} for r, t in zip(rows, train)]

    counts = result.counts()
    counts.update(codes=len(names), scored=len(labelled), unlabelled=len(unlabelled),
                  invalid=int(result.num_samples - result.num_valid))
    return {
        "attribute": attribute,
        "direction": os.path.abspath(npy_path),
        "shape": list(normal.shape),
        "space": "W",
        "edit_spec": f"interfacegan:{npy_path}:{DEFAULT_EDIT_STRENGTH}",
        "validation_accuracy": result.val_accuracy,
        "remaining_accuracy": result.remaining_accuracy,
        "counts": counts,
        "chosen": {"positive": chosen_rows(result.positive_index, result.positive_train),
                   "negative": chosen_rows(result.negative_index, result.negative_train)},
        "unlabelled": unlabelled[:100],
        "conditional": conditional,
        "settings": {"chosen_num_or_ratio": chosen, "split_ratio": split_ratio, "seed": seed,
                     "invalid_value": invalid_value,
                     "conditions": [{"path": os.path.abspath(p), "norm": n}
                                    for p, (_, n) in zip(conditions, condition_arrays)]},
        "inputs": {"latents": os.path.abspath(split_key(latents)[0]),
                   "latents_shape": list(raw_shape), "codes": space,
                   "files": os.path.abspath(files), "labels": os.path.abspath(labels)},
        "method": {"repo": OFFICIAL_REPO, "commit": OFFICIAL_COMMIT,
                   "function": "utils/manipulator.py train_boundary"
                               + (" + project_boundary" if conditional else ""),
                   "svm": "sklearn.svm.SVC(kernel='linear')"},
        "seconds": round(seconds, 3),
    }


# ---------------------------------------------------------------------- synthetic samples

def synthetic_names(n: int) -> list[str]:
    width = max(5, len(str(n - 1)))
    return [f"sample_{i:0{width}d}.png" for i in range(n)]


def sample_synthetic(output: str, n: int, generator: str | None = None,
                     checkpoint: str | None = None, seed: int = 0, batch_size: int = 16,
                     overwrite: bool = False, loader_kwargs: dict | None = None, log=None,
                     command: str = "e4e-jax directions") -> dict:
    """Samples `n` codes w = mapping(z) of a generator and writes, under OUTPUT/synthetic/:
    latents.npy (n, w_dim) float32, files.txt (one image name per row), images/<name> (the PNG
    of each code, G(w) with the generator's stored noise), labels.csv (a `name,score` header
    and one row per image with an empty score, for a classifier to fill) and synthetic.json.

    z is the synthetic domain's draw (e4e_jax.data.synthetic.synthetic_z of key(seed)), so the
    set is fixed by (seed, n). The generator is the directory `generator`, or the generator of
    the encoder directory `checkpoint`. DirectionsError for bad arguments (existing files
    without `overwrite`: labels.csv may already hold your scores), ModelDirError /
    FileNotFoundError for bad directories.
    """
    log = log or sys.stdout
    t0 = time.perf_counter()
    if n < 1:
        raise DirectionsError(f"--synthetic must be at least 1, got {n}.")
    if batch_size < 1:
        raise DirectionsError(f"--batch-size must be at least 1, got {batch_size}.")
    if (generator is None) == (checkpoint is None):
        raise DirectionsError("--synthetic needs the generator to sample: give --generator DIR "
                              "or --checkpoint DIR (an encoder directory, e.g. runs/demo/export),"
                              " not both.")
    if os.path.exists(output) and not os.path.isdir(output):
        raise DirectionsError(f"--output {output!r} is a file; give a folder.")
    folder = os.path.join(output, SYNTHETIC_DIR)
    found = [f for f in ("latents.npy", "files.txt", "labels.csv")
             if os.path.exists(os.path.join(folder, f))]
    if found and not overwrite:
        raise DirectionsError(f"{folder!r} already holds {', '.join(found)} of an earlier "
                              f"--synthetic run (labels.csv may hold your scores); pass "
                              f"--overwrite to replace them, or choose another --output.")
    import jax

    from e4e_jax.data.image_io import save_png, to_uint8
    from e4e_jax.data.loader import pad_batch
    from e4e_jax.data.synthetic import synthetic_z
    from e4e_jax.nets.generator import load_generator
    source = generator or checkpoint
    if generator is not None and not os.path.isdir(generator):
        raise FileNotFoundError(f"--generator {generator!r} is not a directory.")
    if checkpoint is not None:
        from e4e_jax.nets.encoder import check_checkpoint
        check_checkpoint(checkpoint)
    g = load_generator(source, **(loader_kwargs or {}))
    if g.c_dim:
        raise DirectionsError(f"{source!r} is a class-conditional generator (c_dim={g.c_dim}); "
                              f"--synthetic samples unconditional generators only.")
    names = synthetic_names(n)
    z, _ = synthetic_z(g, jax.random.key(seed), n)
    z = np.asarray(z)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    batch_size = min(batch_size, n)
    codes = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        zb = pad_batch(z[start:start + m], batch_size)
        w = g.mapping(zb)
        images = np.asarray(g.synthesis(g.broadcast(w), noise="const"))[:m]
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        for name, image in zip(names[start:start + m], to_uint8(images)):
            save_png(image, os.path.join(folder, "images", name))
        codes.append(np.asarray(w, np.float32)[:m])
    latents = os.path.join(folder, "latents.npy")
    np.save(latents, np.concatenate(codes))
    with open(os.path.join(folder, "files.txt"), "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in names))
    labels = os.path.join(folder, "labels.csv")
    with open(labels, "w", encoding="utf-8", newline="") as f:
        f.write("name,score\n" + "".join(f"{name},\n" for name in names))
    summary = {"samples": n, "seed": seed, "noise": "const", "generator": os.path.abspath(source),
               "from": "checkpoint" if checkpoint else "generator",
               "latents": os.path.abspath(latents), "w_dim": g.style_dim,
               "images": os.path.abspath(os.path.join(folder, "images")),
               "labels_template": os.path.abspath(labels),
               "seconds": round(time.perf_counter() - t0, 3)}
    with open(os.path.join(folder, "synthetic.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    summary["next"] = (f"{command} --latents {latents} --labels {labels} --attribute NAME "
                       f"--output {output}")
    print(f"wrote {n} samples of {g!r} to {folder}: latents.npy ({n}, {g.style_dim}), "
          f"files.txt, images/*.png and labels.csv (empty scores)\n"
          f"next: fill the score column of {labels} with a classifier's score of each image in "
          f"{os.path.join(folder, 'images')} (docs/directions.md shows one way), then run\n"
          f"  {summary['next']}", file=log)
    return summary
