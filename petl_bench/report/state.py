"""What the site gathers beyond a `Summary`: the grids the sweeps left, each grid run's state now,
and a run's CSV log.

Grids come from what each sweep left (`{out}/sweeps/{grid}.json`); a run's state comes from its
record as it is now: done (the grid's config hash), stale (another config), failed (no current
record and the sweep's last attempt failed) or missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..results import record_path
# The sweep's grid and state files: the report's only imports from the sweep.
from ..sweep import expand_grid
from ..sweep_state import read_states
from .paper import off_paper_reasons
from .summary import Summary, summarize

STATES = ("done", "stale", "failed", "missing")


@dataclass
class RunState:
    """One run of a grid and its state now."""

    label: str
    split: str
    seed: int
    record: Path  # absolute
    state: str  # one of STATES
    config: dict  # the grid's config of this run (`RunConfig.to_dict`)
    reason: str = ""  # of the last failure
    log: str = ""  # of the last failure


@dataclass
class GridReport:
    name: str
    sweep: dict  # what the sweep left: its `sweep_state` file
    summary: Summary | None = None
    runs: list[RunState] = field(default_factory=list)
    error: str = ""  # why the grid cannot be expanded now

    def count(self, state: str) -> int:
        return sum(run.state == state for run in self.runs)


def swept_grids(out: Path) -> list[GridReport]:
    """Every grid a sweep left under `out`, with its runs' states now."""
    return [grid_report(sweep, out) for sweep in read_states(out)]


def grid_report(sweep: dict, out: Path) -> GridReport:
    """A sweep's grid expanded again with its saved text and overrides, its runs' states from the
    records now; a grid that no longer expands (a method gone, a bad override) carries the error."""
    name = str(sweep.get("grid", "?"))
    try:
        grid = expand_grid(Path(sweep["grid_file"]), sweep.get("overrides", []), str(out), text=sweep["grid_text"])
        summary = summarize(grid)
    except UserError as err:
        return GridReport(name, sweep, error=str(err))
    except KeyError as err:
        return GridReport(name, sweep, error=f"{out}/sweeps/{name}.json lacks {err}")
    last = {run.get("record"): run for run in sweep.get("runs", [])}
    missing, stale = set(summary.missing), set(summary.stale)
    runs = []
    for run in grid.runs:
        path = record_path(run.cfg)
        outcome = last.get(path.relative_to(out).as_posix(), {})
        absolute = str(path.resolve())
        if absolute not in missing and absolute not in stale:
            state = "done"
        elif outcome.get("outcome") == "failed":
            state = "failed"
        else:
            state = "stale" if absolute in stale else "missing"
        runs.append(RunState(run.label, run.cfg.data.split, run.cfg.data.seed, Path(absolute), state,
                             run.cfg.to_dict(), outcome.get("reason", ""), outcome.get("log", "")))
    return GridReport(grid.name, sweep, summary, runs)


def run_off_paper(record: dict) -> list[str]:
    """Why this run is not in the paper's setting, by the same rule as the tables' banner."""
    return off_paper_reasons(pd.DataFrame([{key: record.get(key) for key in ("model", "pretrained", "dataset")}]),
                             pd.DataFrame([{"synthetic": bool(record.get("synthetic", False))}]))


# -- a run's CSV log -------------------------------------------------------------------------------
def read_log(path: Path) -> tuple[pd.DataFrame | None, str]:
    """A run's CSV log (`seed{K}/logs/metrics.csv`), or None and why it cannot be had."""
    try:
        return pd.read_csv(path), ""
    except FileNotFoundError:
        return None, "absent"
    except (OSError, ValueError) as err:
        return None, f"cannot be read: {err}"
