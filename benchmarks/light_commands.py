"""Seconds the light commands take (wall and CPU), each in a fresh process, on a results tree of Table 1's 72 records,
and whether each imports torch: `petl-bench table table1`, `report` and `sweep table1 --dry-run`,
and `import petl_bench.config`. Issue 24's target: each under 2 s on 2 cores, config without torch.

    python benchmarks/light_commands.py [--repeat 3]

The records are made up (every run of the grid done, accuracies from its seed); what is timed is
finding, reading and laying them out, not training. CPU seconds (user + system) say what a
command costs where other work shares the cores; wall seconds, what a person waits.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from petl_bench.files import write_json_atomic
from petl_bench.results import record_path
from petl_bench.splitnames import canonical_split
from petl_bench.sweep import state
from petl_bench.sweep.grid import expand_grid, grid_file

OFFICEHOME = ["Art", "Clipart", "Product", "Real World"]
# A command run in-process by a fresh interpreter, which then says whether torch was imported.
PROBE = ("import sys; from petl_bench.cli import main; code = main(sys.argv[1:]); "
         "print('torch' in sys.modules, file=sys.stderr); sys.exit(code)")


def results_tree(out: Path, root: Path) -> int:
    """Table 1's grid swept on `root`: a record for each of its runs and the sweep's state file."""
    grid = expand_grid(grid_file("table1"), [f"data.root={root}"], str(out))
    for run in grid.runs:
        cfg = run.cfg
        accuracy = {task: 70.0 + i + cfg.data.seed for i, task in enumerate(OFFICEHOME)}
        accuracy["average"] = sum(accuracy.values()) / len(OFFICEHOME)
        write_json_atomic(record_path(cfg), {
            "schema": 1, "method": cfg.method, "run_name": cfg.run_name, "dataset": cfg.data.dataset,
            "split": canonical_split(cfg.data.dataset, cfg.data.split), "seed": cfg.data.seed, "model": cfg.model.arch,
            "pretrained": cfg.model.pretrained, "tasks": OFFICEHOME, "accuracy": accuracy, "trainable_params": 1000,
            "config": cfg.to_dict(), "config_sha256": cfg.sha256(), "wall_s": 60.0})
    state.save(grid, [{"outcome": "done"}] * len(grid.runs))
    return len(grid.runs)


def timed(argv: list[str], cwd: Path) -> tuple[float, float, bool]:
    """(wall seconds, CPU seconds, whether it imported torch) of the command in a process."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, done.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the least time is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        out = tmp / "results"
        print(f"{results_tree(out, tmp / 'data')} records under {out}")
        commands = {
            "table table1": [sys.executable, "-c", PROBE, "table", "table1", "--out", str(out)],
            "report": [sys.executable, "-c", PROBE, "report", "--out", str(out)],
            "sweep table1 --dry-run": [sys.executable, "-c", PROBE, "sweep", "table1", "--out", str(out),
                                       "--dry-run"],
            "import petl_bench.config": [sys.executable, "-c", "import sys, petl_bench.config; "
                                                                "print('torch' in sys.modules, file=sys.stderr)"],
        }
        print(f"{'command':<28}{'wall s':>8}{'cpu s':>8}{'every wall s':>22}  imports torch")
        for name, argv in commands.items():
            runs = [timed(argv, tmp) for _ in range(args.repeat)]
            walls = [wall for wall, _, _ in runs]
            print(f"{name:<28}{min(walls):>8.2f}{min(cpu for _, cpu, _ in runs):>8.2f}"
                  f"{' '.join(f'{wall:.2f}' for wall in walls):>22}  {'yes' if any(t for _, _, t in runs) else 'no'}")


if __name__ == "__main__":
    main()
