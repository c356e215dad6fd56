"""Disks that fill up, caches that cannot be written, and the CLI's last guard.

A full `--out` is one line naming the file and the space it needs, with nothing half-written; a
cache is only for speed: when it cannot be written the run warns once and goes on without it; a
read-only cache is read. Full disks are writers made to fail as a full disk does (some bytes land,
then ENOSPC); a read-only cache is one the process really cannot write (as user nobody when the
tests run as root, whom no file mode stops).
"""

import builtins
import errno
import io
import json
import os
import shutil
import stat
import tempfile
import warnings
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import yaml

from petl_bench import cli
from petl_bench.datamodules.cache import Cache

from cli_calls import call

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A file on a disk that is full: half of the first write lands, then ENOSPC."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise NO_SPACE

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(pattern, under): files opened for writing under `under` whose name matches
    `pattern` (the temporary names atomic writes use) are on a full disk."""

    def fill_up(pattern: str, under: Path) -> None:
        real = builtins.open

        def opened(file, mode="r", *args, **kwargs):
            handle = real(file, mode, *args, **kwargs)
            path = Path(os.fsdecode(file)) if isinstance(file, str | bytes | os.PathLike) else None
            if path and set(mode) & set("wax+") and fnmatch(path.name, pattern) and under in path.parents:
                return _FullDisk(handle)
            return handle

        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(io, "open", opened)  # pathlib's

    return fill_up


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _run(method, root, checkpoint, out, *extra):
    return call(
        [
            "run",
            "--method",
            method,
            "--dataset",
            "folder",
            "--root",
            root,
            "--split",
            "2shot",
            "--model",
            "tiny",
            "--pretrained",
            checkpoint,
            "--out",
            out,
            "--no-progress",
            "--set",
            "data.num_workers=0",
            "--set",
            "train.epochs=1",
            *extra,
        ]
    )


# -- a full --out ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, method, written",
    [
        ("split", "zeroshot", "splits/folder/*/2shot/seed0.csv"),
        ("record", "zeroshot", "runs/folder/*/2shot/*/seed0.json"),
        ("checkpoint", "coop", "runs/folder/*/2shot/*/seed0/checkpoints/last.ckpt"),
    ],
)
def test_a_full_out_is_one_line_naming_the_file_and_the_space_it_needs(
    stage, method, written, folder_root, tiny_checkpoint, tmp_path, full_disk, monkeypatch
):
    out = tmp_path / "results"
    if stage == "checkpoint":  # torch writes checkpoints itself, not through Python's open
        import torch

        def save_on_full_disk(obj, f, *args, **kwargs):
            Path(f).write_bytes(b"PK\3\4 half a checkpoint")
            raise NO_SPACE

        monkeypatch.setattr(torch, "save", save_on_full_disk)
    else:
        full_disk(f".{Path(written).name}.*", out)
    code, _, stderr = _run(method, folder_root, tiny_checkpoint, out, "--set", "data.cache_dir=off")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    head = f"petl-bench: error: {os.strerror(errno.ENOSPC)} writing "
    assert lines[0].startswith(head) and " free there)" in lines[0], lines[0]
    target, needs = lines[0].removeprefix(head).split(": it needs ")
    assert fnmatch(target, str(out / written)) and needs[0].isdigit(), lines[0]
    assert not Path(target).exists() and _leftovers(out) == []  # nothing half-written
    if stage == "record":
        # what was written whole stays
        assert [p.is_file() for p in out.glob("splits/folder/*/2shot/seed0.csv")] == [True]


def test_a_full_report_folder_is_one_line(tmp_path, full_disk):
    out = tmp_path / "results"
    (out / "runs").mkdir(parents=True)
    full_disk(".index.html.*", out)
    code, _, stderr = call(["report", "--out", out])
    index = out / "report" / "index.html"
    assert code == 2 and stderr.strip().splitlines() == [stderr.strip()], stderr
    assert f"writing {index}: it needs " in stderr and "Traceback" not in stderr
    assert not index.exists() and _leftovers(out) == []


# -- a cache that fills the disk ----------------------------------------------------------------------
def _cache_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("cache ")]


@pytest.mark.parametrize("where", ["manifest", "metadata", "allocation"])
def test_a_cache_on_a_full_disk_warns_once_and_the_run_goes_on_without_it(
    where, folder_root, tiny_checkpoint, tmp_path, full_disk, monkeypatch
):
    code, _, stderr = _run("zeroshot", folder_root, tiny_checkpoint, tmp_path / "plain", "--set", "data.cache_dir=off")
    assert code == 0, stderr
    uncached = json.loads(next((tmp_path / "plain").rglob("seed0.json")).read_text())

    out = tmp_path / "results"
    cache = out / "cache"
    if where == "allocation":  # the array's blocks, allocated before it is filled
        monkeypatch.setattr(
            os, "posix_fallocate", lambda fd, offset, length: (_ for _ in ()).throw(NO_SPACE), raising=False
        )
    else:
        full_disk(".*.json.*.tmp", cache / ("manifests" if where == "manifest" else "images"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, stderr = _run("zeroshot", folder_root, tiny_checkpoint, out)
    assert code == 0, stderr
    said = _cache_warnings(caught)
    assert len(said) == 1 and said[0].startswith(f"cache {cache} ") and os.strerror(errno.ENOSPC) in said[0], said
    record = json.loads(next((out / "runs").rglob("seed0.json")).read_text())
    assert record["accuracy"] == uncached["accuracy"]
    assert set(record["test_sources"].values()) == {"decoded"}  # nothing cached after the failure
    assert _leftovers(cache) == []


def test_a_cache_array_is_allocated_on_the_disk_before_it_is_filled(tmp_path):
    """A sparse file's pages are allocated as they are written through the memory map: on a disk
    that fills up meanwhile, that is a SIGBUS, not an error."""
    cache = Cache(tmp_path / "cache", 10**9)
    seen = []

    def fill(array):
        tmp = Path(array.filename)
        seen.append(os.stat(tmp).st_blocks * 512 >= os.stat(tmp).st_size)
        array[:] = 7
        return {}

    assert cache.store("images", "a", (64, 1024), np.uint8, fill) is not None
    assert seen == [True]


def test_the_cache_bound_respects_the_disks_free_space(tmp_path, monkeypatch):
    disk = shutil._ntuple_diskusage(total=10**7, used=10**7 - 600_000, free=600_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk)
    cache = Cache(tmp_path / "cache", max_bytes=10**9)  # the bound alone would take both entries
    # 600 kB free less the reserve (5% of a 10 MB disk) leave 100 kB for the cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.store("images", "big", (200_000,), np.uint8, lambda array: {}) is None
        assert cache.store("images", "small", (50_000,), np.uint8, lambda array: {}) is not None
    said = _cache_warnings(caught)
    assert len(said) == 1 and "no room for 200.0 kB on its disk (600.0 kB free" in said[0], said
    assert [files[0].stem for _, _, files in cache.entries()] == ["small"]


# -- a cache this process cannot write --------------------------------------------------------------
@pytest.fixture
def shared_folder():
    """A folder every user may read (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="petl-bench-shared-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _as_a_reader(folder: Path, work) -> dict:
    """work() in a child process that cannot write `folder`: as user nobody when the tests run as
    root (no file mode stops root), else with the folder's write bits taken away; its result."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit handlers
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            result = {"ok": work()}
        except BaseException as err:  # the parent's assertion shows it
            result = {"error": f"{type(err).__name__}: {err}"}
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(text)


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Each path's mtime and ctime (set by any write or utime; reading sets only the atime)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in folder.rglob("*")}


def test_a_read_only_cache_is_read_and_never_written(shared_folder, tmp_path):
    root = tmp_path / "dataset"
    writer = Cache(shared_folder / "cache", 10**9)
    writer.saver(root)({"art/a.jpg": (10, 1, 2, 3, "ok")})
    writer.store("images", "a", (4, 2), np.uint8, lambda array: array.fill(3) or {"paths": ["art/a.jpg"]})
    before = _snapshot(shared_folder)

    def read():
        cache = Cache(shared_folder / "cache", 10**9)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            array, meta = cache.load("images", "a")
            known = cache.load_verdicts(root)
            with cache.lock("images", "b"):
                stored = cache.store("images", "b", (4, 2), np.uint8, lambda array: {})
            cache.saver(root)({"art/b.jpg": (10, 1, 2, 3, "ok")})
            absent = Cache(shared_folder / "cache" / "absent", 10**9)
            stored_absent = absent.store("images", "c", (1,), np.uint8, lambda array: {})
        return {
            "array": array.tolist(),
            "meta": meta,
            "known": {k: list(v) for k, v in known.items()},
            "stored": stored is None and stored_absent is None,
            "said": _cache_warnings(caught),
        }

    got = _as_a_reader(shared_folder, read)
    assert "error" not in got, got.get("error", "")
    got = got["ok"]
    assert got["array"] == [[3, 3]] * 4 and got["meta"] == {"paths": ["art/a.jpg"]}
    assert got["known"] == {"art/a.jpg": [10, 1, 2, 3, "ok"]} and got["stored"]
    assert got["said"] == [
        f"cache {shared_folder / 'cache'} cannot be written: its entries are read, none is written",
        f"cache {shared_folder / 'cache' / 'absent'} making the folder failed "
        f"({os.strerror(errno.EACCES)}); the run goes on without writing the cache",
    ]
    assert _snapshot(shared_folder) == before  # no file made, written or touched, no lock, no folder


# -- the last guard ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raised, line",
    [
        (
            OSError(errno.EIO, os.strerror(errno.EIO), "/data/art/1.jpg"),
            f"petl-bench: error: /data/art/1.jpg: {os.strerror(errno.EIO)} (",
        ),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            "petl-bench: error: cannot read or write text: 'utf-8' codec can't decode byte 0xff in position 0",
        ),
        (yaml.YAMLError("a grid that is no YAML"), "petl-bench: error in yaml: YAMLError: a grid that is no YAML ("),
        (
            KeyError("accuracy"),
            "petl-bench: internal error, this is a bug (please report it with the log): KeyError: 'accuracy' (",
        ),
    ],
)
def test_an_unexpected_exception_is_one_line_and_a_log_holding_its_traceback(raised, line, tmp_path, monkeypatch):
    def fails(args):
        raise raised

    monkeypatch.setattr(cli, "cmd_methods", fails)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, _, stderr = call(["methods"])
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(line), lines[0]
    log = Path(lines[0].rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "petl-bench-logs"
    text = log.read_text()
    assert "petl-bench methods" in text and "Traceback" in text and type(raised).__name__ in text
