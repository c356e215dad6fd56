"""One cache folder for what the runs on one dataset root share.

Where: `data.cache_dir` (`--set data.cache_dir=DIR`), else `$PETL_BENCH_CACHE`, else `{out}/cache`
beside the results; `off` in either turns caching off. Neither the folder nor its bound is part of
a run's config hash: caches never change a number.

    manifests/{root}.json      per image file of a root: size, mtime, ctime, inode and verdict
                               (header read, fully decoded, or why not): a root is scanned once,
                               files that change are checked again. A JSON line (the stats, the
                               verdicts by number), then the paths, NUL-separated as the file
                               system's bytes: read back as columns (`images.SavedScan`) in a
                               second for ImageNet's 1.3M files
    images/{key}.npy (+.json)  a domain's images after the test transform's resize and crop, uint8
                               [N, H, W, 3]; key: the domain's files (paths, sizes, mtimes, ctimes,
                               inodes) and the preprocessing. Decoded once per root and resolution.
    features/{key}.npy (+.json) a domain's image features, for methods whose image tower nothing
                               trains; key: the images' key plus model, weights, precision, device

What the key of an image is: its path under the root, size, mtime, ctime and inode, not its bytes
(hashing every image of a root at every run would cost what the cache saves). A file replaced by
another of the same size and mtime (`cp -p`, `rsync -a`, `tar` keep mtimes) still gets a new ctime
(no tool can set it) and, when renamed into place, a new inode, so it is checked and decoded again.
Not detected: a file system without ctimes (FAT, exFAT) where a file is rewritten in place with its
old size and mtime, or bytes changed on the device below the file system.

What the key of an entry cannot catch, its checksum does: each entry's metadata holds the SHA-256 of
its array file, and each JSON file carries the SHA-256 of its text; both are verified on every read,
and an entry that fails (bytes changed in place, a torn write) is a miss: it is dropped, with a
warning, and computed again. Entries are flushed to the disk (fsync) before they are renamed into
place.

Bounded by `data.cache_gb` and by the disk: before an entry is written, the least recently used
entries go until it fits both the bound and the disk's free space less a reserve (5% of the disk,
at most 1 GB, left for results and checkpoints); an entry that cannot fit is not cached.
`petl-bench cache` shows the folder, `petl-bench cache clear` empties it (or delete the folder:
nothing else lives there). Safe under concurrent runs: entries are written under a temporary name
and renamed (`petl_bench.files`), and a run filling an entry holds an OS lock on it, so a second run
waits for it and reads the entry instead of computing it again.

A cache is only for speed: when writing it fails (a full disk, a quota, a folder that cannot be
made), the run warns once, in one line naming the folder and the cause, writes no more entries and
goes on; nothing half-written stays. An array is allocated on the disk before it is filled, so a
disk that fills up is an error here, never a SIGBUS through a sparse memory map. A folder this
process cannot write (a group's shared cache, a read-only volume) is used for reads only: no lock
is taken, no access time set, no folder made.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petl_bench.errors import UserError
from petl_bench.files import ENCODING, FILE_NAMES, DiskFull, atomic_path, human_bytes, write_bytes_atomic
from petl_bench.phases import phase

from .images import SavedScan

try:
    import fcntl

    _LOCKS = True
except ImportError:  # not POSIX: no locks, concurrent runs may fill an entry twice
    _LOCKS = False

ENV = "PETL_BENCH_CACHE"
OFF = ("off", "none")
KINDS = ("manifests", "images", "features")
FILLING = {"images": "decoding", "features": "encoding"}  # what filling an entry of each kind does
_VERDICTS_VERSION = 4  # 4: columns, the paths NUL-separated after the JSON line
RESERVE_BYTES, RESERVE_SHARE = 10**9, 0.05  # free space the cache leaves on its disk: the smaller
_FAULTS = (OSError, DiskFull)  # what writing a cache can raise that is the disk's, not the run's
Entry = tuple[np.memmap, dict]  # a finished entry: its array, memory-mapped read-only, and its metadata


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
    writable: bool | None = None  # None until asked (`can_write`); False after a failure
    warned: bool = False  # a run says once that its cache failed

    @classmethod
    def for_run(cls, setting: str, out: str | Path, gb: float) -> Cache | None:
        folder = cache_folder(setting, out)
        if folder is None:
            return None
        if gb < 0:
            raise UserError(f"data.cache_gb must be >= 0; got {gb}")
        return cls(folder, int(gb * 1e9))

    def can_write(self) -> bool:
        """Whether this process may write entries: asked once (making the folder if it is absent);
        a folder it cannot write is read, never written."""
        if self.writable is None:
            try:
                if not self.folder.is_dir():
                    self.folder.mkdir(parents=True, exist_ok=True)
                self.writable = os.access(self.folder, os.W_OK | os.X_OK)
            except OSError as err:
                self.fail("making the folder", err)
            if self.writable is False:
                self.warn("cannot be written: its entries are read, none is written")
        assert self.writable is not None  # set by os.access, or False by fail
        return self.writable

    def fail(self, doing: str, err: OSError | DiskFull) -> None:
        """A cache is only for speed: after a failure to write it, say so once and write no more."""
        self.writable = False
        cause = str(err) if isinstance(err, DiskFull) else (err.strerror or str(err))
        self.warn(f"{doing} failed ({cause}); the run goes on without writing the cache")

    def warn(self, what: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"cache {self.folder} {what}", stacklevel=3)

    # -- manifests: verdicts per file of a root ----------------------------------------------------
    def _verdicts_path(self, root: Path) -> Path:
        return self.folder / "manifests" / f"{digest(root.resolve())}.json"

    def load_verdicts(self, root: Path) -> SavedScan:
        """The last scan of `root`: path -> (size, mtime_ns, ctime_ns, inode, verdict); empty where there
        is none (or one of another version or root)."""
        path = self._verdicts_path(root)
        data = self._read_sealed(path)
        saved = _scan_from_bytes(data, root) if data is not None else None
        if saved is None:
            return SavedScan([], [], [])
        self._touch(path)
        return saved

    def saver(self, root: Path) -> Callable[[Mapping[str, tuple[int, int, int, int, str]]], None]:
        def save(files: Mapping[str, tuple[int, int, int, int, str]]) -> None:
            if not self.can_write():
                return
            data = _scan_to_bytes(root, SavedScan.of(files))
            try:
                if self.make_room(len(data) + 65):
                    self._write_sealed(self._verdicts_path(root), data)
            except _FAULTS as err:
                self.fail(f"saving the manifest of {root}", err)

        return save

    # -- arrays: test images and features ---------------------------------------------------------
    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.folder / kind / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def load(self, kind: str, key: str) -> Entry | None:
        """A finished entry whose checksums hold, memory-mapped, and its metadata; None if absent
        (or removed by another run's pruning meanwhile), or dropped because it changed."""
        array_path, meta_path = self._paths(kind, key)
        sealed = self._read_json(meta_path)
        if sealed is None:
            return None
        try:
            if file_sha256(array_path) != sealed["array_sha256"]:
                self._drop(meta_path, f"{kind} entry {key}: its array changed since it was written")
                return None
            array = np.load(array_path, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._touch(array_path)
        return array, sealed["meta"]

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Held while one run fills the entry: a concurrent run waits, then finds it filled. No
        lock where nothing can be written (a read-only cache is only read)."""
        handle = self._lock_file(kind, key)
        if handle is None:
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _lock_file(self, kind: str, key: str):
        if not _LOCKS or not self.can_write():
            return None
        path = self.folder / kind / f".{key}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "a")
        except OSError as err:
            self.fail("making a lock file", err)
            return None

    def store(
        self, kind: str, key: str, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], dict | None]
    ) -> Entry | None:
        """Create an entry: `fill` writes the rows of a memory-mapped array of `shape` and returns
        its metadata (None: abandon the entry). None if it does not fit the bound or the disk, or
        the cache cannot be written; what `fill` raises is raised."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        array_path, meta_path = self._paths(kind, key)
        filling = False
        try:
            if not self.can_write() or not self.make_room(nbytes):
                return None
            with (
                phase("cache", f"{FILLING[kind]} {shape[0]:,} images into {self.folder / kind}"),
                atomic_path(array_path, nbytes, sync=True) as tmp,
            ):
                array = _allocated_memmap(tmp, shape, dtype)
                filling = True
                meta = fill(array)
                filling = False
                array.flush()
                del array
                if meta is None:
                    raise _Abandon
                # First: an array without its metadata is no entry.
                self._write_sealed(meta_path, json.dumps({"array_sha256": file_sha256(tmp), "meta": meta}).encode())
        except _Abandon:
            return None
        except _FAULTS as err:
            if filling:
                raise
            self.fail(f"writing {kind}/{array_path.name}", err)
            return None
        return self.load(kind, key)

    # -- checked files --------------------------------------------------------------------------------
    def _write_sealed(self, path: Path, data: bytes) -> None:
        """`data` after a line with its SHA-256, flushed to the disk, renamed into place."""
        write_bytes_atomic(path, f"{_sha256(data)}\n".encode() + data, sync=True)

    def _read_sealed(self, path: Path) -> bytes | None:
        """The bytes of a `_write_sealed` file; None if absent or unreadable, or (dropped, with a
        warning) if they no longer have their checksum."""
        try:
            checksum, _, data = path.read_bytes().partition(b"\n")
        except OSError:
            return None
        if checksum != _sha256(data).encode():
            self._drop(path, f"{path.parent.name} entry {path.stem}: its file changed since it was written")
            return None
        return data

    def _read_json(self, path: Path):
        data = self._read_sealed(path)
        try:
            return None if data is None else json.loads(data)
        except ValueError:
            return None

    def _drop(self, path: Path, why: str) -> None:
        """A changed entry is a miss: removed (where this process may), said, computed again."""
        warnings.warn(f"cache {self.folder}: {why} (checksum mismatch); dropped, computed again", stacklevel=3)
        if self.can_write():
            for part in (path.with_suffix(".json"), path.with_suffix(".npy")):
                part.unlink(missing_ok=True)

    def _touch(self, path: Path) -> None:
        """Mark an entry most recently used (finer than the file system's clock). Only a hint for
        pruning: not tried in a cache this process cannot write, and a refusal is no failure."""
        if self.can_write():
            now = time.time()
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))

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
        """Remove least recently used entries until `nbytes` more fit the bound and the disk's free
        space less its reserve; False (saying so once, when it is the disk) if they cannot fit."""
        if nbytes > self.max_bytes:
            return False
        entries = sorted(self.entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        disk = shutil.disk_usage(self.folder)
        reserve = min(RESERVE_BYTES, int(disk.total * RESERVE_SHARE))
        room = min(self.max_bytes, total + disk.free - reserve)  # the entries' space is theirs to reuse
        if nbytes > room:
            self.warn(
                f"has no room for {human_bytes(nbytes)} on its disk ({human_bytes(disk.free)} free, "
                f"{human_bytes(reserve)} of which it leaves free): not cached"
            )
            return False
        for _, size, files in entries:
            if total + nbytes <= room:
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


def _allocated_memmap(path: Path, shape: tuple[int, ...], dtype) -> np.memmap:
    """A new .npy file of `shape`, memory-mapped, with its blocks allocated before any is written:
    the pages of a sparse file are allocated as they are written through the map, and a disk that
    fills up meanwhile kills the process (SIGBUS) instead of raising here."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):  # not on macOS: a full disk there is SIGBUS still
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    return array


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _scan_to_bytes(root: Path, scan: SavedScan) -> bytes:
    """A JSON line (version, root, each file's four stat numbers in one flat list, its verdict as an index
    into the distinct verdicts), then the paths, NUL-separated (no file name holds a NUL)."""
    verdicts = list(dict.fromkeys(scan.verdicts))
    number = {verdict: i for i, verdict in enumerate(verdicts)}
    head = {
        "version": _VERDICTS_VERSION,
        "root": str(root.resolve()),
        "stats": list(itertools.chain.from_iterable(scan.stats)),
        "verdicts": verdicts,
        "of": list(map(number.__getitem__, scan.verdicts)),
    }
    return json.dumps(head).encode() + b"\n" + "\0".join(scan.paths).encode(ENCODING, FILE_NAMES)


def _scan_from_bytes(data: bytes, root: Path) -> SavedScan | None:
    """`_scan_to_bytes`'s scan; None for another version or root, or one that does not parse."""
    head, _, paths = data.partition(b"\n")
    try:
        saved = json.loads(head)
        if saved["version"] != _VERDICTS_VERSION or saved["root"] != str(root.resolve()):
            return None
        files = paths.decode(ENCODING, FILE_NAMES).split("\0") if paths else []
        if len(saved["stats"]) != 4 * len(files):
            return None
        numbers = iter(saved["stats"])
        stats = list(zip(numbers, numbers, numbers, numbers, strict=False))  # fours, in order: the count is checked
        return SavedScan(files, stats, list(map(saved["verdicts"].__getitem__, saved["of"])))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


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
