"""Seeded k-shot splits: N training images per class per task; every other image is a test image.

A split is drawn with its own `random.Random(seed)` over paths in sorted order, so the same seed
gives the same split on any machine, and it is written to a CSV whose SHA-256 the run record keeps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from petl_bench.config import root_folder
from petl_bench.errors import UserError
from petl_bench.files import FILE_NAMES, write_text_atomic

# The split names live beside the config, torch-free; the splits they name are drawn here.
from .catalog import PAPER_SPLITS, canonical_split, paper_split, parse_shots, split_folder  # noqa: F401  (their home)
from .records import Manifest, Record

Unreadable = Callable[[list[Record]], set[str]]  # records -> paths of those that cannot be decoded


def draw_split(
    manifest: Manifest, shots: int, seed: int, unreadable: Unreadable | None = None
) -> tuple[list[Record], list[Record]]:
    """`shots` training records per domain and class, the rest for test.

    With `unreadable`, every image drawn is decoded first (the caller remembers verdicts, so this
    costs once per file): one that fails is left out of both sets and replaced by the next
    readable image of its cell in an order fixed by the seed and the cell. The main draw's random
    sequence is the same whatever fails, so other cells draw what they would have drawn."""
    by_cell: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for record in manifest.records:
        by_cell[(record.domain, record.label)].append(record)
    rng = random.Random(seed)
    cells = []  # (domain, classname, pool, chosen indices)
    for domain in manifest.domains:
        for label, classname in enumerate(manifest.classnames):
            pool = sorted(by_cell.get((domain, label), []), key=lambda r: r.path)
            if not pool:
                continue
            if shots > len(pool):
                raise UserError(
                    f"{shots}-shot split needs {shots} training images per class, but "
                    f"{domain}/{classname} has {len(pool)}"
                )
            cells.append((domain, classname, pool, set(rng.sample(range(len(pool)), shots))))
    bad = unreadable([cell[2][i] for cell in cells for i in cell[3]]) if unreadable else set()
    train, test = [], []
    for domain, classname, pool, chosen in cells:
        if bad & {pool[i].path for i in chosen}:
            assert unreadable is not None  # without it, nothing is bad
            chosen = _redraw(pool, chosen, shots, bad, unreadable, random.Random(f"{seed}/{domain}/{classname}"))
            if len(chosen) < shots:
                readable = len([r for r in pool if r.path not in bad])
                raise UserError(
                    f"{shots}-shot split needs {shots} readable training images per class, "
                    f"but {domain}/{classname} has {readable}"
                )
        train += [r for i, r in enumerate(pool) if i in chosen]
        test += [r for i, r in enumerate(pool) if i not in chosen and r.path not in bad]
    return train, test


def _redraw(
    pool: list[Record], chosen: set[int], shots: int, bad: set[str], unreadable: Unreadable, rng: random.Random
) -> set[int]:
    """The readable part of `chosen`, topped up from the rest of the pool in `rng`'s order; adds
    the unreadable images it meets to `bad`."""
    kept = {i for i in chosen if pool[i].path not in bad}
    spare = [i for i in range(len(pool)) if i not in chosen]
    rng.shuffle(spare)
    while len(kept) < shots and spare:
        batch, spare = spare[: shots - len(kept)], spare[shots - len(kept) :]
        bad |= unreadable([pool[i] for i in batch])
        kept |= {i for i in batch if pool[i].path not in bad}
    return kept


def split_csv(train: list[Record], test: list[Record]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "domain", "classname", "label", "subset"])
    for subset, records in (("train", train), ("test", test)):
        writer.writerows([r.path, r.domain, r.classname, r.label, subset] for r in records)
    return buffer.getvalue()


def write_split(path: Path, train: list[Record], test: list[Record]) -> str:
    """Write the split atomically; return its SHA-256. A file name that is not UTF-8 is written as
    the bytes the file system holds (`files.FILE_NAMES`)."""
    text = split_csv(train, test)
    write_text_atomic(path, text, errors=FILE_NAMES)
    return hashlib.sha256(text.encode("utf-8", FILE_NAMES)).hexdigest()


def split_path(out: Path, dataset: str, root: str, split: str, seed: int, classes: str = "all") -> Path:
    """`{out}/splits/{dataset}/{root}/{Nshot}/seed{K}.csv`: a split of another root is another file,
    and so is one of a class subset (`{Nshot}-base`: `catalog.split_folder`)."""
    folder = split_folder(dataset, split, classes)
    return Path(out) / "splits" / dataset / root_folder(root) / folder / f"seed{seed}.csv"
