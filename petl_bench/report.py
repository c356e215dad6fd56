"""Paper-style tables from run records: `petl-bench table table1|table2|ablation|kshot`.

A grid (see `petl_bench.sweep.grid`) says which runs make a table; their records are read from
`{out}/runs/**/seed*.json` (through `results.load_record`: a file that is no usable record is listed
in the footer with its reason and counts as missing). Only a record whose `config_sha256` equals its
grid run's config counts; others are stale and listed in the footer. Each cell is the mean over seeds with the sample standard
deviation (ddof=1; none for a single seed), the paper's value and our difference from it beside it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from .datamodules.catalog import TITLES, canonical_split, paper_split
from .files import write_text_atomic
from .results import read_records, record_path

# Our method names -> the paper's column names (Tables 1 and 2).
PAPER_NAMES = {
    "zeroshot": "ZS", "fullft": "FullFT-ST", "coop": "CoOp", "vpt": "VPT", "maple": "MaPLe",
    "fullft-mt": "FullFT-MT", "clip-adapter": "CLIP-Adapter", "bitfit": "BitFit", "coop-mt": "CoOp-MT",
    "vpt-mt": "VPT-MT", "maple-mt": "MaPLe-MT", "mmap": "MmAP",
}
# Column names of the methods beyond the paper (benchmarks/beyond.yaml), as their own papers write them.
BEYOND_NAMES = {
    "lora": "LoRA", "lora-mt": "LoRA-MT", "cocoop": "CoCoOp", "cocoop-mt": "CoCoOp-MT", "kgcoop": "KgCoOp",
    "kgcoop-mt": "KgCoOp-MT", "ivlp": "IVLP", "ivlp-mt": "IVLP-MT", "tip-adapter-f": "Tip-Adapter-F",
    "tip-adapter-f-mt": "Tip-Adapter-F-MT", "linear-probe": "Linear probe", "adaptformer": "AdaptFormer",
    "adaptformer-mt": "AdaptFormer-MT",
}
PAPER_MODEL = ("ViT-B-16", "openai")
AVERAGE = "average"
STALE_LISTED = 10  # stale record paths printed in the footer; the rest are counted


# -- the paper's numbers ---------------------------------------------------------------------------
def paper_results() -> pd.DataFrame:
    """The paper's Tables 1-3 as tidy rows: table (table1, table2, table3), dataset, split (Nshot),
    method (our registry name; Table 3: the ablation row label), task (a domain name as our readers
    give it, e.g. Office-Home "Real World" for the paper's "Real"; or "average"), mean, std (blank
    where the paper prints none).

    One correction: Table 1's 20% BitFit average is printed as 85.5 but its four task values average
    81.3 (every other average matches its row within 0.1), so the file holds 81.3.
    """
    text = resources.files("petl_bench").joinpath("data", "paper_results.csv").read_text()
    return pd.read_csv(io.StringIO(text), dtype={"mean": float, "std": float})


def _paper_lookup(table: str) -> dict[tuple[str, str, str, str], tuple[float, float]]:
    """(dataset, split, method or label, task) -> (mean, std) for a grid's table kind. The k-shot
    grid borrows Tables 1-2, whose splits are k-shot splits too (Office-Home 10pct = 6shot)."""
    paper = paper_results()
    paper = paper[paper.table == "table3"] if table == "ablation" else paper[paper.table != "table3"]
    return {(r.dataset, r.split, r.method, r.task): (r.mean, r.std) for r in paper.itertuples()}


def _paper_params() -> dict[str, str]:
    from .params import paper_figures

    return {name: figure.text for name, figure in paper_figures().items()}


# -- records ---------------------------------------------------------------------------------------
RECORD_FIELDS = ["method", "run_name", "dataset", "split", "seed", "model", "pretrained", "config_sha256",
                 "trainable_params"]
RECORD_COLUMNS = ["path", *RECORD_FIELDS, "synthetic", "task", "task_index", "accuracy"]


def load_records(out: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every usable run record under `{out}/runs`, one row per record and task ("average"
    included); and each record file that is none, by path, with why."""
    records, unusable = read_records(out)
    rows = []
    for path, record in records.items():
        order = [*record.get("tasks", []), AVERAGE]
        for task, value in record["accuracy"].items():
            rows.append({"path": str(path), **{k: record.get(k) for k in RECORD_FIELDS},
                         "synthetic": bool(record.get("synthetic", False)), "task": task,
                         "task_index": order.index(task) if task in order else len(order),
                         "accuracy": float(value)})
    return pd.DataFrame(rows, columns=RECORD_COLUMNS), {str(path): why for path, why in unusable.items()}


