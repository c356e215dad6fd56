"""Where a sweep's runs execute: local processes (one per GPU, or one at a time on CPU) or Slurm jobs.

Locally, each run is `petl-bench run ... --if-locked=skip` in a worker process (`worker.py`) that
runs job after job, importing once and keeping the loaded backbone; a crash or an out-of-memory
kill ends that run only (a fresh worker takes the next), and the sweep reports it with its log and
goes on. On Slurm each run is a job. A run that
another process is running already (another sweep of the grid) is skipped and reported as such. A
launcher returns the jobs that did not finish: failed, or `busy` elsewhere.
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
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .guard import BUSY_EXIT, holder
from .results import read_record
from .sweep import GridRun, SlurmConfig, record_of


@dataclass
class Job:
    number: int  # position in the sweep's to-do list, for progress lines
    total: int
    run: GridRun
    argv: list[str]  # `petl-bench run` arguments

    @property
    def title(self) -> str:
        cfg = self.run.cfg
        return f"[{self.number}/{self.total}] {self.run.label} {cfg.data.split} seed{cfg.data.seed}"

    @property
    def log(self) -> Path:
        """The local launcher's log of this run, beside its checkpoints."""
        return record_of(self.run).with_suffix("") / "sweep.log"


@dataclass
class Failure:
    job: Job
    reason: str
    log: Path
    busy: bool = False  # not failed: another process runs it


def busy(job: Job, where: str) -> Failure:
    print(f"{job.title}: running in another process ({where}): skipped", flush=True)
    return Failure(job, "running in another process", job.log, busy=True)


