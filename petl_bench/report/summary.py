"""A grid's runs against the records found: the `Summary` every table, figure and grid page is
drawn from.

A grid (see `petl_bench.sweep.grid`) says which runs make a table; their records are read from
`{out}/runs/**/seed*.json` (through `results.load_record`: a file that is no usable record is listed
in the footer with its reason and counts as missing). Only a record whose `config_sha256` equals its
grid run's config counts; others are stale and listed in the footer. Each cell is the mean over seeds
with the sample standard deviation (ddof=1; none for a single seed), the paper's value and our
difference from it beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..datamodules.catalog import split_folder
from ..errors import UserError
from ..results import read_records, record_path
from .paper import off_paper_reasons, paper_lookup, paper_results

AVERAGE = "average"
STALE_LISTED = 10  # stale record paths printed in the footer; the rest are counted

RECORD_FIELDS = [
    "method",
    "run_name",
    "dataset",
    "split",
    "seed",
    "model",
    "pretrained",
    "config_sha256",
    "trainable_params",
    "classes",
    "holdout",
]
RECORD_COLUMNS = ["path", *RECORD_FIELDS, "synthetic", "task", "task_index", "accuracy"]


def load_records(out: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every usable run record under `{out}/runs`, one row per record and task ("average"
    included); and each record file that is none, by path, with why."""
    records, unusable = read_records(out)
    rows = []
    for path, record in records.items():
        order = [*record.get("tasks", []), AVERAGE]
        for task, value in record["accuracy"].items():
            rows.append(
                {
                    "path": str(path),
                    **{k: record.get(k) for k in RECORD_FIELDS},
                    # a class subset's records are a split of their own, as their folder is: 16shot-base
                    "split": split_folder(
                        record["dataset"], record["split"], record.get("classes", "all"), record.get("holdout") or ""
                    ),
                    "synthetic": bool(record.get("synthetic", False)),
                    "task": task,
                    "task_index": order.index(task) if task in order else len(order),
                    "accuracy": float(value),
                }
            )
    return pd.DataFrame(rows, columns=RECORD_COLUMNS), {str(path): why for path, why in unusable.items()}


def expected_runs(grid) -> pd.DataFrame:
    """The grid's runs: label (in grid order), method, dataset, split (Nshot), seed, the record path
    and the config hash a record must carry to count."""
    rows = [
        {
            "label": run.label,
            "method": run.cfg.method,
            "dataset": run.cfg.data.dataset,
            "split": split_folder(run.cfg.data.dataset, run.cfg.data.split, run.cfg.data.classes, run.cfg.data.holdout),
            "seed": run.cfg.data.seed,
            "model": run.cfg.model.arch,
            "pretrained": run.cfg.model.pretrained,
            "path": str(record_path(run.cfg).resolve()),
            "expected_sha256": run.cfg.sha256(),
            "out": run.cfg.out,
        }
        for run in grid.runs
    ]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Cell:
    mean: float  # never NaN: a cell has at least one record, and check_record admits finite accuracies only
    std: float | None = None  # None for a single seed
    paper: float | None = None
    paper_std: float | None = None
    digits: int = 1
    # (label, dataset, split, task) of the records it averages: the grid's runs of a base2novel,
    # transfer or lodo table share a label, split and task across datasets
    key: tuple[str, str, str, str] | None = None


