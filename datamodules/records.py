"""What a dataset root is read into: `Record`s, `Task`s and the `Manifest`, and the names they hold.

A record's `label` indexes its task's classes (`Task.classnames`), for one dataset its canonical
class list (`canonical_classes`, shipped in `petl_bench/data/`); its `classname` is a class folder's
prompt form (`prompt_name`: `_` and `-` become spaces, lower case, `Alarm_Clock` -> "alarm clock"),
its `domain` a task name.
A manifest over several datasets (`--dataset a+b`, `manifest.join_manifests`) keeps each dataset's
manifest as a part; its records are the parts' under their common root (`joined_record`), each task
with its own dataset's classes and template.
Imports nothing of the package but the standard library: every layer may use these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    classnames: list[str]  # prompt form, indexed by label; empty where joined (each part has its own)
    records: list[Record]
    skipped: list[str]  # unreadable or empty files, relative to root
    # What is known of each file (stat, header or full decode); None for a hand-made manifest.
    checks: ImageChecks | None = field(default=None, compare=False, repr=False)
    template: str = DEFAULT_TEMPLATE  # the dataset's class prompt (CoOp's per-dataset one where it has one)
    split_source: str = ""  # the file the records' parts come from (e.g. split_zhou_EuroSAT.json); "": none
    dataset: str = ""  # the dataset's name (`read_manifest`'s); joined: the parts' names joined by +
    # Joined (`--dataset a+b`): each dataset's own manifest, in task order, each in its folder under `root`.
    parts: tuple[Manifest, ...] = ()

    @property
    def tasks(self) -> list[Task]:
        if self.parts:
            return [task for part in self.parts for task in part.joined_tasks()]
        return [Task(domain, tuple(self.classnames), self.template) for domain in self.domains]

    def joined_tasks(self) -> list[Task]:
        """This dataset's tasks as a run over several datasets names them (`task_name`)."""
        return [Task(task_name(self, task.name), task.classnames, task.template) for task in self.tasks]

    def with_parts(self, parts: tuple[Manifest, ...]) -> Manifest:
        """The joined manifest over `parts` in place of its own (each part's records renamed in)."""
        return replace(self, parts=parts, records=joined_records(parts))

    def with_template(self, template: str) -> Manifest:
        """The manifest whose every task prompts with `template`."""
        return replace(self, template=template, parts=tuple(part.with_template(template) for part in self.parts))

    @property
    def synthetic(self) -> bool:
        """Made by `petl-bench data synth`: results on it say nothing about the paper's numbers."""
        if self.parts:
            return any(part.synthetic for part in self.parts)
        return (self.root / SYNTHETIC_MARKER).is_file()


def task_name(part: Manifest, domain: str) -> str:
    """A task's name in a run over several datasets: the dataset's name where it has one task,
    else `dataset/domain`."""
    return part.dataset if len(part.domains) == 1 else f"{part.dataset}/{domain}"


def joined_record(part: Manifest, record: Record) -> Record:
    """A part's record as the joined manifest holds it: its path under the common root (the part's
    folder, then its own path), its task's joined name; its label still indexes its task's classes."""
    return replace(record, path=f"{part.root.name}/{record.path}", domain=task_name(part, record.domain))


def joined_records(parts: tuple[Manifest, ...]) -> list[Record]:
    """Every part's records, in part order, as the manifest joining them holds them."""
    return [joined_record(part, record) for part in parts for record in part.records]


def prompt_name(folder_name: str) -> str:
    return folder_name.replace("_", " ").replace("-", " ").lower()


def canonical_classes(dataset: str) -> list[str]:
    """Class folder names in label order, from `petl_bench/data/` (`#` lines: where they come from)."""
    name = {"officehome": "officehome-65.txt", "minidomainnet": "minidomainnet-126.txt"}.get(
        dataset, f"{dataset}-classes.txt"
    )
    text = resources.files("petl_bench").joinpath("data", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
