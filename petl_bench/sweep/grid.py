"""A sweep's grid: a YAML file of methods x splits x seeds, expanded into the `RunConfig` of every run.

A grid file (`benchmarks/*.yaml`):

    name: table1                 # default: the file's name
    table: table1                # the report's layout: table1 | table2 | ablation | kshot | fewshot | base2novel
                                 # | transfer | lodo (the last three each the table of its protocol, and only)
    dataset: officehome          # a name in config.DATASETS (or several joined: a+b); or `datasets: [a, b, ...]`
    splits: [10pct, 20pct]       # Nshot or paper aliases
    seeds: [0, 1, 2]             # default [0, 1, 2]
    recipe: shared               # shared (default) or paper: each method's own (`petl_bench.recipes`)
    classes: base                # all (default), base or novel: CoOp's class halves (data.classes)
    protocol: base2novel         # optional: each run on the base classes, then its transfer to the novel
                                 # ones (`petl-bench eval --from`), which a sweep runs once its source is done;
                                 # xd | dg: each run, then its transfer to every dataset of `targets`; none
                                 # for a method that cannot score classes it never trained on (a linear
                                 # probe: `open_vocabulary`), whose table cells say so
    targets: [caltech101, dtd]   # xd, dg: the target datasets, each in the folder catalog.DATASET_FOLDERS
                                 # names beside the source's root (DATA/imagenet -> DATA/caltech-101)
                                 # lodo: leave-one-domain-out, each run once per domain of its dataset held
                                 # out (data.holdout: catalog.DOMAINS), trained on the others pooled
    set:                         # `section.key: value` for every run, as `--set` (optional)
      data.batch_size: 16
    methods:                     # table rows, in order
      - zeroshot                 # a method name: the row label is the name
      - {method: mmap, label: "gradient groups", set: {method.grouping: gradient}}
      - {method: coop, label: "CoOp (its paper's recipe)", recipe: paper}   # an entry's recipe wins
    slurm: {partition: "", time_min: 240, gpus_per_job: 1, cpus_per_task: 8, mem_gb: 32,
            array_parallelism: 16}  # optional; see SlurmConfig

Precedence, lowest first: the dataclass defaults, the run's recipe (the entry's `recipe`, else the
grid's), the grid's `set`, a method entry's `set`, the command line's `--set` (where
`slurm.key=value` sets the Slurm block). The dataset root is not part of a grid: give it with
`--set data.root=DIR` (a sweep keeps it in `{out}/sweeps/{grid}.json`, where `table` and
`--dry-run` find it when not given one: `state.on_swept_root`).

A grid over several datasets (`datasets: [caltech101, dtd, ...]` instead of `dataset:`; its table is
`fewshot`, whose columns are the datasets) expands into the runs of each dataset in turn; there
`data.root=DATA` names their common root and each dataset runs on `DATA/{folder}`, its folder in
`catalog.DATASET_FOLDERS` (CoOp's DATASETS.md names), else its name. A sweep names the folders that
are missing in one line before anything runs. A grid of one dataset takes the root as it is.
A dataset named `a+b` (in either form) is one run over all their tasks: its root is the common root,
each of its datasets read in its folder there as above.

Each run's config is built by the same code as `petl-bench run` builds it (`runargs`), so a sweep's
run and a hand-typed run are one and the same. The module imports no torch (tests/test_layers.py);
building the runs' configs loads the registered methods (`registry.get_method`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import CLASS_SUBSETS, DATASETS, RECIPES, RunConfig, parse_value
from ..datamodules.catalog import (
    DOMAINS,
    canonical_dataset,
    dataset_folder,
    dataset_parts,
    dataset_problem,
    parse_shots,
)
from ..errors import UserError
from ..files import safe_name
from ..registry import get_method
from ..results import record_path
from ..runargs import build_run_config
from ..transfer import transfer_config

BENCHMARKS = Path(str(importlib.resources.files("petl_bench.benchmarks")))  # of the checkout, or the installed wheel
TABLES = ("table1", "table2", "ablation", "kshot", "fewshot", "base2novel", "transfer", "lodo")
BY_DATASET = "fewshot"  # the table whose columns are datasets (each record counts by its average)
SEVERAL_DATASETS = (BY_DATASET, "base2novel", "lodo")  # the tables a grid over several datasets takes
GRID_KEYS = (
    *("name", "table", "dataset", "datasets", "splits", "seeds", "recipe", "classes", "protocol", "targets"),
    *("set", "methods", "slurm"),
)
# CoCoOp's base-to-novel, cross-dataset and domain-generalisation protocols; DomainBed's leave-one-domain-out
PROTOCOLS = ("base2novel", "xd", "dg", "lodo")
PROTOCOL_TABLES = {"base2novel": "base2novel", "xd": "transfer", "dg": "transfer", "lodo": "lodo"}
ENTRY_KEYS = ("method", "label", "recipe", "set")
DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class SlurmConfig:
    """Resources of each run's Slurm job (`slurm:` in a grid, or `--set slurm.key=value`)."""

    partition: str = ""  # empty: the cluster's default partition
    time_min: int = 240  # time limit of one run
    gpus_per_job: int = 1  # 0 for CPU jobs
    cpus_per_task: int = 8
    mem_gb: int = 32  # 0: the partition's default
    array_parallelism: int = 16  # jobs of the sweep's array running at once


