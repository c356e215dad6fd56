"""Evaluation-only transfer runs, torch-free: which finished run a transfer tests, on what, and the
rules that refuse one. `petl-bench eval --from RUN` builds the config here; `run.execute` runs it.

A transfer run is a run like any other (hashed, recorded, resumable, skipped when done): the source
run's config and trained parameters (built with its resolved method config, its checkpoint loaded), with the target's
dataset, root and classes in its data section and `transfer_from` naming the source. Its record
lands beside the target's runs under the source's results folder, its run name ending in the source's
config hash (`coop-from-3fa2b1c0d4`). The split's shots and seed stay the source's: a pooled dataset
tests what that draw leaves, a dataset with a test part tests that part; a leave-one-domain-out
source's held-out domain stays held out on its own dataset (its novel classes), not on another.

Refused, each in one line: a method that cannot score classes it was not trained on
(`PetlModule.open_vocabulary` False: a linear probe) on another dataset or class subset; a method
with a parameter set per task (ST) on other tasks, unless both have one task (a single-task source
transfers its one set to a single-task target, as CoOp's cross-dataset protocol does).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import MethodConfig, RunConfig, resolved_root, validate
from .errors import UserError
from .results import load_record, record_path
from .runargs import saved_config


def closed_vocabulary(methods: int) -> str:
    """Why `methods` methods with `open_vocabulary` False have no transfer to other classes, after
    their names (in refusals, count lines and tables)."""
    if methods == 1:
        return "cannot score classes it was not trained on (it holds a weight per trained class)"
    return "cannot score classes they were not trained on (each holds a weight per trained class)"


@dataclasses.dataclass(frozen=True)
class Source:
    """A finished run that a transfer tests: its config, its method's config as the run resolved it
    (what a transfer builds), its record and file."""

    cfg: RunConfig
    resolved: MethodConfig
    record: dict
    path: Path  # its record file

    @property
    def checkpoint(self) -> Path:
        return self.path.with_suffix("") / "checkpoints" / "last.ckpt"

    @property
    def tasks(self) -> list[str]:
        return list(self.record.get("tasks", []))


def find_source(path: str | Path) -> Source:
    """The finished run a record file (`seed1.json`) or its run folder (`seed1/`) holds, with the
    results folder it lies in as its config's `out`."""
    given = Path(path)
    file = given if given.suffix == ".json" else given.with_suffix(".json")
    record, problem = load_record(file)
    if record is None:
        raise UserError(
            f"--from {given}: {f'{file} is no usable record ({problem})' if problem else f'no record {file}'}"
        )
    if "transfer_from" in record.get("config", {}):
        raise UserError(
            f"--from {given}: a transfer run; transfer from the run it tested ({record['transfer_from']['run']})"
        )
    try:
        cfg = saved_config(record["config"], record["config"]["params"])
        resolved = saved_config(record["config"], record["resolved_params"]).params
    except (KeyError, TypeError):
        raise UserError(f"--from {given}: {file} holds no run config") from None
    # Where its config puts it below `out`, so the results folder is what lies above that.
    below = record_path(dataclasses.replace(cfg, out=".")).parts
    parts = file.resolve().parts
    if parts[-len(below) :] != below:
        raise UserError(f"--from {given}: {file} is not where its config puts a record (…/{Path(*below)})")
    return Source(dataclasses.replace(cfg, out=str(Path(*parts[: -len(below)]))), resolved, record, file.resolve())


def transfer_config(source: RunConfig, dataset: str | None, root: str | None, classes: str) -> RunConfig:
    """The transfer run of the run `source` configures on the target: `dataset` (default the
    source's), its `root` (None: the source's, which only the source's dataset may take), `classes`.
    Known from the source's config alone (a grid's transfer runs are known before their sources
    ran). The source's own data and classes are no transfer."""
    cfg = source
    target = dataset or cfg.data.dataset
    if root is None:
        if target != cfg.data.dataset:
            raise UserError(f"--root: the {target} folder is needed (the source ran on {cfg.data.dataset})")
        root = cfg.data.root
    # A held-out domain is the source's own dataset's: another dataset is tested whole.
    holdout = cfg.data.holdout if target == cfg.data.dataset else ""
    data = dataclasses.replace(cfg.data, dataset=target, root=root, classes=classes, holdout=holdout)
    if (data.dataset, resolved_root(data.root), data.classes) == (
        cfg.data.dataset,
        resolved_root(cfg.data.root),
        cfg.data.classes,
    ):
        raise UserError(
            f"the target is the source's own data ({data.dataset}, {data.classes} classes): "
            "name another --dataset, --root or --classes (`eval --ckpt` re-evaluates a run)"
        )
    origin = {"run": str(record_path(dataclasses.replace(cfg, out="."))), "config_sha256": cfg.sha256()}
    return validate(dataclasses.replace(cfg, data=data, transfer_from=origin))


def refusal(
    source: Source, cfg: RunConfig, open_vocabulary: bool, shared: bool | None, tasks: list[str] | None = None
) -> str | None:
    """Why the method of `source` cannot be tested on `cfg`'s data (its `tasks`, once the target is
    read; None before), or None."""
    method, source_data = cfg.method, source.cfg.data
    if not open_vocabulary and (cfg.data.dataset, cfg.data.classes) != (source_data.dataset, source_data.classes):
        return (
            f"{method} {closed_vocabulary(1)}: "
            f"no transfer from {source_data.dataset} {source_data.classes} classes "
            f"to {cfg.data.dataset} {cfg.data.classes} classes"
        )
    if shared is False and tasks is not None and tasks != source.tasks and not len(tasks) == len(source.tasks) == 1:
        return (
            f"{method} holds a parameter set per task ({', '.join(source.tasks)}): it transfers to the same tasks, "
            f"or from one task to one, not to {', '.join(tasks)}"
        )
    return None
