"""Facts about the datasets that need no image, no reader and no torch: their names, titles, the
paper's split names and batch sizes, and how a split name reads.

The foundation (`config`: the config hash), the results module (record paths) and the light
commands (`table`, `report`, `sweep --dry-run`, the CLI's checks) read them here; the readers and
the data module read them here too, so each fact has this one home.
"""

from __future__ import annotations

import re
from pathlib import Path

from petl_bench.errors import UserError, did_you_mean, unknown_name

from .records import DEFAULT_TEMPLATE, MINIDOMAINNET_DOMAINS, OFFICEHOME_DOMAINS

# `a+b+c`: one run over the tasks of several datasets, in the order given (`pacs+vlcs` and `vlcs+pacs`
# differ: task order decides the tables' rows and the order the tasks' batches are drawn in).
JOIN = "+"

# Every dataset's name in tables and messages.
TITLES = {
    "officehome": "Office-Home",
    "minidomainnet": "MiniDomainNet",
    "pacs": "PACS",
    "vlcs": "VLCS",
    "office31": "Office-31",
    "terraincognita": "TerraIncognita",
    "domainnet": "DomainNet",
    # CoOp's names for its benchmark (its DATASETS.md)
    "imagenet": "ImageNet",
    "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102",
    "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft",
    "sun397": "SUN397",
    "dtd": "DTD",
    "eurosat": "EuroSAT",
    "ucf101": "UCF101",
    "imagenetv2": "ImageNetV2",
    "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A",
    "imagenet_r": "ImageNet-R",
}

# The paper's split names: "10% (6-shot per class)" and so on.
PAPER_SPLITS = {
    "officehome": {"10pct": 6, "20pct": 12},
    "minidomainnet": {"1pct": 3, "2pct": 6},
}

# The domains (tasks, in task order) of each multi-domain dataset, as its reader names them
# (datasets.SPECS, records.py; a test keeps them equal): what `data.holdout` may name.
DOMAINS = {
    "officehome": tuple(OFFICEHOME_DOMAINS),
    "minidomainnet": tuple(MINIDOMAINNET_DOMAINS),
    "pacs": ("art_painting", "cartoon", "photo", "sketch"),
    "vlcs": ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    "office31": ("amazon", "dslr", "webcam"),
    "terraincognita": ("location_38", "location_43", "location_46", "location_100"),
    "domainnet": ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
}

# CoOp's benchmark (Zhou et al., IJCV 2022): its 11 few-shot datasets, then ImageNet's shifted
# variants, which are test sets only.
COOP_DATASETS = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)
IMAGENET_VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

# Every dataset a run can name: the keys of manifest.READERS (a test keeps the two equal).
DATASETS = (
    *("officehome", "minidomainnet", "folder", "pacs", "vlcs", "office31", "terraincognita", "domainnet"),
    *COOP_DATASETS,
    *IMAGENET_VARIANTS,
)

# Each one's folder under a common data root, as CoOp's DATASETS.md names them: a grid over several
# datasets takes that root (`data.root=DATA`) and runs each on `DATA/{folder}`.
DATASET_FOLDERS = {
    "imagenet": "imagenet",
    "caltech101": "caltech-101",
    "oxford_pets": "oxford_pets",
    "stanford_cars": "stanford_cars",
    "oxford_flowers": "oxford_flowers",
    "food101": "food-101",
    "fgvc_aircraft": "fgvc_aircraft",
    "sun397": "sun397",
    "dtd": "dtd",
    "eurosat": "eurosat",
    "ucf101": "ucf101",
    "imagenetv2": "imagenetv2",
    "imagenet_sketch": "imagenet-sketch",
    "imagenet_a": "imagenet-adversarial",
    "imagenet_r": "imagenet-rendition",
}


def dataset_folder(root: str, dataset: str) -> str:
    """`dataset`'s folder under a common data root: a grid over several datasets runs each there, and
    a run over several joined (`a+b`) reads each there."""
    return str(Path(root) / DATASET_FOLDERS.get(dataset, dataset))


