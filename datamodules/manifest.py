"""`read_manifest`: a dataset's name and root -> its `Manifest`, through the reader of that dataset;
several datasets joined (`a+b`, a common root holding each in its folder) -> one manifest of all
their tasks (`join_manifests`).

The readers are `readers.py`'s (Office-Home, MiniDomainNet, folder), `datasets.py`'s (PACS,
VLCS, Office-31, TerraIncognita, DomainNet) and `coop.py`'s (CoOp's benchmark, the ImageNet family).
The cache of verdicts from earlier scans is an argument, handed down to the reader. Imports the readers: no torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.errors import UserError

from . import coop, datasets, readers
from .catalog import JOIN, dataset_folder, dataset_parts
from .images import ImageChecks
from .records import Manifest, joined_records
from .scan import check_root

if TYPE_CHECKING:
    from .cache import Cache

READERS = {**readers.READERS, **datasets.READERS, **coop.READERS}


def read_manifest(dataset: str, root: str | Path, cache: Cache | None = None) -> Manifest:
    """The dataset's manifest; with a `cache`, image headers are read only for files not seen
    as they are now by an earlier scan of this root. Datasets joined by `+` read each from its
    folder under `root` (`catalog.dataset_folder`)."""
    names = dataset_parts(dataset)
    if len(names) > 1:
        common = check_root(root)
        folders = {name: dataset_folder(str(common), name) for name in names}
        missing = [f"{name} ({folder})" for name, folder in folders.items() if not Path(folder).is_dir()]
        if missing:
            raise UserError(
                f"dataset root {common} lacks the folder of {', '.join(missing)}: a run over several datasets "
                "reads each in its folder under --root (catalog.DATASET_FOLDERS, else its name)"
            )
        return join_manifests(common, [read_manifest(name, folders[name], cache) for name in names])
    if dataset not in READERS:
        raise UserError(f"unknown dataset {dataset!r} (known: {', '.join(READERS)})")
    return replace(READERS[dataset](check_root(root), cache), dataset=dataset)


def join_manifests(root: Path, parts: list[Manifest]) -> Manifest:
    """One manifest of the `parts`' tasks, in their order, over their common `root` (each part a
    dataset in its folder there): records and skipped files under the common root, the parts' image
    checks as one, the template theirs where they agree ("" where they differ: each task has its own)."""
    checks = None
    if all(part.checks for part in parts):
        checks = ImageChecks.joined(root, {part.root.name: part.checks for part in parts if part.checks})
    templates = {part.template for part in parts}
    return Manifest(
        root=root,
        domains=[task.name for part in parts for task in part.joined_tasks()],
        classnames=[],
        records=joined_records(tuple(parts)),
        skipped=[f"{part.root.name}/{rel}" for part in parts for rel in part.skipped],
        checks=checks,
        template=templates.pop() if len(templates) == 1 else "",
        split_source=", ".join(f"{part.dataset}: {part.split_source}" for part in parts if part.split_source),
        dataset=JOIN.join(part.dataset for part in parts),
        parts=tuple(parts),
    )
