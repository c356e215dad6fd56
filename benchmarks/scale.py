"""The data path at the datasets' real size: a cold and a warm zero-shot run, phase by phase.

    python benchmarks/scale.py                                  # generates both trees in --work
    python benchmarks/scale.py --officehome ~/data/OfficeHome --minidomainnet ~/data/domainnet
    python benchmarks/scale.py --skip minidomainnet --keep      # Office-Home only, keep the tree

Generates (or takes) an Office-Home-sized root (15,588 JPEGs: 4 domains x 65 classes, the real
per-domain counts) and a MiniDomainNet-sized one (140,000 JPEGs: 4 domains x 126 classes, with
splits_mini lists), then runs `petl-bench run --method zeroshot --model tiny` on each as a fresh
process: cold (empty cache), warm (the same again), and on Office-Home also with the caches off.
Prints a phase table (imports, manifest, split, the rest of the set-up, train, test, record), the
time to the first test batch, and the cached/uncached evaluation ratio. Targets: the warm
Office-Home run takes at most a third of the cold one's wall time; the warm MiniDomainNet run
reaches its first test batch within 15 s. Generated trees are deleted afterwards unless --keep.
On a machine with a GPU it ends with `benchmarks/grid_time.py table1 table2`: each method's training
and test images/s with ViT-B/16, and the estimated wall time of `make table1` and `make table2`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

OFFICEHOME_COUNTS = {"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357}
MINI_DOMAINS = ["clipart", "painting", "real", "sketch"]
MINI_PER_DOMAIN = 35_000
SPLITS = {"officehome": "10pct", "minidomainnet": "2pct"}


def canonical_classes(dataset: str) -> list[str]:
    from petl_bench.datamodules.records import canonical_classes as classes

    return classes(dataset)


def jpegs(count: int, width: int, height: int, seed: int) -> list[bytes]:
    """`count` distinct JPEG encodings of smooth random images with a little noise."""
    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(count):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.float32)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def spread(total: int, classes: list[str]) -> dict[str, int]:
    base, extra = divmod(total, len(classes))
    return {name: base + (i < extra) for i, name in enumerate(classes)}


def write_officehome(root: Path, size: tuple[int, int]) -> int:
    classes, pool = canonical_classes("officehome"), jpegs(64, *size, seed=0)
    n = 0
    for domain, total in OFFICEHOME_COUNTS.items():
        for name, count in spread(total, classes).items():
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                (folder / f"{k:05d}.jpg").write_bytes(pool[n % len(pool)])
                n += 1
    return n


def write_minidomainnet(root: Path, size: tuple[int, int]) -> int:
    classes, pool = canonical_classes("minidomainnet"), jpegs(64, *size, seed=1)
    (root / "splits_mini").mkdir(parents=True, exist_ok=True)
    n = 0
    for domain in MINI_DOMAINS:
        lines = []
        for label, (name, count) in enumerate(spread(MINI_PER_DOMAIN, classes).items()):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                (folder / f"{name}_{k:05d}.jpg").write_bytes(pool[n % len(pool)])
                lines.append(f"{domain}/{name}/{name}_{k:05d}.jpg {label}")
                n += 1
        random.Random(domain).shuffle(lines)
        cut = int(len(lines) * 0.7)  # Dassl's lists: a train and a test list per domain
        (root / "splits_mini" / f"{domain}_train.txt").write_text("\n".join(sorted(lines[:cut])) + "\n")
        (root / "splits_mini" / f"{domain}_test.txt").write_text("\n".join(sorted(lines[cut:])) + "\n")
    return n


def run(dataset: str, root: Path, out: Path, *extra: str) -> dict:
    """One `petl-bench run` in a fresh process: its record, plus the process's wall time."""
    cli = Path(sys.executable).with_name("petl-bench")
    argv = [
        str(cli),
        "run",
        "--method",
        "zeroshot",
        "--dataset",
        dataset,
        "--root",
        str(root),
        "--split",
        SPLITS[dataset],
        "--model",
        "tiny",
        "--pretrained",
        "none",
        "--out",
        str(out),
        "--no-progress",
        "--force",
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    record_path = next(
        line.removeprefix("record: ") for line in done.stdout.splitlines() if line.startswith("record: ")
    )
    record = json.loads(Path(record_path).read_text())
    record["process_s"] = wall
    return record


def phases(record: dict) -> dict[str, float]:
    p, wall = record["phases_s"], record["wall_s"]
    imports = record["process_s"] - wall  # interpreter start, imports, argument parsing
    return {
        "imports": imports,
        "manifest": p["manifest_s"],
        "split": p["split_s"],
        "model + rest of set-up": p["build_s"] - p["manifest_s"] - p["split_s"],
        "train": p["train_s"],
        "test": p["test_s"],
        # The phases are stored rounded, so the remainder can come out a hair below zero.
        "record": max(0.0, wall - p["build_s"] - p["train_s"] - p["test_s"]),
        "wall (process)": record["process_s"],
        "first test batch (since process start)": imports + p["first_test_batch_s"],
    }


def table(title: str, runs: dict[str, dict]) -> None:
    rows = {name: phases(record) for name, record in runs.items()}
    print(f"\n{title}")
    print(f"  {'phase (seconds)':<40}" + "".join(f"{name:>11}" for name in rows))
    for phase in next(iter(rows.values())):
        print(f"  {phase:<40}" + "".join(f"{row[phase]:>11.2f}" for row in rows.values()))
    for name, record in runs.items():
        sources = sorted(set(record["test_sources"].values()))
        print(f"  {name}: test images {record['test_images']:,}, test batches from {', '.join(sources)}")


def bench(dataset: str, root: Path, work: Path, uncached: bool) -> dict[str, dict]:
    out = work / f"results-{dataset}"
    shutil.rmtree(out / "cache", ignore_errors=True)  # cold: nothing cached for this root
    runs = {"cold": run(dataset, root, out)}
    runs["warm"] = run(dataset, root, out)
    if uncached:
        runs["uncached"] = run(dataset, root, out, "--set", "data.cache_dir=off")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--officehome", type=Path, help="an Office-Home root (default: generate one)")
    parser.add_argument("--minidomainnet", type=Path, help="a MiniDomainNet root (default: generate one)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/petl-scale"), help="generated trees and results")
    parser.add_argument("--image-size", default="320x240", help="generated JPEGs' width x height")
    parser.add_argument("--skip", action="append", default=[], choices=list(SPLITS))
    parser.add_argument("--mini-uncached", action="store_true", help="also the uncached MiniDomainNet run (long)")
    parser.add_argument("--keep", action="store_true", help="keep generated trees and results")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.image_size.split("x"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"petl-bench zero-shot runs, tiny model, {cpus} CPU cores; load average before: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    writers = {"officehome": write_officehome, "minidomainnet": write_minidomainnet}
    given = {"officehome": args.officehome, "minidomainnet": args.minidomainnet}
    results = {}
    for dataset in (d for d in SPLITS if d not in args.skip):
        root = given[dataset]
        if root is None:
            root = args.work / dataset
            shutil.rmtree(root, ignore_errors=True)
            start = time.perf_counter()
            n = writers[dataset](root, size)
            print(f"generated {n:,} JPEGs ({args.image_size}) in {root} in {time.perf_counter() - start:.0f} s")
        runs = bench(dataset, root, args.work, uncached=dataset == "officehome" or args.mini_uncached)
        table(f"{dataset} ({root}), split {SPLITS[dataset]}", runs)
        results[dataset] = runs
        if given[dataset] is None and not args.keep:
            shutil.rmtree(root)
    print()
    if "officehome" in results:
        runs = results["officehome"]
        ratio = runs["warm"]["process_s"] / runs["cold"]["process_s"]
        print(
            f"officehome: warm / cold wall time {ratio:.2f} (target <= 0.33): {'met' if ratio <= 1 / 3 else 'MISSED'}"
        )
    for dataset, runs in results.items():
        if "uncached" in runs:
            test = {name: record["phases_s"]["test_s"] for name, record in runs.items()}
            print(
                f"{dataset}: test phase uncached / cached (warm) {test['uncached'] / test['warm']:.1f}x, "
                f"uncached / cold {test['uncached'] / test['cold']:.2f}x"
            )
    if "minidomainnet" in results:
        first = phases(results["minidomainnet"]["warm"])["first test batch (since process start)"]
        print(
            f"minidomainnet: warm run's first test batch after {first:.1f} s (target < 15 s): "
            f"{'met' if first < 15 else 'MISSED'}"
        )
    print(
        f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())} (a shared machine: "
        "other engineers' work runs beside these numbers)"
    )
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    if has_gpu():
        subprocess.run([sys.executable, str(Path(__file__).with_name("grid_time.py")), "table1", "table2"], check=False)


def has_gpu() -> bool:
    """Whether torch sees a CUDA device (asked in a child: this script itself never imports torch)."""
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


if __name__ == "__main__":
    main()
