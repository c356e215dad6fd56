"""The run's two logs, each one file over all of a run's attempts: the CSV log of every step,
`seed{K}/logs/metrics.csv`, and the text log `seed{K}/run.log`.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, so a resumed run's log (and
the report's curves drawn from it) would begin at the epoch it resumed from. `RunLog` keeps the
rows of the epochs the resumed checkpoint holds and drops those of the epoch a stop cut short
(that epoch trains again), so the log of a resumed run reads as the uninterrupted run's, in one
file every reader already reads. The kept rows are rewritten whole (a temporary file renamed over
the log); each step's rows are appended after them.

The text log is what the run says (`petl_bench.phases`: its phases, its size, one line per epoch
from `EpochLines`, the test's accuracies), on the console and, timestamped, in `run.log`, each line
written through as it is said, so a killed run keeps its lines. A resumed attempt appends to it,
after a line that says how it starts (the runner's).
"""

from __future__ import annotations

import csv
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from tqdm import tqdm

from .errors import UserError
from .files import atomic_path
from .guard import Interrupted
from .phases import LOG, clock, say

RUN_LOG = "run.log"  # in the run's folder, seed{K}/


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
        assert isinstance(self._experiment, ExperimentWriter)  # typed as fabric's base; only this property sets it
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


# -- the text log -----------------------------------------------------------------------------------
class EpochLines(Callback):
    """One line as each epoch ends: `epoch i/n`, the mean of its steps' losses, the learning rate
    of its last step, its validation accuracy (where the run validates), the run's elapsed time
    (every attempt's, from `elapsed`) and the ETA at this attempt's pace."""

    def __init__(self, elapsed: Callable[[], float]):
        self.elapsed = elapsed  # seconds the run has taken so far
        self.losses: list[float] = []
        self.lr: float | None = None
        self.started, self.first_epoch = 0.0, 0

    def on_train_start(self, trainer, module):
        self.started, self.first_epoch = time.time(), trainer.current_epoch  # > 0 when resumed

    def on_train_epoch_start(self, trainer, module):
        self.losses = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:  # None: a step the method skipped
            self.losses.append(float(loss))

    def on_train_epoch_end(self, trainer, module):
        epoch, epochs = trainer.current_epoch + 1, trainer.max_epochs
        per_epoch = (time.time() - self.started) / (epoch - self.first_epoch)
        loss = f"{sum(self.losses) / len(self.losses):.4f}" if self.losses else "-"
        lr = f"{self.lr:.3e}" if self.lr is not None else "-"
        if trainer.max_steps > 0 and epochs == -1:  # an iteration-based run: its steps, not its epochs, end it
            where = f"epoch {epoch}, step {trainer.global_step}/{trainer.max_steps}"
            left = per_epoch * (trainer.max_steps - trainer.global_step) / max(1, trainer.num_training_batches)
        else:
            where, left = f"epoch {epoch}/{epochs}", per_epoch * (epochs - epoch)
        # Validation, where the data has it, ran at this epoch's end, before this hook.
        val = trainer.callback_metrics.get("val/acc")
        val_acc = f"  val/acc {float(val):.2f}" if val is not None else ""
        say(f"{where}  loss {loss}  lr {lr}{val_acc}  elapsed {clock(self.elapsed())}  eta {clock(left)}")


class _Console(logging.Handler):
    """Lines on the stdout of the moment (a sweep worker's log, a test's capture), above any
    progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
            sys.stdout.flush()
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)


class _File(logging.FileHandler):
    """The text log's file. A write that fails (a full disk) is one warning, and the run goes on
    without its text log: not logging's traceback on stderr at every line."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True
        warnings.warn(
            f"{self.baseFilename}: writing the run's text log failed ({sys.exc_info()[1]}); the run goes on without it",
            stacklevel=2,
        )


@contextmanager
def text_log(path: Path | None) -> Iterator[None]:
    """While the block runs, what the run says goes to the console and, with `path`, is appended to
    that file, timestamped (a FileHandler flushes every line)."""
    handlers: list[logging.Handler] = [_Console()]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = _File(path, mode="a", encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%Y-%m-%d %H:%M:%S"))
        handlers.append(file)
    level = LOG.level
    LOG.setLevel(logging.INFO)
    for handler in handlers:
        LOG.addHandler(handler)
    try:
        yield
    except BaseException as err:  # the file's last line says why the attempt ended (the console's says it too)
        if path is not None:
            handlers[-1].handle(
                LOG.makeRecord(LOG.name, logging.INFO, __file__, 0, f"ended: {_one_line(err)}", (), None)
            )
        raise
    finally:
        for handler in handlers:
            LOG.removeHandler(handler)
            handler.close()
        LOG.setLevel(level)


def _one_line(err: BaseException) -> str:
    message = (str(err).strip().splitlines() or [""])[0]
    return message if isinstance(err, UserError | Interrupted) else f"{type(err).__name__}: {message}"
