"""What the site gathers beyond a `Summary`: the grids the sweeps left, each grid run's state now,
a run's readable name and the command that rebuilds it, and its CSV log.

Grids come from what each sweep left (`{out}/sweeps/{grid}.json`); a run's state comes from its
record as it is now: done (the grid's config hash), stale (another config), failed (no current
record and the sweep's last attempt failed) or missing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, from_dict, validate
from ..errors import UserError
from ..registry import get_method
from ..results import record_path
from ..runargs import run_argv

# The sweep's grid and state files: the report's only imports from the sweep.
from ..sweep.grid import expand_grid
from ..sweep.state import read_states
from .paper import PAPER_MODEL, column_name, off_paper_reasons
from .summary import Summary, summarize

STATES = ("done", "stale", "failed", "missing")
VALUE_SHOWN = 16  # characters of a variant's value in a run's short label; the run page shows all


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
    sweep: dict  # what the sweep left: its `sweep.state` file
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
        runs.append(
            RunState(
                run.label,
                run.cfg.data.split,
                run.cfg.data.seed,
                Path(absolute),
                state,
                run.cfg.to_dict(),
                outcome.get("reason", ""),
                outcome.get("log", ""),
            )
        )
    return GridReport(grid.name, sweep, summary, runs)


def run_off_paper(record: dict) -> list[str]:
    """Why this run is not in the paper's setting, by the same rule as the tables' banner. `record` is
    a usable one (`results.check_record`: model and dataset present)."""
    return off_paper_reasons(
        [(record["model"], record.get("pretrained"))], [record["dataset"]], bool(record.get("synthetic", False))
    )


# -- a run's name ----------------------------------------------------------------------------------
def run_argv_of(record: dict) -> list[str] | None:
    """The `petl-bench run` arguments that rebuild the record's config (`runargs.run_argv`), or None
    where this petl-bench cannot rebuild it (a method gone, a field renamed, a value out of range)."""
    config = record.get("config") or {}
    sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
    try:
        cfg = RunConfig(
            method=config["method"],
            params=from_dict(get_method(config["method"]).config_cls, config.get("params", {})),
            out=str(config.get("out", "results")),
            **{name: from_dict(cls, config.get(name, {})) for name, cls in sections.items()},
            recipe=str(config.get("recipe", "shared")),
        )
        return run_argv(validate(cfg))  # unchecked, a value argparse refuses would exit
    except (UserError, KeyError, TypeError):
        return None


def set_items(argv: list[str] | None) -> list[str]:
    """The `--set` items of a run's arguments: what makes it differ from its method's defaults."""
    return [arg.removeprefix("--set=") for arg in argv or [] if arg.startswith("--set=")]


def run_label(record: dict, argv: list[str] | None) -> str:
    """A short readable name: the method as the tables name it, its non-default method fields (long
    values cut short) and a model other than the paper's, e.g. `CoOp-MT (ctx_init=a photo of a)
    [tiny]`; the run name itself (`coop-mt-ctx_inita_photo_of_a@tiny-tiny-clip`) names its folder."""
    fields = []
    for item in set_items(argv):
        key, _, value = item.partition("=")
        if key.startswith("method."):
            shown = value if len(value) <= VALUE_SHOWN else value[: VALUE_SHOWN - 1] + "…"
            fields.append(f"{key.removeprefix('method.')}={shown}")
    label = column_name(str(record.get("method", "?"))) + (f" ({', '.join(fields)})" if fields else "")
    if (record.get("model"), record.get("pretrained")) != PAPER_MODEL:
        label += f" [{record.get('model')}]"
    return label


def short_hash(record: dict) -> str:
    """The config hash's first 8 hex digits: two variants of one label differ in it."""
    return str(record.get("config_sha256", ""))[:8]


def command_line(argv: list[str]) -> str:
    return shlex.join(["petl-bench", *argv])


# -- a run's CSV log -------------------------------------------------------------------------------
def read_log(path: Path) -> tuple[pd.DataFrame | None, str]:
    """A run's CSV log (`seed{K}/logs/metrics.csv`), or None and why it cannot be had."""
    try:
        return pd.read_csv(path), ""
    except FileNotFoundError:
        return None, "absent"
    except (OSError, ValueError) as err:
        return None, f"cannot be read: {err}"
