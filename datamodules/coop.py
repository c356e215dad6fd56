"""CoOp's benchmark: its eleven few-shot datasets and ImageNet's shifted variants, read from the layouts
CoOp's DATASETS.md asks for (KaiyangZhou/CoOp), one spec each.

- A split JSON (CoOp's `split_zhou_*.json`: `{"train"|"val"|"test": [[path, label, classname], ...]}`, paths
  relative to the spec's image folder) is the single source of truth where the dataset has one: each
  record gets its part. Without it, OxfordPets reads its own `annotations/{trainval,test}.txt` and splits
  trainval as CoOp's `split_trainval` does (20% of each class to val), with a fixed seed; FGVCAircraft
  always reads its own lists. `Manifest.split_source` says which files the parts come from.
- Class names come from the split (label -> classname), as CoOp's prompt learner uses them: `_` becomes a
  space, and CoOp's readable names replace raw ones (EuroSAT's, Caltech101's; idempotent on CoOp's JSON).
- ImageNet: `images/train/{wnid}/` is the train part, `images/val/{wnid}/` the test part. There is no val
  part: CoOp hands its test set over as "val" and evaluates the last-step model, never selecting on it, so
  a run here has no validation on ImageNet. Labels and names: `petl_bench/data/imagenet-classes.txt`
  (timm's wnid order, CLIP's names); a `classnames.txt` in the root (CoOp's `wnid name` file) overrides the
  names. A root may hold a subset of the classes (labels stay ImageNet's); `data check` names those missing.
- ImageNetV2 (folders 0..999: labels), ImageNet-Sketch (wnid folders), ImageNet-A and -R (their 200 wnids,
  relabelled 0..199 in wnid order and scored over those, as CoOp's readers do): test parts only.

One domain per dataset, its title: one task. `listing` reads what a root lists without opening an image
(what `data check --quick` compares); the readers build the manifest from it. Imports `scan.py`, the
records and the catalog: no torch.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.errors import UserError

from .catalog import TEMPLATES, TITLES
from .records import DEFAULT_TEMPLATE, Manifest, Task
from .scan import Item, Reader, build_manifest, check_root, image_names, paused_gc, present_files, subdirs

if TYPE_CHECKING:
    from .cache import Cache

Entry = tuple[str, int, str, str]  # (path relative to the image folder, label, raw classname, part)
PETS_VAL_SEED = 0  # seeds the 20% of each class's trainval that becomes val where Pets has no split JSON
PETS_VAL_SHARE = 0.2  # CoOp's split_trainval p_val


@dataclass(frozen=True)
class Listing:
    """What a root lists, before any image is read."""

    items: list[Item]  # (path relative to the root, domain, class key)
    classes: list[str]  # class keys in label order (a wnid, or the split's raw classname)
    names: list[str]  # prompt names, by label
    parts: list[str]  # each item's "train" / "val" / "test", in the items' order
    split_source: str
    listed: bool  # a file lists the images (a split JSON, the dataset's own lists): some may be missing
    wanted: list[str] = field(default_factory=list)  # class keys a complete root has (the ImageNet family)


@dataclass(frozen=True)
class CoopSpec:
    name: str
    image_dir: str  # the folder the split's paths are relative to ("" = the root)
    split_file: str = ""  # CoOp's split JSON in the root; "" where CoOp has none
    # The dataset's own split, read where the JSON is absent (or always, without a split_file).
    own_split: Callable[[Path], tuple[list[Entry], str]] | None = None
    renames: dict[str, str] = field(default_factory=dict)  # CoOp's readable class names for raw ones
    expected: str = ""  # what the root holds, for the error naming a missing part

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def name_of(self, raw: str) -> str:
        """The prompt form CoOp uses: its readable name, `_` as spaces (case kept: CLIP's tokenizer
        lowers it; `-` kept: "t-shirt" is not "t shirt")."""
        return self.renames.get(raw, raw).replace("_", " ")


# -- the split files -------------------------------------------------------------------------------
def read_split_json(path: Path) -> list[Entry]:
    """CoOp's `read_split` format; a file of another shape is a one-line error naming it."""
    try:
        split = json.loads(path.read_text("utf-8"))
        return [
            (str(rel), int(label), str(classname), part)
            for part in ("train", "val", "test")
            for rel, label, classname in split[part]
        ]
    except (ValueError, KeyError, TypeError, UnicodeError) as err:
        raise UserError(
            f'{path} is not a CoOp split file ({{"train"|"val"|"test": [[path, label, classname], ...]}}): '
            f"{type(err).__name__}: {err}"
        ) from None


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"{what} missing: {path}")
    return [line.strip() for line in path.read_text("utf-8", "surrogateescape").splitlines() if line.strip()]


