"""A sweep's runs to do as a launcher's jobs, and how each job ended.

A launcher (`local.run_local`, `slurm.run_slurm`) takes the jobs and returns one `JobResult` per job,
in the jobs' order, so the sweep pairs them with its runs one to one. A job's `Outcome` is `DONE`
(its record is written), `FAILED` (the reason and the log say why) or `BUSY`: another process (a
second sweep of the grid, a hand-typed run) runs it, so its outcome is not this sweep's to say.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from ..results import read_record, record_place
from .grid import GridRun, record_of


@dataclass
class Job:
    number: int  # position in the sweep's to-do list, for progress lines
    total: int
    run: GridRun
    argv: list[str]  # the run's `petl-bench` command line (`run ...`), as `runcommand.run_command` takes it
    named_dataset: bool = False  # progress lines name the run's dataset (its grid has several)

    @property
    def title(self) -> str:
        """`[3/8] coop 16shot seed1`, naming what else tells the run apart: the held-out domain, a
        transfer's source and target (`, from imagenet 16shot to caltech101`)."""
        cfg = self.run.cfg
        dataset = f" {cfg.data.dataset}" if self.named_dataset else ""
        title = f"[{self.number}/{self.total}] {self.run.label}{dataset} {cfg.data.split} seed{cfg.data.seed}"
        if cfg.data.holdout:
            title += f", {cfg.data.holdout} held out"
        if cfg.transfer_from is not None:
            source_dataset, source_split = record_place(cfg.transfer_from["run"])
            classes = f" {cfg.data.classes} classes" if cfg.data.classes != "all" else ""
            title += f", from {source_dataset} {source_split} to {cfg.data.dataset}{classes}"
        return title

    @property
    def log(self) -> Path:
        """The local launcher's log of this run, beside its checkpoints."""
        return record_of(self.run).with_suffix("") / "sweep.log"


class Outcome(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    BUSY = "busy"  # run by another process


@dataclass(frozen=True)
class JobResult:
    job: Job
    outcome: Outcome
    reason: str = ""  # FAILED: what ended it (an exit status, a signal, Slurm's error); BUSY: who runs it
    log: Path | None = None  # where its output is


def done(job: Job, seconds: float) -> JobResult:
    record = read_record(record_of(job.run)) or {}
    average = record.get("accuracy", {}).get("average")
    print(
        f"{job.title}: done in {_duration(seconds)}" + (f", average {average:.2f}%" if average is not None else ""),
        flush=True,
    )
    return JobResult(job, Outcome.DONE)


def failed(job: Job, reason: str, log: Path) -> JobResult:
    print(f"{job.title}: FAILED ({reason}); log: {log}", flush=True)
    return JobResult(job, Outcome.FAILED, reason, log)


def busy(job: Job, where: str) -> JobResult:
    print(f"{job.title}: running in another process ({where}): skipped", flush=True)
    return JobResult(job, Outcome.BUSY, f"running in another process ({where})")


def in_job_order(results: list[JobResult]) -> list[JobResult]:
    """The results of a launcher's jobs in the jobs' order (they finish in any order)."""
    return sorted(results, key=lambda result: result.job.number)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
