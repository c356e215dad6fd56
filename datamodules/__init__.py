"""Multi-domain image datasets, their manifests and seeded k-shot splits.

The names below load on first use, so that `datamodules.catalog` (dataset facts, no torch) can be
read by the config and the light commands without the data stack.
"""

import importlib

_HOMES = {
    "MultiDomainDataModule": "multidomain",
    "Manifest": "records",
    "Record": "records",
    "Task": "records",
    "read_manifest": "manifest",
    "draw_split": "splits",
    "PAPER_BATCH_SIZE": "catalog",
    "PAPER_SPLITS": "catalog",
    "canonical_split": "catalog",
    "paper_split": "catalog",
    "parse_shots": "catalog",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
