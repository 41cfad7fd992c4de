"""Collects the measurements of benchmarks/device_check.sh into device_report.{json,md}.

    python benchmarks/device_report.py DIR [--smoke 0|1] [--batches 8 32]

Reads DIR/parity.status, DIR/invert_<dtype>.json and DIR/train_<dtype>_<batch>.json; a missing
file is a failed measurement (its log is named in the report). Exit status 0 when the parity
tests passed and every measurement is there, else 1.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

DTYPES = ("float32", "bfloat16")
GIB = 2 ** 30


def _load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _gib(v):
    return "n/a" if v is None else f"{v / GIB:.2f}"


def _num(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


def collect(out: str, batches: list[int], smoke: bool) -> dict:
    status = open(os.path.join(out, "parity.status")).read().split() \
        if os.path.exists(os.path.join(out, "parity.status")) else ["1", "0"]
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "smoke": smoke,
              "parity": {"passed": status[0] == "0", "exit_status": int(status[0]),
                         "seconds": int(status[1]), "log": "parity.log",
                         "matmul_precision": "highest"},
              "invert": {}, "train_step": {}, "missing": []}
    def take(name: str, section: str, key: str) -> None:
        got = _load(os.path.join(out, f"{name}.json"))
        if got is None:
            report["missing"].append(f"{name}.log")
        else:
            report.setdefault("device", got.get("device"))
            report[section][key] = got

    for dtype in DTYPES:
        take(f"invert_{dtype}", "invert", dtype)
        for b in batches:
            take(f"train_{dtype}_{b}", "train_step", f"{dtype}_{b}")
    report["ok"] = report["parity"]["passed"] and not report["missing"]
    return report


def markdown(r: dict) -> str:
    lines = [f"# Device report ({'smoke, tiny sizes' if r['smoke'] else '1024 generator, official widths'})",
             "", f"- device: {r.get('device', 'unknown')}", f"- date: {r['date']}",
             f"- parity tests at precision highest: "
             f"{'passed' if r['parity']['passed'] else 'FAILED'} ({r['parity']['seconds']} s, "
             f"parity.log)", ""]
    lines += ["## Inversion (encode + generator + face_pool)", "",
              "| dtype | batch | compile s | step s | images/s | XLA total GiB |",
              "|---|---|---|---|---|---|"]
    for dtype, inv in r["invert"].items():
        for c in inv.get("cases", []):
            xb = (c.get("xla_bytes") or {}).get("total")
            lines.append(f"| {dtype} | {c['batch']} | {_num(c['compile_s'], '{:.1f}')} | "
                         f"{_num(c['step_s'], '{:.3f}')} | {_num(c['images_per_s'])} | "
                         f"{_gib(xb)} |")
    lines += ["", "## Training step (all losses, discriminator with R1, Ranger)", "",
              "| dtype | batch | remat | compile s | step s | images/s | XLA total GiB | "
              "peak device GiB |", "|---|---|---|---|---|---|---|---|"]
    for key, t in r["train_step"].items():
        xb = (t.get("xla_bytes") or {}).get("total")
        lines.append(f"| {t['dtype']} | {t['batch']} | {t['remat']} | "
                     f"{_num(t['compile_s'], '{:.1f}')} | {_num(t['step_s'], '{:.3f}')} | "
                     f"{_num(t['images_per_s'])} | {_gib(xb)} | "
                     f"{_gib(t.get('peak_device_bytes'))} |")
    if r["missing"]:
        lines += ["", "## Failed measurements", ""] + [f"- see {m}" for m in r["missing"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--smoke", type=int, default=0)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    args = p.parse_args(argv)
    r = collect(args.out, args.batches, bool(args.smoke))
    for name, text in (("device_report.json", json.dumps(r, indent=1)),
                       ("device_report.md", markdown(r))):
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            print(f"{path} exists; not overwritten", file=sys.stderr)
            return 1
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")
    print(markdown(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
