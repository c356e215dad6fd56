"""PACS, VLCS, Office-31, TerraIncognita and DomainNet: one spec each, read from the layouts people have.

- pacs (art_painting, cartoon, photo, sketch): DomainBed's `PACS/{domain}/{class}/*`; the original
  archive's `kfold/` (or Dassl's `images/`) one level down.
- vlcs (Caltech101, LabelMe, SUN09, VOC2007): DomainBed's `VLCS/{domain}/{class}/*`; the original
  release's `{CALTECH,LABELME,SUN,PASCAL}/{full,test}/{0..4}/*` (Dassl's copy: train, crossval, test).
- office31 (amazon, dslr, webcam): the original archive's `{domain}/images/{class}/*`; without
  `images/` (Dassl); JiGen's folder names `backpack`, `laptop`.
- terraincognita (location_38, location_43, location_46, location_100): what DomainBed's download
  script writes, `location_N/{class}/*` (also `LN` or `N`).
- domainnet (clipart, infograph, painting, quickdraw, real, sketch): `{domain}/{class}/*` with the
  official `{domain}_{train,test}.txt` beside them (or in `splits/`, as Dassl keeps them): the lists
  name the pool. Without lists (DomainBed's copy), every image in the class folders.

Folder names match ignoring case, `_`, `-` and spaces (`Art_Painting`, `LABELME`). A missing domain or class
folder, or a class folder the dataset does not have, is an error; a missing image is not (the counts in
`petl_bench/data/{dataset}-counts.csv` say what is short: `petl_bench.datamodules.counts`). Labels index
`petl_bench/data/{dataset}-classes.txt`; its header says where the names come from.
Each reader takes the root and the manifest cache (or None). Imports `scan.py` and the records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.errors import UserError

from . import coop
from .catalog import TITLES  # noqa: F401  (its home; counts.py reads it here)
from .records import MINIDOMAINNET_DOMAINS, OFFICEHOME_DOMAINS, Manifest, Task, canonical_classes, prompt_name
from .scan import Reader, build_manifest, check_classes, check_root, image_files, present_files, subdirs

if TYPE_CHECKING:
    from .cache import Cache


def folder_key(name: str) -> str:
    """How folder names compare: case, `_`, `-` and spaces ignored."""
    return "".join(ch for ch in name.lower() if ch not in "_- ")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    domains: dict[str, tuple[str, ...]]  # task name (DomainBed's folder) -> other spellings of its folder
    wrappers: tuple[str, ...] = ()  # sub-folders of the root that may hold the domain folders instead
    # A domain's sub-folders holding class folders: the first group whose first folder is there.
    parts: tuple[tuple[str, ...], ...] = ()
    class_spellings: dict[str, str] = field(default_factory=dict)  # folder spelling -> canonical class folder
    prompts: dict[str, str] = field(default_factory=dict)  # canonical class folder -> readable prompt name

    @property
    def classes(self) -> list[str]:
        """Canonical class folders, in label order."""
        return canonical_classes(self.name)

    @property
    def class_keys(self) -> list[str]:
        """The class names `scan.build_manifest` gets (prompts come from them by the usual rule)."""
        return [self.prompts.get(c, c) for c in self.classes]


SPECS = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "pacs",
            "PACS",
            {"art_painting": (), "cartoon": (), "photo": (), "sketch": ()},
            wrappers=("kfold", "images", "images/kfold"),
        ),
        # The original release numbers its class folders 0-4 in the order of vlcs-classes.txt.
        DatasetSpec(
            "vlcs",
            "VLCS",
            {"Caltech101": ("CALTECH",), "LabelMe": (), "SUN09": ("SUN",), "VOC2007": ("PASCAL", "VOC")},
            parts=(("full", "test"), ("train", "crossval", "test")),
            class_spellings={"0": "bird", "1": "car", "2": "chair", "3": "dog", "4": "person"},
        ),
        # The rule would read back_pack as "back pack"; the word is "backpack" (Office-Home's class of the
        # same object here, and the folder's name in JiGen's copy of Office-31).
        DatasetSpec(
            "office31",
            "Office-31",
            {"amazon": (), "dslr": (), "webcam": ()},
            wrappers=("domain_adaptation_images",),
            parts=(("images",),),
            class_spellings={"laptop": "laptop_computer"},
            prompts={"back_pack": "backpack"},
        ),
        DatasetSpec(
            "terraincognita", "TerraIncognita", {f"location_{n}": (f"L{n}", n) for n in ("38", "43", "46", "100")}
        ),
        DatasetSpec(
            "domainnet",
            "DomainNet",
            dict.fromkeys(("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), ()),
        ),
    ]
}


def canonical_tasks(dataset: str) -> list[Task]:
    """The tasks a complete root of the dataset gives, without reading one (for parameter counts)."""
    if dataset in coop.SPECS:
        return coop.canonical_tasks(dataset)
    domains = {"officehome": OFFICEHOME_DOMAINS, "minidomainnet": MINIDOMAINNET_DOMAINS}.get(dataset)
    keys = SPECS[dataset].class_keys if dataset in SPECS else canonical_classes(dataset)
    classes = tuple(prompt_name(key) for key in keys)
    return [Task(domain, classes) for domain in domains or SPECS[dataset].domains]


# -- folders ---------------------------------------------------------------------------------------
def _match(wanted: dict[str, tuple[str, ...]], folders: list[Path]) -> tuple[dict[str, Path], list[Path]]:
    """Folders by the canonical name they spell, and the folders that spell none."""
    names = {folder_key(spelling): name for name, others in wanted.items() for spelling in (name, *others)}
    matched: dict[str, Path] = {}
    unmatched = []
    for folder in folders:
        name = names.get(folder_key(folder.name))
        if name is None:
            unmatched.append(folder)
        elif name in matched:
            raise UserError(f"{matched[name]} and {folder} are both {name}: keep one")
        else:
            matched[name] = folder
    return matched, unmatched


def domain_folders(spec: DatasetSpec, root: Path) -> dict[str, Path]:
    """Task name -> its folder, in the root or in one of the spec's wrapper folders."""
    candidates = [root, *(root / w for w in spec.wrappers if (root / w).is_dir())]
    found = [_match(spec.domains, subdirs(base))[0] for base in candidates]
    for folders in found:
        if len(folders) == len(spec.domains):
            return {name: folders[name] for name in spec.domains}
    best = max(range(len(found)), key=lambda i: len(found[i]))
    missing = [d for d in spec.domains if d not in found[best]]
    where = f" (or in {', '.join(w + '/' for w in spec.wrappers)})" if spec.wrappers else ""
    seen = ", ".join(p.name for p in subdirs(candidates[best])) or "nothing"
    raise UserError(
        f"{root} is not a {spec.title} root: expected folders {', '.join(spec.domains)}{where} "
        f"(missing {', '.join(missing)}; found {seen})"
    )


