"""Images/s per host core: an image folder of 1024x1024 PNGs read at 256 vs prepared shards at 256.

    python benchmarks/data.py                      # 48 synthetic 1024 PNGs, ~1 minute on 2 cores
    python benchmarks/data.py --images 96 --size 256 --json data.json

Makes `--images` random smooth 1024x1024 RGB PNGs (low-frequency colour fields plus fine noise,
tuned so a file is about the size of an FFHQ PNG: 89 GB / 70,000 = 1.3 MB) in a temporary
folder, then times, each in ONE thread (so the rate is per core):
  (a) folder   FolderSource.load(i, (256, 256)): what training reads per image today (PNG decode
               at 1024 + the official bilinear resize);
  (b) prepared `e4e-jax prepare` of the same folder (raw uint8 records, the default), then
               PreparedSource.load(i, (256, 256)) in a random order (training's access pattern):
               ArrayRecord random access + a copy;
  (b') png     the same with `--encoding png` (lossless PNG records: fewer bytes, a PNG decode
               at 256 per image), the format not chosen;
and the prepare command itself (files/s with --workers 1, and with every core). Every pixel of
(b) is checked against (a). Prints the device, thread count and load average with the numbers.

With --bucket emulator (a GCS emulator on 127.0.0.1, tests/support/gcs.py) or --bucket
gs://BUCKET/PREFIX (a real bucket you can write to), also:
  (a-gs) folder   FolderSource over the 1024 PNGs uploaded to the bucket;
  (b-gs) prepared PreparedSource over the uploaded shards: the first pass (each shard fetched
                  once into $E4E_JAX_CACHE) and a later pass (read from that cache).
An emulator's rates measure this machine's loopback and the emulator, not Cloud Storage: they
show what the bucket path costs on top of the local read, not a real bucket's throughput.

A train step's consumption is not measured here (it needs the full networks: see
benchmarks/train_step.py); cores per accelerator = the step's images/s / (b)'s images/s per core.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from e4e_jax.data import prepared  # noqa: E402
from e4e_jax.data.sources import FolderSource  # noqa: E402


def smooth_image(rng: np.random.Generator, res: int = 1024) -> np.ndarray:
    """(res, res, 3) uint8: a bicubic-upsampled 16x16 colour field, a finer 128x128 one and
    per-pixel noise (sigma 2), which PNG compresses about as well as a face photo."""
    coarse = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize(
        (res, res), Image.BICUBIC)
    fine = Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).resize(
        (res, res), Image.BICUBIC)
    x = 0.8 * np.asarray(coarse, np.float32) + 0.2 * np.asarray(fine, np.float32)
    x += rng.normal(0, 2.0, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def timed(fn, items) -> tuple[float, list]:
    t = time.perf_counter()
    out = [fn(i) for i in items]
    return time.perf_counter() - t, out


def prepared_rate(out_dir: str, size, order, ref: list, names: list[str]) -> tuple[float, float]:
    """(images/s in one thread, record bytes per image) of a prepared folder, its pixels
    checked against the folder's (`ref`, in the order of `names`)."""
    source = prepared.PreparedSource(out_dir)
    index = {name: i for i, name in enumerate(names)}
    for i in range(len(source)):
        np.testing.assert_array_equal(source.load(i, size), ref[index[source.name(i)]])
    nbytes = np.mean([len(source.record(i)) for i in range(len(source))])
    seconds, _ = timed(lambda i: source.load(int(i), size), order)
    return len(order) / seconds, nbytes


