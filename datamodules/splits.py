"""Seeded k-shot splits: N training images per class per task, drawn from a pool or a fixed split.

A pool (records without a `part`): N training images per domain and class; every other image is a
test image. A fixed split (records whose `part` is the dataset's split file's: train, val, test),
CoOp's protocol as Dassl's `generate_fewshot_dataset` draws it: N training images per class from
the train part, min(N, 4) validation images per class from the val part, a class with fewer taking
all it has; the test set is the test part. A split is drawn with its own `random.Random(seed)` over
paths in sorted order (the training draw, then the validation draw), so the same seed gives the
same split on any machine, and it is written to a CSV whose SHA-256 the run record keeps.
Over several datasets joined, each dataset's split is drawn by its own protocol as a run on it alone
draws it (the same seed, the same records), then named as the joined manifest names them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from petl_bench.config import root_folder
from petl_bench.errors import UserError
from petl_bench.files import FILE_NAMES, write_text_atomic

# The split names live beside the config, torch-free; the splits they name are drawn here.
from .catalog import PAPER_SPLITS, canonical_split, paper_split, parse_shots, split_folder  # noqa: F401  (their home)
from .records import PARTS, Manifest, Record, joined_record

Unreadable = Callable[[list[Record]], set[str]]  # records -> paths of those that cannot be decoded
VAL_SHOTS = 4  # CoOp's validation shots per class: min(N, 4)


@dataclass(frozen=True)
class Split:
    train: list[Record]
    val: list[Record]  # only a fixed split has a val part
    test: list[Record]


@dataclass
class _Cell:
    """One domain and class of a draw: its records in path order and the positions drawn."""

    domain: str
    classname: str
    pool: list[Record]
    chosen: set[int]


def draw_split(manifest: Manifest, shots: int, seed: int, unreadable: Unreadable | None = None) -> Split:
    """`shots` training records per domain and class, the rest for test (a pool); or CoOp's
    few-shot protocol over the manifest's fixed split (records with parts).

    With `unreadable`, every image drawn is decoded first (the caller remembers verdicts, so this
    costs once per file): one that fails is left out and replaced by the next readable image of its
    cell in an order fixed by the seed and the cell. The main draw's random sequence is the same
    whatever fails, so other cells draw what they would have drawn."""
    if manifest.parts:
        return _joined_split(manifest, shots, seed, unreadable)
    parts = {record.part for record in manifest.records}
    if parts <= {""}:
        cells = _cells(manifest, manifest.records, shots, random.Random(seed), strict=True)
        train, test = _take(cells, shots, unreadable, str(seed), strict=True)
        return Split(train, [], test)
    unknown = parts - set(PARTS[1:])
    if unknown:
        raise UserError(
            f"{manifest.root}: where one record has a split part, each must be train, val or test "
            f"(found {', '.join(map(repr, sorted(unknown)))})"
        )
    return _fixed_split(manifest, shots, seed, unreadable)


def _joined_split(manifest: Manifest, shots: int, seed: int, unreadable: Unreadable | None) -> Split:
    """Each part's own draw, its records renamed into the joined manifest (`records.joined_record`)."""
    train, val, test = [], [], []
    for part in manifest.parts:

        def renamed(records: list[Record], part: Manifest = part) -> list[Record]:
            return [joined_record(part, record) for record in records]

        def part_unreadable(records: list[Record], part: Manifest = part) -> set[str]:
            assert unreadable is not None  # passed on only where given
            return {path.removeprefix(f"{part.root.name}/") for path in unreadable(renamed(records))}

        split = draw_split(part, shots, seed, part_unreadable if unreadable else None)
        train += renamed(split.train)
        val += renamed(split.val)
        test += renamed(split.test)
    return Split(train, val, test)


