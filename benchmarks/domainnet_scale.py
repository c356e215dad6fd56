"""DomainNet at full size: what reading, checking and splitting 586,575 images costs.

    python benchmarks/domainnet_scale.py --root /tmp/domainnet-scale            # writes, measures, deletes
    python benchmarks/domainnet_scale.py --root /tmp/domainnet-scale --keep     # keep the tree for next time

Writes (unless --root already holds it) 345 classes x 6 domains in the official layout, with the
official per-domain counts (clipart 48,129 ... sketch 69,128) spread evenly over the classes (no source
gives per-class counts) and the official `{domain}_{train,test}.txt` lists, 70/30 per class. Every image
is the same tiny JPEG: the cost measured is the number of files, not pixels. Needs about 2.5 GB of disk
(one block per file). Then it times, each step on its own:

  scan        the reader's own work: lists parsed, one directory listing per class folder
  manifest    read_manifest: the scan plus records' per-image checks, first with an empty manifest
              cache, then again from the cache (what every later run on the root pays)
  counts      the expected-count comparison `data check` prints and a run warns with
  split       the 16-shot draw and its CSV
  first batch a zero-shot run (tiny CLIP) up to its first test batch: backbone, data module (manifest
              from the cache, counts, split, CSV), method; twice
  data check  `petl-bench data check` end to end, decoding every image (--no-data-check to skip)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from petl_bench.cli import main as cli
from petl_bench.datamodules import draw_split, read_manifest
from petl_bench.datamodules.cache import Cache
from petl_bench.datamodules.counts import compare_counts, expected_counts
from petl_bench.datamodules.datasets import SPECS, domainnet_lists, listed_images, present_images
from petl_bench.datamodules.splits import split_csv
from petl_bench.runargs import build_run_config


def write_tree(root: Path, scale: float = 1.0) -> int:
    """The official layout at the official size (times `scale`); returns the number of images."""
    expected = expected_counts("domainnet", Path("/nonexistent"))  # the package's per-domain counts
    classes = SPECS["domainnet"].classes
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 80, 40)).save(buffer, "JPEG", quality=75)
    jpeg = buffer.getvalue()
    written = 0
    for domain, total in expected.domains.items():
        total = round(total * scale)
        train, test = [], []
        for label, cls in enumerate(classes):
            folder = root / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            n = total // len(classes) + (label < total % len(classes))
            cut = round(n * 0.7)
            for k in range(n):
                name = f"{domain}_{label + 1:03d}_{k + 1:06d}.jpg"
                with open(folder / name, "wb") as f:
                    f.write(jpeg)
                (train if k < cut else test).append(f"{domain}/{cls}/{name} {label}\n")
            written += n
        (root / f"{domain}_train.txt").write_text("".join(train))
        (root / f"{domain}_test.txt").write_text("".join(test))
        print(f"  wrote {domain}: {total:,} images", flush=True)
    return written


class Timer:
    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, what: str):
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.rows.append((what, seconds))
        print(f"  {what:<44}{seconds:>9.1f} s   (peak RSS {peak_rss_mb():,.0f} MB)", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_batch(root: Path, out: Path, cache: Path, shots: int) -> None:
    """A zero-shot run on the tiny CLIP up to its first test batch, as `petl-bench run` builds it
    (backbone, manifest through the cache, counts, split and CSV, method), the batch decoded from
    the files (filling the test-image cache is the test's own cost)."""
    from petl_bench.run import build

    cfg = build_run_config(
        "zeroshot",
        "domainnet",
        str(root),
        f"{shots}shot",
        model="tiny",
        out=str(out),
        overrides=["data.num_workers=0", f"data.cache_dir={cache}"],
    )
    _, data, _ = build(cfg)
    domain = data.tasks[0].name
    loader = data.test_sets(cached=False).loader(domain, [r for r in data.test_records if r.domain == domain])
    images, _ = next(iter(loader))
    assert len(images) == cfg.data.eval_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the tree is (or goes)")
    parser.add_argument("--keep", action="store_true", help="keep the tree (default: delete it at the end)")
    parser.add_argument("--no-data-check", action="store_true", help="skip the end-to-end data check")
    parser.add_argument("--shots", type=int, default=16, help="training images per class and domain")
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the full size, to try the script")
    args = parser.parse_args()
    root = args.root
    time_it = Timer()
    if not (root / "sketch_test.txt").is_file():
        print(f"writing the tree to {root} ...", flush=True)
        with time_it("write the tree (not a cost users pay)"):
            print(f"  {write_tree(root, args.scale):,} images")
    print(f"measuring on {root} ({os.cpu_count()} cores):", flush=True)
    work = Path(tempfile.mkdtemp(prefix="domainnet-scale-"))  # caches and run folders
    try:
        with time_it("scan: lists + one listing per class folder"):
            images = listed_images(domainnet_lists(root), SPECS["domainnet"].classes)
            present = present_images(root, images)
        print(f"    {len(images):,} listed, {len(present):,} on disk")
        cache = Cache.for_run(str(work / "cache"), work, 50.0)
        with time_it("manifest: read_manifest (no cache yet)"):
            manifest = read_manifest("domainnet", root, cache)
        with time_it("manifest: read_manifest (cached)"):
            read_manifest("domainnet", root, cache)
        with time_it("counts: expected-count comparison"):
            check = compare_counts("domainnet", manifest)
        print(f"    {check.summary()}")
        with time_it(f"split: {args.shots}-shot draw"):
            split = draw_split(manifest, args.shots, seed=0)
        with time_it("split: CSV text"):
            text = split_csv(split)
        print(f"    {len(split.train):,} train, {len(split.test):,} test, CSV {len(text) / 2**20:.1f} MiB")
        del manifest, split, text
        with time_it("first batch: zero-shot run (manifest cached)"):
            first_batch(root, work / "a", work / "cache", args.shots)
        with time_it("first batch: zero-shot run (again)"):
            first_batch(root, work / "b", work / "cache", args.shots)
        if not args.no_data_check:
            with time_it("data check: petl-bench data check"), contextlib.redirect_stdout(io.StringIO()):
                code = cli(["data", "check", "--no-progress", "--dataset", "domainnet", "--root", str(root)])
            assert code == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            print(f"deleted {root}")


if __name__ == "__main__":
    main()
