"""Facts about the datasets that need no image, no reader and no torch: their names, titles, the
paper's split names and batch sizes, and how a split name reads.

The foundation (`config`: the config hash), the results module (record paths) and the light
commands (`table`, `report`, `sweep --dry-run`, the CLI's checks) read them here; the readers and
the data module read them here too, so each fact has this one home.
"""

from __future__ import annotations

import re

from petl_bench.errors import UserError, did_you_mean

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


def split_folder(dataset: str, split: str, classes: str = "all") -> str:
    """The path component of a split's and a run's files: `16shot`, or `16shot-base` for a class
    subset, so base, novel and all-class runs never share a split file or a record (and the paths of
    all-class runs are what they were before subsets existed)."""
    canonical = canonical_split(dataset, split)
    return canonical if classes == "all" else f"{canonical}-{classes}"


def paper_split(dataset: str, split: str) -> str:
    """The name tables show: the paper's alias where there is one."""
    shots = parse_shots(dataset, split)
    return next((alias for alias, n in PAPER_SPLITS.get(dataset, {}).items() if n == shots), f"{shots}shot")
