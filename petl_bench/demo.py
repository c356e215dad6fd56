"""`make demo`'s closing summary: `python -m petl_bench.demo --out DIR [--set ...]`.

It reads the records of the demo grid (benchmarks/demo.yaml) under `--out` and prints, after the
recipe they were made with, one table of its runs side by side (each task and the average, mean
over the demo's seeds), how far each trained method is above zero-shot, and MmAP's task groups
in each seed. Records only: no model, no torch.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .report import AVERAGE, Summary, column_name, summarize
from .report.tables import to_markdown
from .results import read_record
from .sweep.grid import Grid, expand_grid, grid_file
from .sweep.state import on_swept_root

GRID = "demo"
BASELINE = "zeroshot"


def recipe(grid: Grid) -> str:
    """The settings the grid's runs share, and each trained method's learning rate."""
    cfg = grid.runs[0].cfg
    rates = {run.label: run.cfg.optim.lr for run in grid.runs if run.cfg.method != BASELINE}
    return (
        f"demo recipe ({grid.path.name}, not the paper's): model {cfg.model.arch} "
        f"({cfg.model.pretrained}), synthetic {cfg.data.dataset} layout, split {cfg.data.split}, "
        f"seeds {', '.join(map(str, grid.seeds))}, {cfg.train.epochs} epochs "
        f"({cfg.optim.warmup_epochs} of warm-up), {cfg.optim.optimizer}, lr "
        + ", ".join(f"{column_name(label)} {lr:g}" for label, lr in rates.items())
    )


def margins(summary: Summary) -> list[str]:
    """Each trained method's mean average accuracy minus zero-shot's, over the seeds both have."""
    split = summary.splits[0]
    base = summary.cell(BASELINE, split, AVERAGE)
    if base is None:
        return []
    parts = []
    for label in summary.labels:
        cell = summary.cell(label, split, AVERAGE)
        if label != BASELINE and cell is not None:
            parts.append(f"{column_name(label)} {cell.mean - base.mean:+.1f}")
    return (
        [f"each trained method minus zero-shot (average accuracy, mean over seeds): {', '.join(parts)}"]
        if parts
        else []
    )


def task_groups(summary: Summary) -> list[str]:
    """MmAP's groups, as each seed's record holds them."""
    rows = summary.seeds[summary.seeds.method == "mmap"].drop_duplicates("path").sort_values("seed")
    lines = []
    for row in rows.itertuples():
        groups = ((read_record(row.path) or {}).get("prepared") or {}).get("grouping", {}).get("groups")
        if groups:
            lines.append(f"  seed {row.seed}: {' | '.join(' + '.join(group) for group in groups)}")
    return ["MmAP's task groups:", *lines] if lines else []


def summary_text(grid: Grid) -> str:
    summary = summarize(grid)
    return "\n".join([recipe(grid), "", to_markdown(summary), "", *margins(summary), *task_groups(summary)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petl_bench.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo/results", help="the demo's results folder (default: demo/results)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="as given to the demo's sweep, e.g. model.pretrained=demo/tiny-clip.pt",
    )
    args = parser.parse_args(argv)
    try:
        print(summary_text(on_swept_root(expand_grid(grid_file(GRID), args.set, args.out))))
    except UserError as err:
        print(f"petl-bench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