def expected_runs(grid) -> pd.DataFrame:
    """The grid's runs: label (in grid order), method, dataset, split (Nshot), seed, the record path
    and the config hash a record must carry to count."""
    rows = [{"label": run.label, "method": run.cfg.method, "dataset": run.cfg.data.dataset,
             "split": canonical_split(run.cfg.data.dataset, run.cfg.data.split), "seed": run.cfg.data.seed,
             "model": run.cfg.model.arch, "pretrained": run.cfg.model.pretrained,
             "path": str(record_path(run.cfg).resolve()), "expected_sha256": run.cfg.sha256(),
             "out": run.cfg.out} for run in grid.runs]
    return pd.DataFrame(rows)


# -- aggregation -----------------------------------------------------------------------------------
@dataclass
class Summary:
    """A grid's runs against the records found: what a table or a figure is drawn from."""

    name: str
    table: str  # table1 | table2 | ablation | kshot
    dataset: str
    labels: list[str]  # row or column labels, in grid order
    methods: dict[str, str]  # label -> method
    splits: list[str]  # Nshot, in grid order
    tasks: list[str]  # task names in record order, then "average"
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

    @property
    def digits(self) -> int:
        return 2 if self.table == "ablation" else 1  # as the paper prints them

    def cell(self, label: str, split: str, task: str) -> Cell | None:
        key = (label, split, task)
        if key not in self.cells.index:
            return None
        row = self.cells.loc[key]
        return Cell(_num(row["mean"]), _num(row["std"]), _num(row["paper"]), _num(row["paper_std"]), self.digits,
                    key)

    def banner(self) -> str | None:
        if not self.off_paper:
            return None
        return (f"NOTE: not the paper's setting ({'; '.join(self.off_paper)}): "
                "the paper column is for layout only")

    def footer(self) -> list[str]:
        lines = [f"{len(self.missing)} of {self.n_expected} runs missing"]
        if not self.root and len(self.missing) == self.n_expected:
            lines.append(f"no dataset root known: no sweep of {self.name} under {self.out} recorded one; "
                         "give the sweep's --set data.root=DIR")
        if self.unusable:
            lines.append(f"{len(self.unusable)} record file(s) skipped, not usable records (counted missing):")
            lines += [f"  {line}" for line in self.unusable[:STALE_LISTED]]
            if len(self.unusable) > STALE_LISTED:
                lines.append(f"  ... and {len(self.unusable) - STALE_LISTED} more")
        if self.stale:
            lines.append(f"{len(self.stale)} stale record(s) not averaged (config differs from the grid's; "
                         "re-run them with `petl-bench sweep --rerun-stale`):")
            lines += [f"  {path}" for path in self.stale[:STALE_LISTED]]
            if len(self.stale) > STALE_LISTED:
                lines.append(f"  ... and {len(self.stale) - STALE_LISTED} more")
        return lines


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def summarize(grid) -> Summary:
    expected = expected_runs(grid)
    if expected.empty:
        from .errors import UserError

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
    cells = _aggregate(seeds, grid.table)
    params = {(r.label, r.split): int(r.trainable_params)
              for r in seeds.drop_duplicates(["label", "split"]).itertuples()}
    labels = list(dict.fromkeys(expected.label))
    return Summary(
        name=grid.name, table=grid.table, dataset=expected.dataset.iloc[0], labels=labels,
        methods=dict(zip(expected.label, expected.method)), splits=list(dict.fromkeys(expected.split)),
        tasks=_task_order(seeds, expected.dataset.iloc[0]), seeds=seeds, cells=cells, params=params,
        out=Path(expected.out.iloc[0]), n_expected=len(expected), missing=missing, stale=stale.path.tolist(),
        off_paper=off_paper_reasons(expected, seeds),
        unusable=[f"{path} ({unusable[path]})" for path in missing if path in unusable],
        root=grid.runs[0].cfg.data.root)


def _aggregate(seeds: pd.DataFrame, table: str) -> pd.DataFrame:
    columns = ["label", "method", "dataset", "split", "task", "mean", "std", "n", "paper", "paper_std", "diff"]
    if seeds.empty:
        return pd.DataFrame(columns=columns).set_index(["label", "split", "task"])
    cells = (seeds.groupby(["label", "method", "dataset", "split", "task"], sort=False)["accuracy"]
             .agg(mean="mean", std="std", n="count").reset_index())  # pandas' std is the sample std
    lookup = _paper_lookup(table)
    paper = [lookup.get((r.dataset, r.split, r.label, r.task), (None, None)) for r in cells.itertuples()]
    cells["paper"] = pd.array([p[0] for p in paper], dtype="Float64")
    cells["paper_std"] = pd.array([p[1] for p in paper], dtype="Float64")
    cells["diff"] = cells["mean"] - cells["paper"]
    return cells[columns].set_index(["label", "split", "task"])


