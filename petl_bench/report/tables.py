"""Paper-style tables of a `Summary`: `petl-bench table table1|table2|ablation|kshot|fewshot|base2novel|
transfer|lodo`.

The layouts are the paper's (Tables 1-2: tasks x methods per split; Table 3: variants x splits;
Figure 5 as numbers: methods x shots per task) and CoOp's benchmark (fewshot: per shot count,
methods x datasets and their average); the formats are Markdown, LaTeX and tidy CSV. The
heading above a table says what its cells are (a mean ± std over how many seeds, or one seed each)
and how many of the grid's runs they count, so it agrees with the footer that lists the rest.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..datamodules.catalog import COOP_DATASETS, DOMAINS, IMAGENET_VARIANTS
from ..files import write_text_atomic
from ..registry import get_method
from ..transfer import closed_vocabulary
from .paper import (
    DATASETS_NAMED,
    column_name,
    dataset_name,
    datasets_name,
    harmonic_mean,
    paper_params,
    published_base2novel,
    published_transfer,
    split_name,
)
from .summary import AVERAGE, Cell, Summary, number_or_none


# -- layout ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamCell:
    ours: int | None  # trainable parameters
    paper: str | None = None  # the paper's figure in M as printed, "-" for none


@dataclass(frozen=True)
class GapCell:
    why: str  # why the cell has no value, e.g. "n/a: no DTD"


LayoutCell = Cell | ParamCell | GapCell | None


@dataclass
class Block:
    title: str
    rows: list[tuple[str, list[LayoutCell]]]


@dataclass
class Layout:
    title: str
    corner: str  # header of the row-name column
    columns: list[str]
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)  # what the layout's cells mean, under the table


def layout(summary: Summary) -> Layout:
    layouts = {
        "ablation": ablation_layout,
        "kshot": kshot_layout,
        "fewshot": fewshot_layout,
        "base2novel": base2novel_layout,
        "transfer": transfer_layout,
        "lodo": lodo_layout,
    }
    return layouts.get(summary.table, main_layout)(summary)


def main_layout(s: Summary) -> Layout:
    """Tables 1-2: per split, tasks x methods, an average row and a parameter row."""
    printed = paper_params() if s.dataset == "officehome" else {}  # the paper counts Office-Home only
    blocks = []
    for split in s.splits:
        rows: list[tuple[str, list[LayoutCell]]] = [
            (task if task != AVERAGE else "Average", [s.cell(label, split, task) for label in s.labels])
            for task in s.tasks
        ]
        rows.append(
            (
                "Params (M)",
                [ParamCell(s.params.get((label, split)), printed.get(s.methods[label])) for label in s.labels],
            )
        )
        blocks.append(Block(split_name(s.dataset, split), rows))
    return Layout(
        f"{s.name}: {dataset_name(s.dataset)}, accuracy (%)", "task", [column_name(label) for label in s.labels], blocks
    )


def ablation_layout(s: Summary) -> Layout:
    """Table 3 (and Figure 4's variants): one row per ablation label, average accuracy per split."""
    rows: list[tuple[str, list[LayoutCell]]] = []
    for label in s.labels:
        ours = next((s.params[(label, split)] for split in s.splits if (label, split) in s.params), None)
        rows.append((label, [*(s.cell(label, split, AVERAGE) for split in s.splits), ParamCell(ours)]))
    return Layout(
        f"{s.name}: {dataset_name(s.dataset)}, average accuracy (%)",
        "variant",
        [split_name(s.dataset, split) for split in s.splits] + ["Params (M)"],
        [Block("", rows)],
    )


def kshot_layout(s: Summary) -> Layout:
    """Figure 5 as numbers: per task, methods x shots."""
    blocks = [
        Block(
            task if task != AVERAGE else "Average",
            [(column_name(label), [s.cell(label, split, task) for split in s.splits]) for label in s.labels],
        )
        for task in s.tasks
    ]
    return Layout(
        f"{s.name}: {dataset_name(s.dataset)}, accuracy (%) by shots per class",
        "method",
        [split_name(s.dataset, split) for split in s.splits],
        blocks,
    )


def fewshot_layout(s: Summary) -> Layout:
    """CoOp's benchmark: per shot count, methods x datasets, and the average over datasets."""
    blocks = [
        Block(
            split_name(s.dataset, split),
            [
                (
                    column_name(label),
                    [*(s.cell(label, split, dataset) for dataset in s.datasets), _average(s, label, split)],
                )
                for label in s.labels
            ],
        )
        for split in s.splits
    ]
    return Layout(
        f"{s.name}: {datasets_name(s.datasets)}, accuracy (%) by shots per class "
        "(Average: the mean of the datasets' means)",
        "method",
        [*map(dataset_name, s.datasets), "Average"],
        blocks,
    )


def _average(s: Summary, label: str, split: str) -> Cell | GapCell:
    """A fewshot row's average, or why it has none: the datasets it lacks."""
    cell = s.cell(label, split, AVERAGE)
    if cell is not None:
        return cell
    lacking = s.lacking(label, split)
    if len(lacking) > DATASETS_NAMED:
        return GapCell(f"n/a: {len(lacking)} of {len(s.datasets)} datasets missing")
    return GapCell(f"n/a: no {', '.join(map(dataset_name, lacking))}")


CLASSES = ("base", "novel")  # the class subsets of a base2novel grid's runs, in the table's order
PUBLISHED_SHOTS = "16shot"  # the shots of every published base-to-novel, cross-dataset and dg number


def base2novel_layout(s: Summary) -> Layout:
    """CoCoOp's Table 1: datasets x (Base, Novel, HM) per method. Base: the runs trained and tested
    on the base classes (`16shot-base`); Novel: their transfers to the novel classes (`16shot-novel`);
    each the mean ± std over seeds of the average over tasks, the published value beside it; a block
    per shot count where the grid has several."""
    average = s.seeds[s.seeds.task == AVERAGE]
    published = {(r.method, r.dataset): r for r in published_base2novel().itertuples()}
    closed = _closed_vocabulary(s)
    shots = _shot_counts(s.splits)
    blocks = [
        Block(
            n if len(shots) > 1 else "",
            _base2novel_rows(s, _of_shots(average, n), published if n == PUBLISHED_SHOTS else {}, closed),
        )
        for n in shots
    ]
    columns = [f"{column_name(label)} {part}" for label in s.labels for part in ("Base", "Novel", "HM")]
    notes = [
        "HM = 2BN/(B+N) of the seed-averaged Base (B) and Novel (N) accuracy; the Average row is the mean of B "
        "and of N over the datasets and the HM of those means (as CoCoOp and MaPLe average).",
        "A method's Average Base (Novel) is blank unless it has Base (Novel) on every dataset; the published "
        "Average (over CoOp's 11 datasets) shows only for a table of those 11.",
        *_closed_note(s, closed, "tested on the base classes only"),
        "Published values: petl_bench/data/published_base2novel.csv (CoCoOp, KgCoOp, MaPLe, PromptSRC: Table 1 "
        f"of each; CLIP's as CoCoOp prints it), all {PUBLISHED_SHOTS}: beside the {PUBLISHED_SHOTS} runs only.",
    ]
    trained = shots[0] if len(shots) == 1 else "each shot count"
    title = f"{s.name}: base-to-novel generalisation, {trained} on the base classes, accuracy (%)"
    return Layout(title, "dataset", columns, blocks, notes)


def _base2novel_rows(s: Summary, average: pd.DataFrame, published: dict, closed: set[str]) -> list:
    """A row per dataset of the grid and the Average row, from the runs of one shot count."""
    rows: list[tuple[str, list[LayoutCell]]] = []
    bases: dict[str, list[Cell | None]] = {label: [] for label in s.labels}
    novels: dict[str, list[Cell | None]] = {label: [] for label in s.labels}
    for dataset in s.datasets:
        cells: list[LayoutCell] = []
        for label in s.labels:
            paper = published.get((s.methods[label], dataset))
            base, novel = _base_novel(average, dataset, label, s.digits)
            bases[label].append(base)
            novels[label].append(novel)
            cells += _base_novel_hm(base, novel, paper, label in closed and novel is None, s.digits)
        rows.append((dataset_name(dataset), cells))
    averages: list[LayoutCell] = []
    for label in s.labels:
        paper = published.get((s.methods[label], "average")) if set(s.datasets) == set(COOP_DATASETS) else None
        base, novel = _mean_cell(bases[label], s.digits), _mean_cell(novels[label], s.digits)
        averages += _base_novel_hm(base, novel, paper, label in closed and novel is None, s.digits)
    rows.append(("Average", averages))
    return rows


def transfer_layout(s: Summary) -> Layout:
    """CoCoOp's Tables 2-3 (cross-dataset, domain generalisation): methods x the source dataset (its
    own test) and each target of the grid, then the average over the targets; from ImageNet, the
    published value beside ours (`published_transfer`: dg where every target is an ImageNet variant,
    else xd), the published average only over the paper's very targets; a block per shot count
    where the grid has several."""
    average = s.seeds[s.seeds.task == AVERAGE]
    protocol = "dg" if s.targets and set(s.targets) <= set(IMAGENET_VARIANTS) else "xd"
    table = published_transfer(protocol) if s.dataset == "imagenet" else None
    published = {} if table is None else {(r.method, r.dataset): r.accuracy for r in table.itertuples()}
    on_papers_targets = table is not None and set(s.targets) == set(table.dataset) - {"imagenet", AVERAGE}
    closed = _closed_vocabulary(s)
    shots = _shot_counts(s.splits)
    blocks = []
    for n in shots:
        runs, paper = _of_shots(average, n), published if n == PUBLISHED_SHOTS else {}
        rows: list[tuple[str, list[LayoutCell]]] = []
        for label in s.labels:
            method = s.methods[label]
            cells = [
                _beside(_runs_cell(runs, dataset, label, s.digits), paper.get((method, dataset)))
                for dataset in [s.dataset, *s.targets]
            ]
            paper_average = paper.get((method, AVERAGE)) if on_papers_targets else None
            average_cell = _beside(_mean_cell(cells[1:], s.digits), paper_average)
            row: list[LayoutCell] = (
                [cells[0], *[CLOSED] * (len(s.targets) + 1)] if label in closed else [*cells, average_cell]
            )
            rows.append((column_name(label), row))
        blocks.append(Block(n if len(shots) > 1 else "", rows))
    notes = [
        "Average: the mean over the targets of each target's seed mean; blank unless every target has runs.",
        *_closed_note(s, closed, "tested on the source only"),
    ]
    if table is not None:
        notes.append(
            f"Published values: petl_bench/data/published_{protocol}.csv (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC, "
            f"each row citing its paper and table), all {PUBLISHED_SHOTS}: beside the {PUBLISHED_SHOTS} runs only; "
            "the published Average shows only over the paper's targets."
        )
    columns = [f"{dataset_name(s.dataset)} (source)", *map(dataset_name, s.targets), "Average"]
    return Layout(f"{s.name}: transfer from {dataset_name(s.dataset)}, accuracy (%)", "method", columns, blocks, notes)


def _shot_counts(splits: Sequence[str]) -> list[str]:
    """The shot counts of a grid's splits in order: `16shot` of `16shot`, `16shot-base`, `16shot-holdout-art`."""
    return list(dict.fromkeys(split.partition("-")[0] for split in splits))


def _of_shots(runs: pd.DataFrame, shots: str) -> pd.DataFrame:
    """The runs of one shot count (their split `16shot` or `16shot-...`)."""
    return runs[(runs.split == shots) | runs.split.str.startswith(f"{shots}-")]


def lodo_layout(s: Summary) -> Layout:
    """DomainBed's leave-one-domain-out tables: per dataset (and shot count) a row per held-out domain
    and their average, a column per method; a cell is the mean ± std over seeds of the runs that held
    that domain out."""
    average = s.seeds[s.seeds.task == AVERAGE]
    blocks = []
    for dataset in s.datasets:
        for shots in _shot_counts(s.splits):
            runs = _of_shots(average, shots)
            rows: list[tuple[str, list[LayoutCell]]] = [
                (domain, [_runs_cell(runs[runs.holdout == domain], dataset, label, s.digits) for label in s.labels])
                for domain in DOMAINS[dataset]
            ]
            means: list[LayoutCell] = [
                _mean_cell([cells[i] for _, cells in rows], s.digits) for i in range(len(s.labels))
            ]
            blocks.append(Block(f"{dataset_name(dataset)}, {shots}", [*rows, ("Average", means)]))
    notes = [
        "A row: the runs that held its domain out, trained on the dataset's other domains pooled as one task "
        "(the shots per class drawn from the pool), tested on every image of the held-out domain (DomainBed's "
        "protocol). Average: the mean over the held-out domains of each one's seed mean; blank unless every "
        "domain has runs."
    ]
    title = f"{s.name}: leave-one-domain-out, accuracy (%) on the held-out domain"
    return Layout(title, "held out", [column_name(label) for label in s.labels], blocks, notes)


def _mean_cell(cells: Sequence[LayoutCell], digits: int) -> Cell | None:
    """The mean of the cells' means (no std), or None unless every one has a value."""
    found = [cell.mean for cell in cells if isinstance(cell, Cell)]
    return Cell(sum(found) / len(found), digits=digits) if cells and len(found) == len(cells) else None


def _runs_cell(average: pd.DataFrame, dataset: str, label: str, digits: int) -> Cell | None:
    """The mean ± std over seeds of a label's runs on a dataset, or None."""
    runs = average[(average.dataset == dataset) & (average.label == label)]
    if runs.empty:
        return None
    std = float(runs.accuracy.std()) if len(runs) > 1 else None
    return Cell(float(runs.accuracy.mean()), std, digits=digits, key=(label, dataset, runs.split.iloc[0], AVERAGE))


CLOSED = GapCell("n/a: closed vocabulary")  # a method's cell for classes it cannot score (`_closed_note`)


def _closed_vocabulary(s: Summary) -> set[str]:
    """The labels whose method cannot score classes it never trained on: no novel or target cells."""
    return {label for label in s.labels if not get_method(s.methods[label]).open_vocabulary}


def _closed_note(s: Summary, closed: set[str], tested: str) -> list[str]:
    """The footer line that says why the `closed` labels' transfer cells are n/a (none if none)."""
    if not closed:
        return []
    names = ", ".join(column_name(label) for label in s.labels if label in closed)
    whose = "its runs are" if len(closed) == 1 else "their runs are"
    return [f"{CLOSED.why}: {names} {closed_vocabulary(len(closed))}; {whose} {tested}."]


def _base_novel_hm(base: Cell | None, novel: Cell | None, paper, closed: bool, digits: int) -> list[LayoutCell]:
    """A dataset's (or the average's) Base, Novel and HM cells, the published ones beside them;
    `closed`: a closed-vocabulary method without novel runs, whose Novel and HM say why."""
    if closed:
        return [_beside(base, None if paper is None else paper.base), CLOSED, CLOSED]
    return list(_with_published([base, novel, _hm_cell(base, novel, digits)], paper))


def _base_novel(average: pd.DataFrame, dataset: str, label: str, digits: int) -> tuple[Cell | None, Cell | None]:
    """The mean ± std over seeds of a label's runs on the base classes of a dataset, and on its novel
    classes (None where there are none)."""
    base, novel = (_runs_cell(average[average.split.str.endswith(f"-{c}")], dataset, label, digits) for c in CLASSES)
    return base, novel


def _hm_cell(base: Cell | None, novel: Cell | None, digits: int) -> Cell | None:
    return None if base is None or novel is None else Cell(harmonic_mean(base.mean, novel.mean), digits=digits)


def _with_published(cells: list[Cell | None], paper) -> list[Cell | ParamCell | None]:
    """Base, Novel and HM cells with the published base, novel and hm (a row of the CSV) beside them."""
    if paper is None:
        return list(cells)
    return [_beside(cell, value) for cell, value in zip(cells, (paper.base, paper.novel, paper.hm), strict=True)]


def _beside(cell: Cell | None, published: float | None) -> Cell | None:
    """`cell` with the published value beside it (None: as it is)."""
    if cell is None or published is None:
        return cell
    return Cell(cell.mean, cell.std, published, None, cell.digits, cell.key)


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
    if isinstance(cell, GapCell):
        return _latex_escape(cell.why) if latex else cell.why
    if isinstance(cell, ParamCell):
        ours = "" if cell.ours is None else millions(cell.ours)
        return ours if cell.paper is None else f"{ours or '?'} (paper {cell.paper})"
    text = _fmt(cell.mean, cell.digits) + ("" if cell.std is None else pm + _fmt(cell.std, cell.digits))
    if cell.paper is not None:
        diff = f"{cell.mean - cell.paper:+.{cell.digits}f}"
        text += (
            rf" {{\scriptsize ({_fmt(cell.paper, cell.digits)}, ${diff}$)}}"
            if latex
            else f" (paper {_fmt(cell.paper, cell.digits)}, {diff})"
        )
    return text


def seeds_phrase(summary: Summary, pm: str = "±") -> str:
    """What the cells are over seeds: "one seed each", or "mean ± sample std over 3 seeds" (and
    which cells hold one seed where some do)."""
    counts = summary.seed_counts()
    if not counts:
        return "none counted yet"
    if counts == [1]:
        return "one seed each, no std"
    many = [n for n in counts if n > 1]
    span = str(many[0]) if len(many) == 1 else f"{many[0]} to {many[-1]}"
    return f"mean {pm} sample std over {span} seeds" + (f"; a cell without {pm} has one seed" if counts[0] == 1 else "")


def counted_phrase(summary: Summary) -> str:
    """How many of the grid's runs the cells count, as the footer lists the others."""
    if summary.n_counted == summary.n_expected:
        return f"all {summary.n_expected} runs of the grid counted"
    return f"{summary.n_counted} of the grid's {summary.n_expected} runs counted, the others listed below"


def cells_heading(summary: Summary) -> str:
    """The sentence above a table that says what its cells are."""
    paper = ""
    if summary.has_paper_values():
        paper = " (paper's value, ours − paper" + (": for layout only)" if summary.off_paper else ")")
    return f"Cells: ours, {seeds_phrase(summary)}{paper}; {counted_phrase(summary)}."


def to_markdown(summary: Summary) -> str:
    lay = layout(summary)
    lines = [f"## {lay.title}", ""]
    if summary.banner():
        lines += [f"> **{summary.banner()}**", ""]
    lines += [cells_heading(summary), ""]
    for block in lay.blocks:
        if block.title:
            lines += [f"### {block.title}", ""]
        lines.append("| " + " | ".join([lay.corner, *lay.columns]) + " |")
        lines.append("|" + "---|" + "---:|" * len(lay.columns))
        lines += ["| " + " | ".join([name, *(cell_text(c) for c in cells)]) + " |" for name, cells in block.rows]
        lines.append("")
    lines += [*lay.notes, *([""] if lay.notes else [])]
    return "\n".join(lines + summary.footer())


def to_latex(summary: Summary) -> str:
    lay = layout(summary)
    esc = _latex_escape
    n = len(lay.columns) + 1
    lines = []
    if summary.banner():
        lines.append(f"% {summary.banner()}")
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{esc(lay.title)}. {_latex_caption(summary)}}}",
        r"\begin{tabular}{l" + "c" * len(lay.columns) + "}",
        r"\toprule",
        " & ".join(map(esc, [lay.corner, *lay.columns])) + r" \\",
    ]
    for block in lay.blocks:
        lines.append(r"\midrule")
        if block.title:
            lines += [rf"\multicolumn{{{n}}}{{l}}{{\textit{{{esc(block.title)}}}}} \\", r"\midrule"]
        lines += [
            " & ".join([esc(name), *(cell_text(c, latex=True) for c in cells)]) + r" \\" for name, cells in block.rows
        ]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {line}" for line in [*lay.notes, *summary.footer()]]
    return "\n".join(lines)