def pets_own_split(root: Path) -> tuple[list[Entry], str]:
    """`annotations/{trainval,test}.txt` (`Image_name class_id species breed_id`, class_id from 1), the
    breed the image name's prefix in lower case (CoOp's `read_data`); val: CoOp's `split_trainval`."""
    entries: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for part in ("trainval", "test"):
        for line in _lines(root / "annotations" / f"{part}.txt", "OxfordPets list"):
            if not line.startswith("#"):  # the official lists open with comment lines
                image, class_id = line.split()[:2]
                entries[part].append((f"{image}.jpg", int(class_id) - 1, image.rsplit("_", 1)[0].lower()))
    by_label: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
    for entry in entries["trainval"]:
        by_label[entry[1]].append(entry)
    rng = random.Random(PETS_VAL_SEED)
    split: list[Entry] = []
    for label in sorted(by_label):
        pool = sorted(by_label[label])
        n_val = round(len(pool) * PETS_VAL_SHARE)
        if n_val == 0:
            raise UserError(f"OxfordPets class {pool[0][2]} has {len(pool)} trainval images: too few for a val part")
        rng.shuffle(pool)
        split += [(rel, lab, name, "val" if i < n_val else "train") for i, (rel, lab, name) in enumerate(pool)]
    split += [(rel, label, name, "test") for rel, label, name in entries["test"]]
    source = (
        f"annotations/trainval.txt+test.txt (val: {PETS_VAL_SHARE:.0%} of each class's trainval, seed {PETS_VAL_SEED})"
    )
    return split, source


def aircraft_lists(root: Path) -> tuple[list[Entry], str]:
    """`variants.txt` (class names in label order) and `images_variant_{train,val,test}.txt`
    (`image_id variant name`), as CoOp's reader reads them."""
    label = {name: i for i, name in enumerate(_lines(root / "variants.txt", "FGVCAircraft class list"))}
    entries: list[Entry] = []
    for part in ("train", "val", "test"):
        path = root / f"images_variant_{part}.txt"
        for number, line in enumerate(_lines(path, "FGVCAircraft list"), 1):
            image, _, variant = line.partition(" ")
            if variant not in label:
                raise UserError(f"{path} line {number}: variant {variant!r} is not in variants.txt")
            entries.append((f"{image}.jpg", label[variant], variant, part))
    return entries, "images_variant_train.txt+images_variant_val.txt+images_variant_test.txt"


# -- one spec per dataset --------------------------------------------------------------------------
# CoOp's eurosat.py and caltech101.py NEW_CNAMES.
EUROSAT_NAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}
CALTECH_NAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}

