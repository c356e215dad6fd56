"""The run's CSV log, `seed{K}/logs/metrics.csv`: one file over all of a run's attempts.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a resumed run's log (and
the report's curves drawn from it) would begin at the epoch it resumed from. `RunLog` keeps the
rows of the epochs the resumed checkpoint holds and drops those of the epoch a stop cut short
(that epoch trains again), so the log of a resumed run reads as the uninterrupted run's, in one
file every reader already reads. The kept rows are rewritten whole (a temporary file renamed over
the log); each step's rows are appended after them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from .files import atomic_path


class RunLog(CSVLogger):
    """Lightning's CSV logger at `{work_dir}/logs/metrics.csv`, keeping the rows of the first
    `epochs_kept` epochs that an earlier attempt logged."""

    def __init__(self, work_dir: Path, epochs_kept: int):
        super().__init__(work_dir, name="logs", version="")
        self.epochs_kept = epochs_kept

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.epochs_kept)
        return self._experiment


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, epochs_kept: int):
        self.epochs_kept = epochs_kept
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Instead of deleting the earlier attempts' log: keep its rows of the kept epochs."""
        path = Path(self.metrics_file_path)
        try:
            with path.open(newline="") as file:
                reader = csv.DictReader(file)
                header, rows = list(reader.fieldnames or []), list(reader)
        except FileNotFoundError:
            return
        kept = [row for row in rows if _epoch(row) < self.epochs_kept]
        if not kept:
            path.unlink()
            return
        self.metrics_keys = header
        self._write(header, kept)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Lightning's, but whole or not at all: a new column rewrites every row kept so far."""
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        self._write(fieldnames, rows)

    def _write(self, header: list[str], rows: list[dict]) -> None:
        with atomic_path(self.metrics_file_path) as tmp, tmp.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header, extrasaction="ignore")  # a torn row's excess
            writer.writeheader()
            writer.writerows(rows)


def _epoch(row: dict) -> float:
    """A row's epoch; a row without one (cut short by a kill) counts as the latest."""
    try:
        return float(row.get("epoch") or "inf")
    except ValueError:
        return float("inf")
