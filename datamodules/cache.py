"""One cache folder for what the runs on one dataset root share, keyed by content.

Where: `data.cache_dir` (`--set data.cache_dir=DIR`), else `$PETL_BENCH_CACHE`, else `{out}/cache`
beside the results; `off` in either turns caching off. Neither the folder nor its bound is part of
a run's config hash: caches never change a number.

    manifests/{root}.json      per image file of a root: size, mtime and verdict (header read,
                               fully decoded, or why not): a root is scanned once, files that
                               change are checked again
    images/{key}.npy (+.json)  a domain's images after the test transform's resize and crop, uint8
                               [N, H, W, 3]; key: the domain's files (paths, sizes, mtimes) and the
                               preprocessing. Decoded once per root and resolution.
    features/{key}.npy (+.json) a domain's image features, for methods whose image tower nothing
                               trains; key: the images' key plus model, weights, precision, device

Bounded by `data.cache_gb`: before an entry is written, the least recently used entries go until
it fits (an entry larger than the bound is not cached). `petl-bench cache` shows the folder,
`petl-bench cache clear` empties it (or delete the folder: nothing else lives there).
Safe under concurrent runs: entries are written under a temporary name and renamed
(`petl_bench.files`), and a run filling an entry holds an OS lock on it, so a second run waits for
it and reads the entry instead of computing it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petl_bench.errors import UserError
from petl_bench.files import atomic_path, write_json_atomic, write_text_atomic

try:
    import fcntl
except ImportError:  # not POSIX: no locks, concurrent runs may fill an entry twice
    fcntl = None

ENV = "PETL_BENCH_CACHE"
OFF = ("off", "none")
KINDS = ("manifests", "images", "features")
_VERDICTS_VERSION = 2


def cache_folder(setting: str, out: str | Path) -> Path | None:
    """The cache folder for a run: `setting` (a config value), else $PETL_BENCH_CACHE, else
    `{out}/cache`; None when caching is off."""
    chosen = setting.strip() or os.environ.get(ENV, "").strip()
    if chosen.lower() in OFF:
        return None
    return Path(chosen).expanduser() if chosen else Path(out) / "cache"


def digest(*parts) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass
class Cache:
    folder: Path
    max_bytes: int

    @classmethod
    def for_run(cls, setting: str, out: str | Path, gb: float) -> "Cache | None":
        folder = cache_folder(setting, out)
        if folder is None:
            return None
        if gb < 0:
            raise UserError(f"data.cache_gb must be >= 0; got {gb}")
        return cls(folder, int(gb * 1e9))

    # -- manifests: verdicts per file of a root ----------------------------------------------------
    def _verdicts_path(self, root: Path) -> Path:
        return self.folder / "manifests" / f"{digest(root.resolve())}.json"

    def load_verdicts(self, root: Path) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, verdict) from the last scan of `root`."""
        path = self._verdicts_path(root)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved["version"] != _VERDICTS_VERSION or saved["root"] != str(root.resolve()):
                return {}
            known = dict(zip(saved["paths"], zip(saved["sizes"], saved["mtimes"], saved["verdicts"])))
        except (OSError, ValueError, KeyError):
            return {}
        now = time.time()
        os.utime(path, (now, now))
        return known

    def saver(self, root: Path) -> Callable[[dict[str, tuple[int, int, str]]], None]:
        def save(files: dict[str, tuple[int, int, str]]) -> None:
            self.make_room(len(files) * 80)  # about 80 bytes of JSON per file
            columns = list(zip(*files.values())) or [(), (), ()]  # columns: twice as fast to parse
            write_text_atomic(self._verdicts_path(root), json.dumps({
                "version": _VERDICTS_VERSION, "root": str(root.resolve()), "paths": list(files),
                "sizes": columns[0], "mtimes": columns[1], "verdicts": columns[2]}))
        return save

    # -- arrays: test images and features ---------------------------------------------------------
    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.folder / kind / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def load(self, kind: str, key: str) -> tuple[np.ndarray, dict] | None:
        """A finished entry, memory-mapped, and its metadata; None if absent."""
        array_path, meta_path = self._paths(kind, key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            array = np.load(array_path, mmap_mode="r")
            now = time.time()  # most recently used (finer than the file system's clock)
            os.utime(array_path, (now, now))
        except (OSError, ValueError):  # absent, or removed by another run's pruning meanwhile
            return None
        return array, meta

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Held while one run fills the entry: a concurrent run waits, then finds it filled."""
        if fcntl is None:
            yield
            return
        path = self.folder / kind / f".{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def store(self, kind: str, key: str, shape: tuple[int, ...], dtype,
              fill: Callable[[np.ndarray], dict | None]) -> tuple[np.ndarray, dict] | None:
        """Create an entry: `fill` writes the rows of a memory-mapped array of `shape` and returns
        its metadata (None: abandon the entry). None if it does not fit the bound."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not self.make_room(nbytes):
            return None
        array_path, meta_path = self._paths(kind, key)
        try:
            with atomic_path(array_path) as tmp:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                meta = fill(array)
                array.flush()
                del array
                if meta is None:
                    raise _Abandon
                write_json_atomic(meta_path, meta)  # first: an array without its metadata is no entry
        except _Abandon:
            return None
        return self.load(kind, key)

    # -- size ---------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[float, int, list[Path]]]:
        """(last use, bytes, files) per entry; an entry is the files of one name stem."""
        groups: dict[Path, list[Path]] = {}
        for kind in KINDS:
            folder = self.folder / kind
            if folder.is_dir():
                for path in folder.iterdir():
                    if not path.name.startswith("."):
                        groups.setdefault(path.with_suffix(""), []).append(path)
                    elif path.suffix == ".tmp" and _abandoned(path):
                        groups[path] = [path]  # left by a killed run: oldest first
        found = []
        for files in groups.values():
            stats = [s for s in map(_stat, files) if s]
            if stats:
                found.append((max(s.st_mtime for s in stats), sum(s.st_size for s in stats), files))
        return found

    def make_room(self, nbytes: int) -> bool:
        """Remove least recently used entries until `nbytes` more fit the bound; False if they
        cannot fit at all."""
        if nbytes > self.max_bytes:
            return False
        entries = sorted(self.entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        for _, size, files in entries:
            if total + nbytes <= self.max_bytes:
                break
            for path in files:
                path.unlink(missing_ok=True)
            total -= size
        return True

    def clear(self, kinds=KINDS) -> int:
        """Remove every entry of `kinds`; returns the bytes freed."""
        freed = 0
        for _, size, files in self.entries():
            if files[0].parent.name in kinds:
                for path in files:
                    path.unlink(missing_ok=True)
                freed += size
        return freed


class _Abandon(Exception):
    """Raised inside `atomic_path` to drop a half-filled entry."""


def _abandoned(path: Path) -> bool:
    """A temporary file nobody wrote to for an hour (a filling run writes all the time)."""
    stat = _stat(path)
    return stat is not None and time.time() - stat.st_mtime > 3600


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None
