"""The local launcher: a sweep's runs in worker processes, one per GPU slot, or one at a time on CPU.

Each run is `petl-bench run ... --if-locked=skip` in a worker process (`worker.py`) that runs job
after job, importing once and keeping the loaded backbone; a crash or an out-of-memory kill ends
that run only (a fresh worker takes the next), and the sweep reports it with its log and goes on. A
run that another process is running already (another sweep of the grid) is skipped: `BUSY`.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from typing import IO

from ..errors import UserError
from ..guard import BUSY_EXIT, holder
from ..results import read_record
from .grid import record_of
from .jobs import Job, JobResult, busy, done, failed, in_job_order


def gpu_slots(requested: int | None) -> list[str]:
    """CUDA device ids to run on, one worker each; [] means one run at a time on CPU."""
    import torch  # here: only a sweep that launches runs needs it, not `--dry-run`

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [d.strip() for d in visible.split(",") if d.strip()][:count]
        if visible is not None
        else [str(i) for i in range(count)]
    )
    if requested is None:
        return ids
    if requested > len(ids):
        if not ids:
            print(f"--gpus {requested}: no GPU here; running one at a time on CPU")
            return []
        raise UserError(f"--gpus {requested}: only {len(ids)} GPU(s) visible ({', '.join(ids)})")
    return ids[:requested]


class Worker:
    """A `python -m petl_bench.sweep.worker` process on one slot (a GPU id, or None on CPU), and its job."""

    def __init__(self, gpu: str | None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        self.gpu, self.started = gpu, 0.0
        self.job: Job | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "petl_bench.sweep.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=_die_with_parent(),
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both are PIPEs
        self.requests: IO[str] = self.process.stdin
        self.replies: IO[str] = self.process.stdout

    def start(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "a") as log:  # appended: a resumed run keeps the killed attempt's output
            device = f"CUDA_VISIBLE_DEVICES={self.gpu} " if self.gpu is not None else ""
            log.write(
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')} worker {self.process.pid}: {device}"
                f"petl-bench {shlex.join(job.argv)}\n"
            )
        self.job, self.started = job, time.monotonic()
        self.requests.write(json.dumps({"argv": job.argv, "log": str(job.log)}) + "\n")
        self.requests.flush()

    def answer(self) -> tuple[int, bool]:
        """The job's exit status, and whether the worker ended with it (call once its stdout is ready)."""
        line = self.replies.readline()
        if not line:  # the worker died on the job: its exit status (negative: the signal) is the run's
            return self.process.wait(), True
        reply = json.loads(line)
        return reply["status"], reply["last"]

    def end(self) -> None:
        self.requests.close()  # the worker leaves its loop
        self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def run_local(jobs: list[Job], gpus: list[str], runs_per_gpu: int = 1, fresh: bool = False) -> list[JobResult]:
    """Run the jobs in worker processes, `runs_per_gpu` per GPU at once (one at a time with no GPU);
    one result per job, in the jobs' order. A worker runs job after job (with `fresh`, one job each:
    a process per run)."""
    slots: list[str | None] = [gpu for gpu in gpus for _ in range(runs_per_gpu)] or [None]
    workers: list[Worker | None] = [None] * len(slots)
    queue, results = list(jobs), []
    try:
        while queue or any(worker and worker.job for worker in workers):
            for i, gpu in enumerate(slots):
                worker = workers[i]
                if not queue or (worker and worker.job):
                    continue
                job = queue.pop(0)
                where = holder(record_of(job.run))
                if where:
                    results.append(busy(job, where))
                    continue
                worker = workers[i] = worker or Worker(gpu)
                worker.start(job)
                print(f"{job.title}: started" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            running = [worker for worker in workers if worker and worker.job]
            ready, _, _ = select.select([worker.replies for worker in running], [], [], 0.5)
            for i, worker in enumerate(workers):
                if worker is None or worker.job is None or worker.replies not in ready:
                    continue
                status, last = worker.answer()
                job, worker.job = worker.job, None
                results.append(_result(job, status, time.monotonic() - worker.started))
                if last or fresh:
                    worker.end()
                    workers[i] = None
    finally:  # interrupted: runs end with the sweep (a re-run resumes them from their checkpoints)
        for worker in workers:
            if worker:
                worker.kill()
    return in_job_order(results)


def _result(job: Job, status: int, seconds: float) -> JobResult:
    if status == 0 and read_record(record_of(job.run)) is not None:
        return done(job, seconds)
    if status == BUSY_EXIT:
        return busy(job, f"see {job.log}")
    return failed(job, _exit_reason(status), job.log)


def _die_with_parent():
    """For the child, between fork and exec: SIGKILL when the sweep dies, even by SIGKILL, so no
    orphan run outlives it and races the re-run (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}" if code else "no record written"
