"""What guards one run while it executes: its lock, and a clean stop on SIGINT and SIGTERM.

Both are per run, taken and given back around one `run.execute`, never per process: a worker
process that executes run after run holds each lock only for its run and leaves its own signal
handlers as they were.

The lock is an exclusive `flock` on `seed{K}/run.lock`, beside the run's checkpoint and CSV log.
The kernel drops it when its holder exits in any way, SIGKILL included, so a lock is never stale
and the file's presence means nothing; the holder writes `PID on HOST` into it for messages.
(On NFS, `flock` becomes an fcntl lock handled by the server's lock manager.)
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_NAME = "run.lock"
BUSY_EXIT = 75  # EX_TEMPFAIL: the run is running elsewhere, try again later
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the stop signals received while `stop_on_signals` guards a block


class RunBusy(UserError):
    """Another process holds the run's lock and the caller chose not to wait."""


class Interrupted(BaseException):
    """A run stopped by a signal. A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` on its way out swallows it; Lightning hands it on after its own clean-up."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed: 130, 143

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}" + (f": {self.detail}" if self.detail else "")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise `Interrupted` in the main thread; the handlers
    from before come back after it. A signal the process ignores (`nohup`, `&` in a script) stays
    ignored. Lightning's own SIGTERM handler, installed during `fit` and `test`, calls this one
    after its own, and its `SIGTERMException` (which exits 0) is never reached."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    owner = os.getpid()

    def stop(signum, frame):
        if os.getpid() != owner:  # a forked child (a loader worker before `quiet_worker`): its parent stops
            return
        _received.append(signum)
        raise Interrupted(signum)

    def drop_pending(unraisable):  # see `raise_pending_stop`; anything else as before
        if not isinstance(unraisable.exc_value, Interrupted):
            previous_hook(unraisable)

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, drop_pending
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _received.clear()


def pending_stop() -> Interrupted | None:
    """The stop a signal asked for in the block `stop_on_signals` guards, if one did. Its
    `Interrupted` may have been lost: Python drops an exception raised where it cannot hand it on
    (a fork hook as loader workers start, a destructor), and the run goes on as if no signal had
    come, or fails on what the signal did to its loader workers."""
    return Interrupted(_received[0]) if _received else None


def raise_pending_stop() -> None:
    """Raise the pending stop, if any (the runner calls this at each batch's end)."""
    stop = pending_stop()
    if stop:
        raise stop


@contextmanager
def stops_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back from the calling thread for the block, delivered after it if
    they came. A process forked in the block starts with them held (a child inherits the mask),
    and a loader worker keeps them held until `quiet_worker` has its handlers in place: torch sets
    its own SIGTERM handler first, which kills the worker, and its parent's loader then fails on
    the dead worker with a traceback."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def quiet_worker(worker_id: int | None = None) -> None:
    """In a data loader worker (its `worker_init_fn`): leave the stop to the main process. Ctrl-C
    signals the whole process group and Slurm every process of a step, so workers get the signal
    too; the handler they inherit would raise in each of them (a traceback apiece, and the main
    process's loader then fails on its dead workers), and torch's own makes SIGTERM kill them. So
    SIGINT is ignored, and SIGTERM ends the worker quietly with status 0, which the loader does not
    take for a failure, unless the process ignores SIGTERM. A stop signal held since the fork
    (`stops_held`) is delivered once these handlers are in place."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As the parent had it: torch's own handler is set in C, out of Python's sight.
    ignored = signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignored else _leave_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _leave_quietly(signum, frame):
    os._exit(0)


def lock_path(record: Path) -> Path:
    """The lock file of the run whose record is `record`."""
    return record.with_suffix("") / LOCK_NAME


@contextmanager
def run_lock(record: Path, wait: bool = True, say: Callable[[str], None] = print) -> Iterator[bool]:
    """Hold the run's lock for the block; yields whether it had to wait for another process.
    Held by another: with `wait`, `say` so and block until it is free; else raise `RunBusy`."""
    path = lock_path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = not _try_lock(fd, fcntl.LOCK_EX)
        if waited:
            where = f"in another process ({_holder(fd)}; lock {path})"
            if not wait:
                raise RunBusy(f"{record.parent.name}/{record.stem} is running {where}: skipped")
            say(f"{record.parent.name}/{record.stem} is running {where}: waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield waited
    finally:
        os.close(fd)  # releases the lock


def holder(record: Path) -> str | None:
    """Who runs the run now (`pid N on HOST`), or None when nobody holds its lock. Only looks:
    it never creates the lock file."""
    try:
        fd = os.open(lock_path(record), os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd, fcntl.LOCK_SH, tries=1):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _holder(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int, kind: int, tries: int = 3) -> bool:
    """Take the lock without blocking; a few tries apart, so that another process merely looking
    (`holder`'s brief shared lock) is not taken for a run."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "starting"
