"""What a dataset root is read into: `Record`s, `Task`s and the `Manifest`, and the names they hold.

A record's `label` indexes the dataset's canonical class list (`canonical_classes`, shipped in
`petl_bench/data/`), its `classname` is a class folder's prompt form (`prompt_name`: `_` and `-`
become spaces, lower case, `Alarm_Clock` -> "alarm clock"), its `domain` a task name.
Imports nothing of the package but the standard library: every layer may use these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .images import ImageChecks

OFFICEHOME_DOMAINS = ["Art", "Clipart", "Product", "Real World"]
MINIDOMAINNET_DOMAINS = ["clipart", "painting", "real", "sketch"]
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # `petl-bench data synth` leaves it in the root it writes
DEFAULT_TEMPLATE = "a photo of a {}."  # CLIP's and CoOp's class prompt where a dataset has none of its own
PARTS = ("", "train", "val", "test")  # a record's part of a fixed split; "": the dataset has none (a pool)


@dataclass(frozen=True)
class Record:
    path: str  # relative to the dataset root
    label: int
    domain: str
    classname: str  # prompt form, e.g. "alarm clock"
    part: str = ""  # one of PARTS: where the dataset's own split file puts it


@dataclass(frozen=True)
class Task:
    """One task of the multi-task problem: a domain, the classes its logits range over, and the
    template that makes a class's hand-written prompt (zero-shot's, and a regulariser's target)."""

    name: str
    classnames: tuple[str, ...]
    template: str = DEFAULT_TEMPLATE

    def prompt(self, classname: str) -> str:
        return self.template.format(classname)


@dataclass(frozen=True)
class Manifest:
    root: Path
    domains: list[str]  # task names, in task order
    classnames: list[str]  # prompt form, indexed by label
    records: list[Record]
    skipped: list[str]  # unreadable or empty files, relative to root
    # What is known of each file (stat, header or full decode); None for a hand-made manifest.
    checks: ImageChecks | None = field(default=None, compare=False, repr=False)
    template: str = DEFAULT_TEMPLATE  # the dataset's class prompt (CoOp's per-dataset one where it has one)
    split_source: str = ""  # the file the records' parts come from (e.g. split_zhou_EuroSAT.json); "": none

    @property
    def tasks(self) -> list[Task]:
        return [Task(domain, tuple(self.classnames), self.template) for domain in self.domains]

    @property
    def synthetic(self) -> bool:
        """Made by `petl-bench data synth`: results on it say nothing about the paper's numbers."""
        return (self.root / SYNTHETIC_MARKER).is_file()


def prompt_name(folder_name: str) -> str:
    return folder_name.replace("_", " ").replace("-", " ").lower()


def canonical_classes(dataset: str) -> list[str]:
    """Class folder names in label order, from `petl_bench/data/` (`#` lines: where they come from)."""
    name = {"officehome": "officehome-65.txt", "minidomainnet": "minidomainnet-126.txt"}.get(
        dataset, f"{dataset}-classes.txt"
    )
    text = resources.files("petl_bench").joinpath("data", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