def dataset_parts(dataset: str) -> list[str]:
    """The datasets a `--dataset` value names, in its order: one, or several joined by `+`."""
    return [part.strip() for part in dataset.split(JOIN)]


def canonical_dataset(dataset: str) -> str:
    """The spelling runs are stored and hashed under: no spaces around `+`; the order as given."""
    return JOIN.join(dataset_parts(dataset))


def dataset_problem(dataset: str) -> str | None:
    """What is wrong with a `--dataset` value (a known name, or known names joined by `+`, none
    twice), or None."""
    parts = dataset_parts(dataset)
    for part in parts:
        if part not in DATASETS:
            return unknown_name("dataset", part, DATASETS)
    twice = sorted({part for part in parts if parts.count(part) > 1})
    if twice:
        return f"each dataset once in {dataset!r} ({', '.join(twice)} twice)"
    return None


def own_template(dataset: str) -> str | None:
    """The class prompt an empty `data.template` stands for: the dataset's own (`TEMPLATES`, else
    records.DEFAULT_TEMPLATE); for datasets joined, theirs where they agree, else None (each task
    prompts with its dataset's)."""
    templates = {TEMPLATES.get(part, DEFAULT_TEMPLATE) for part in dataset_parts(dataset)}
    return templates.pop() if len(templates) == 1 else None


# A dataset's class prompt where it has its own: CoOp's `CUSTOM_TEMPLATES` (KaiyangZhou/CoOp
# trainers/zsclip.py), which KgCoOp, CoCoOp and MaPLe use too. Others: records.DEFAULT_TEMPLATE.
TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}

# A run's classes (CoOp's base-to-novel protocol, `classes.subsample_classes`): every class, the
# first half of the sorted labels, or the rest.
CLASS_SUBSETS = ("all", "base", "novel")

# Images per task per step, as in the paper.
PAPER_BATCH_SIZE = {"officehome": 16, "minidomainnet": 4}


def images_per_step(dataset: str, configured: int) -> int:
    """A run's images per task per step: the configured number, or for 0 the paper's (16 where none is given)."""
    return configured or PAPER_BATCH_SIZE.get(dataset, 16)


_SHOT = re.compile(r"^(\d+)shot$")


def parse_shots(dataset: str, split: str) -> int:
    """`Nshot` or a paper alias -> N."""
    aliases = PAPER_SPLITS.get(dataset, {})
    if split in aliases:
        return aliases[split]
    match = _SHOT.match(split)
    if not match or int(match.group(1)) < 1:
        known = ", ".join(["Nshot (N >= 1)", *aliases])
        hint = " ".join(filter(None, [did_you_mean(split, aliases), f"use {known}"]))
        raise UserError(f"unknown split {split!r} for {dataset} ({hint})")
    return int(match.group(1))


def canonical_split(dataset: str, split: str) -> str:
    """The name runs are stored under: Office-Home `10pct` and `6shot` are the same runs."""
    return f"{parse_shots(dataset, split)}shot"


def split_folder(dataset: str, split: str, classes: str = "all", holdout: str = "") -> str:
    """The path component of a split's and a run's files: `16shot`, `16shot-base` for a class
    subset, `16shot-holdout-sketch` for a leave-one-domain-out run, so base, novel, held-out and
    all-class runs never share a split file or a record (and the paths of all-class runs are what
    they were before subsets existed)."""
    folder = canonical_split(dataset, split)
    if classes != "all":
        folder += f"-{classes}"
    if holdout:
        folder += f"-holdout-{holdout.replace(' ', '_')}"  # Office-Home's `Real World`
    return folder


def paper_split(dataset: str, split: str) -> str:
    """The name tables show: the paper's alias where there is one."""
    shots = parse_shots(dataset, split)
    return next((alias for alias, n in PAPER_SPLITS.get(dataset, {}).items() if n == shots), f"{shots}shot")
