"""Class subsets: CoOp's base-to-novel protocol (Zhou et al., CoCoOp, CVPR 2022), torch-free.

`subsample_classes` is CoOp's `subsample_classes` (KaiyangZhou/CoOp datasets/oxford_pets.py): the
labels of the training part sorted, base = the first ceil(n/2), novel = the rest, each subset
relabelled from 0 in label order, applied to every part of the manifest (train, val, test) and to its
class names. Applied per task: the tasks of one manifest share its class list, so they must agree;
over several datasets joined (`a+b`), per dataset, each on its own labels.
The data module applies it before the split is drawn (CoOp draws the shots first, from its global
`random`: no draw of ours repeats its images, so the order of the two steps is ours to choose).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from petl_bench.errors import UserError

from .catalog import CLASS_SUBSETS
from .records import Manifest


def class_subset(labels: Iterable[int], classes: str) -> list[int]:
    """The labels of a class subset, in label order: all of them, the first ceil(n/2) or the rest."""
    if classes not in CLASS_SUBSETS:
        raise UserError(f"unknown class subset {classes!r} (known: {', '.join(CLASS_SUBSETS)})")
    ordered = sorted(set(labels))
    half = math.ceil(len(ordered) / 2)
    return {"all": ordered, "base": ordered[:half], "novel": ordered[half:]}[classes]


def subsample_classes(manifest: Manifest, classes: str) -> Manifest:
    """The manifest on the subset's classes only, each relabelled from 0 (its class names too)."""
    if classes == "all":
        return manifest
    if manifest.parts:  # datasets joined: each dataset's own halves, as a run on it alone takes them
        return manifest.with_parts(tuple(subsample_classes(part, classes) for part in manifest.parts))
    # CoOp takes the labels of the training set; a pool (no parts) is all training candidates.
    training = [r for r in manifest.records if r.part in ("", "train")]
    per_task = {
        domain: class_subset((r.label for r in training if r.domain == domain), classes) for domain in manifest.domains
    }
    selected = per_task[manifest.domains[0]] if manifest.domains else []
    differing = [domain for domain, labels in per_task.items() if labels != selected]
    if differing:
        raise UserError(
            f"the {classes} classes of task {differing[0]} differ from those of {manifest.domains[0]} "
            "(their training images cover other classes): a class subset needs every task's classes alike"
        )
    new_label = {label: i for i, label in enumerate(selected)}
    records = [dataclasses.replace(r, label=new_label[r.label]) for r in manifest.records if r.label in new_label]
    return dataclasses.replace(manifest, classnames=[manifest.classnames[label] for label in selected], records=records)
