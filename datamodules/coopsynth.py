"""Synthetic roots in the layouts of CoOp's benchmark (`coop.py`): its class folders or flat image folders,
its split JSON where the dataset has one, the dataset's own lists where CoOp reads those (FGVCAircraft's;
OxfordPets' annotations, always written, and read when `own_split` leaves the JSON out).

Images are `synth.render`'s (class i: a shape in a colour, learnable for up to 132 classes; more repeat
looks). A root has the dataset's real number of classes unless `n_classes` asks fewer, each `per_class`
images split as CoOp's `read_and_split_data` splits (50% train, 20% val, the rest test, each at least one);
ImageNet has train and test only, its variants test only. Class names are stand-ins (`synthetic_class_007`)
except where the package knows the real ones (ImageNet's wnids, EuroSAT's folders).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from petl_bench.errors import UserError

from .coop import EUROSAT_NAMES, FOLDER_SPECS, SPLIT_SPECS, CoopSpec, FolderSpec, expected_sizes
from .records import SYNTHETIC_MARKER
from .synth import Style, render, style_for

# Where an image goes under the spec's image folder: (class key, image number in the class, number in
# the dataset, part) -> path, as each dataset names its files.
PathRule = Callable[[str, int, int, str], str]
SPLIT_PATHS: dict[str, PathRule] = {
    "caltech101": lambda c, k, n, p: f"{c}/image_{k + 1:04d}.jpg",
    "oxford_pets": lambda c, k, n, p: f"{c}_{k + 1}.jpg",
    "stanford_cars": lambda c, k, n, p: f"cars_{'test' if p == 'test' else 'train'}/{n + 1:05d}.jpg",
    "oxford_flowers": lambda c, k, n, p: f"image_{n + 1:05d}.jpg",
    "food101": lambda c, k, n, p: f"{c}/{100000 + n}.jpg",
    "fgvc_aircraft": lambda c, k, n, p: f"{1000000 + n}.jpg",
    "sun397": lambda c, k, n, p: f"{c[0]}/{c}/sun_{n:06d}.jpg",
    "dtd": lambda c, k, n, p: f"{c}/{c}_{k + 1:04d}.jpg",
    "eurosat": lambda c, k, n, p: f"{c}/{c}_{k + 1}.jpg",
    "ucf101": lambda c, k, n, p: f"{c}/v_{c}_g{k + 1:02d}_c01.jpg",
}
FOLDER_PATHS: dict[str, PathRule] = {
    "imagenet": lambda c, k, n, p: f"{c}_{k + 1}.JPEG" if p == "train" else f"ILSVRC2012_val_{n + 1:08d}.JPEG",
    "imagenetv2": lambda c, k, n, p: f"{n:040x}.jpeg",
    "imagenet_sketch": lambda c, k, n, p: f"sketch_{k + 1}.JPEG",
    "imagenet_a": lambda c, k, n, p: f"{n:04d}.jpg",
    "imagenet_r": lambda c, k, n, p: f"art_{k + 1}.jpg",
}


def part_sizes(per_class: int, parts: tuple[str, ...]) -> dict[str, int]:
    """Images per class in each part: CoOp's 50/20/30 where there is a val part, else 70/30 train/test."""
    if len(parts) == 1:
        return {parts[0]: per_class}
    if per_class < len(parts):
        raise UserError(f"--per-class {per_class} is too few: one image per part ({', '.join(parts)}) at least")
    share = {"train": 0.5, "val": 0.2} if "val" in parts else {"train": 0.7}
    sizes = {p: max(1, round(per_class * share[p])) for p in parts if p != "test"}
    sizes["train"] -= max(0, sum(sizes.values()) + 1 - per_class)  # the test part's one image comes from train
    return {**sizes, "test": per_class - sum(sizes.values())}


