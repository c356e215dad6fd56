"""Files that are whole or absent: every result, split, table, figure and cache is written to a
temporary name beside its target and renamed over it, so a run killed mid-write never leaves half a
file where a reader (a resumed run, a table, a concurrent sweep) would trust it.

The temporary name is unique per process and thread (`.NAME.PID.TID.tmp`), so concurrent writers
of one file never share it; the last rename wins, and each rename is atomic on POSIX file systems.
A disk that fills up while a file is written (ENOSPC, a quota) is one `DiskFull` line naming the
file, the space it needs and the space left; the temporary file is removed, the target untouched.

One encoding policy: every text the project reads or writes (records, splits, grids, tables, pages,
caches, lists) is UTF-8, whatever the locale. A file name that is not UTF-8 (bytes a file system
allows) is carried as Python's `surrogateescape` gives it and written back as those same bytes
(`FILE_NAMES`), so a run on such a root works; names that become words for people or the model (a
domain's or a class's folder) must be UTF-8, or the root is refused in one line naming the folder.

Paths under a results folder are built from names that `safe_name` passed, so that no user-given
name (a grid's name, a run name made of `--set` values) can reach outside that folder. Torch files
are read as tensors and plain data only (`checkpoints.load_plain`); `unloadable_reason` says, in one
line, why one was refused.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

NAME_BYTES = 200  # a file name's limit is 255 bytes; suffixes and temporary names need the rest
ENCODING = "utf-8"
FILE_NAMES = "surrogateescape"  # the error handler that keeps a non-UTF-8 file name's bytes


class DiskFull(UserError):
    """The disk (or quota) of a file being written filled up."""


@contextmanager
def atomic_path(path: str | Path, size: int | None = None, sync: bool = False) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces `path`, on error it is removed.
    `size`: the bytes the file will take, for the message when the disk is full (else the bytes
    written until then, a lower bound). `sync`: flush the file to the disk before the rename, so
    that a crash of the machine leaves the old file or the whole new one (caches trust their files).

        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if sync:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(_no_space(path, size if size is not None else _size_of(tmp), err)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, errors: str = "strict", sync: bool = False) -> None:
    """`text` as UTF-8; `errors=FILE_NAMES` where it holds file names; `sync` as `atomic_path`'s."""
    write_bytes_atomic(path, text.encode(ENCODING, errors), sync)


def write_bytes_atomic(path: str | Path, data: bytes, sync: bool = False) -> None:
    with atomic_path(path, len(data), sync) as tmp:
        tmp.write_bytes(data)


def shown(name: str | Path) -> str:
    """A file name as it may be printed on any terminal: bytes that are not UTF-8 as `\\xe9`."""
    return str(name).encode(ENCODING, FILE_NAMES).decode(ENCODING, "backslashreplace")


def write_json_atomic(path: str | Path, data, sync: bool = False) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n", sync=sync)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _no_space(path: Path, needed: int, err: OSError) -> str:
    """One line: which file, what it needs, what is left."""
    try:
        free = f"{human_bytes(shutil.disk_usage(_existing(path.parent)).free)} free there"
    except OSError:
        free = "free space unknown"
    return f"{err.strerror or 'no space left'} writing {path}: it needs {human_bytes(needed)} ({free})"


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def safe_name(name: str, what: str) -> str:
    """`name` if it is one plain file or folder name (no separator, not `.` or `..`, not too long);
    else a UserError that says which `what` (a run name, a grid name) it is."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or len(name.encode()) > NAME_BYTES:
        reason = "too long" if len(name.encode()) > NAME_BYTES else "a path, not one file or folder name"
        raise UserError(f"{what} {name!r} cannot name a folder: {reason}")
    return name


def check_writable_folder(path: str | Path, what: str) -> None:
    """A one-line UserError unless `path` is, or can be made, a folder this process writes in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{what} {path}: cannot write there ({err.strerror or err})") from None


def unloadable_reason(err: Exception) -> str:
    """Why `torch.load` (weights_only) refused a file, in one line."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # the reason inside torch's advice
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().split(". Please use")[0].split("\n")[0]
        if reason.startswith("Unsupported global"):
            return f"it needs more than tensors and plain data, which could run code ({reason})"
        return f"not a torch file of tensors and plain data ({reason or 'unreadable'})"
    if "TorchScript" in text:
        return "it is a TorchScript archive, which holds code: only OpenAI's own release is loaded as one"
    return (text.strip().splitlines() or [type(err).__name__])[0]
