"""`read_manifest`: a dataset's name and root -> its `Manifest`, through the reader of that dataset.

The readers are `readers.py`'s (Office-Home, MiniDomainNet, folder), `datasets.py`'s (PACS,
VLCS, Office-31, TerraIncognita, DomainNet) and `coop.py`'s (CoOp's benchmark, the ImageNet family).
The cache of verdicts from earlier scans is an argument, handed down to the reader. Imports the readers: no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.errors import UserError

from . import coop, datasets, readers
from .records import Manifest
from .scan import check_root

if TYPE_CHECKING:
    from .cache import Cache

READERS = {**readers.READERS, **datasets.READERS, **coop.READERS}


def read_manifest(dataset: str, root: str | Path, cache: Cache | None = None) -> Manifest:
    """The dataset's manifest; with a `cache`, image headers are read only for files not seen
    as they are now by an earlier scan of this root."""
    if dataset not in READERS:
        raise UserError(f"unknown dataset {dataset!r} (known: {', '.join(READERS)})")
    return READERS[dataset](check_root(root), cache)
