"""Leave-one-domain-out (DomainBed's protocol, Gulrajani & Lopez-Paz, ICLR 2021), torch-free.

A run with `data.holdout` = one domain of a multi-domain dataset trains on the other domains and
tests on the held-out one. The other domains are pooled into ONE task over the dataset's shared
classes: the k training shots per class (and a fixed split's validation shots) are drawn from the
pool, as from one domain, so a class's shots may come from any source domain. The test set is every
image of the held-out domain, whatever its part in the dataset's own split (DomainBed tests on the
whole held-out domain). The one task is named after the held-out domain, the one it is scored on,
and every record carries that name as its domain, so every reader that groups records by task sees
one task; the split file names each image's own domain (`as_read`).
"""

from __future__ import annotations

import dataclasses

from .records import Manifest, Record
from .splits import Split, Unreadable, draw_split


def held_out(manifest: Manifest, holdout: str) -> tuple[Manifest, dict[str, str]]:
    """The manifest as one task named `holdout` (every record relabelled to it, keeping its part),
    and the pooled source: the other domains' images, path -> its domain."""
    sources = {r.path: r.domain for r in manifest.records if r.domain != holdout}
    records = [dataclasses.replace(r, domain=holdout) for r in manifest.records]
    return dataclasses.replace(manifest, domains=[holdout], records=records), sources


def draw_held_out_split(
    manifest: Manifest, sources: dict[str, str], shots: int, seed: int, unreadable: Unreadable | None = None
) -> Split:
    """The shots drawn from the pooled source (`sources`) of the one-task `manifest` (`held_out`'s)
    as `draw_split` draws them from one domain; the test set every other image (the held-out
    domain's), by class then path as a pool's test set is ordered."""
    pool = [r for r in manifest.records if r.path in sources]
    split = draw_split(dataclasses.replace(manifest, records=pool), shots, seed, unreadable)
    target: list[Record] = [r for r in manifest.records if r.path not in sources]
    target.sort(key=lambda r: (r.label, r.path))
    return Split(split.train, split.val, target)


def as_read(split: Split, sources: dict[str, str], holdout: str) -> Split:
    """The split with each record's own domain (`held_out`'s `sources`, else the held-out one)."""

    def own(records: list[Record]) -> list[Record]:
        return [dataclasses.replace(r, domain=sources.get(r.path, holdout)) for r in records]

    return Split(own(split.train), own(split.val), own(split.test))