def bucket_rates(bucket: str, src_dir: str, out_dir: str, size, order, ref: list,
                 names: list[str], tmp: str) -> list[tuple[str, float, float]]:
    """Rows (name, images/s in one thread, bytes per image) read through the bucket path."""
    from e4e_jax.core import fs
    emulator = None
    if bucket == "emulator":
        from tests.support.gcs import GcsEmulator
        emulator = GcsEmulator("bench").start()
        root = emulator.url("data")
        where = "emulator"
    else:
        root, where = bucket.rstrip("/"), bucket
    os.environ["E4E_JAX_CACHE"] = os.path.join(tmp, "cache")    # a cold cache for pass one
    try:
        for folder_name, local in (("images", src_dir), ("prepared", out_dir)):
            for rel in fs.list_files(local):
                fs.upload(os.path.join(local, rel), fs.join(root, folder_name, rel))
        remote_folder = FolderSource(fs.join(root, "images"))
        seconds, _ = timed(lambda i: remote_folder.load(i, size), range(len(remote_folder)))
        folder_rate = len(remote_folder) / seconds
        t = time.perf_counter()
        source = prepared.PreparedSource(fs.join(root, "prepared"))
        index = {name: i for i, name in enumerate(names)}
        for i in range(len(source)):
            np.testing.assert_array_equal(source.load(i, size), ref[index[source.name(i)]])
        first = len(source) / (time.perf_counter() - t)
        seconds, _ = timed(lambda i: source.load(int(i), size), order)
        later = len(order) / seconds
    finally:
        if emulator is not None:
            emulator.stop()
    png_bytes = np.mean([os.path.getsize(os.path.join(src_dir, f)) for f in names])
    raw_bytes = size[0] * size[1] * 3
    return [(f"(a-gs) folder through the bucket ({where})", folder_rate, png_bytes),
            (f"(b-gs) prepared through the bucket ({where}), first pass: shards fetched",
             first, raw_bytes),
            (f"(b-gs) prepared through the bucket ({where}), later passes: cached shards",
             later, raw_bytes)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=48, help="1024 PNGs to make (default 48)")
    ap.add_argument("--resolution", type=int, default=1024, help="their size (default 1024)")
    ap.add_argument("--size", type=int, default=256, help="training size (default 256)")
    ap.add_argument("--repeats", type=int, default=4,
                    help="passes over the prepared set (it is fast; default 4)")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--bucket", default=None,
                    help="also read through a bucket: 'emulator' (a local GCS emulator) or "
                         "gs://BUCKET/PREFIX (writes there)")
    args = ap.parse_args(argv)
    size = (args.size, args.size)
    cores = os.cpu_count() or 1
    print(f"host: {platform.processor() or platform.machine()}, {cores} CPU core(s), load "
          f"average {os.getloadavg()[0]:.2f}; one thread per measurement (images/s per core)")
    tmp = tempfile.mkdtemp(prefix="e4e_jax_bench_data_")
    try:
        src_dir = os.path.join(tmp, "images")
        os.makedirs(src_dir)
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for i in range(args.images):
            Image.fromarray(smooth_image(rng, args.resolution)).save(
                os.path.join(src_dir, f"{i:05d}.png"))
        mean_png = np.mean([os.path.getsize(os.path.join(src_dir, f))
                            for f in os.listdir(src_dir)])
        print(f"made {args.images} {args.resolution}x{args.resolution} PNGs "
              f"(mean {mean_png / 1e6:.2f} MB) in {time.perf_counter() - t:.1f} s")

        folder = FolderSource(src_dir)
        folder.load(0, size)                                            # warm the caches
        seconds, ref = timed(lambda i: folder.load(i, size), range(len(folder)))
        folder_rate = len(folder) / seconds

        out_dir = os.path.join(tmp, "prepared")
        t = time.perf_counter()
        prepared.prepare(src_dir, out_dir, size, workers=1)
        prepare_rate_1 = args.images / (time.perf_counter() - t)
        t = time.perf_counter()
        prepared.prepare(src_dir, out_dir + "_all", size, workers=cores)
        prepare_rate_all = args.images / (time.perf_counter() - t)
        prepared.prepare(src_dir, out_dir + "_png", size, workers=1, encoding="png")
        order = np.concatenate([np.random.default_rng(r).permutation(args.images)
                                for r in range(args.repeats)])
        raw, raw_bytes = prepared_rate(out_dir, size, order, ref, folder.files)
        png, png_bytes = prepared_rate(out_dir + "_png", size, order, ref, folder.files)
        bucket_rows = (bucket_rates(args.bucket, src_dir, out_dir, size, order, ref,
                                    folder.files, tmp) if args.bucket else [])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [("(a) folder: 1024 PNG -> 256 (FolderSource.load)", folder_rate, mean_png),
            ("(b) prepared shards at 256, raw uint8 records (default)", raw, raw_bytes),
            ("(b') prepared shards at 256, PNG records (--encoding png)", png, png_bytes)]
    rows += bucket_rows
    print("\n| reader | images/s per core | bytes / image | vs folder |\n|---|---|---|---|")
    for name, rate, nbytes in rows:
        print(f"| {name} | {rate:.1f} | {nbytes / 1e3:.0f} kB | {rate / folder_rate:.1f}x |")
    print(f"\nprepare: {prepare_rate_1:.1f} files/s with --workers 1, {prepare_rate_all:.1f} "
          f"files/s with --workers {cores}")
    result = {"cores": cores, "images": args.images, "resolution": args.resolution,
              "size": args.size, "folder_images_per_s": folder_rate,
              "prepared_raw_images_per_s": raw, "prepared_png_images_per_s": png,
              "source_png_bytes": mean_png, "record_png_bytes": png_bytes,
              "record_raw_bytes": raw_bytes, "prepare_files_per_s_1_worker": prepare_rate_1,
              f"prepare_files_per_s_{cores}_workers": prepare_rate_all,
              "bucket_rows": [{"reader": n, "images_per_s": r} for n, r, _ in bucket_rows]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    for name, rate in (("raw", raw), ("png", png)):
        print(f"goal (prepared >= 10x the folder per core), {name} records: "
              f"{'met' if rate / folder_rate >= 10 else 'NOT met'} ({rate / folder_rate:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
