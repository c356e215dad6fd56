"""Expected image counts, and the one comparison that `data check` prints and a run warns with.

Counts come from `petl_bench/data/{dataset}-counts.csv` (per domain, and per class where a source gives
them; each file's header names its sources) and, for DomainNet and MiniDomainNet, from the image lists
in the dataset root, which name every image. A root with fewer images than expected still runs: people
train on subsets. Missing domain or class folders are the readers' errors, not counted here.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import coop
from .datasets import TITLES, domainnet_lists, listed_images
from .records import MINIDOMAINNET_DOMAINS, Manifest, canonical_classes

LISTED = 20  # cells and missing images `data check` prints; the rest are counted


@dataclass(frozen=True)
class Expected:
    domains: dict[str, int]  # images per domain
    cells: dict[tuple[str, str], int]  # (domain, class folder) -> images, where a source gives them
    images: set[str]  # every image by path, where lists name them; else empty


@dataclass(frozen=True)
class CountCheck:
    title: str
    found: dict[str, int]  # readable images per domain
    expected: dict[str, int]
    short_cells: list[tuple[str, str, int, int]]  # (domain, class, found, expected) that differ
    missing: list[str]  # listed images not on disk
    per_class: bool  # a source gives per-class counts

    @property
    def total(self) -> tuple[int, int]:
        return sum(self.found.values()), sum(self.expected.values())

    def summary(self) -> str:
        """One line: found vs expected, and where the difference is."""
        found, expected = self.total
        if found == expected and not self.short_cells:
            return f"{self.title}: all {expected:,} expected images"
        where = []
        if self.short_cells:
            domain, cls, n, want = self.short_cells[0]
            where.append(f"{len(self.short_cells)} domain/class cells differ, e.g. {domain}/{cls} {n} of {want}")
        else:
            where += [
                f"{d} {self.found.get(d, 0):,} of {n:,}" for d, n in self.expected.items() if self.found.get(d, 0) != n
            ][:3]
        if self.missing:
            where.append(f"{len(self.missing):,} listed images missing, e.g. {self.missing[0]}")
        diff = f"{expected - found:,} fewer" if found <= expected else f"{found - expected:,} more"
        return f"{self.title}: {found:,} of {expected:,} expected images ({diff}; {'; '.join(where)})"

    def details(self) -> list[str]:
        lines = [self.summary()]
        if not self.per_class:
            lines.append("  (no source gives per-class counts for this dataset: compared per domain)")
        lines += [f"  {domain}/{cls}: {n} of {want}" for domain, cls, n, want in self.short_cells[:LISTED]]
        lines += [f"  missing: {path}" for path in self.missing[:LISTED]]
        more = max(0, len(self.short_cells) - LISTED) + max(0, len(self.missing) - LISTED)
        return lines + ([f"  ... and {more:,} more"] if more else [])


def _count_rows(dataset: str) -> list[dict] | None:
    path = resources.files("petl_bench").joinpath("data", f"{dataset}-counts.csv")
    if not path.is_file():
        return None
    text = "".join(line for line in io.StringIO(path.read_text()) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


def _image_lists(dataset: str, root: Path) -> dict[str, list[Path]] | None:
    """The lists in a root that name every image: MiniDomainNet's (Dassl's) and DomainNet's."""
    if dataset == "minidomainnet":
        return {
            d: [root / "splits_mini" / f"{d}_{part}.txt" for part in ("train", "test")] for d in MINIDOMAINNET_DOMAINS
        }
    return domainnet_lists(root) if dataset == "domainnet" else None


def expected_counts(dataset: str, root: Path) -> Expected | None:
    """What the dataset holds, or None where nothing is known (`folder`)."""
    lists = _image_lists(dataset, root)
    listed = listed_images(lists, canonical_classes(dataset)) if lists else []
    rows = _count_rows(dataset)
    if rows is None and not listed:
        return None
    domains = Counter(domain for _, domain, _ in listed)
    cells = Counter((domain, cls) for _, domain, cls in listed)
    for row in rows or []:  # a source's counts; the lists then say per class and per image
        if not row["class"]:
            domains[row["domain"]] = int(row["images"])
        elif not listed:
            cells[(row["domain"], row["class"])] = int(row["images"])
    return Expected(dict(domains), dict(cells), {path for path, _, _ in listed})


def compare_counts(dataset: str, manifest: Manifest) -> CountCheck | None:
    expected = expected_counts(dataset, manifest.root)
    if expected is None:
        return None
    classes = canonical_classes(dataset)
    found_cells = Counter((r.domain, classes[r.label]) for r in manifest.records)
    found = Counter(r.domain for r in manifest.records)
    domain_order, class_order = ({name: i for i, name in enumerate(names)} for names in (manifest.domains, classes))
    short = sorted(
        ((d, c, found_cells[(d, c)], n) for (d, c), n in expected.cells.items() if found_cells[(d, c)] != n),
        key=lambda cell: (domain_order[cell[0]], class_order[cell[1]]),
    )
    on_disk = {r.path for r in manifest.records} | set(manifest.skipped)
    return CountCheck(
        TITLES.get(dataset, dataset),
        {d: found[d] for d in expected.domains},
        expected.domains,
        short,
        sorted(expected.images - on_disk),
        bool(expected.cells),
    )


def warn_if_short(dataset: str, manifest: Manifest) -> None:
    """One warning line when a root holds fewer images than the dataset has; the run goes on. Synthetic
    roots (`data synth`) are small by design and say so themselves."""
    if manifest.synthetic:
        return
    if dataset in coop.SPECS:
        short = coop.shortfall(dataset, manifest)
        if short:
            warnings.warn(f"{short}; going on with what is there", stacklevel=2)
        return
    check = compare_counts(dataset, manifest)
    if check and check.total[0] < check.total[1]:
        warnings.warn(f"{check.summary()}; going on with what is there", stacklevel=2)
