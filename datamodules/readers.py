"""Readers of the paper's two datasets and of any `ROOT/{domain}/{class}/*` folder.

- Office-Home: `ROOT/{Art,Clipart,Product,Real World}/{class}/*.jpg` (also `Real_World`, lower case)
- MiniDomainNet: `ROOT/{clipart,painting,real,sketch}/{class}/*.jpg` plus Dassl's
  `ROOT/splits_mini/{domain}_{train,test}.txt`; the pool is the union of both lists
- folder: `ROOT/{domain}/{class}/*`, one task per domain, classes = sorted folder names

Each takes the root and the manifest cache (or None) and returns the `Manifest`. PACS, VLCS,
Office-31, TerraIncognita and DomainNet are `datasets.py`'s. Imports `scan.py` and the records.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from petl_bench.errors import UserError

from .records import MINIDOMAINNET_DOMAINS, OFFICEHOME_DOMAINS, Manifest, canonical_classes
from .scan import Reader, build_manifest, check_classes, check_root, image_files, subdirs

if TYPE_CHECKING:
    from .cache import Cache


def _officehome_key(name: str) -> str:
    return name.lower().replace("_", " ")


def read_officehome(root: str | Path, cache: Cache | None = None) -> Manifest:
    root = check_root(root)
    folders = {_officehome_key(p.name): p for p in subdirs(root)}
    missing = [d for d in OFFICEHOME_DOMAINS if _officehome_key(d) not in folders]
    if missing:
        raise UserError(
            f"{root} is not an Office-Home root: expected folders "
            f"{', '.join(OFFICEHOME_DOMAINS)} (missing {', '.join(missing)}; "
            f"found {', '.join(p.name for p in subdirs(root)) or 'nothing'})"
        )
    classes = canonical_classes("officehome")
    items = []
    for domain in OFFICEHOME_DOMAINS:
        folder = folders[_officehome_key(domain)]
        class_dirs = subdirs(folder)
        check_classes({p.name for p in class_dirs}, classes, f"Office-Home {folder}")
        items += [(str(img.relative_to(root)), domain, d.name) for d in class_dirs for img in image_files(d)]
    return build_manifest(root, items, OFFICEHOME_DOMAINS, classes, cache)


def read_minidomainnet(root: str | Path, cache: Cache | None = None) -> Manifest:
    root = check_root(root)
    lists = root / "splits_mini"
    if not lists.is_dir():
        raise UserError(
            f"{root} is not a MiniDomainNet root: expected DomainNet domain folders "
            f"plus splits_mini/{{domain}}_{{train,test}}.txt lists (no splits_mini/)"
        )
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
        check_classes({c for _, d, c in items if d == domain}, classes, f"MiniDomainNet {domain}")
    return build_manifest(root, items, MINIDOMAINNET_DOMAINS, classes, cache)


def read_folder(root: str | Path, cache: Cache | None = None) -> Manifest:
    root = check_root(root)
    items = [
        (str(img.relative_to(root)), d.name, c.name)
        for d in subdirs(root)
        for c in subdirs(d)
        for img in image_files(c)
    ]
    if not items:
        raise UserError(f"{root} holds no images in the layout ROOT/{{domain}}/{{class}}/*.jpg")
    domains = sorted({d for _, d, _ in items})
    classes = sorted({c for _, _, c in items})
    return build_manifest(root, items, domains, classes, cache)


READERS: dict[str, Reader] = {"officehome": read_officehome, "minidomainnet": read_minidomainnet, "folder": read_folder}
