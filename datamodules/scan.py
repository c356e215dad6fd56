"""The steps every reader of a dataset root shares: finding folders and images, checking class
lists, and building the `Manifest` from (path, domain, class) items.

`build_manifest` stats every file and reads the header of each new or changed one; with a `Cache`
(passed by the caller, `manifest.read_manifest`), the verdicts of an earlier scan of the root are
reused and this scan's kept. Imports the records, `images.ImageChecks` and the foundation: no torch.
"""

from __future__ import annotations

import contextlib
import gc
import os
import posixpath
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.cpus import cpu_budget
from petl_bench.errors import UserError
from petl_bench.files import ENCODING, shown

from .images import READABLE, ImageChecks
from .records import Manifest, Record, prompt_name

if TYPE_CHECKING:
    from .cache import Cache

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_SUFFIXES = tuple(IMAGE_SUFFIXES)  # for str.endswith
Item = tuple[str, str, str]  # (path relative to the root, domain, class folder name)
Reader = Callable[[str | Path, "Cache | None"], Manifest]  # a dataset's root and verdict cache -> its manifest


def check_root(root: str | Path) -> Path:
    """`root` as a folder that is there, else a one-line UserError (before any image is read)."""
    if not str(root).strip():  # Path("") would silently mean the working directory
        raise UserError("no dataset root given (--root DIR)")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"dataset root not found: {folder}")
    return folder


def subdirs(path: Path) -> list[Path]:
    """Sub-folders in name order, leaving out hidden ones and those starting with `_`."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_names(folder: Path) -> list[str]:
    """The image files of a folder by name, sorted: one directory listing, no stat per file (a root of
    1.3M images is listed in seconds)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(_SUFFIXES) and e.is_file())


def present_files(root: Path, rels: list[str]) -> tuple[set[str], dict[str, int]]:
    """Which of the listed files exist, by one directory listing per folder (no stat per file), and
    each listed folder that is not there, with how many files the list names in it."""
    by_folder = Counter(posixpath.dirname(rel) for rel in rels)
    present: set[str] = set()
    absent: dict[str, int] = {}
    for folder, count in by_folder.items():
        try:
            with os.scandir(root / folder) as entries:
                present.update(posixpath.join(folder, e.name) for e in entries if e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            absent[folder] = count
    return present, absent


def check_classes(found: set[str], expected: list[str], what: str) -> None:
    """A one-line UserError naming the classes missing from `found` and those it has in excess."""
    missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
    if missing or extra:
        parts = [
            f"missing {len(missing)}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected {len(extra)}: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}" if extra else "",
        ]
        raise UserError(f"{what}: classes differ from the canonical list ({'; '.join(p for p in parts if p)})")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while millions of acyclic tuples and records are made: its passes
    over an ever larger heap cost a cached scan of ImageNet's 1.3M files 13% of its time (13.0 s CPU, 11.3 without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@paused_gc()
def build_manifest(
    root: Path,
    items: list[Item],
    domains: list[str],
    classes: list[str],
    cache: Cache | None,
    names: list[str] | None = None,
    parts: list[str] | None = None,
) -> Manifest:
    """The manifest of `items`, labelled by their class's index in `classes` and named by `names`
    (default: each class folder's `prompt_name`), each in its part of a fixed split (`parts`: each
    item's, in order; default: none, a pool). Every file is stat-ed (a listed file that is missing is an error);
    only files that are new or changed since the cached scan of this root (if any) have their header read."""
    check_folder_names(root, items, {*domains, *classes})
    checks = ImageChecks(
        root,
        cache.load_verdicts(root) if cache else None,
        cache.saver(root) if cache else None,
        threads=4 * cpu_budget(),
    )
    verdicts = checks.scan([rel for rel, _, _ in items])
    if None in verdicts:
        missing = [rel for (rel, _, _), verdict in zip(items, verdicts, strict=True) if verdict is None]
        raise UserError(f"{len(missing)} listed image(s) missing under {root}, e.g. {root / missing[0]}")
    checks.save()
    names = names or [prompt_name(c) for c in classes]
    labelled = {cls: (i, names[i]) for i, cls in enumerate(classes)}  # class -> (label, name)
    records, skipped = [], []
    for (rel, domain, cls), verdict, part in zip(items, verdicts, parts or [""] * len(items), strict=True):
        if verdict in READABLE:
            label, name = labelled[cls]
            records.append(Record(rel, label, domain, name, part))
        else:
            skipped.append(rel)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable or empty image(s), e.g. {skipped[0]}", stacklevel=2)
    return Manifest(root, domains, names, records, skipped, checks)


def check_folder_names(root: Path, items: list[Item], names: set[str]) -> None:
    """A one-line UserError if a domain or class folder's name (`names`: those the items use) is not
    UTF-8: it names a task and a prompt, which must be text. Image file names may be any bytes
    (`files.py`'s policy). The names are checked once each; the items are searched only for a bad one's
    folder."""
    bad = next((name for name in names if not _is_text(name)), None)
    for rel, domain, cls in items if bad is not None else []:
        if bad in (domain, cls):
            folder = posixpath.dirname(rel) if bad == cls else posixpath.dirname(posixpath.dirname(rel))
            raise UserError(
                f"the folder {shown(root / folder)} has a name that is not UTF-8 text; it names a "
                "task or a class prompt: rename it"
            )


def _is_text(name: str) -> bool:
    try:
        name.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True
