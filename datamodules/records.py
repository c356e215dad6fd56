"""Dataset manifests: every image of a dataset root as a `Record`, read from the real layouts.

- Office-Home: `ROOT/{Art,Clipart,Product,Real World}/{class}/*.jpg` (also `Real_World`, lower case)
- MiniDomainNet: `ROOT/{clipart,painting,real,sketch}/{class}/*.jpg` plus Dassl's
  `ROOT/splits_mini/{domain}_{train,test}.txt`; the pool is the union of both lists
- folder: `ROOT/{domain}/{class}/*`, one task per domain, classes = sorted folder names
- pacs, vlcs, office31, terraincognita, domainnet: `datasets.py`

Class names for prompts: `_` and `-` become spaces, lower case (`Alarm_Clock` -> "alarm clock").
Labels index the dataset's canonical class list (shipped in `petl_bench/data/`).
"""

from __future__ import annotations

import posixpath
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from petl_bench.errors import UserError
from petl_bench.files import ENCODING, shown
from petl_bench.cpus import cpu_budget

from .cache import Cache
from .images import ImageChecks, header_error

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Record:
    path: str  # relative to the dataset root
    label: int
    domain: str
    classname: str  # prompt form, e.g. "alarm clock"


@dataclass(frozen=True)
class Task:
    """One task of the multi-task problem: a domain and the classes its logits range over."""

    name: str
    classnames: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    root: Path
    domains: list[str]  # task names, in task order
    classnames: list[str]  # prompt form, indexed by label
    records: list[Record]
    skipped: list[str]  # unreadable or empty files, relative to root
    # What is known of each file (stat, header or full decode); None for a hand-made manifest.
    checks: ImageChecks | None = field(default=None, compare=False, repr=False)

    @property
    def tasks(self) -> list[Task]:
        return [Task(domain, tuple(self.classnames)) for domain in self.domains]

    @property
    def synthetic(self) -> bool:
        """Made by `petl-bench data synth`: results on it say nothing about the paper's numbers."""
        return (self.root / SYNTHETIC_MARKER).is_file()


def prompt_name(folder_name: str) -> str:
    return folder_name.replace("_", " ").replace("-", " ").lower()


