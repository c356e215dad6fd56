"""ImageNet at full size: what listing, scanning and `data check --quick` cost on 1,331,167 files.

    python benchmarks/coop_scale.py --root /tmp/imagenet-scale               # writes, measures, deletes
    python benchmarks/coop_scale.py --root /tmp/imagenet-scale --scale 0.1   # a tenth of it, to try
    python benchmarks/coop_scale.py --root /tmp/imagenet-scale --keep        # keep the tree for next time

Writes (unless --root already holds it) CoOp's ImageNet layout, `images/{train,val}/{wnid}/`, with
1,281,167 train and 50,000 val images spread evenly over the 1,000 classes. Every file is a hard link to
one of a few small real JPEGs: the cost measured is the number of files and directory entries, not
pixels or disk. Then it times, each step on its own:

  listing      coop.listing: one directory listing per class folder, no stat
  manifest     read_manifest with an empty manifest cache: every file stat-ed and its header read,
               the verdicts saved; then again from the cache (what every later run on the root pays)
  16-shot      draw_split on the cached manifest (16 shots per class, the test part) and its CSV
  quick check  `petl-bench data check --quick`: class names and counts, no image opened
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from petl_bench.cli import main as cli
from petl_bench.datamodules import read_manifest
from petl_bench.datamodules.cache import Cache
from petl_bench.datamodules.coop import expected_sizes, imagenet_classes, listing
from petl_bench.datamodules.splits import draw_split, split_csv
from petl_bench.datamodules.synth import render, style_for

SOURCES = 64  # distinct JPEGs the files link to: ext4 allows 65,000 links to one file


def write_tree(root: Path, scale: float = 1.0) -> int:
    """ImageNet's layout at its size (times `scale`), hard links to SOURCES JPEGs; returns the file count."""
    sources = []
    rng = random.Random(0)
    (root / "sources").mkdir(parents=True, exist_ok=True)
    for i in range(SOURCES):
        path = root / "sources" / f"{i}.jpg"
        render(i, style_for("imagenet"), rng).save(path, quality=90)
        sources.append(str(path))
    sizes = expected_sizes("imagenet").parts
    wnids = list(imagenet_classes())
    written = 0
    for folder, total in (("train", sizes["train"]), ("val", sizes["test"])):
        total = round(total * scale)
        for label, wnid in enumerate(wnids):
            class_folder = root / "images" / folder / wnid
            class_folder.mkdir(parents=True, exist_ok=True)
            n = total // len(wnids) + (label < total % len(wnids))
            for k in range(n):
                os.link(sources[(label + k) % SOURCES], class_folder / f"{wnid}_{k + 1}.JPEG")
            written += n
        print(f"  wrote images/{folder}: {total:,} files", flush=True)
    return written


class Timer:
    @contextlib.contextmanager
    def __call__(self, what: str):
        start, cpu = time.perf_counter(), time.process_time()
        yield
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # CPU seconds too: on a shared machine the wall time is mostly waiting for a core
        print(f"  {what:<44}{seconds:>8.1f} s wall {cpu:>7.1f} s CPU   (peak RSS {peak:,.0f} MB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the tree is (or goes)")
    parser.add_argument("--keep", action="store_true", help="keep the tree (default: delete it at the end)")
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the full size, to try the script")
    args = parser.parse_args()
    root = args.root
    time_it = Timer()
    if not (root / "images" / "val").is_dir():
        print(f"writing the tree to {root} ...", flush=True)
        with time_it("write the tree (not a cost users pay)"):
            print(f"  {write_tree(root, args.scale):,} files")
    print(f"measuring on {root} ({os.cpu_count()} cores):", flush=True)
    work = Path(tempfile.mkdtemp(prefix="imagenet-scale-"))  # the manifest cache
    try:
        with time_it("listing: one listing per class folder"):
            listed = listing("imagenet", root)
        print(f"    {len(listed.items):,} images")
        del listed
        cache = Cache.for_run(str(work / "cache"), work, 50.0)
        with time_it("manifest: read_manifest (no cache yet)"):
            manifest = read_manifest("imagenet", root, cache)
        print(f"    {len(manifest.records):,} records, {len(manifest.skipped)} skipped")
        del manifest
        with time_it("manifest: read_manifest (cached)"):
            manifest = read_manifest("imagenet", root, cache)
        with time_it("16-shot draw: draw_split and its CSV, seed 1"):
            split = draw_split(manifest, 16, 1)
            text = split_csv(split)
        sizes = f"{len(split.train):,} training, {len(split.val):,} validation, {len(split.test):,} test images"
        print(f"    {sizes}; CSV {len(text):,} bytes")
        del manifest, split
        out = io.StringIO()
        with time_it("quick check: petl-bench data check --quick"), contextlib.redirect_stdout(out):
            code = cli(["data", "check", "--quick", "--dataset", "imagenet", "--root", str(root)])
        assert code == 0
        print("    " + out.getvalue().splitlines()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            print(f"deleted {root}")


if __name__ == "__main__":
    main()