SPLIT_SPECS = {
    spec.name: spec
    for spec in [
        CoopSpec("caltech101", "101_ObjectCategories", "split_zhou_Caltech101.json", renames=CALTECH_NAMES),
        CoopSpec(
            "oxford_pets",
            "images",
            "split_zhou_OxfordPets.json",
            own_split=pets_own_split,
            expected="images/ and split_zhou_OxfordPets.json (or annotations/trainval.txt and test.txt)",
        ),
        # The split's paths are relative to the root: cars_train/..., cars_test/...
        CoopSpec(
            "stanford_cars",
            "",
            "split_zhou_StanfordCars.json",
            expected="cars_train/, cars_test/ and split_zhou_StanfordCars.json",
        ),
        CoopSpec("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
        CoopSpec("food101", "images", "split_zhou_Food101.json"),
        CoopSpec(
            "fgvc_aircraft",
            "images",
            own_split=aircraft_lists,
            expected="images/, variants.txt and images_variant_{train,val,test}.txt",
        ),
        CoopSpec("sun397", "SUN397", "split_zhou_SUN397.json"),
        CoopSpec("dtd", "images", "split_zhou_DescribableTextures.json"),
        CoopSpec("eurosat", "2750", "split_zhou_EuroSAT.json", renames=EUROSAT_NAMES),
        CoopSpec("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    ]
}


def not_a_root(root: Path, title: str, expected: str) -> UserError:
    article = "an" if title[0] in "AEIOU" else "a"
    return UserError(f"{root} is not {article} {title} root: expected {expected}")


def split_listing(spec: CoopSpec, root: Path) -> Listing:
    folder = root / spec.image_dir
    json_path = root / spec.split_file if spec.split_file else None
    has_json = json_path is not None and json_path.is_file()
    if not folder.is_dir() or not (has_json or spec.own_split):
        raise not_a_root(root, spec.title, spec.expected or f"{spec.image_dir}/ and {spec.split_file}")
    if has_json:
        assert json_path is not None
        entries, source = read_split_json(json_path), spec.split_file
    else:
        assert spec.own_split is not None
        entries, source = spec.own_split(root)
    raw = class_names(entries, source)
    prefix = f"{spec.image_dir}/" if spec.image_dir else ""
    items = [(prefix + rel, spec.title, raw[label]) for rel, label, _, _ in entries]
    parts = [part for _, _, _, part in entries]
    return Listing(items, raw, [spec.name_of(c) for c in raw], parts, source, listed=True)


def class_names(entries: list[Entry], source: str) -> list[str]:
    """The raw classname of each label 0..n-1; a label without one, or with two, is a one-line error."""
    names: dict[int, set[str]] = defaultdict(set)
    for _, label, classname, _ in entries:
        names[label].add(classname)
    labels = sorted(names)
    if not labels or labels != list(range(len(labels))):
        gaps = sorted(set(range(max(labels, default=-1) + 1)) - set(labels))
        raise UserError(f"{source}: labels are not 0..n-1 (missing {gaps[:5]})" if labels else f"{source}: no images")
    two = next((label for label in labels if len(names[label]) > 1), None)
    if two is not None:
        raise UserError(f"{source}: label {two} has several class names: {', '.join(sorted(names[two]))}")
    raw = [next(iter(names[label])) for label in labels]
    shared = next((name for name, n in Counter(raw).items() if n > 1), None)
    if shared is not None:
        raise UserError(
            f"{source}: labels {[i for i, c in enumerate(raw) if c == shared]} share the class name {shared!r}"
        )
    return raw


# -- the ImageNet family ---------------------------------------------------------------------------
def _package_lines(name: str) -> list[str]:
    text = resources.files("petl_bench").joinpath("data", name).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def imagenet_classes() -> dict[str, str]:
    """wnid -> CLIP's name, in label order."""
    return dict(line.split("\t", 1) for line in _package_lines("imagenet-classes.txt"))


def subset_wnids(name: str) -> list[str]:
    """ImageNet-A's or -R's 200 wnids, in their label order."""
    return [line.strip() for line in _package_lines(f"{name}-wnids.txt")]


def root_classnames(root: Path, known: dict[str, str]) -> dict[str, str]:
    """The package's names, or the root's `classnames.txt` (`wnid name`, CoOp's file) where there is one."""
    path = root / "classnames.txt"
    if not path.is_file():
        return known
    given = dict(line.split(" ", 1) for line in _lines(path, "classnames.txt") if " " in line)
    absent = [wnid for wnid in known if wnid not in given]
    if absent:
        raise UserError(f"{path} names no class for {len(absent)} wnid(s), e.g. {absent[0]}")
    return {wnid: given[wnid].strip() for wnid in known}


@dataclass(frozen=True)
class FolderSpec:
    """A dataset of one folder per class: ImageNet's parts and its shifted variants."""

    name: str
    folders: tuple[tuple[str, str], ...]  # (folder under the root, part)
    wnids: str = "imagenet"  # whose classes: "imagenet", or "imagenet_a" / "imagenet_r" (their 200)
    numbered: bool = False  # class folders named by label (ImageNetV2's 0..999), not by wnid

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def classes(self, root: Path) -> dict[str, str]:
        """wnid -> name, in label order."""
        names = root_classnames(root, imagenet_classes())
        return names if self.wnids == "imagenet" else {w: names[w] for w in subset_wnids(self.wnids)}


FOLDER_SPECS = {
    spec.name: spec
    for spec in [
        FolderSpec("imagenet", (("images/train", "train"), ("images/val", "test"))),
        FolderSpec("imagenetv2", (("imagenetv2-matched-frequency-format-val", "test"),), numbered=True),
        FolderSpec("imagenet_sketch", (("images", "test"),)),
        FolderSpec("imagenet_a", (("imagenet-a", "test"),), wnids="imagenet_a"),
        FolderSpec("imagenet_r", (("imagenet-r", "test"),), wnids="imagenet_r"),
    ]
}


def folder_listing(spec: FolderSpec, root: Path) -> Listing:
    classes = spec.classes(root)
    wnids = list(classes)
    absent = [folder for folder, _ in spec.folders if not (root / folder).is_dir()]
    if absent:
        kind = "0..999" if spec.numbered else "wnid (n01440764, ...)"
        folders = " and ".join(f + "/" for f, _ in spec.folders)
        raise not_a_root(
            root, spec.title, f"{folders} with one folder per class, named by {kind} (missing {', '.join(absent)})"
        )
    items: list[Item] = []
    parts: list[str] = []
    title = spec.title
    keys = {str(i): w for i, w in enumerate(wnids)} if spec.numbered else {w: w for w in wnids}
    for folder, part in spec.folders:
        found = subdirs(root / folder)
        unknown = [p.name for p in found if p.name not in keys]
        if unknown:
            raise UserError(
                f"{root / folder}: {len(unknown)} folder(s) that are not {title} classes, e.g. {unknown[0]} "
                f"(expected {'0..999' if spec.numbered else 'the wnids of petl_bench/data/'})"
            )
        for class_folder in found:
            prefix, key = f"{folder}/{class_folder.name}/", keys[class_folder.name]
            paths = [prefix + image for image in image_names(class_folder)]
            items += [(path, title, key) for path in paths]
            parts += [part] * len(paths)
    source = "+".join(f"{folder}/" for folder, _ in spec.folders)
    return Listing(items, wnids, list(classes.values()), parts, source, listed=False, wanted=wnids)


# -- readers ---------------------------------------------------------------------------------------
SPECS: dict[str, CoopSpec | FolderSpec] = {**SPLIT_SPECS, **FOLDER_SPECS}


def listing(name: str, root: str | Path) -> Listing:
    spec = SPECS[name]
    root = check_root(root)
    return split_listing(spec, root) if isinstance(spec, CoopSpec) else folder_listing(spec, root)


def manifest_of(name: str, root: Path, listed: Listing, cache: Cache | None) -> Manifest:
    """The manifest of the listing's items, with the dataset's template."""
    title = SPECS[name].title
    manifest = build_manifest(root, listed.items, [title], listed.classes, cache, listed.names, listed.parts)
    return replace(manifest, template=TEMPLATES.get(name, DEFAULT_TEMPLATE), split_source=listed.split_source)


@paused_gc()
def read_coop(name: str, root: str | Path, cache: Cache | None = None) -> Manifest:
    """Every image the split lists (or, for the ImageNet family, the class folders hold), each in its part."""
    root = check_root(root)
    return manifest_of(name, root, listing(name, root), cache)


READERS: dict[str, Reader] = {name: partial(read_coop, name) for name in SPECS}


def canonical_tasks(name: str) -> list[Task]:
    """The one task a complete root gives, without reading one (parameter counts): the ImageNet family's
    names from the package; elsewhere the names are the split file's, and stand-ins of the right number
    ("class 1", ...) take their place: a count depends on how many classes there are, not on their names."""
    spec = SPECS[name]
    if isinstance(spec, FolderSpec):
        names = list(spec.classes(Path("/nonexistent")).values())
    elif len(spec.renames) == expected_sizes(name).classes:  # EuroSAT's are all known, in label order
        names = [spec.name_of(raw) for raw in spec.renames]
    else:
        names = [f"class {i + 1}" for i in range(expected_sizes(name).classes)]
    return [Task(spec.title, tuple(names), TEMPLATES.get(name, DEFAULT_TEMPLATE))]


# -- what a root should hold, and `data check` ------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    classes: int
    parts: dict[str, int]  # train / val / test images
    source: str


def expected_sizes(name: str) -> Sizes:
    """From `petl_bench/data/coop-counts.csv` (its header names the sources)."""
    text = resources.files("petl_bench").joinpath("data", "coop-counts.csv").read_text("utf-8")
    rows = csv.DictReader(io.StringIO("".join(line for line in io.StringIO(text) if not line.startswith("#"))))
    row = next(row for row in rows if row["dataset"] == name)
    return Sizes(int(row["classes"]), {p: int(row[p]) for p in ("train", "val", "test")}, row["source"])


@dataclass(frozen=True)
class RootCheck:
    """A root against the dataset's published sizes: classes, images per part, what is missing."""

    title: str
    classes: tuple[int, int]  # found, expected
    parts: dict[str, tuple[int, int]]  # part -> (found, expected), the parts the dataset has
    missing_classes: list[str]  # "key (name)" of classes with no image on disk
    missing_images: list[str]  # listed images not on disk
    split_source: str

    def lines(self) -> list[str]:
        found, want = self.classes
        parts = ", ".join(f"{p} {n:,} of {e:,}" for p, (n, e) in self.parts.items())
        lines = [f"{self.title}: {found:,} of {want:,} classes; {parts} (split: {self.split_source})"]
        for what, missing in (("classes", self.missing_classes), ("listed images", self.missing_images)):
            if missing:
                lines.append(
                    f"missing {what} ({len(missing):,}): {', '.join(missing[:5])}{' ...' * (len(missing) > 5)}"
                )
        return lines

    @property
    def complete(self) -> bool:
        return not self.missing_classes and not self.missing_images and all(n == e for n, e in self.parts.values())


def shortfall(name: str, manifest: Manifest) -> str | None:
    """One line where a manifest holds fewer classes or images than the dataset has, else None."""
    sizes = expected_sizes(name)
    found = Counter(r.part for r in manifest.records)
    classes = len({r.label for r in manifest.records})
    short = [f"{p} {found[p]:,} of {n:,}" for p, n in sizes.parts.items() if found[p] < n]
    if classes < sizes.classes:
        short.insert(0, f"{classes:,} of {sizes.classes:,} classes")
    return f"{SPECS[name].title}: {', '.join(short)}" if short else None


def check_listing(name: str, root: Path, listed: Listing) -> tuple[RootCheck, Listing]:
    """The comparison, and the listing of the items that are on disk (by one directory listing per folder)."""
    missing: list[str] = []
    if listed.listed:
        present, _ = present_files(root, [rel for rel, _, _ in listed.items])
        missing = [rel for rel, _, _ in listed.items if rel not in present]
        if missing:
            kept = [i for i, (rel, _, _) in enumerate(listed.items) if rel in present]
            listed = replace(listed, items=[listed.items[i] for i in kept], parts=[listed.parts[i] for i in kept])
    items = listed.items
    sizes = expected_sizes(name)
    found_parts = Counter(listed.parts)
    with_images = {cls for _, _, cls in items}
    names = dict(zip(listed.classes, listed.names, strict=True))
    keys = listed.wanted or listed.classes
    missing_classes = [f"{key} ({names[key]})" if key != names[key] else key for key in keys if key not in with_images]
    parts = {p: (found_parts[p], n) for p, n in sizes.parts.items() if n or found_parts[p]}
    check = RootCheck(
        SPECS[name].title, (len(with_images), sizes.classes), parts, missing_classes, missing, listed.split_source
    )
    return check, listed