@dataclass
class Summary:
    """A grid's runs against the records found: what a table or a figure is drawn from."""

    name: str
    table: str  # table1 | table2 | ablation | kshot | fewshot
    datasets: list[str]  # the grid's, in its order: one but for a `fewshot` grid
    labels: list[str]  # row or column labels, in grid order
    methods: dict[str, str]  # label -> method
    splits: list[str]  # Nshot, in grid order
    tasks: list[str]  # task names in record order (fewshot: the datasets), then "average"
    seeds: pd.DataFrame  # one row per counted record and task: label, split, seed, task, accuracy
    cells: pd.DataFrame  # label, split, task -> mean, std, n, paper, paper_std, diff
    params: dict[tuple[str, str], int]  # (label, split) -> our trainable parameters
    out: Path  # the results folder: records under runs/, tables/ and figures/ written beside them
    n_expected: int
    missing: list[str]  # record paths
    stale: list[str]  # record paths whose config differs from the grid's
    off_paper: list[str] = field(default_factory=list)  # why these results are not the paper's setting
    unusable: list[str] = field(default_factory=list)  # `path (why)` of the grid's record files that are none
    root: str = ""  # the dataset root of the grid's runs; "" when none was given or recorded
    targets: list[str] = field(default_factory=list)  # xd, dg: the datasets the runs are transferred to

    @property
    def spans_datasets(self) -> bool:
        """Whether a label's runs of one split and task lie on several datasets (a base2novel,
        transfer or lodo table): only the table's layout tells their cells apart, `cell` cannot."""
        return self.table in ("base2novel", "transfer", "lodo")

    @property
    def dataset(self) -> str:
        """The dataset's name, or the names of several joined by ", "."""
        return ", ".join(self.datasets)

    @property
    def setting(self) -> str:
        """Whose setting `off_paper` measures against: the paper's, or for CoOp's benchmark (no
        paper column) the benchmark's."""
        return "the benchmark's" if self.table == "fewshot" else "the paper's"

    @property
    def digits(self) -> int:
        return 2 if self.table in ("ablation", "base2novel", "transfer") else 1  # as the papers print them

    @property
    def n_counted(self) -> int:
        """The grid's runs whose records are averaged: neither missing nor stale."""
        return self.n_expected - len(self.missing) - len(self.stale)

    def seed_counts(self) -> list[int]:
        """The distinct numbers of seeds the cells average, smallest first."""
        return sorted({int(n) for n in self.cells["n"]})

    def has_paper_values(self) -> bool:
        return bool(self.cells["paper"].notna().any())

    def cell(self, label: str, split: str, task: str) -> Cell | None:
        key = (label, split, task)
        if key not in self.cells.index:
            return None
        row = self.cells.loc[key]
        if isinstance(row, pd.DataFrame):  # a key of several datasets' rows: a table's own layout tells them apart
            raise ValueError(f"{key} names the cells of datasets {', '.join(row.dataset)} in grid {self.name!r}")
        std, paper, paper_std = (number_or_none(row[c]) for c in ("std", "paper", "paper_std"))
        return Cell(float(row["mean"]), std, paper, paper_std, self.digits, (label, str(row["dataset"]), split, task))

    def lacking(self, label: str, split: str) -> list[str]:
        """The datasets of which a row of the `fewshot` table has no record (so it has no average)."""
        return [dataset for dataset in self.datasets if (label, split, dataset) not in self.cells.index]

    def banner(self) -> str | None:
        if not self.off_paper:
            return None
        note = f"NOTE: not {self.setting} setting ({'; '.join(self.off_paper)})"
        return note if self.table == "fewshot" else f"{note}: the paper column is for layout only"

    def footer(self) -> list[str]:
        lines = [f"{len(self.missing)} of {self.n_expected} runs missing"]
        if not self.root and len(self.missing) == self.n_expected:
            lines.append(
                f"no dataset root known: no sweep of {self.name} under {self.out} recorded one; "
                "give the sweep's --set data.root=DIR"
            )
        if self.unusable:
            lines.append(f"{len(self.unusable)} record file(s) skipped, not usable records (counted missing):")
            lines += [f"  {line}" for line in self.unusable[:STALE_LISTED]]
            if len(self.unusable) > STALE_LISTED:
                lines.append(f"  ... and {len(self.unusable) - STALE_LISTED} more")
        if self.stale:
            lines.append(
                f"{len(self.stale)} stale record(s) not averaged (config differs from the grid's; "
                "re-run them with `petl-bench sweep --rerun-stale`):"
            )
            lines += [f"  {path}" for path in self.stale[:STALE_LISTED]]
            if len(self.stale) > STALE_LISTED:
                lines.append(f"  ... and {len(self.stale) - STALE_LISTED} more")
        return lines