@dataclass
class GridRun:
    label: str  # row label in tables: the entry's `label`, else the method name
    cfg: RunConfig  # fully built, --set overrides applied


@dataclass
class Grid:
    name: str
    table: str
    datasets: list[str]  # one, or several in a `datasets:` grid, in its order
    runs: list[GridRun]
    slurm: SlurmConfig
    path: Path = Path()  # the grid file
    out: Path = Path("results")  # records go under out/runs
    splits: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # row order
    overrides: list[str] = field(default_factory=list)  # the command line's --set items
    text: str = ""  # the grid file's content as expanded
    root: str = ""  # the dataset root given (`data.root`), for several datasets their common root
    # the labels whose runs its protocol would transfer but does not: their methods cannot score
    # classes they never trained on (`open_vocabulary` False)
    closed_vocabulary: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # xd, dg: the datasets each run is transferred to

    @property
    def dataset(self) -> str:
        """The dataset's name, or the names of several joined by ", " (for lines and headings)."""
        return ", ".join(self.datasets)

    @property
    def by_dataset(self) -> bool:
        """Whether its table's columns are its datasets (each record counts by its average)."""
        return self.table == BY_DATASET


def grid_file(name_or_path: str) -> Path:
    """`table1` -> benchmarks/table1.yaml; an existing file as it is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = BENCHMARKS / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in BENCHMARKS.glob("*.yaml"))) or "none"
    raise UserError(f"no grid {name_or_path!r}: not a file, nor one of benchmarks/*.yaml ({known})")


def expand_grid(path: Path, overrides: Sequence[str] = (), out: str | None = None, text: str | None = None) -> Grid:
    """The grid's runs, each config built as `petl-bench run` builds it; `overrides` as `--set`.
    `text`: the grid file's content as a sweep saw it, instead of the file's content now."""
    path, out = Path(path), out or "results"
    text = _read_text(path) if text is None else text
    spec = _read_yaml(path, text)
    _check_keys(path, "", spec, GRID_KEYS)
    table = _required(path, spec, "table")
    if table not in TABLES:
        raise UserError(f"{path}: table: unknown layout {table!r} (known: {', '.join(TABLES)})")
    datasets = _datasets(path, spec, table)
    splits = [str(s) for s in _list(path, "splits", _required(path, spec, "splits"))]
    for dataset in datasets:
        for split in splits:
            _in(path, "splits", parse_shots, dataset, split)
    seeds = _list(path, "seeds", spec.get("seeds", list(DEFAULT_SEEDS)))
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{path}: seeds: expected a list of integers, got {seeds!r}")
    grid_recipe = _recipe(path, "recipe", spec.get("recipe", "shared"))
    classes = spec.get("classes", "all")
    if classes not in CLASS_SUBSETS:
        raise UserError(f"{path}: classes: unknown {classes!r} (known: {', '.join(CLASS_SUBSETS)})")
    protocol = spec.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise UserError(f"{path}: protocol: unknown {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if protocol == "base2novel":
        if "classes" in spec:
            raise UserError(f"{path}: classes: the base2novel protocol trains on the base classes itself")
        classes = "base"
    targets = [str(t) for t in _list(path, "targets", spec.get("targets", []))]
    if bool(targets) != (protocol in ("xd", "dg")):
        raise UserError(f"{path}: targets: the xd and dg protocols name their target datasets, and only they")
    sources = {part for dataset in datasets for part in dataset_parts(dataset)}
    for target in targets:
        if target not in DATASETS:
            raise UserError(f"{path}: targets: unknown {target!r} (known: {', '.join(DATASETS)})")
        if target in sources:
            raise UserError(f"{path}: targets: {target} is the source dataset (its own test is the source column)")
    if len(set(targets)) != len(targets):
        raise UserError(f"{path}: targets: each target once (got {', '.join(targets)})")
    _check_table_of(path, table, protocol)
    grid_sets = [f"data.classes={classes}", *_set_items(path, "set", spec.get("set") or {})]
    run_sets = [o for o in overrides if not o.startswith("slurm.")]
    slurm = _slurm_config(path, spec.get("slurm") or {}, [o for o in overrides if o.startswith("slurm.")])

    runs: list[GridRun] = []
    labels: list[str] = []
    closed_vocabulary: list[str] = []
    roots: list[str] = []  # the root each entry's runs are given, before the per-dataset rule
    seen: dict[Path, str] = {}  # record -> the label of the entry that makes it
    entries = _list(path, "methods", _required(path, spec, "methods"))
    for i, entry in enumerate(entries):
        where = f"methods[{i}]"
        method, label, recipe, entry_sets = _entry(path, where, entry, grid_recipe)
        labels.append(label)
        open_vocabulary = get_method(method).open_vocabulary
        if not open_vocabulary and (protocol == "base2novel" or targets):
            closed_vocabulary.append(label)
        if protocol == "lodo":
            _check_lodo(path, datasets, [*grid_sets, *entry_sets, *run_sets])
        for dataset in datasets:
            holdouts = DOMAINS[dataset] if protocol == "lodo" else ("",)
            for split, seed, holdout in itertools.product(splits, seeds, holdouts):
                held = [f"data.holdout={holdout}"] if holdout else []
                cfg = _in(
                    path,
                    where,
                    _build,
                    method,
                    dataset,
                    split,
                    seed,
                    out,
                    recipe,
                    grid_sets + entry_sets,
                    run_sets + held,
                )
                roots.append(cfg.data.root)
                if len(datasets) > 1:
                    cfg = dataset_root(cfg)
                made = [GridRun(label, cfg)]  # the run, then the transfer runs of its protocol
                if open_vocabulary:  # else each would only be refused (`transfer.refusal`); its table says why
                    made += [
                        GridRun(label, _in(path, where, transfer_config, cfg, *to))
                        for to in _transfers(protocol, targets, cfg)
                    ]
                for run in made:
                    key = record_of(run)
                    if key in seen and seen[key] != label:
                        raise UserError(
                            f"{path}: {where} ({label!r}) makes the same runs as {seen[key]!r} "
                            f"({key.parent.name}); give one of them another setting"
                        )
                    seen[key] = label
                runs.extend(made)
    if len(set(labels)) != len(labels):
        raise UserError(f"{path}: methods: labels must differ (got {labels})")
    name = _in(path, "name", safe_name, str(spec.get("name") or path.stem), "grid name")  # tables/{name}.md
    return Grid(
        name=name,
        table=table,
        datasets=datasets,
        runs=runs,
        slurm=slurm,
        path=path,
        out=Path(out),
        splits=splits,
        seeds=seeds,
        labels=labels,
        overrides=list(overrides),
        text=text,
        root=roots[0] if roots else "",
        closed_vocabulary=closed_vocabulary,
        targets=targets,
    )


def _check_table_of(path: Path, table: str, protocol: str | None) -> None:
    """A protocol's runs go in its own table, and that table takes only its protocol's runs: the
    others key a label's runs by split and task alone, which a source and its transfers share."""
    wanted = PROTOCOL_TABLES.get(protocol or "")
    if wanted is not None and table != wanted:
        raise UserError(f"{path}: table: the {protocol} protocol's table is {wanted}, not {table}")
    if wanted is None and table in PROTOCOL_TABLES.values():
        protocols = " or ".join(p for p, t in PROTOCOL_TABLES.items() if t == table)
        raise UserError(f"{path}: protocol: the {table} table shows the runs of protocol {protocols}: name it")