def class_folders(spec: DatasetSpec, domain_folder: Path) -> dict[str, list[Path]]:
    """Canonical class -> its folders in a domain (one per part the release splits a domain into)."""
    subs = {p.name.lower(): p for p in subdirs(domain_folder)}
    parts = next(([subs[p] for p in group if p in subs] for group in spec.parts if group[0] in subs), [domain_folder])
    wanted = {c: tuple(s for s, canonical in spec.class_spellings.items() if canonical == c) for c in spec.classes}
    folders: dict[str, list[Path]] = defaultdict(list)
    for part in parts:
        matched, unmatched = _match(wanted, subdirs(part))
        check_classes(set(matched) | {p.name for p in unmatched}, spec.classes, f"{spec.title} {part}")
        for name, folder in matched.items():
            folders[name].append(folder)
    return folders


def read_dataset(spec: DatasetSpec, root: str | Path, cache: Cache | None = None) -> Manifest:
    """Every image in the class folders of every domain."""
    root = check_root(root)
    keys = dict(zip(spec.classes, spec.class_keys, strict=True))
    items = [
        (str(image.relative_to(root)), domain, keys[cls])
        for domain, folder in domain_folders(spec, root).items()
        for cls, folders in class_folders(spec, folder).items()
        for class_folder in folders
        for image in image_files(class_folder)
    ]
    return build_manifest(root, items, list(spec.domains), spec.class_keys, cache)


# -- DomainNet's image lists -----------------------------------------------------------------------
def domainnet_lists(root: Path) -> dict[str, list[Path]] | None:
    """The official lists, `{domain}_{train,test}.txt` in the root or in `splits/`; None where neither
    holds any. Some but not all of them is an error: a pool without a list would be silently short."""
    for folder in (root, root / "splits"):
        files = {d: [folder / f"{d}_{part}.txt" for part in ("train", "test")] for d in SPECS["domainnet"].domains}
        present = [f for fs in files.values() for f in fs if f.is_file()]
        if present:
            absent = [f.name for fs in files.values() for f in fs if not f.is_file()]
            if absent:
                raise UserError(
                    f"DomainNet lists missing in {folder}: {', '.join(absent)} "
                    f"(all twelve {{domain}}_{{train,test}}.txt or none)"
                )
            return files
    return None


def listed_images(lists: dict[str, list[Path]], classes: list[str]) -> list[tuple[str, str, str]]:
    """(relative path, domain, canonical class folder) for every image the lists name, once each.
    Lines read `domain/class/file.jpg label` (the official and Dassl's format)."""
    canonical = {folder_key(c): c for c in classes}
    images, seen = [], set()
    for domain, files in lists.items():
        for listing in files:
            for number, line in enumerate(listing.read_text("utf-8", "surrogateescape").splitlines(), 1):
                if not line.strip():
                    continue
                rel = line.split()[0]
                parts = rel.split("/")
                cls = canonical.get(folder_key(parts[1])) if len(parts) == 3 else None
                if cls is None:
                    raise UserError(
                        f"{listing} line {number}: expected domain/class/file with a known class, got {rel!r}"
                    )
                if rel not in seen:
                    seen.add(rel)
                    images.append((rel, domain, cls))
    return images


def present_images(root: Path, images: list[tuple[str, str, str]]) -> set[str]:
    """The listed images that exist. A class folder the lists name but the disk lacks is an error."""
    present, absent = present_files(root, [rel for rel, _, _ in images])
    if absent:
        missing = [f"{folder} ({count} images)" for folder, count in absent.items()]
        raise UserError(
            f"DomainNet class folders the lists name are missing under {root}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)"
        )
    return present


def read_domainnet(root: str | Path, cache: Cache | None = None) -> Manifest:
    spec = SPECS["domainnet"]
    root = check_root(root)
    lists = domainnet_lists(root)
    if lists is None:
        return read_dataset(spec, root, cache)
    domain_folders(spec, root)  # every domain folder, or the error naming the missing ones
    images = listed_images(lists, spec.classes)
    present = present_images(root, images)
    keys = dict(zip(spec.classes, spec.class_keys, strict=True))
    items = [(rel, domain, keys[cls]) for rel, domain, cls in images if rel in present]
    return build_manifest(root, items, list(spec.domains), spec.class_keys, cache)


READERS: dict[str, Reader] = {name: partial(read_dataset, spec) for name, spec in SPECS.items() if name != "domainnet"}
READERS["domainnet"] = read_domainnet
