"""Third-party chatter off: Lightning's device banners and product tips, and its warnings about
itself, by their text; every other message and warning of theirs still shows.

Importing `petl_bench` calls `quiet_third_parties()` (logging and warnings only, no torch), so the
Python API is as quiet as `petl-bench run`; `PETL_BENCH_CHATTER=1` keeps everything. The run adds
what only it decides (`run.quiet_lightning`). W&B's deprecation line is avoided where it starts
(`tracking.py`).
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# Lightning's info lines that say nothing about the run: devices, tips for its cloud products.
CHATTER_LINES = re.compile(
    r"(GPU|TPU|HPU|IPU) available|LOCAL_RANK: \d|💡 Tip: |Loading `train_dataloader` to estimate"
)
# Lightning's warnings about its own logging interval, dependencies and internals.
CHATTER_WARNINGS = (
    ".*is smaller than the logging interval",  # a short epoch is what few-shot runs have
    ".*`tensorboardX` has been removed as a dependency",
    ".*LeafSpec",  # Lightning's own use of a torch API it deprecates
)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not CHATTER_LINES.search(record.getMessage())


def quiet_third_parties() -> None:
    """Drop the chatter in this process (again after `warnings` filters were reset; idempotent).
    The loggers are named, not imported: this works before Lightning is imported, and after."""
    if os.environ.get("PETL_BENCH_CHATTER") == "1":
        return
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter())
    for pattern in CHATTER_WARNINGS:
        warnings.filterwarnings("ignore", pattern)
