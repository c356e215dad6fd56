"""What a run is doing, said as it happens: each phase that can take more than a few seconds says so
in one line as it starts, and in one more with its duration as it ends.

Any layer may say it (this file imports no torch): components call `phase` and `say`, which write
to the `petl_bench` logger. Nothing shows unless someone listens: a run attaches its console and its
`seed{K}/run.log` for as long as it executes (`runlog.text_log`); a Python API user may listen with
`logging.basicConfig(level=logging.INFO)`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOG = logging.getLogger("petl_bench")


class Phase:
    """A phase in progress; what it found (`result`) ends its closing line."""

    def __init__(self):
        self.result: str | None = None


@contextmanager
def phase(name: str, doing: str) -> Iterator[Phase]:
    """`{name}: {doing} ...` now and `{name}: {result or 'done'} ({duration})` when the block ends.
    A block that raises says nothing more: the error is the run's last line."""
    LOG.info("%s: %s ...", name, doing)
    started = time.perf_counter()
    step = Phase()
    yield step
    LOG.info("%s: %s (%s)", name, step.result or "done", duration(time.perf_counter() - started))


def say(line: str) -> None:
    LOG.info("%s", line)


def duration(seconds: float) -> str:
    """`0.4 s` under a minute, else `h:mm:ss`."""
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def clock(seconds: float) -> str:
    """`h:mm:ss`, as Dassl's logs give elapsed time and ETA."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
