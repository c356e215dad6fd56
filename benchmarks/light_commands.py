"""How fast the commands that need no model answer: tables, the report, a dry run, bad inputs.

    python benchmarks/light_commands.py                  # 3 fresh processes per command
    python benchmarks/light_commands.py --repeat 5 --importtime --work /tmp/light   # keeps the tree

Builds a results tree of Table 1's 72 runs on a generated Office-Home tree with the tiny CLIP:
one real run (zero-shot, random-init tiny CLIP, 10pct seed 0) writes its record with the real
record-writing code, and that record is copied to the other 71 runs of the grid with their own
method, split, seed and config hash, so that the table counts them (their accuracies are the one
run's, which is all a timing needs: no table from this tree is a result). A sweep over the full
tree (nothing to run) leaves the sweep state the report reads.

Then times each command in fresh processes, as a user types it: `table table1`, `report`,
`sweep table1 --dry-run` (target under 2 s each on 2 cores), and bad inputs that must answer
before torch is imported (target under 1 s): an unknown method, a missing root, a split the
dataset does not have, `--set optim.lr` without a value. Prints min and median wall seconds,
median CPU seconds (user + system: what a machine with a core to spare would take as wall time),
the exit status and whether torch was imported, below the floor every command pays (a Python that
does nothing, and one that imports the CLI); `--importtime` adds the slowest top-level imports of
each command (`python -X importtime`). On a shared machine the wall times are inflated by the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCH_PROBE = (
    "import runpy, sys; sys.argv = ['petl-bench', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('petl_bench.cli', run_name='__main__')\n"
    "finally:\n    print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-FREE', file=sys.stderr)"
)


def build_tree(work: Path) -> tuple[Path, list[str]]:
    """(results folder, the `--set` arguments of its grid): 72 records of grid table1, built in
    `work` unless a finished tree is there."""
    from petl_bench.cli import main as cli
    from petl_bench.files import write_json_atomic
    from petl_bench.results import read_record, record_path
    from petl_bench.runargs import run_argv
    from petl_bench.sweep.grid import expand_grid, grid_file

    root, out = work / "officehome", work / "results"
    sets = [f"data.root={root}", "model.arch=tiny", "model.pretrained=none", "data.num_workers=0"]
    set_args = [arg for item in sets for arg in ("--set", item)]
    if (work / "tree-done").is_file():
        return out, set_args
    cli(["data", "synth", "--out", str(root), "--layout", "officehome", "--per-class", "8"])
    grid = expand_grid(grid_file("table1"), sets, str(out))
    first = next(run for run in grid.runs if run.cfg.method == "zeroshot")
    if cli(run_argv(first.cfg)) != 0:
        raise SystemExit("the real tiny run failed")
    record = read_record(record_path(first.cfg))
    for run in grid.runs:
        cfg = run.cfg
        path = record_path(cfg)
        write_json_atomic(
            path,
            {
                **record,
                "method": cfg.method,
                "run_name": cfg.run_name,
                "seed": cfg.data.seed,
                "split": path.parent.parent.name,
                "config_sha256": cfg.sha256(),
            },
        )
    subprocess.run(
        [*petl_bench(), "sweep", "table1", "--out", str(out), *set_args], check=True, stdout=subprocess.DEVNULL
    )
    (work / "tree-done").write_text("")
    return out, set_args


def petl_bench() -> list[str]:
    script = Path(sys.executable).with_name("petl-bench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "petl_bench.cli"]


def cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    argv: list[str], repeat: int, command: list[str] | None = None
) -> tuple[list[float], list[float], int, bool, str]:
    """Wall and CPU seconds of `repeat` fresh processes of `petl-bench ARGV` (or of `command`), the
    exit status, whether torch was imported (one more process, probed; not for `command`), and the
    last line of stderr. CPU time is what a machine with a core to spare would take as wall time."""
    seconds, cpu, code = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), cpu_s()
        done = subprocess.run(command or [*petl_bench(), *argv], capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        cpu.append(cpu_s() - start_cpu)
        code = done.returncode
    if command:
        return seconds, cpu, code, False, ""
    probe = subprocess.run([sys.executable, "-c", TORCH_PROBE, *argv], capture_output=True, text=True)
    lines = probe.stderr.strip().splitlines()
    return seconds, cpu, code, "TORCH-IMPORTED" in lines, (lines[-2] if len(lines) > 1 else "")


def slowest_imports(argv: list[str], top: int) -> list[tuple[float, str]]:
    """The `top` slowest top-level imports of the command, cumulative seconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", TORCH_PROBE, *argv], capture_output=True, text=True
    )
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  ") and cumulative.strip().isdigit():  # top level: one space of indent
                rows.append((int(cumulative) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per command")
    parser.add_argument("--importtime", action="store_true", help="also list each command's slowest imports")
    parser.add_argument("--work", default=None, help="build the tree here and keep it (reused when there)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="petl-light-") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        out, sets = build_tree(work)
        records = len(list((out / "runs").rglob("seed*.json")))
        print(
            f"results tree: {records} records of grid table1 under {out} (built in {time.perf_counter() - start:.0f} s)"
        )
        root = sets[1].partition("=")[2]
        run = ["run", "--dataset", "officehome", "--root", root, "--model", "tiny", "--out", str(out)]
        commands = [
            ("table table1", ["table", "table1", "--out", str(out), *sets], 2.0),
            ("report", ["report", "--out", str(out), "--site", str(work / "site")], 2.0),
            ("sweep table1 --dry-run", ["sweep", "table1", "--dry-run", "--out", str(out), *sets], 2.0),
            ("run: unknown method", [*run, "--method", "copo"], 1.0),
            (
                "run: missing root",
                [
                    "run",
                    "--method",
                    "coop",
                    "--dataset",
                    "officehome",
                    "--root",
                    str(work / "absent"),
                    "--out",
                    str(out),
                ],
                1.0,
            ),
            ("run: bad split", [*run[:2], "minidomainnet", *run[3:], "--method", "coop", "--split", "10pct"], 1.0),
            ("run: --set optim.lr", [*run, "--method", "coop", "--set", "optim.lr"], 1.0),
        ]
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.repeat} fresh processes each")
        print(
            f"{'command':<26}{'wall min':>9}{'median':>8}{'cpu median':>11}{'target':>7}{'exit':>5}  torch  "
            "last line of stderr"
        )
        for label, code in (("python -c pass", "pass"), ("python: import the CLI", "import petl_bench.cli")):
            seconds, cpu, _, _, _ = timed([], args.repeat, [sys.executable, "-c", code])
            print(
                f"{label:<26}{min(seconds):>9.2f}{statistics.median(seconds):>8.2f}{statistics.median(cpu):>11.2f}"
                f"{'':>7}{0:>5}  no     (the floor)"
            )
        for label, argv, target in commands:
            seconds, cpu, code, torch, last = timed(argv, args.repeat)
            print(
                f"{label:<26}{min(seconds):>9.2f}{statistics.median(seconds):>8.2f}{statistics.median(cpu):>11.2f}"
                f"{target:>7.1f}{code:>5}  {'yes' if torch else 'no ':<5}  {last[:60]}"
            )
        probe = subprocess.run(
            [sys.executable, "-c", "import sys, petl_bench.config; print('torch' in sys.modules)"],
            capture_output=True,
            text=True,
        )
        print(f"import petl_bench.config imports torch: {json.loads(probe.stdout.strip().lower())}")
        if args.importtime:
            for label, argv, _ in commands:
                top = ", ".join(f"{name} {s:.2f}" for s, name in slowest_imports(argv, 6))
                print(f"slowest imports, {label}: {top}")


if __name__ == "__main__":
    main()