def _task_order(seeds: pd.DataFrame, dataset: str) -> list[str]:
    if not seeds.empty:
        return list(seeds.sort_values("task_index").task.drop_duplicates())
    paper = paper_results()
    tasks = list(dict.fromkeys(paper[paper.dataset == dataset].task))
    return [t for t in tasks if t != AVERAGE] + [AVERAGE]


def off_paper_reasons(expected: pd.DataFrame, seeds: pd.DataFrame) -> list[str]:
    """Reasons the paper's numbers are no yardstick here: another model or weights, a custom folder
    of images, or synthetic data (as the records say). `expected`: model, pretrained and dataset of
    the runs; `seeds`: their records' `synthetic`."""
    reasons = []
    models = expected[["model", "pretrained"]].drop_duplicates()
    other = [f"{m} with weights {p}" for m, p in models.itertuples(index=False) if (m, p) != PAPER_MODEL]
    if other:
        reasons.append(f"model {', '.join(other)} instead of ViT-B-16 with openai weights")
    if (expected.dataset == "folder").any():
        reasons.append("a custom image folder, not the paper's dataset")
    if not seeds.empty and seeds.synthetic.any():
        reasons.append("synthetic images")
    return reasons


# -- layout ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    mean: float | None
    std: float | None = None  # None for a single seed
    paper: float | None = None
    paper_std: float | None = None
    digits: int = 1
    key: tuple[str, str, str] | None = None  # (label, split, task) of `Summary.cells` it shows


@dataclass(frozen=True)
class ParamCell:
    ours: int | None  # trainable parameters
    paper: str | None = None  # the paper's figure in M as printed, "-" for none


@dataclass
class Block:
    title: str
    rows: list[tuple[str, list[Cell | ParamCell | None]]]


@dataclass
class Layout:
    title: str
    corner: str  # header of the row-name column
    columns: list[str]
    blocks: list[Block]


def dataset_name(dataset: str) -> str:
    return TITLES.get(dataset, dataset)


def split_name(dataset: str, split: str) -> str:
    """`10pct (6shot)` where the paper has a name for the split, else `3shot`."""
    paper = paper_split(dataset, split)
    return f"{paper} ({split})" if paper != split else split


def column_name(label: str) -> str:
    return PAPER_NAMES.get(label) or BEYOND_NAMES.get(label, label)


def layout(summary: Summary) -> Layout:
    return {"ablation": ablation_layout, "kshot": kshot_layout}.get(summary.table, main_layout)(summary)


def main_layout(s: Summary) -> Layout:
    """Tables 1-2: per split, tasks x methods, an average row and a parameter row."""
    paper_params = _paper_params() if s.dataset == "officehome" else {}  # the paper counts Office-Home only
    blocks = []
    for split in s.splits:
        rows = [(task if task != AVERAGE else "Average", [s.cell(label, split, task) for label in s.labels])
                for task in s.tasks]
        rows.append(("Params (M)", [ParamCell(s.params.get((label, split)), paper_params.get(s.methods[label]))
                                    for label in s.labels]))
        blocks.append(Block(split_name(s.dataset, split), rows))
    return Layout(f"{s.name}: {dataset_name(s.dataset)}, accuracy (%)", "task",
                  [column_name(label) for label in s.labels], blocks)


def ablation_layout(s: Summary) -> Layout:
    """Table 3 (and Figure 4's variants): one row per ablation label, average accuracy per split."""
    rows = []
    for label in s.labels:
        ours = next((s.params[(label, split)] for split in s.splits if (label, split) in s.params), None)
        rows.append((label, [s.cell(label, split, AVERAGE) for split in s.splits] + [ParamCell(ours)]))
    return Layout(f"{s.name}: {dataset_name(s.dataset)}, average accuracy (%)", "variant",
                  [split_name(s.dataset, split) for split in s.splits] + ["Params (M)"], [Block("", rows)])


def kshot_layout(s: Summary) -> Layout:
    """Figure 5 as numbers: per task, methods x shots."""
    blocks = [Block(task if task != AVERAGE else "Average",
                    [(column_name(label), [s.cell(label, split, task) for split in s.splits]) for label in s.labels])
              for task in s.tasks]
    return Layout(f"{s.name}: {dataset_name(s.dataset)}, accuracy (%) by shots per class", "method",
                  [split_name(s.dataset, split) for split in s.splits], blocks)


