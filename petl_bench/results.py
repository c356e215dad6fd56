"""Run records: where each lives and the one reader that decides whether a file is a usable record.

A record lands at `{out}/runs/{dataset}/{root}/{Nshot}/{run_name}/seed{K}.json`, `{root}` being
`config.root_folder(data.root)`, so runs of two dataset roots under one `--out` never share a
record, a run folder (checkpoints, logs, lock) or a split file; nor do runs of two class subsets
(`{Nshot}-base`, `{Nshot}-novel`: `catalog.split_folder`), nor of two held-out domains
(`{Nshot}-holdout-sketch`). Records carry `schema` (`SCHEMA`);
`check_record` says what is wrong with one, and every reader of records (tables, figures, the
report, a sweep's states, `run`'s "already done") goes through `load_record`, so one odd file is
listed with its reason and skipped, never fatal. A record written before `schema` existed reads
as schema 1 where it holds what schema 1 needs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .config import RunConfig, root_folder
from .datamodules.catalog import split_folder
from .files import safe_name

SCHEMA = 1
# What every reader needs, by type; `pretrained` may be None (random init).
REQUIRED = {
    "method": str,
    "run_name": str,
    "dataset": str,
    "split": str,
    "seed": int,
    "model": str,
    "config_sha256": str,
    "trainable_params": int,
}


JSON_TYPES = {list: "array", type(None): "null", str: "string", int: "number", float: "number", bool: "boolean"}


def record_path(cfg: RunConfig) -> Path:
    split = split_folder(cfg.data.dataset, cfg.data.split, cfg.data.classes, cfg.data.holdout)
    return (
        Path(cfg.out)
        / "runs"
        / cfg.data.dataset
        / root_folder(cfg.data.root)
        / split
        / safe_name(cfg.run_name, "run name")
        / f"seed{cfg.data.seed}.json"
    )


def record_place(below_out: str | Path) -> tuple[str, str]:
    """(dataset, split folder) of a record path relative to `out`, as `record_path` lays it out
    (`runs/{dataset}/{root}/{split folder}/{run_name}/seed{K}.json`)."""
    parts = Path(below_out).parts
    return parts[1], parts[3]


def check_record(record) -> str | None:
    """What makes `record` (a file's parsed JSON) unusable as a run record, or None."""
    if not isinstance(record, dict):
        return f"not a run record but a JSON {JSON_TYPES.get(type(record), type(record).__name__)}"
    schema = record.get("schema", SCHEMA)  # none: written before records had a schema
    if not _is(schema, int) or schema < 1:
        return f"schema {schema!r} is not a version number"
    if schema > SCHEMA:
        return f"schema {schema} is newer than this petl-bench reads ({SCHEMA}): upgrade petl-bench"
    for key, kind in REQUIRED.items():
        if key not in record:
            return f"no {key}"
        if not _is(record[key], kind):
            return f"{key} is {record[key]!r}, not a{'n' if kind is int else ''} {kind.__name__}"
    if record["trainable_params"] < 0:
        return f"trainable_params is {record['trainable_params']}"
    if not (record.get("pretrained") is None or _is(record["pretrained"], str)):
        return f"pretrained is {record['pretrained']!r}, not a string"
    tasks = record.get("tasks", [])
    if not isinstance(tasks, list) or not all(_is(task, str) for task in tasks):
        return f"tasks is {tasks!r}, not a list of names"
    return _accuracy_problem(record.get("accuracy"))


def _accuracy_problem(accuracy) -> str | None:
    if not isinstance(accuracy, dict) or "average" not in accuracy:
        return f"accuracy is {accuracy!r}, not a percentage per task and average"
    for task, value in accuracy.items():
        if not (_is(value, int) or _is(value, float)) or not math.isfinite(value) or not 0 <= value <= 100:
            return f"accuracy of {task} is {value!r}, not a percentage"
    return None


def _is(value, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)  # JSON true is no number


def load_record(path: Path) -> tuple[dict | None, str | None]:
    """(the record, None) when `path` holds a usable one; (None, why not) when it holds anything
    else; (None, None) when there is no file."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no file there (`--out` may even be a file)
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text ({err.reason} at byte {err.start})"
    except ValueError as err:
        return None, f"not JSON ({err})"
    problem = check_record(record)
    return (None, problem) if problem else (record, None)


def read_record(path: Path) -> dict | None:
    """The usable record at `path`, or None (absent, or unusable: `load_record` says why)."""
    return load_record(path)[0]


def record_files(out: Path) -> list[Path]:
    """Every run record file under `{out}/runs`; temporary files of writes in progress
    (`.seed0.json.PID.tmp`) do not match."""
    return sorted(Path(out).glob("runs/**/seed*.json"))


def read_records(out: Path) -> tuple[dict[Path, dict], dict[Path, str]]:
    """Every usable record under `{out}/runs` by resolved path, and every other record file with
    why it was skipped."""
    records, bad = {}, {}
    for path in record_files(out):
        record, problem = load_record(path)
        if record is not None:
            records[path.resolve()] = record
        elif problem:
            bad[path.resolve()] = problem
    return records, bad
