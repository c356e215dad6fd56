"""The names of k-shot splits: `Nshot` and the paper's aliases (Office-Home's `10pct` is 6-shot).

Plain facts and string functions, no torch: the config hash, record paths and grids read them
without the data stack; `petl_bench.datamodules.splits` draws the splits they name.
"""

from __future__ import annotations

import re

from .errors import UserError

# The paper's split names: "10% (6-shot per class)" and so on.
PAPER_SPLITS = {
    "officehome": {"10pct": 6, "20pct": 12},
    "minidomainnet": {"1pct": 3, "2pct": 6},
}
_SHOT = re.compile(r"^(\d+)shot$")


def parse_shots(dataset: str, split: str) -> int:
    """`Nshot` or a paper alias -> N."""
    aliases = PAPER_SPLITS.get(dataset, {})
    if split in aliases:
        return aliases[split]
    match = _SHOT.match(split)
    if not match or int(match.group(1)) < 1:
        known = ", ".join(["Nshot (N >= 1)", *aliases])
        raise UserError(f"unknown split {split!r} for {dataset} (use {known})")
    return int(match.group(1))


def canonical_split(dataset: str, split: str) -> str:
    """The name runs are stored under: Office-Home `10pct` and `6shot` are the same runs."""
    return f"{parse_shots(dataset, split)}shot"


def paper_split(dataset: str, split: str) -> str:
    """The name tables show: the paper's alias where there is one."""
    shots = parse_shots(dataset, split)
    return next((alias for alias, n in PAPER_SPLITS.get(dataset, {}).items() if n == shots), f"{shots}shot")