def _fixed_split(manifest: Manifest, shots: int, seed: int, unreadable: Unreadable | None) -> Split:
    """CoOp's protocol over the manifest's parts: the training draw, then the validation draw."""
    by_part: dict[str, list[Record]] = defaultdict(list)
    for record in manifest.records:
        by_part[record.part].append(record)
    rng = random.Random(seed)
    train_cells = _cells(manifest, by_part["train"], shots, rng, strict=False)
    val_shots = min(shots, VAL_SHOTS)
    val_cells = _cells(manifest, by_part["val"], val_shots, rng, strict=False)
    train, _ = _take(train_cells, shots, unreadable, str(seed), strict=False)
    val, _ = _take(val_cells, val_shots, unreadable, f"{seed}/val", strict=False)
    task_order = {domain: i for i, domain in enumerate(manifest.domains)}
    test = sorted(by_part["test"], key=lambda r: (task_order[r.domain], r.label, r.path))  # as a pool's: by cell
    return Split(train, val, test)


def _cells(manifest: Manifest, records: list[Record], shots: int, rng: random.Random, strict: bool) -> list[_Cell]:
    """Each non-empty (domain, class) cell of `records` with `shots` positions drawn from `rng`;
    a cell with fewer records is an error (`strict`) or drawn whole (Dassl's rule)."""
    by_cell: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for record in records:
        by_cell[(record.domain, record.label)].append(record)
    cells = []
    for domain in manifest.domains:
        for label, classname in enumerate(manifest.classnames):
            pool = sorted(by_cell.get((domain, label), []), key=lambda r: r.path)
            if not pool:
                continue
            if shots > len(pool) and strict:
                raise UserError(
                    f"{shots}-shot split needs {shots} training images per class, but "
                    f"{domain}/{classname} has {len(pool)}"
                )
            chosen = set(rng.sample(range(len(pool)), shots)) if shots <= len(pool) else set(range(len(pool)))
            cells.append(_Cell(domain, classname, pool, chosen))
    return cells


def _take(
    cells: list[_Cell], shots: int, unreadable: Unreadable | None, redraw_key: str, strict: bool
) -> tuple[list[Record], list[Record]]:
    """(the drawn records, the readable rest) of `cells`, unreadable draws replaced from their
    cell's rest in an order seeded by `redraw_key` and the cell; a cell left with fewer than
    `shots` readable draws is an error (`strict`) or keeps what it has (Dassl's rule)."""
    bad = unreadable([cell.pool[i] for cell in cells for i in cell.chosen]) if unreadable else set()
    drawn, rest = [], []
    for cell in cells:
        chosen = cell.chosen
        if bad & {cell.pool[i].path for i in chosen}:
            assert unreadable is not None  # without it, nothing is bad
            chosen = _redraw(
                cell.pool, chosen, shots, bad, unreadable, random.Random(f"{redraw_key}/{cell.domain}/{cell.classname}")
            )
            if strict and len(chosen) < shots:
                readable = len([r for r in cell.pool if r.path not in bad])
                raise UserError(
                    f"{shots}-shot split needs {shots} readable training images per class, "
                    f"but {cell.domain}/{cell.classname} has {readable}"
                )
        drawn += [r for i, r in enumerate(cell.pool) if i in chosen]
        rest += [r for i, r in enumerate(cell.pool) if i not in chosen and r.path not in bad]
    return drawn, rest


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


def split_csv(split: Split) -> str:
    """The split's rows, train then val then test (a pool has no val rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "domain", "classname", "label", "subset"])
    for subset, records in (("train", split.train), ("val", split.val), ("test", split.test)):
        writer.writerows([r.path, r.domain, r.classname, r.label, subset] for r in records)
    return buffer.getvalue()


def write_split(path: Path, split: Split) -> str:
    """Write the split atomically; return its SHA-256. A file name that is not UTF-8 is written as
    the bytes the file system holds (`files.FILE_NAMES`)."""
    text = split_csv(split)
    write_text_atomic(path, text, errors=FILE_NAMES)
    return hashlib.sha256(text.encode("utf-8", FILE_NAMES)).hexdigest()


def split_path(
    out: Path, dataset: str, root: str, split: str, seed: int, classes: str = "all", holdout: str = ""
) -> Path:
    """`{out}/splits/{dataset}/{root}/{Nshot}/seed{K}.csv`: a split of another root is another file,
    and so is one of a class subset or a held-out domain (`{Nshot}-base`, `{Nshot}-holdout-sketch`:
    `catalog.split_folder`)."""
    folder = split_folder(dataset, split, classes, holdout)
    return Path(out) / "splits" / dataset / root_folder(root) / folder / f"seed{seed}.csv"