def number_or_none(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def summarize(grid) -> Summary:
    expected = expected_runs(grid)
    if expected.empty:
        raise UserError(f"grid {grid.name!r} has no runs")
    loaded = [load_records(Path(out)) for out in expected.out.unique()]
    records = pd.concat([rows for rows, _ in loaded], ignore_index=True)
    unusable = {path: why for _, bad in loaded for path, why in bad.items()}
    found = records.drop_duplicates("path").set_index("path")["config_sha256"]
    expected["found_sha256"] = expected.path.map(found)
    done = expected[expected.found_sha256 == expected.expected_sha256]
    missing = expected[expected.found_sha256.isna()].path.tolist()
    stale = expected[expected.found_sha256.notna() & (expected.found_sha256 != expected.expected_sha256)]

    seeds = done[["label", "split", "path"]].merge(records, on=["path", "split"])
    if grid.by_dataset:
        seeds = _by_dataset(seeds, grid.datasets)
    cells = _aggregate(seeds, grid.table)
    if grid.by_dataset:
        cells = _with_average(cells, grid.datasets)
    params = {
        (r.label, r.split): int(r.trainable_params) for r in seeds.drop_duplicates(["label", "split"]).itertuples()
    }
    labels = list(dict.fromkeys(expected.label))
    return Summary(
        name=grid.name,
        table=grid.table,
        datasets=list(grid.datasets),
        labels=labels,
        methods=dict(zip(expected.label, expected.method, strict=True)),
        splits=list(dict.fromkeys(expected.split)),
        tasks=[*grid.datasets, AVERAGE] if grid.by_dataset else _task_order(seeds, grid.dataset),
        seeds=seeds,
        cells=cells,
        params=params,
        out=Path(expected.out.iloc[0]),
        n_expected=len(expected),
        missing=missing,
        stale=stale.path.tolist(),
        off_paper=off_paper_reasons(
            zip(expected.model, expected.pretrained, strict=True),
            set(expected.dataset),
            bool(seeds.synthetic.any()) if not seeds.empty else False,
        ),
        unusable=[f"{path} ({unusable[path]})" for path in missing if path in unusable],
        root=grid.root,
        targets=list(grid.targets),
    )


def _aggregate(seeds: pd.DataFrame, table: str) -> pd.DataFrame:
    columns = ["label", "method", "dataset", "split", "task", "mean", "std", "n", "paper", "paper_std", "diff"]
    if seeds.empty:
        return pd.DataFrame(columns=columns).set_index(["label", "split", "task"])
    cells = (
        seeds.groupby(["label", "method", "dataset", "split", "task"], sort=False)["accuracy"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )  # pandas' std is the sample std
    lookup = paper_lookup(table)
    paper = [lookup.get((r.dataset, r.split, r.label, r.task), (None, None)) for r in cells.itertuples()]
    cells["paper"] = pd.array([p[0] for p in paper], dtype="Float64")
    cells["paper_std"] = pd.array([p[1] for p in paper], dtype="Float64")
    cells["diff"] = cells["mean"] - cells["paper"]
    return cells[columns].set_index(["label", "split", "task"])


def _by_dataset(seeds: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Each record's average accuracy, its dataset's name as its task."""
    seeds = seeds[seeds.task == AVERAGE].copy()
    seeds["task"] = seeds.dataset
    seeds["task_index"] = seeds.dataset.map(datasets.index)
    return seeds


def _with_average(cells: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """A `fewshot` table's cells and, for each row and split that has every dataset, their average:
    the mean of the datasets' means (no std), over as many seeds as the dataset with fewest has."""
    rows = []
    for (label, split), group in cells.reset_index().groupby(["label", "split"], sort=False):
        if set(group.task) == set(datasets):
            row = {"label": label, "split": split, "task": AVERAGE, "method": group.method.iloc[0], "dataset": ""}
            rows.append({**row, "mean": group["mean"].mean(), "n": group.n.min()})
    if not rows:
        return cells
    average = pd.DataFrame(rows).set_index(["label", "split", "task"])
    return pd.concat([cells, average]).astype({"paper": "Float64", "paper_std": "Float64", "diff": "Float64"})


def _task_order(seeds: pd.DataFrame, dataset: str) -> list[str]:
    if not seeds.empty:
        return list(seeds.sort_values("task_index").task.drop_duplicates())
    paper = paper_results()
    tasks = list(dict.fromkeys(paper[paper.dataset == dataset].task))
    return [t for t in tasks if t != AVERAGE] + [AVERAGE]
