"""Multi-domain image datasets, their manifests and seeded k-shot splits.

What needs no torch is imported here; the LightningDataModule (Lightning, torchvision) only when it
is asked for (`from petl_bench.datamodules import MultiDomainDataModule`), so that reading a
root, a split or a record name stays light.
"""

from .manifest import read_manifest
from .records import Manifest, Record, Task
from .splits import PAPER_SPLITS, canonical_split, draw_split, paper_split, parse_shots

_DATA_MODULE = ("MultiDomainDataModule", "PAPER_BATCH_SIZE")  # from .multidomain, on first use

__all__ = ["PAPER_BATCH_SIZE", "PAPER_SPLITS", "Manifest", "MultiDomainDataModule", "Record", "Task",
           "canonical_split", "draw_split", "paper_split", "parse_shots", "read_manifest"]


def __getattr__(name: str):
    if name in _DATA_MODULE:
        from . import multidomain

        return getattr(multidomain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
