"""A local sweep's long-lived run process: it imports once, keeps each loaded backbone, and runs one
run after another.

The sweep (`local.run_local`) starts one per slot (a GPU, `--runs-per-gpu` per GPU, or one on CPU)
and writes one job per line to its stdin: `{"argv": [...], "log": path}`. The worker runs the job as
`petl-bench run` would (`runcommand.run_command` on the same arguments, so a sweep run builds the
config a hand-typed one builds) with its output, down to the file descriptors, in the job's log, and
answers `{"status": N, "last": bool}` on its stdout. Between runs it puts back the process state a
run may change. After a run that raised what `run_command` does not expect, or that a signal
stopped, its state is not to be trusted: it answers `last` and exits, and the sweep starts a fresh
worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import typing
import warnings

import torch

from ..run import keep_backbones
from ..runcommand import run_command

# Exit statuses after which the worker stops: the run was stopped by SIGINT / SIGTERM.
STOPPED = (130, 143)


class ProcessState:
    """What a run may change in its process and the next run must not inherit."""

    def __init__(self):
        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self.warning_filters = list(warnings.filters)
        self.formatwarning = warnings.formatwarning
        self.handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.dtype = torch.get_default_dtype()
        self.matmul_precision = torch.get_float32_matmul_precision()
        self.tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        self.threads = torch.get_num_threads()

    def restore(self) -> None:
        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        # typeshed types `filters` as a Sequence ("do not mutate"); it is the list the C module reads
        typing.cast(list, warnings.filters)[:] = self.warning_filters
        warnings.formatwarning = self.formatwarning
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        torch.set_default_dtype(self.dtype)
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.tf32
        torch.set_num_threads(self.threads)


def serve() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # fd 1 and 2 become each run's log
    quiet = os.open(os.devnull, os.O_WRONLY)
    _point_output_at(quiet)
    keep_backbones()
    state = ProcessState()
    for line in sys.stdin:
        job = json.loads(line)
        status, last = _run(job["argv"], job["log"], quiet)
        state.restore()
        answers.write(json.dumps({"status": status, "last": last}) + "\n")
        if last:
            return


def _run(argv: list[str], log: str, quiet: int) -> tuple[int, bool]:
    with open(log, "a") as file:
        _point_output_at(file.fileno())
    try:
        status = run_command(argv)
        return status, status in STOPPED
    except BaseException:  # run_command answers every failure it expects; this one may leave any state
        traceback.print_exc()
        return 1, True
    finally:
        _point_output_at(quiet)


def _point_output_at(fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


if __name__ == "__main__":
    serve()
