"""The evaluation's outputs: OUT/report.md, the metrics.json entries and the per-checkpoint grids.

    write_report("eval/", {"export": entry}, argv, "synthetic: ...")   # -> eval/report.md
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from e4e_jax.data import image_io
from e4e_jax.evaluation.evaluators.base import METRIC_KEYS, METRICS
from e4e_jax.outputs.grids import labelled_grid


def format_metric(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(out: str, results: dict[str, dict], argv: Sequence[str] | None = None,
                 data_description: str = "", command: str = "python eval.py") -> str:
    """OUT/report.md: a table of every metric per checkpoint, the reasons for unavailable ones,
    and the grids (relative links). The run is recorded as `command` followed by `argv`."""
    names = list(results)
    lines = ["# e4e_jax evaluation", ""]
    if argv is not None:
        lines += ["```", " ".join([command, *argv]), "```", ""]
    if data_description:
        first = results[names[0]] if names else {}
        lines.append(f"- Data: {data_description}; {first.get('num_images')} images per "
                     f"checkpoint, compared at {first.get('image_size')} (H, W) in [-1, 1], "
                     f"reconstructions clipped, not rounded.")
    for nm in names:
        r = results[nm]
        lines.append(f"- `{nm}`: `{r.get('checkpoint')}` — {r.get('model')}; "
                     f"{r.get('seconds')} s")
    lines += ["", "## Metrics", "",
              "| metric | family | better | " + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    footnotes: list[str] = []
    extra_keys = sorted({k for r in results.values() for k in r
                         if k.startswith(("swd_", "fid_edit/")) and k not in METRIC_KEYS
                         and not k.endswith("_reason")})
    rows = [(k, fam, better, desc) for k, fam, better, desc in METRICS]
    rows += [(k, "editability" if "edit" in k else "perception", "lower",
              "per edit" if "edit" in k else "per pyramid level") for k in extra_keys]
    for key, family, better, desc in rows:
        cells = []
        for nm in names:
            v = results[nm].get(key)
            if v is None and f"{key}_reason" in results[nm]:
                reason = results[nm][f"{key}_reason"]
                if reason not in footnotes:
                    footnotes.append(reason)
                cells.append(f"n/a [{footnotes.index(reason) + 1}]")
            else:
                cells.append(format_metric(v))
        desc = desc.replace("|", "\\|")
        lines.append(f"| `{key}` ({desc}) | {family} | {better} | " + " | ".join(cells) + " |")
    if footnotes:
        lines += ["", "Unavailable metrics:", ""]
        lines += [f"{i + 1}. {r}" for i, r in enumerate(footnotes)]
    lines += ["", "Edits: " + "; ".join(f"`{nm}`: {', '.join(results[nm].get('edits') or [])}"
                                        f" (LEC: {results[nm].get('lec_edit')})" for nm in names)]
    for title, key in (("Inversions", "inversions"), ("Edits", "edits")):
        links = [(nm, results[nm].get("grids", {}).get(key)) for nm in names]
        links = [(nm, p) for nm, p in links if p]
        if not links:
            continue
        lines += ["", f"## {title}", ""]
        for nm, p in links:
            rel = os.path.relpath(p, out).replace(os.sep, "/")
            lines += [f"### `{nm}`", "", f"![{nm} {key}]({rel})", ""]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def json_entry(entry: dict, out: str) -> dict:
    e = dict(entry)
    if "grids" in e:
        e["grids"] = {k: os.path.relpath(v, out).replace(os.sep, "/")
                      for k, v in e["grids"].items()}
    return e


def write_grids(folder: str, rows: list[dict], edits) -> dict:
    """OUT/<name>/inversions.png (source | inversion) and, with edits, edits.png (source |
    inversion | each edit); returns {"inversions": path, "edits": path}."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    inv_rows = [[(r["source"], r["name"]), (r["inversion"], "inversion")] for r in rows]
    path = os.path.join(folder, "inversions.png")
    image_io.save_png(labelled_grid(inv_rows, title="source | inversion"), path)
    out["inversions"] = path
    if edits:
        edit_rows = [[(r["source"], r["name"]), (r["inversion"], "inversion")]
                     + [(im, p.spec.describe(p.spec.default_strength))
                        for im, p in zip(r["edits"], edits)] for r in rows]
        path = os.path.join(folder, "edits.png")
        image_io.save_png(labelled_grid(edit_rows, title="source | inversion | edits"), path)
        out["edits"] = path
    return out