def class_keys(spec: CoopSpec | FolderSpec, n_classes: int | None) -> list[str]:
    if isinstance(spec, FolderSpec):
        keys = list(spec.classes(Path("/nonexistent")))  # the package's wnids
    elif spec.name == "eurosat":
        keys = list(EUROSAT_NAMES)
    elif spec.name == "fgvc_aircraft":  # variant names have spaces, as "Cessna 172" has
        keys = [f"Synthetic {i:03d}" for i in range(expected_sizes(spec.name).classes)]
    else:
        keys = [f"synthetic_class_{i:03d}" for i in range(expected_sizes(spec.name).classes)]
    if n_classes is not None and not 1 <= n_classes <= len(keys):
        raise UserError(f"--classes must be 1..{len(keys)} for {spec.title}; got {n_classes}")
    return keys[:n_classes]


def write_coop_synthetic(
    out: Path, layout: str, per_class: int = 3, n_classes: int | None = None, seed: int = 0, own_split: bool = False
) -> int:
    """Write a synthetic root of `layout`; return the number of images. `own_split`: OxfordPets without its
    split JSON (its annotations are the split)."""
    out = Path(out)
    if own_split and layout != "oxford_pets":
        raise UserError("--own-split is OxfordPets' (the others' own split is their JSON, or always read)")
    spec = SPLIT_SPECS.get(layout) or FOLDER_SPECS[layout]
    keys = class_keys(spec, n_classes)
    rng = random.Random(seed)
    style = style_for(spec.title)
    split: dict[str, list[tuple[str, int, str]]] = {"train": [], "val": [], "test": []}
    number = 0
    if isinstance(spec, FolderSpec):
        sizes = part_sizes(per_class, tuple(part for _, part in spec.folders))
        for folder, part in spec.folders:
            for label, key in enumerate(keys):
                class_folder = str(label) if spec.numbered else key
                for k in range(sizes[part]):
                    rel = f"{folder}/{class_folder}/{FOLDER_PATHS[layout](key, k, number, part)}"
                    _draw(out / rel, label, style, rng)
                    number += 1
    else:
        sizes = part_sizes(per_class, ("train", "val", "test"))
        for label, key in enumerate(keys):
            k = 0
            for part in ("train", "val", "test"):
                for _ in range(sizes[part]):
                    rel = SPLIT_PATHS[layout](key, k, number, part)
                    _draw(out / spec.image_dir / rel, label, style, rng)
                    split[part].append((rel, label, key))
                    k, number = k + 1, number + 1
        _write_split_files(out, spec, split, own_split)
    (out / SYNTHETIC_MARKER).write_text(
        f"Synthetic images from `petl-bench data synth` (layout {layout}, {len(keys)} classes, {per_class} per "
        f"class, seed {seed}{', its own split' if own_split else ''}). Accuracies on them are not CoOp's.\n",
        encoding="utf-8",
    )
    return number


def _draw(path: Path, label: int, style: Style, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(label, style, rng).save(path, quality=95)


def _write_split_files(
    out: Path, spec: CoopSpec, split: dict[str, list[tuple[str, int, str]]], own_split: bool
) -> None:
    """The split JSON (CoOp's format) where the dataset has one, and the dataset's own lists."""
    if spec.name == "fgvc_aircraft":
        variants = sorted({(label, key) for part in split.values() for _, label, key in part})
        (out / "variants.txt").write_text("".join(f"{key}\n" for _, key in variants), encoding="utf-8")
        for part, entries in split.items():
            lines = "".join(f"{rel.removesuffix('.jpg')} {key}\n" for rel, _, key in entries)
            (out / f"images_variant_{part}.txt").write_text(lines, encoding="utf-8")
        return
    if spec.name == "oxford_pets":  # `Image CLASS-ID SPECIES BREED-ID`, trainval = train + val
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        for name, entries in (("trainval", split["train"] + split["val"]), ("test", split["test"])):
            lines = "".join(f"{rel.removesuffix('.jpg')} {label + 1} 1 {label + 1}\n" for rel, label, _ in entries)
            (out / "annotations" / f"{name}.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + lines, "utf-8")
    if not own_split:
        readable = {key: EUROSAT_NAMES.get(key, key) for part in split.values() for _, _, key in part}
        text = {part: [[rel, label, readable[key]] for rel, label, key in entries] for part, entries in split.items()}
        (out / spec.split_file).write_text(json.dumps(text, indent=1), encoding="utf-8")
