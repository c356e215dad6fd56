"""The Slurm launcher: one job per run (a submitit job array), then waiting for them all.

Each job runs `runcommand.run_command` on the run's command line, as `petl-bench run` would. A job
whose run another process is running already ends `BUSY`; one that leaves the queue without a
result (cancelled, out of time or memory) is `FAILED`, seen by polling `squeue` where Slurm keeps no
accounting for submitit to ask.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import submitit

from ..errors import UserError
from ..guard import BUSY_EXIT
from ..runcommand import run_command
from .grid import SlurmConfig
from .jobs import Job, JobResult, busy, done, failed, in_job_order

BUSY = "busy"  # a Slurm job's result when another process ran its run


class SlurmRun:
    """What a Slurm job runs (submitit pickles it with its argument): `petl-bench run ARGV`.

    Slurm warns a job before its time limit, and on clusters so configured before pre-emption,
    with submitit's signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise); submitit then
    calls `checkpoint` and requeues the job, which resumes the run from its last epoch checkpoint.
    Pre-emption's SIGTERM stops the run (exit status 143) with that checkpoint kept: a requeued job
    or the next sweep resumes it."""

    def __call__(self, argv: list[str]) -> str:
        code = run_command(argv)
        if code == BUSY_EXIT:
            return BUSY
        if code:
            raise RuntimeError(f"petl-bench run ended with exit status {code}")
        return "done"

    def checkpoint(self, argv: list[str]) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, argv)  # the same run: it resumes from its checkpoint


def run_slurm(jobs: list[Job], slurm: SlurmConfig, folder: Path, name: str) -> list[JobResult]:
    """One Slurm job per run (a job array), then wait for all of them; one result per job, in the
    jobs' order."""
    if not shutil.which("sbatch"):
        raise UserError("--launcher slurm: no `sbatch` here (is this a Slurm login node?)")
    earlier = _slurm_queue(name)
    if earlier:  # a killed sweep's jobs run on: submitting their runs again would run them twice
        raise UserError(
            f"{len(earlier)} Slurm job(s) named {name} from an earlier sweep are still queued or running "
            f"({', '.join(sorted(earlier))}): wait for them or `scancel --name {name}`, then run again"
        )
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(**slurm_parameters(slurm, name))
    try:
        submitted = executor.map_array(SlurmRun(), [job.argv for job in jobs])
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as err:
        raise UserError(f"sbatch refused the jobs: {str(err).strip().splitlines()[-1]}") from None
    started = time.monotonic()
    for job, handle in zip(jobs, submitted, strict=True):
        print(f"{job.title}: submitted as Slurm job {handle.job_id}", flush=True)
    pending = list(zip(submitted, jobs, strict=True))
    missing = dict.fromkeys((handle.job_id for handle in submitted), 0)  # polls in a row that squeue lacked it
    results: list[JobResult] = []
    while pending:
        # Every second at first, every 30 s after ten minutes: gentle with the scheduler.
        time.sleep(min(30.0, 1.0 + (time.monotonic() - started) / 20))
        queued = _slurm_queue()
        for entry in list(pending):
            handle, job = entry
            finished = handle.paths.result_pickle.exists()  # submitit writes it, result or error
            if not finished and queued is None:
                finished = handle.done()  # no squeue answer: ask submitit (sacct)
            absent = 0 if finished or queued is None or handle.job_id in queued else missing[handle.job_id] + 1
            missing[handle.job_id] = absent
            if not (finished or absent >= 2):  # twice: a result file may lag the queue
                continue
            pending.remove(entry)
            results.append(_result(job, handle, finished, time.monotonic() - started))
    return in_job_order(results)


def _result(job: Job, handle: submitit.Job, finished: bool, seconds: float) -> JobResult:
    try:
        if not finished:
            raise RuntimeError("left the Slurm queue without a result (cancelled, out of time or memory?)")
        if handle.result() == BUSY:
            return busy(job, f"see {handle.paths.stderr}")
        return done(job, seconds)
    except Exception as err:  # the job's own error or Slurm's: the log tells which
        return failed(job, f"Slurm job {handle.job_id}: {_job_error(err)}", handle.paths.stderr)


def _job_error(err: Exception) -> str:
    """The line that says what failed: the last of the job's traceback inside submitit's message."""
    parts = [part.strip() for part in str(err).split("-" * 22)]
    trace = next((part for part in parts if part.startswith("Traceback")), None)
    return trace.splitlines()[-1] if trace else (parts[0].splitlines() or [type(err).__name__])[0]


def slurm_parameters(slurm: SlurmConfig, name: str) -> dict:
    """submitit's AutoExecutor parameters; zero or empty values leave the cluster's default."""
    params = {
        "name": name,
        "timeout_min": slurm.time_min,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_array_parallelism": slurm.array_parallelism,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if slurm.gpus_per_job:
        params["gpus_per_node"] = slurm.gpus_per_job
    if slurm.mem_gb:
        params["mem_gb"] = slurm.mem_gb
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    return params


def _slurm_queue(name: str | None = None) -> set[str] | None:
    """Ids of this user's jobs (named `name`) still in the queue, array tasks one by one; None if
    squeue fails.
    Unlike submitit's sacct polling, this sees a job that died without a result on clusters
    without accounting too."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "-h", "-r", "-o", "%i", *(["--name", name] if name else [])],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.split())