def canonical_classes(dataset: str) -> list[str]:
    """Class folder names in label order, from `petl_bench/data/` (`#` lines: where they come from)."""
    name = {"officehome": "officehome-65.txt", "minidomainnet": "minidomainnet-126.txt"}.get(
        dataset, f"{dataset}-classes.txt")
    text = resources.files("petl_bench").joinpath("data", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


OFFICEHOME_DOMAINS = ["Art", "Clipart", "Product", "Real World"]
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # `petl-bench data synth` leaves it in the root it writes
MINIDOMAINNET_DOMAINS = ["clipart", "painting", "real", "sketch"]


def _key(name: str) -> str:
    return name.lower().replace("_", " ")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def is_readable(path: Path) -> bool:
    """Cheap check (size and image header, not a full decode) that PIL can open the file."""
    return header_error(path) is None


def _check_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset root not found: {root}")
    return root


def _check_classes(found: set[str], expected: list[str], what: str) -> None:
    missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
    if missing or extra:
        parts = [f"missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                 if missing else "", f"unexpected {len(extra)}: {', '.join(extra[:5])}"
                 f"{' ...' if len(extra) > 5 else ''}" if extra else ""]
        raise UserError(f"{what}: classes differ from the canonical list ({'; '.join(p for p in parts if p)})")


_CACHE: ContextVar[Cache | None] = ContextVar("manifest_cache", default=None)  # set by read_manifest


def _build(root: Path, items: list[tuple[str, str, str]], domains: list[str], classes: list[str]) -> Manifest:
    """items: (relative path, domain, class folder name). Every file is stat-ed (a listed file that
    is missing is an error); only files that are new or changed since the cached scan of this root
    (if any) have their header read."""
    _check_folder_names(root, items)
    cache = _CACHE.get()
    checks = ImageChecks(root, cache.load_verdicts(root) if cache else None,
                         cache.saver(root) if cache else None, threads=4 * cpu_budget())
    missing = checks.scan([rel for rel, _, _ in items])
    if missing:
        raise UserError(f"{len(missing)} listed image(s) missing under {root}, e.g. {root / missing[0]}")
    checks.save()
    label = {name: i for i, name in enumerate(classes)}
    names = {cls: prompt_name(cls) for cls in classes}
    records, skipped = [], []
    readable = {rel for rel in checks.verdicts if checks.readable(rel)}
    for rel, domain, cls in items:
        if rel in readable:
            records.append(Record(rel, label[cls], domain, names[cls]))
        else:
            skipped.append(rel)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable or empty image(s), e.g. {skipped[0]}", stacklevel=2)
    return Manifest(root, domains, [prompt_name(c) for c in classes], records, skipped, checks)


def _check_folder_names(root: Path, items: list[tuple[str, str, str]]) -> None:
    """A one-line UserError if a domain or class folder's name is not UTF-8: it names a task and a
    prompt, which must be text. Image file names may be any bytes (`files.py`'s policy)."""
    first = {}  # (domain, class) -> an image of it
    for rel, domain, cls in items:
        first.setdefault((domain, cls), rel)
    for (domain, cls), rel in first.items():
        for name in (domain, cls):
            try:
                name.encode(ENCODING)
            except UnicodeEncodeError:
                folder = posixpath.dirname(rel) if name == cls else posixpath.dirname(posixpath.dirname(rel))
                raise UserError(f"the folder {shown(root / folder)} has a name that is not UTF-8 text; it names a "
                                "task or a class prompt: rename it") from None


def read_officehome(root: Path) -> Manifest:
    root = _check_root(root)
    folders = {_key(p.name): p for p in _subdirs(root)}
    missing = [d for d in OFFICEHOME_DOMAINS if _key(d) not in folders]
    if missing:
        raise UserError(f"{root} is not an Office-Home root: expected folders "
                        f"{', '.join(OFFICEHOME_DOMAINS)} (missing {', '.join(missing)}; "
                        f"found {', '.join(p.name for p in _subdirs(root)) or 'nothing'})")
    classes = canonical_classes("officehome")
    items = []
    for domain in OFFICEHOME_DOMAINS:
        folder = folders[_key(domain)]
        class_dirs = _subdirs(folder)
        _check_classes({p.name for p in class_dirs}, classes, f"Office-Home {folder}")
        items += [(str(img.relative_to(root)), domain, d.name) for d in class_dirs for img in _images(d)]
    return _build(root, items, OFFICEHOME_DOMAINS, classes)


def read_minidomainnet(root: Path) -> Manifest:
    root = _check_root(root)
    lists = root / "splits_mini"
    if not lists.is_dir():
        raise UserError(f"{root} is not a MiniDomainNet root: expected DomainNet domain folders "
                        f"plus splits_mini/{{domain}}_{{train,test}}.txt lists (no splits_mini/)")
    classes = canonical_classes("minidomainnet")
    items, seen = [], set()
    for domain in MINIDOMAINNET_DOMAINS:
        for part in ("train", "test"):
            listing = lists / f"{domain}_{part}.txt"
            if not listing.is_file():
                raise UserError(f"MiniDomainNet list missing: {listing}")
            for line in listing.read_text("utf-8", "surrogateescape").splitlines():  # names as on disk
                if not line.strip():
                    continue
                rel = line.split()[0]
                if rel in seen:
                    continue
                seen.add(rel)
                items.append((rel, domain, posixpath.basename(posixpath.dirname(rel))))
        _check_classes({c for _, d, c in items if d == domain}, classes, f"MiniDomainNet {domain}")
    return _build(root, items, MINIDOMAINNET_DOMAINS, classes)


def read_folder(root: Path) -> Manifest:
    root = _check_root(root)
    domains = _subdirs(root)
    items = [(str(img.relative_to(root)), d.name, c.name)
             for d in domains for c in _subdirs(d) for img in _images(c)]
    if not items:
        raise UserError(f"{root} holds no images in the layout ROOT/{{domain}}/{{class}}/*.jpg")
    domains = sorted({d for _, d, _ in items})
    classes = sorted({c for _, _, c in items})
    return _build(root, items, domains, classes)


READERS = {"officehome": read_officehome, "minidomainnet": read_minidomainnet, "folder": read_folder}


def all_readers() -> dict:
    """These and `datasets.py`'s readers (PACS, VLCS, Office-31, TerraIncognita, DomainNet), imported
    here when asked for: that module builds on this one's helpers."""
    from .datasets import READERS as more

    return {**READERS, **more}


def read_manifest(dataset: str, root: str | Path, cache: Cache | None = None) -> Manifest:
    """The dataset's manifest; with a `cache`, image headers are read only for files not seen
    as they are now by an earlier scan of this root."""
    readers = all_readers()
    if dataset not in readers:
        raise UserError(f"unknown dataset {dataset!r} (known: {', '.join(readers)})")
    if not str(root).strip():  # Path("") would silently mean the working directory
        raise UserError("no dataset root given (--root DIR)")
    token = _CACHE.set(cache)
    try:
        return readers[dataset](Path(root))
    finally:
        _CACHE.reset(token)
