"""The report's own work on table1's 72 records, imports apart.

    python benchmarks/report_time.py            # a generated results tree in a temporary folder
    python benchmarks/report_time.py --repeat 5

Writes a record for each of the 72 runs of benchmarks/table1.yaml (no CSV logs: no curves drawn)
and the sweep state a sweep leaves, then times, in this process after the imports, the table
(`summarize` + Markdown) and the site (`build_site`: 72 run pages, the grid page with its two fig1
drawings, the index), and the site with the figures left out. Prints the import time and the best
of `--repeat` CPU and wall times of each; `petl-bench table` and `report` pay the imports on top.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

IMPORT_START = time.perf_counter()
from petl_bench.datamodules.records import OFFICEHOME_DOMAINS  # noqa: E402
from petl_bench.files import write_json_atomic  # noqa: E402
from petl_bench.report import (  # noqa: E402
    pages,
    render,
    summarize,
)
from petl_bench.report.site import build_site  # noqa: E402
from petl_bench.results import record_path  # noqa: E402
from petl_bench.sweep import state as sweep_state  # noqa: E402
from petl_bench.sweep.grid import expand_grid, grid_file  # noqa: E402

IMPORT_S = time.perf_counter() - IMPORT_START


def results_tree(tmp: Path):
    """table1's grid on an empty dataset root under `tmp`, each run recorded: the grid."""
    (tmp / "data").mkdir()
    grid = expand_grid(grid_file("table1"), [f"data.root={tmp / 'data'}"], str(tmp / "results"))
    for i, run in enumerate(grid.runs):
        cfg = run.cfg
        accuracy = {task: 50.0 + i % 7 + k for k, task in enumerate(OFFICEHOME_DOMAINS)}
        accuracy["average"] = sum(accuracy.values()) / len(OFFICEHOME_DOMAINS)
        write_json_atomic(
            record_path(cfg),
            {
                "method": cfg.method,
                "run_name": cfg.run_name,
                "dataset": cfg.data.dataset,
                "split": record_path(cfg).parent.parent.name,
                "seed": cfg.data.seed,
                "model": cfg.model.arch,
                "pretrained": cfg.model.pretrained,
                "tasks": OFFICEHOME_DOMAINS,
                "accuracy": accuracy,
                "trainable_params": 1000 * i,
                "config": cfg.to_dict(),
                "config_sha256": cfg.sha256(),
            },
        )
    sweep_state.save(grid, [{"outcome": "done"}] * len(grid.runs))
    return grid


def best_of(repeat: int, work) -> tuple[float, float]:
    """The least CPU and wall seconds of `repeat` calls of `work`."""
    times = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        work()
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(t[0] for t in times), min(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = results_tree(Path(tmp))
        out = Path(tmp) / "results"
        build_site(out)  # the first drawing warms matplotlib's caches
        print(f"imports: {IMPORT_S:.2f} s wall (petl_bench.report, .site, the sweep)")
        print(f"records: {len(grid.runs)}")
        for name, work in [
            ("table (summarize + md)", lambda: render(summarize(grid), "md")),
            ("report (build_site)", lambda: build_site(out)),
        ]:
            cpu, wall = best_of(args.repeat, work)
            print(f"{name}: {cpu:.2f} s CPU, {wall:.2f} s wall")
        drawing = pages.figures
        pages.figures = lambda page, summary: ""
        try:
            cpu, wall = best_of(args.repeat, lambda: build_site(out))
        finally:
            pages.figures = drawing
        print(f"report without the figures: {cpu:.2f} s CPU, {wall:.2f} s wall")


if __name__ == "__main__":
    main()