def finished_line(job: Job, seconds: float) -> str:
    record = read_record(record_of(job.run)) or {}
    average = record.get("accuracy", {}).get("average")
    return f"{job.title}: done in {_duration(seconds)}" + (f", average {average:.2f}%" if average is not None else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- local -----------------------------------------------------------------------------------------
def gpu_slots(requested: int | None) -> list[str]:
    """CUDA device ids to run on, one worker each; [] means one run at a time on CPU."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()][:count] if visible is not None else \
        [str(i) for i in range(count)]
    if requested is None:
        return ids
    if requested > len(ids):
        if not ids:
            print(f"--gpus {requested}: no GPU here; running one at a time on CPU")
            return []
        raise UserError(f"--gpus {requested}: only {len(ids)} GPU(s) visible ({', '.join(ids)})")
    return ids[:requested]


class Worker:
    """A `python -m petl_bench.worker` process on one slot (a GPU id, or None on CPU), and its job."""

    def __init__(self, gpu: str | None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        self.gpu, self.job, self.started = gpu, None, 0.0
        self.process = subprocess.Popen([sys.executable, "-m", "petl_bench.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                        preexec_fn=_die_with_parent())

    def start(self, job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "a") as log:  # appended: a resumed run keeps the killed attempt's output
            device = f"CUDA_VISIBLE_DEVICES={self.gpu} " if self.gpu is not None else ""
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} worker {self.process.pid}: {device}"
                      f"petl-bench {shlex.join(job.argv)}\n")
        self.job, self.started = job, time.monotonic()
        self.process.stdin.write(json.dumps({"argv": job.argv, "log": str(job.log)}) + "\n")
        self.process.stdin.flush()

    def answer(self) -> tuple[int, bool]:
        """The job's exit status, and whether the worker ended with it (call once its stdout is ready)."""
        line = self.process.stdout.readline()
        if not line:  # the worker died on the job: its exit status (negative: the signal) is the run's
            return self.process.wait(), True
        reply = json.loads(line)
        return reply["status"], reply["last"]

    def end(self) -> None:
        self.process.stdin.close()  # the worker leaves its loop
        self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def run_local(jobs: list[Job], gpus: list[str], runs_per_gpu: int = 1, fresh: bool = False) -> list[Failure]:
    """Run the jobs in worker processes, `runs_per_gpu` per GPU at once (one at a time with no GPU).
    A worker runs job after job (with `fresh`, one job each: a process per run)."""
    slots: list[str | None] = [gpu for gpu in gpus for _ in range(runs_per_gpu)] or [None]
    workers: list[Worker | None] = [None] * len(slots)
    queue, failures = list(jobs), []
    try:
        while queue or any(worker and worker.job for worker in workers):
            for i, gpu in enumerate(slots):
                if not queue or (workers[i] and workers[i].job):
                    continue
                job = queue.pop(0)
                where = holder(record_of(job.run))
                if where:
                    failures.append(busy(job, where))
                    continue
                workers[i] = workers[i] or Worker(gpu)
                workers[i].start(job)
                print(f"{job.title}: started" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            running = [worker for worker in workers if worker and worker.job]
            ready, _, _ = select.select([worker.process.stdout for worker in running], [], [], 0.5)
            for i, worker in enumerate(workers):
                if worker is None or worker.job is None or worker.process.stdout not in ready:
                    continue
                status, last = worker.answer()
                job, worker.job = worker.job, None
                _report(job, status, time.monotonic() - worker.started, failures)
                if last or fresh:
                    worker.end()
                    workers[i] = None
    finally:  # interrupted: runs end with the sweep (a re-run resumes them from their checkpoints)
        for worker in workers:
            if worker:
                worker.kill()
    return failures


def _report(job: Job, status: int, seconds: float, failures: list[Failure]) -> None:
    if status == 0 and read_record(record_of(job.run)) is not None:
        print(finished_line(job, seconds), flush=True)
    elif status == BUSY_EXIT:
        failures.append(busy(job, f"see {job.log}"))
    else:
        failures.append(Failure(job, _exit_reason(status), job.log))
        print(f"{job.title}: FAILED ({failures[-1].reason}); log: {job.log}", flush=True)


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


# -- Slurm -----------------------------------------------------------------------------------------
class SlurmRun:
    """What a Slurm job runs (submitit pickles it with its argument): `petl-bench run ARGV`.

    Slurm warns a job before its time limit, and on clusters so configured before pre-emption,
    with submitit's signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise); submitit then
    calls `checkpoint` and requeues the job, which resumes the run from its last epoch checkpoint.
    Pre-emption's SIGTERM stops the run (exit status 143) with that checkpoint kept: a requeued job
    or the next sweep resumes it."""

    def __call__(self, argv: list[str]) -> str:
        from .cli import main

        code = main(argv)
        if code == BUSY_EXIT:
            return BUSY
        if code:
            raise RuntimeError(f"petl-bench run ended with exit status {code}")
        return "done"

    def checkpoint(self, argv: list[str]):
        import submitit

        return submitit.helpers.DelayedSubmission(self, argv)  # the same run: it resumes from its checkpoint


BUSY = "busy"  # a Slurm job's result when another process ran its run


def run_slurm(jobs: list[Job], slurm: SlurmConfig, folder: Path, name: str) -> list[Failure]:
    """One Slurm job per run (a job array), then wait for all of them."""
    import shutil

    import submitit

    if not shutil.which("sbatch"):
        raise UserError("--launcher slurm: no `sbatch` here (is this a Slurm login node?)")
    earlier = _slurm_queue(name)
    if earlier:  # a killed sweep's jobs run on: submitting their runs again would run them twice
        raise UserError(f"{len(earlier)} Slurm job(s) named {name} from an earlier sweep are still queued or running "
                        f"({', '.join(sorted(earlier))}): wait for them or `scancel --name {name}`, then run again")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(**slurm_parameters(slurm, name))
    try:
        submitted = executor.map_array(SlurmRun(), [job.argv for job in jobs])
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as err:
        raise UserError(f"sbatch refused the jobs: {str(err).strip().splitlines()[-1]}") from None
    started = time.monotonic()
    for job, handle in zip(jobs, submitted):
        print(f"{job.title}: submitted as Slurm job {handle.job_id}", flush=True)
    pending, failures = [[handle, job, 0] for handle, job in zip(submitted, jobs)], []
    while pending:
        # Every second at first, every 30 s after ten minutes: gentle with the scheduler.
        time.sleep(min(30.0, 1.0 + (time.monotonic() - started) / 20))
        queued = _slurm_queue()
        for entry in list(pending):
            handle, job, missing = entry
            finished = handle.paths.result_pickle.exists()  # submitit writes it, result or error
            if not finished and queued is None:
                finished = handle.done()  # no squeue answer: ask submitit (sacct)
            entry[2] = missing = 0 if finished or queued is None or handle.job_id in queued else missing + 1
            if not (finished or missing >= 2):  # twice: a result file may lag the queue
                continue
            pending.remove(entry)
            try:
                if not finished:
                    raise RuntimeError("left the Slurm queue without a result (cancelled, out of time or memory?)")
                if handle.result() == BUSY:
                    failures.append(busy(job, f"see {handle.paths.stderr}"))
                    continue
                print(finished_line(job, time.monotonic() - started), flush=True)
            except Exception as err:  # the job's own error or Slurm's: the log tells which
                failures.append(Failure(job, f"Slurm job {handle.job_id}: {_job_error(err)}", handle.paths.stderr))
                print(f"{job.title}: FAILED ({failures[-1].reason}); log: {handle.paths.stderr}", flush=True)
    return failures


def _job_error(err: Exception) -> str:
    """The line that says what failed: the last of the job's traceback inside submitit's message."""
    parts = [part.strip() for part in str(err).split("-" * 22)]
    trace = next((part for part in parts if part.startswith("Traceback")), None)
    return trace.splitlines()[-1] if trace else (parts[0].splitlines() or [type(err).__name__])[0]


def slurm_parameters(slurm: SlurmConfig, name: str) -> dict:
    """submitit's AutoExecutor parameters; zero or empty values leave the cluster's default."""
    params = {"name": name, "timeout_min": slurm.time_min, "cpus_per_task": slurm.cpus_per_task,
              "slurm_array_parallelism": slurm.array_parallelism, "tasks_per_node": 1, "nodes": 1}
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
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i", *(["--name", name] if name else [])],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.split())