def _transfers(protocol: str | None, targets: list[str], cfg: RunConfig) -> list[tuple[str | None, str | None, str]]:
    """What a run's protocol tests it on after its own test: (dataset, root, classes) of each
    transfer, None for the source's own."""
    novel: list[tuple[str | None, str | None, str]] = [(None, None, "novel")] if protocol == "base2novel" else []
    return novel + [(target, _beside(cfg, target), cfg.data.classes) for target in targets]


def _check_lodo(path: Path, datasets: list[str], items: list[str]) -> None:
    """A lodo grid's datasets have domains, and no `set` names the domain it holds out."""
    for dataset in datasets:
        if dataset not in DOMAINS:
            multi = ", ".join(DOMAINS)
            raise UserError(f"{path}: datasets: {dataset} has no domains to hold out (the lodo protocol takes {multi})")
    if any(item.partition("=")[0].strip() == "data.holdout" for item in items):
        raise UserError(f"{path}: set: the lodo protocol holds out each domain itself (no data.holdout)")


def dataset_root(cfg: RunConfig) -> RunConfig:
    """`cfg` on its dataset's folder under the common root it names (none given, or datasets joined,
    which read their folders there themselves: as it is)."""
    if not cfg.data.root or len(dataset_parts(cfg.data.dataset)) > 1:
        return cfg
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, root=dataset_folder(cfg.data.root, cfg.data.dataset))
    )