# -- formats ---------------------------------------------------------------------------------------
def millions(count: int) -> str:
    if count == 0:
        return "0"
    m = count / 1e6
    return f"{m:.2f}" if m >= 0.01 else f"{m:.2g}"


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def cell_text(cell, latex: bool = False) -> str:
    if cell is None:
        return ""
    pm = r"$\pm$" if latex else " ± "
    if isinstance(cell, ParamCell):
        ours = "" if cell.ours is None else millions(cell.ours)
        return ours if cell.paper is None else f"{ours or '?'} (paper {cell.paper})"
    text = _fmt(cell.mean, cell.digits) + ("" if cell.std is None else pm + _fmt(cell.std, cell.digits))
    if cell.paper is not None:
        diff = f"{cell.mean - cell.paper:+.{cell.digits}f}"
        text += (rf" {{\scriptsize ({_fmt(cell.paper, cell.digits)}, ${diff}$)}}" if latex
                 else f" (paper {_fmt(cell.paper, cell.digits)}, {diff})")
    return text


def to_markdown(summary: Summary) -> str:
    lay = layout(summary)
    lines = [f"## {lay.title}", ""]
    if summary.banner():
        lines += [f"> **{summary.banner()}**", ""]
    lines += ["Cells: ours, mean ± sample std over seeds (paper's value, ours − paper).", ""]
    for block in lay.blocks:
        if block.title:
            lines += [f"### {block.title}", ""]
        lines.append("| " + " | ".join([lay.corner, *lay.columns]) + " |")
        lines.append("|" + "---|" + "---:|" * len(lay.columns))
        lines += ["| " + " | ".join([name, *(cell_text(c) for c in cells)]) + " |" for name, cells in block.rows]
        lines.append("")
    return "\n".join(lines + summary.footer())


def to_latex(summary: Summary) -> str:
    lay = layout(summary)
    esc = _latex_escape
    n = len(lay.columns) + 1
    lines = []
    if summary.banner():
        lines.append(f"% {summary.banner()}")
    lines += [r"\begin{table}[t]", r"\centering", r"\small",
              rf"\caption{{{esc(lay.title)}. Mean$\pm$std over seeds; the paper's value and our difference "
              r"in brackets.}", r"\begin{tabular}{l" + "c" * len(lay.columns) + "}", r"\toprule",
              " & ".join(map(esc, [lay.corner, *lay.columns])) + r" \\"]
    for block in lay.blocks:
        lines.append(r"\midrule")
        if block.title:
            lines += [rf"\multicolumn{{{n}}}{{l}}{{\textit{{{esc(block.title)}}}}} \\", r"\midrule"]
        lines += [" & ".join([esc(name), *(cell_text(c, latex=True) for c in cells)]) + r" \\"
                  for name, cells in block.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {line}" for line in summary.footer()]
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


CSV_COLUMNS = ["table", "dataset", "split", "label", "method", "task", "stat", "seed", "accuracy", "std",
               "n_seeds", "paper", "paper_std", "diff", "trainable_params"]


def to_csv(summary: Summary) -> str:
    """Tidy rows: one per counted record and task (stat=seed), then one per cell (stat=mean)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    base = {"table": summary.name, "dataset": summary.dataset}
    order = {"split": {s: i for i, s in enumerate(summary.splits)},
             "label": {label: i for i, label in enumerate(summary.labels)}}  # grid order, not alphabetical
    seeds = summary.seeds.sort_values(["split", "label", "seed", "task_index"],
                                      key=lambda c: c.map(order[c.name]) if c.name in order else c)
    for r in seeds.itertuples():
        writer.writerow({**base, "split": r.split, "label": r.label, "method": r.method, "task": r.task,
                         "stat": "seed", "seed": r.seed, "accuracy": r.accuracy,
                         "trainable_params": r.trainable_params})
    keys = [(label, split, task) for split in summary.splits for label in summary.labels for task in summary.tasks]
    for label, split, task in filter(summary.cells.index.__contains__, keys):
        r = summary.cells.loc[(label, split, task)]
        writer.writerow({**base, "split": split, "label": label, "method": r["method"], "task": task,
                         "stat": "mean", "accuracy": round(r["mean"], 4), "std": _csv_num(r["std"]),
                         "n_seeds": int(r["n"]), "paper": _csv_num(r["paper"]),
                         "paper_std": _csv_num(r["paper_std"]), "diff": _csv_num(r["diff"]),
                         "trainable_params": summary.params.get((label, split), "")})
    return out.getvalue()


def _csv_num(value) -> float | str:
    return "" if _num(value) is None else round(float(value), 4)


FORMATS = {"md": (to_markdown, "md"), "latex": (to_latex, "tex"), "csv": (to_csv, "csv")}


def render(summary: Summary, fmt: str) -> str:
    return FORMATS[fmt][0](summary)


def save_table(summary: Summary, fmt: str) -> Path:
    """Write the table to `{out}/tables/{grid}.{md|tex|csv}`."""
    path = summary.out / "tables" / f"{summary.name}.{FORMATS[fmt][1]}"
    write_text_atomic(path, render(summary, fmt).rstrip("\n") + "\n")
    return path
