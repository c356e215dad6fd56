"""A sweep's fixed cost per run: worker processes against a process per run.

    python benchmarks/sweep_overhead.py                 # 8 runs, tiny model, a small generated tree
    python benchmarks/sweep_overhead.py --runs 16 --model ViT-B-16 --pretrained openai

Sweeps a grid of N trivial runs (zero-shot, every seed a run of its own, on a small generated
folder tree) twice: with the default worker processes and with `--fresh-process` (a new
`petl-bench run` process per run, as sweeps did before). The runs' own work is the same in both, so
the difference in wall time is the start-up a worker saves: imports, loading the backbone, set-up.
Prints the wall time of each sweep, the sum of the runs' own `wall_s` and the per-run overhead
(sweep wall time minus the runs' wall time, over N). Target: under 2 s per run with workers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def sweep(grid: Path, out: Path, root: Path, fresh: bool) -> float:
    command = [
        sys.executable,
        "-m",
        "petl_bench.cli",
        "sweep",
        str(grid),
        "--out",
        str(out),
        "--set",
        f"data.root={root}",
        *(["--fresh-process"] if fresh else []),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def runs_wall_s(out: Path) -> float:
    return sum(json.loads(path.read_text())["wall_s"] for path in (out / "runs").rglob("seed*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pretrained", default=None, help="weights (default: a tiny CLIP saved here)")
    args = parser.parse_args()

    from petl_bench.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="petl-sweep-overhead-") as work:
        work = Path(work)
        root = work / "data"
        cli(["data", "synth", "--out", str(root), "--layout", "folder", "--per-class", "4"])
        pretrained = args.pretrained
        if pretrained is None:
            from petl_bench import tinyclip
            from petl_bench.backbone import TINY_CONFIG, ClipBackbone

            pretrained = str(work / "tiny.pt")
            tinyclip.save(ClipBackbone.from_config(TINY_CONFIG), Path(pretrained))
        grid = work / "overhead.yaml"
        grid.write_text(
            yaml.safe_dump(
                {
                    "name": "overhead",
                    "table": "table1",
                    "dataset": "folder",
                    "splits": ["2shot"],
                    "seeds": list(range(args.runs)),
                    "methods": ["zeroshot"],
                    "set": {"model.arch": args.model, "model.pretrained": pretrained},
                }
            )
        )
        print(f"{args.runs} zero-shot runs of {args.model} on {root} (folder layout, 4 images per class)")
        print(f"{'launcher':<22}{'sweep s':>10}{'runs s':>10}{'overhead per run s':>22}")
        for label, fresh in (("workers", False), ("process per run", True)):
            out = work / label.replace(" ", "-")
            wall = sweep(grid, out, root, fresh)
            inside = runs_wall_s(out)
            print(f"{label:<22}{wall:>10.1f}{inside:>10.1f}{(wall - inside) / args.runs:>22.2f}")


if __name__ == "__main__":
    main()