def record_of(run: GridRun) -> Path:
    """Where the run's record lands (its folder beside it holds checkpoints, logs and its lock)."""
    return record_path(run.cfg)


def _beside(source: RunConfig, dataset: str) -> str:
    """The folder of `dataset` beside the source's data ("" without a root), as CoOp's DATASETS.md
    lays its datasets out under one folder (`catalog.DATASET_FOLDERS`): beside a dataset's root, or
    under a joined source's common root (where its parts lie)."""
    root = source.data.root
    if not root:
        return ""
    common = root if len(dataset_parts(source.data.dataset)) > 1 else str(Path(root).parent)
    return dataset_folder(common, dataset)


def _build(method, dataset, split, seed, out, recipe, grid_sets, run_sets) -> RunConfig:
    return build_run_config(method, dataset, "", split, seed, out=out, overrides=[*grid_sets, *run_sets], recipe=recipe)


def _recipe(path: Path, where: str, name) -> str:
    if name not in RECIPES:
        raise UserError(f"{path}: {where}: unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return name


def _datasets(path: Path, spec: dict, table: str) -> list[str]:
    """`dataset: a` or `datasets: [a, b, ...]` (one of the two), each a known name, none twice."""
    if ("dataset" in spec) == ("datasets" in spec):
        raise UserError(f"{path}: give one of 'dataset' (a name) or 'datasets' (a list of names)")
    key = "dataset" if "dataset" in spec else "datasets"
    value = _required(path, spec, key)
    datasets = [value] if key == "dataset" else _list(path, key, value)
    for dataset in datasets:
        problem = dataset_problem(dataset) if isinstance(dataset, str) else f"{dataset!r} is not a dataset's name"
        if problem:
            raise UserError(f"{path}: {key}: {problem}")
    datasets = [canonical_dataset(dataset) for dataset in datasets]
    if len(set(datasets)) != len(datasets):
        raise UserError(f"{path}: datasets: each dataset once (got {', '.join(datasets)})")
    if len(datasets) > 1 and table not in SEVERAL_DATASETS:
        raise UserError(
            f"{path}: table: a grid over several datasets takes table: {_one_of(SEVERAL_DATASETS)} (got {table})"
        )
    return datasets


def _one_of(names: Sequence[str]) -> str:
    """`a, b or c`."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


# -- reading the YAML ------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise UserError(f"cannot read grid {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"grid {path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8") from None


def _read_yaml(path: Path, text: str) -> dict:
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1})" if where else ""
        raise UserError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: expected a mapping of {', '.join(GRID_KEYS)}")
    return spec


def _check_keys(path: Path, where: str, mapping: dict, known) -> None:
    for key in mapping:
        if key not in known:
            raise UserError(f"{path}: {where}unknown key {key!r} (known: {', '.join(known)})")


def _required(path: Path, spec: dict, key: str):
    if spec.get(key) in (None, "", []):
        raise UserError(f"{path}: missing key {key!r}")
    return spec[key]


def _list(path: Path, key: str, value) -> list:
    if not isinstance(value, list):
        raise UserError(f"{path}: {key}: expected a list, got {value!r}")
    return value


def _in(path: Path, where: str, fn, *args):
    """fn(*args), its UserError prefixed with the file and the key it came from."""
    try:
        return fn(*args)
    except UserError as err:
        raise UserError(f"{path}: {where}: {err}") from None


def _set_items(path: Path, where: str, mapping) -> list[str]:
    """{`section.key`: value} -> [`section.key=value`], scalars only."""
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: {where}: expected a mapping of section.key: value, got {mapping!r}")
    items = []
    for key, value in mapping.items():
        if isinstance(value, (list, dict)):
            raise UserError(f"{path}: {where}: {key}: expected a single value, got {value!r}")
        items.append(f"{key}={'none' if value is None else value}")
    return items


def _entry(path: Path, where: str, entry, grid_recipe: str) -> tuple[str, str, str, list[str]]:
    """A `methods` item -> (method, label, recipe (the grid's unless it names one), its set items);
    the method must be registered."""
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where}: expected a method name or a mapping of {', '.join(ENTRY_KEYS)}")
    _check_keys(path, f"{where}: ", entry, ENTRY_KEYS)
    method = entry.get("method")
    if not isinstance(method, str):
        raise UserError(f"{path}: {where}: missing key 'method'")
    _in(path, where, get_method, method)
    recipe = _recipe(path, f"{where}: recipe", entry.get("recipe", grid_recipe))
    return method, str(entry.get("label") or method), recipe, _set_items(path, f"{where}: set", entry.get("set") or {})


def _slurm_config(path: Path, mapping, overrides: list[str]) -> SlurmConfig:
    """The grid's `slurm:` block, then `slurm.key=value` items from the command line."""
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: slurm: expected a mapping, got {mapping!r}")
    slurm = SlurmConfig()
    for key, value in mapping.items():
        slurm = _in(path, "slurm", _set_slurm, slurm, str(key), value)
    for item in overrides:
        key, _, value = item.partition("=")
        slurm = _set_slurm(slurm, key.removeprefix("slurm."), value)
    return slurm


def _set_slurm(slurm: SlurmConfig, name: str, value) -> SlurmConfig:
    hints = typing.get_type_hints(SlurmConfig)
    if name not in hints:
        raise UserError(f"unknown key slurm.{name} (valid: {', '.join(hints)})")
    return dataclasses.replace(slurm, **{name: parse_value(str(value), hints[name], f"slurm.{name}={value}")})
