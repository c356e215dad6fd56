"""Multi-domain image datasets, their manifests and seeded k-shot splits."""

from .multidomain import PAPER_BATCH_SIZE, MultiDomainDataModule
from .records import Manifest, Record, Task, read_manifest
from .splits import PAPER_SPLITS, canonical_split, draw_split, paper_split, parse_shots

__all__ = ["PAPER_BATCH_SIZE", "PAPER_SPLITS", "Manifest", "MultiDomainDataModule", "Record", "Task",
           "canonical_split", "draw_split", "paper_split", "parse_shots", "read_manifest"]