def _latex_caption(summary: Summary) -> str:
    sentences = ["Ours: " + seeds_phrase(summary, pm=r"$\pm$")]
    if summary.has_paper_values():
        sentences.append(
            "the paper's value and our difference in brackets" + (", for layout only" if summary.off_paper else "")
        )
    sentences.append(counted_phrase(summary))
    return " ".join(f"{text[0].upper()}{text[1:]}." for text in sentences)


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


CSV_COLUMNS = [
    "table",
    "dataset",
    "split",
    "label",
    "method",
    "task",
    "stat",
    "seed",
    "accuracy",
    "std",
    "n_seeds",
    "paper",
    "paper_std",
    "diff",
    "trainable_params",
]


def to_csv(summary: Summary) -> str:
    """Tidy rows: one per counted record and task (stat=seed), then one per cell (stat=mean)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    base = {"table": summary.name}
    order = {
        "split": {s: i for i, s in enumerate(summary.splits)},
        "label": {label: i for i, label in enumerate(summary.labels)},
    }  # grid order, not alphabetical
    seeds = summary.seeds.sort_values(
        ["split", "label", "seed", "task_index"], key=lambda c: c.map(order[c.name]) if c.name in order else c
    )
    for r in seeds.itertuples():
        writer.writerow(
            {
                **base,
                "dataset": r.dataset,
                "split": r.split,
                "label": r.label,
                "method": r.method,
                "task": r.task,
                "stat": "seed",
                "seed": r.seed,
                "accuracy": r.accuracy,
                "trainable_params": r.trainable_params,
            }
        )
    # A record's own count: a fewshot row's datasets differ in classes, and its average has none.
    params = {
        (r.label, r.dataset, r.split, r.task): r.trainable_params
        for r in summary.seeds.drop_duplicates(["label", "dataset", "split", "task"]).itertuples()
    }
    keys = [(label, split, task) for split in summary.splits for label in summary.labels for task in summary.tasks]
    present = [key for key in keys if key in summary.cells.index]
    # in key order, a key's row per dataset (one but in a base2novel, transfer or lodo grid over several)
    for (label, split, task), r in summary.cells.loc[present].iterrows():
        writer.writerow(
            {
                **base,
                "dataset": r["dataset"],  # "" for a fewshot row's average over datasets
                "split": split,
                "label": label,
                "method": r["method"],
                "task": task,
                "stat": "mean",
                "accuracy": round(r["mean"], 4),
                "std": _csv_num(r["std"]),
                "n_seeds": int(r["n"]),
                "paper": _csv_num(r["paper"]),
                "paper_std": _csv_num(r["paper_std"]),
                "diff": _csv_num(r["diff"]),
                "trainable_params": params.get((label, r["dataset"], split, task), ""),
            }
        )
    if summary.table == "base2novel":
        writer.writerows({**base, **row} for row in _hm_rows(summary))
    return out.getvalue()


def _hm_rows(summary: Summary) -> list[dict]:
    """base2novel: a row (stat=hm) per dataset and label with both Base and Novel runs, their HM."""
    average, rows = summary.seeds[summary.seeds.task == AVERAGE], []
    for shots, dataset, label in itertools.product(_shot_counts(summary.splits), summary.datasets, summary.labels):
        base, novel = _base_novel(_of_shots(average, shots), dataset, label, summary.digits)
        hm = _hm_cell(base, novel, summary.digits)
        if hm is not None:
            rows.append(
                {
                    "dataset": dataset,
                    "split": shots,
                    "label": label,
                    "method": summary.methods[label],
                    "task": AVERAGE,
                    "stat": "hm",
                    "accuracy": round(hm.mean, 4),
                }
            )
    return rows


def _csv_num(value) -> float | str:
    return "" if number_or_none(value) is None else round(float(value), 4)


FORMATS = {"md": (to_markdown, "md"), "latex": (to_latex, "tex"), "csv": (to_csv, "csv")}


def render(summary: Summary, fmt: str) -> str:
    return FORMATS[fmt][0](summary)


def save_table(summary: Summary, fmt: str) -> Path:
    """Write the table to `{out}/tables/{grid}.{md|tex|csv}`."""
    path = summary.out / "tables" / f"{summary.name}.{FORMATS[fmt][1]}"
    write_text_atomic(path, render(summary, fmt).rstrip("\n") + "\n")
    return path
