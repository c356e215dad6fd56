"""The state of a sweep's runs: each run's status from its record and lock, and what a sweep leaves
under `--out` for `petl-bench report`: `{out}/sweeps/{grid}.json`.

A run is *done* when its record exists with the grid's config hash, *running* while another process
holds its lock (a second sweep of the grid, a hand-typed run: skipped, and said so), *stale* when its
record holds another config (re-run only with `--rerun-stale`), else *to do*.

Run records do not know their grid, so a sweep writes (atomically, as it starts and as it ends) the
grid file it expanded (its path, and its text as it was), the command line's `--set` items, every
dataset root its sweeps under this `--out` ran on (where `table` looks when given none), and each
run's last outcome: `done` or `stale` as the sweep found it, `failed` (with the reason and the log),
or `todo` (not attempted yet: the sweep is running, or was killed). The report expands the grid
again from this and reads done, stale and missing from the records themselves; only a failure is
known from here alone. A later sweep of the grid with the same name replaces the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import resolved_root
from ..errors import UserError
from ..files import write_json_atomic
from ..guard import holder
from ..results import load_record, read_record
from .grid import Grid, GridRun, expand_grid, record_of
from .jobs import JobResult, Outcome


def run_status(run: GridRun) -> str:
    """`done` (record with this config), `running` (in another process), `stale` (record with
    another config) or `todo` (no record, or a file that is no usable record: `unusable_records`)."""
    record = read_record(record_of(run))
    if record is not None and record.get("config_sha256") == run.cfg.sha256():
        return "done"
    if holder(record_of(run)):
        return "running"
    return "todo" if record is None else "stale"


def unusable_records(runs: list[GridRun]) -> list[str]:
    """`path (why)` of each run's record file that is not a usable record (the run replaces it)."""
    problems = [(record_of(run), load_record(record_of(run))[1]) for run in runs]
    return [f"{path} ({problem})" for path, problem in problems if problem]


def state_path(out: Path, grid_name: str) -> Path:
    return Path(out) / "sweeps" / f"{grid_name}.json"


def read_states(out: Path) -> list[dict]:
    """Every sweep's state under `{out}/sweeps`, by grid name; unreadable files are skipped."""
    return list(filter(None, map(_read, sorted(Path(out).glob("sweeps/*.json")))))


def starting(grid: Grid, statuses: list[str]) -> list[dict]:
    """Each run's outcome as a sweep starts: `done` or `stale` as found; for a run to do, an earlier
    sweep's failure stays its last outcome until this sweep attempts it."""
    earlier = {run.get("record"): run for run in (_read(state_path(grid.out, grid.name)) or {}).get("runs", [])}
    outcomes = []
    for run, status in zip(grid.runs, statuses, strict=True):
        before = earlier.get(_record(grid, run), {})
        if status in ("done", "stale"):
            outcomes.append({"outcome": status})
        elif before.get("outcome") == "failed":
            outcomes.append({key: before[key] for key in ("outcome", "reason", "log", "at") if key in before})
        else:
            outcomes.append({"outcome": "todo"})
    return outcomes


def finished(grid: Grid, outcomes: list[dict], results: list[JobResult]) -> list[dict]:
    """The outcomes after the launcher returned: each run it did `done` or `failed`; a run another
    process took (`BUSY`) keeps its outcome from the start."""
    ended = {id(result.job.run): result for result in results}
    now = _now()
    after = []
    for run, outcome in zip(grid.runs, outcomes, strict=True):
        result = ended.get(id(run))
        if result is not None and result.outcome is Outcome.FAILED:
            assert result.log is not None  # jobs.failed() always gives one
            outcome = {"outcome": "failed", "reason": result.reason, "log": str(Path(result.log).resolve()), "at": now}
        elif result is not None and result.outcome is Outcome.DONE:
            outcome = {"outcome": "done"}
        after.append(outcome)
    return after


def save(grid: Grid, outcomes: list[dict]) -> Path:
    path = state_path(grid.out, grid.name)
    roots = {*swept_roots(grid.out, grid.name), resolved_root(grid_root(grid))} - {""}
    write_json_atomic(
        path,
        {
            "grid": grid.name,
            "table": grid.table,
            "dataset": grid.dataset,
            "datasets": grid.datasets,
            "grid_file": str(grid.path.resolve()),
            "grid_text": grid.text,
            "overrides": grid.overrides,
            "roots": sorted(roots),
            "updated": _now(),
            "runs": [
                {
                    "label": run.label,
                    "split": run.cfg.data.split,
                    "seed": run.cfg.data.seed,
                    "record": _record(grid, run),
                    **outcome,
                }
                for run, outcome in zip(grid.runs, outcomes, strict=True)
            ],
        },
    )
    return path


def grid_root(grid: Grid) -> str:
    """The dataset root the grid was given ("" for none: a table's grid given no --set data.root);
    of a grid over several datasets, their common root."""
    return grid.root


def swept_roots(out: Path, grid_name: str) -> list[str]:
    """Every dataset root (resolved) that sweeps of the grid under `out` ran on, oldest state kept."""
    roots = (_read(state_path(out, grid_name)) or {}).get("roots")
    return [root for root in roots if isinstance(root, str) and root] if isinstance(roots, list) else []


def on_swept_root(grid: Grid) -> Grid:
    """`grid` if its runs name a dataset root or no sweep of it recorded one; else the grid expanded
    again on the one root its sweeps under `--out` ran on. Several roots: a one-line UserError, since
    their records must never share a cell."""
    roots = [] if grid_root(grid) else swept_roots(grid.out, grid.name)
    if len(roots) > 1:
        raise UserError(
            f"grid {grid.name} was swept on {len(roots)} dataset roots under {grid.out} "
            f"({', '.join(roots)}): say which with --set data.root=DIR"
        )
    if not roots:
        return grid
    return expand_grid(grid.path, [*grid.overrides, f"data.root={roots[0]}"], str(grid.out), text=grid.text)


def _record(grid: Grid, run: GridRun) -> str:
    """The run's record path relative to the results folder (which may move)."""
    return record_of(run).relative_to(grid.out).as_posix()


def _read(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None  # absent, or not a sweep's state
    return state if isinstance(state, dict) else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
