"""The paper's figures from run records: `petl-bench plot fig1|fig4|fig5|fewshot`.

- fig1: average accuracy vs trainable parameters for one split (the table1/table2 grids)
- fig4: joint train vs MLP prompt vs MmAP per task (the ablation grid)
- fig5: accuracy vs shots per class, one panel per task (the kshot grid)
- fewshot: CoOp's figure, accuracy vs shots per class, the average over datasets and a panel per
  dataset (the fewshot grid)

Figures are drawn from the same `report.Summary` as the tables: only records of the grid's config.
`run_curves` draws one run's training loss (epochs marked), learning rate and any accuracy per
epoch from its CSV log (the HTML report's).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from .datamodules.catalog import canonical_split, paper_split, parse_shots
from .errors import UserError
from .files import ENCODING, atomic_path, write_text_atomic
from .report.paper import column_name, dataset_name, datasets_name, split_name
from .report.summary import AVERAGE, Summary

DPI = 100
# fig5, fewshot, curves: per panel
FIGSIZE = {"fig1": (8.0, 5.5), "fig4": (8.0, 4.5), "fig5": (3.2, 3.4), "fewshot": (3.2, 2.9), "curves": (4.5, 3.2)}
FEWSHOT_COLUMNS = 4  # panels per row of the fewshot figure: CoOp's 11 datasets and the average fill 3 rows
LEGEND_COLUMNS = 6  # methods per row of a figure's legend
FIG4_BARS = {"joint train": "joint train", "MLP prompt": "MLP prompt", "gradient groups": "MmAP"}
ZERO_PARAMS_FACTOR = 0.1  # methods that train nothing are drawn a decade left of the smallest count
MAX_BUBBLE, MIN_BUBBLE, STAR_AREA = 2500.0, 25.0, 120.0  # marker areas in points^2
NOTE_WIDTH = 95  # characters per line of the off-paper note under a title
EPOCHS_NAMED = 20  # epoch marks on a run's loss plot carry their epoch's number up to this many epochs
EPOCH_ACCURACY = re.compile(r"^(train|val)/acc(/.+)?$")  # an accuracy logged per epoch, overall or per task


def default_figure(figure: str) -> tuple[str, bool]:
    """The grid a figure is drawn from, and whether it is drawn for one split."""
    return {
        "fig1": ("table1", True),
        "fig4": ("ablation", True),
        "fig5": ("kshot", False),
        "fewshot": ("fewshot", False),
    }[figure]


def choose_split(summary: Summary, split: str | None) -> str:
    if split is None:
        return summary.splits[0]
    canonical = canonical_split(summary.dataset, split)
    if canonical not in summary.splits:
        names = ", ".join(split_name(summary.dataset, s) for s in summary.splits)
        raise UserError(f"split {split!r} is not in grid {summary.name!r} (it has {names})")
    return canonical


def figure_path(summary: Summary, figure: str, split: str | None) -> Path:
    suffix = f"-{paper_split(summary.dataset, split)}" if split else ""
    named = summary.dataset if len(summary.datasets) == 1 else summary.name  # a grid over several: its name
    return summary.out / "figures" / f"{figure}-{named}{suffix}.png"


def _mean_std(summary: Summary, label: str, split: str, task: str) -> tuple[float, float] | None:
    cell = summary.cell(label, split, task)
    return None if cell is None else (cell.mean, cell.std or 0.0)


def _need(anything, summary: Summary, what: str) -> None:
    if not anything:
        raise UserError(
            f"no finished runs of grid {summary.name!r} for {what}: run "
            f"`petl-bench sweep {summary.name}` first ({summary.footer()[0]})"
        )


def _title(summary: Summary, text: str) -> str:
    """The title, and a second line saying why the results are not the paper's (or the benchmark's)
    setting, if so."""
    if not summary.off_paper:
        return text
    return text + "\n" + textwrap.fill(f"(not {summary.setting} setting: {'; '.join(summary.off_paper)})", NOTE_WIDTH)


def fig1(summary: Summary, split: str, path: Path) -> Path:
    """Average accuracy vs trainable parameters, log x, bubble area proportional to parameters."""
    points = [
        (label, summary.params[(label, split)], *v)
        for label in summary.labels
        if (label, split) in summary.params and (v := _mean_std(summary, label, split, AVERAGE))
    ]
    _need(points, summary, split_name(summary.dataset, split))
    counts = [p for _, p, _, _ in points if p > 0]
    zero_x = min(counts, default=1000) * ZERO_PARAMS_FACTOR
    biggest = max(counts, default=1)
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=FIGSIZE["fig1"], dpi=DPI, layout="constrained")
    # 40 distinct colours, so a grid with the methods beyond the paper (25 of them) repeats none.
    colours = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b") for i in range(20)]
    for i, (label, count, mean, std) in enumerate(points):
        colour = colours[i % len(colours)]
        area = max(MIN_BUBBLE, MAX_BUBBLE * count / biggest) if count else STAR_AREA
        if count == 0:
            ax.scatter(zero_x, mean, s=area, marker="*", color=colour, edgecolor="black", linewidth=0.6, zorder=3)
            name = f"{column_name(label)} (trains 0 parameters: drawn at the left)"
        else:
            ax.scatter(count, mean, s=area, color=colour, alpha=0.6, edgecolor="black", linewidth=0.6, zorder=3)
            name = column_name(label)
        ax.errorbar(count or zero_x, mean, yerr=std, color="0.3", capsize=2, linewidth=0.8, zorder=2)
        offset = area**0.5 / 2 + 3  # clear of the bubble: its radius in points, and a little more
        side = -1 if count == biggest else 1  # the rightmost bubble is labelled on its left, inside the axes
        ax.annotate(
            name,
            (count or zero_x, mean),
            xytext=(side * offset, offset / 2),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)  # room for the largest bubble and the labels
    few_decades = math.log10(max(counts, default=1) / zero_x) < 2
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if few_decades else (1,)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200, 130k, 150M
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("trainable parameters (log scale; bubble area ∝ parameters)")
    ax.set_ylabel("average accuracy (%)")
    ax.set_title(
        _title(
            summary,
            f"{dataset_name(summary.dataset)} {split_name(summary.dataset, split)}: "
            "average accuracy vs trainable parameters",
        ),
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def fig4(summary: Summary, split: str, path: Path) -> Path:
    """Per task, bars of the multi-modal prompt variants: joint train, MLP prompt, MmAP."""
    bars = [label for label in FIG4_BARS if label in summary.labels]
    if not bars:
        raise UserError(f"grid {summary.name!r} has none of the Figure 4 rows ({', '.join(FIG4_BARS)})")
    tasks = summary.tasks
    values = {label: [_mean_std(summary, label, split, task) for task in tasks] for label in bars}
    _need([v for vs in values.values() for v in vs if v], summary, split_name(summary.dataset, split))
    fig, ax = _pyplot().subplots(figsize=FIGSIZE["fig4"], dpi=DPI, layout="constrained")
    width = 0.8 / len(bars)
    found = []
    for i, label in enumerate(bars):
        xs = [t + (i - (len(bars) - 1) / 2) * width for t in range(len(tasks))]
        means = [v[0] if v else float("nan") for v in values[label]]  # a missing bar is not drawn
        stds = [v[1] if v else 0.0 for v in values[label]]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=FIG4_BARS[label])
        found += [v[0] for v in values[label] if v]
    ax.set_xticks(range(len(tasks)), [t if t != AVERAGE else "Average" for t in tasks])
    low, high = min(found), max(found)
    margin = max(1.0, (high - low) * 0.5)
    ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        _title(
            summary,
            f"{dataset_name(summary.dataset)} {split_name(summary.dataset, split)}: multi-modal prompt variants",
        ),
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def fig5(summary: Summary, path: Path) -> Path:
    """Accuracy vs shots per class, a panel per task (and the average), zero-shot dashed."""
    panels = [(task, task if task != AVERAGE else "Average") for task in summary.tasks]
    title = f"{dataset_name(summary.dataset)}: accuracy vs shots per class (zero-shot dashed)"
    return _shot_panels(summary, panels, len(panels), FIGSIZE["fig5"], title, path)


def fewshot(summary: Summary, path: Path) -> Path:
    """CoOp's figure: accuracy vs shots per class, the average over datasets first, then a panel per
    dataset, `FEWSHOT_COLUMNS` to a row; zero-shot dashed (flat where the test set is one for every
    shot count, as in CoOp's protocol)."""
    panels = [(AVERAGE, "Average over datasets"), *((dataset, dataset_name(dataset)) for dataset in summary.datasets)]
    title = f"{summary.name}: {datasets_name(summary.datasets)}, accuracy vs shots per class (zero-shot dashed)"
    return _shot_panels(summary, panels, FEWSHOT_COLUMNS, FIGSIZE["fewshot"], title, path)


def _shot_panels(
    summary: Summary, panels: list[tuple[str, str]], columns: int, size: tuple[float, float], title: str, path: Path
) -> Path:
    """A panel per (task, title) of accuracy vs shots (log2 x), a line per row of the grid, `columns`
    panels to a row, one legend below them."""
    shots = [parse_shots(summary.dataset, split) for split in summary.splits]
    _need(not summary.seeds.empty, summary, "any split")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    plt = _pyplot()
    # A method keeps its colour in every panel, whichever methods a panel lacks.
    trained = [label for label in summary.labels if summary.methods[label] != "zeroshot"]
    palette = plt.get_cmap("tab10" if len(trained) <= 10 else "tab20")
    colours = {label: palette(i % palette.N) for i, label in enumerate(trained)}
    fig, axes = plt.subplots(
        rows, columns, figsize=(size[0] * columns, size[1] * rows), dpi=DPI, layout="constrained", squeeze=False
    )
    for ax, (task, name) in zip(axes.flat, panels, strict=False):
        for label in summary.labels:
            series = [
                (n, *v)
                for n, split in zip(shots, summary.splits, strict=True)
                if (v := _mean_std(summary, label, split, task))
            ]
            if not series:
                continue
            xs, means, stds = zip(*series, strict=True)
            style = (
                {"linestyle": "--", "color": "0.4", "marker": None}
                if label not in colours
                else {"marker": "o", "markersize": 4, "color": colours[label]}
            )
            ax.errorbar(xs, means, yerr=stds, capsize=2, linewidth=1.2, label=column_name(label), **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(n) for n in shots])
        ax.minorticks_off()
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center", color="0.5")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("shots per class")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    drawn: dict = {}  # name -> a line of it: every method once, whichever panel has it
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            drawn.setdefault(name, handle)
    names = [name for name in map(column_name, summary.labels) if name in drawn]  # in the grid's order
    columns = min(len(names), LEGEND_COLUMNS)
    fig.legend([drawn[name] for name in names], names, loc="outside lower center", ncols=columns, fontsize=8)
    fig.suptitle(_title(summary, title), fontsize=10)
    return _save(fig, path)


def lr_columns(log: pd.DataFrame) -> list[str]:
    """Learning-rate columns of a CSV log that hold a value: the module's `train/lr`, and Lightning's
    LearningRateMonitor's `lr-SGD`, `lr-SGD/pg1`, ..."""
    return [
        column
        for column in log.columns
        if (column == "train/lr" or column.startswith("lr")) and log[column].notna().any()
    ]


def loss_columns(log: pd.DataFrame) -> list[str]:
    """The training loss of all tasks (`train/loss`) and of each (`train/loss/{task}`)."""
    return [c for c in log.columns if c == "train/loss" or c.startswith("train/loss/")]


def training_steps(log: pd.DataFrame) -> pd.DataFrame:
    """The log's rows with a training loss, one per step (a resumed run logs some steps twice)."""
    losses = loss_columns(log)
    steps = log.dropna(subset=losses, how="all") if losses else log.iloc[:0]
    return steps.drop_duplicates("step", keep="last").sort_values("step")


def epoch_starts(steps: pd.DataFrame) -> list[tuple[int, int]]:
    """(epoch, its first step) for every epoch after the first of the training steps."""
    if "epoch" not in steps:
        return []
    first = steps.dropna(subset=["epoch"]).groupby("epoch").step.min().sort_index()
    return [(int(epoch), int(step)) for epoch, step in first.iloc[1:].items()]


def epoch_accuracy(log: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per epoch (`train/acc`, `val/acc`, per task `val/acc/{task}`): each column's last
    value in each epoch, indexed by epoch; empty when the log holds none."""
    columns = [c for c in log.columns if EPOCH_ACCURACY.match(c) and log[c].notna().any()]
    if not columns or "epoch" not in log:
        return pd.DataFrame()
    return log.dropna(subset=["epoch"]).groupby("epoch")[columns].last().dropna(how="all").sort_index()


def run_curves(log: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Training loss (all tasks, and per task) against the step with each epoch's start marked, the
    learning rate, and accuracy per epoch where the log holds it, from a run's CSV log
    (`seed{K}/logs/metrics.csv`); None when the log holds no training loss."""
    steps = training_steps(log)
    if steps.empty:
        return None
    key = _drawing_key("curves", title, log.to_csv())
    if _drawn(path, key):
        return path
    _remember(path, key, _draw_curves(log, steps, title, path))
    return path


def _draw_curves(log: pd.DataFrame, steps: pd.DataFrame, title: str, path: Path) -> Path:
    lrs, accuracy = lr_columns(log), epoch_accuracy(log)
    panels = 1 + bool(lrs) + (not accuracy.empty)
    width, height = FIGSIZE["curves"]
    fig, axes = _pyplot().subplots(
        1, panels, figsize=(width * panels, height), dpi=DPI, layout="constrained", squeeze=False
    )
    loss_ax, *others = axes[0]
    for column in loss_columns(steps):
        total = column == "train/loss"
        loss_ax.plot(
            steps.step,
            steps[column],
            label=column if total else column.removeprefix("train/loss/"),
            linewidth=1.8 if total else 0.9,
            alpha=1.0 if total else 0.7,
            marker="o" if len(steps) < 20 else None,
            markersize=3,
        )
    loss_ax.set(xlabel="step", ylabel="training loss", title="training loss")
    loss_ax.legend(fontsize=7)
    starts = epoch_starts(steps)
    if lrs:
        lr_ax = others.pop(0)
        for column in lrs:
            rows = log.dropna(subset=[column]).drop_duplicates("step", keep="last").sort_values("step")
            lr_ax.plot(rows.step, rows[column], label=column, linewidth=1.2)
        lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        lr_ax.legend(fontsize=7)
        _mark_epochs(lr_ax, starts, named=False)
    _mark_epochs(loss_ax, starts, named=len(starts) < EPOCHS_NAMED)
    if not accuracy.empty:
        acc_ax = others.pop(0)
        epochs = accuracy.index.astype(int) + 1  # as the run log counts them
        for column in accuracy.columns:
            acc_ax.plot(epochs, accuracy[column], label=column, marker="o", markersize=3, linewidth=1.2)
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy per epoch")
        acc_ax.xaxis.get_major_locator().set_params(integer=True)
        acc_ax.legend(fontsize=7)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    fig.suptitle(textwrap.fill(title, NOTE_WIDTH * panels // 2), fontsize=9)
    return _save(fig, path)


def _mark_epochs(ax, starts: list[tuple[int, int]], named: bool) -> None:
    """A dotted line where each epoch after the first begins; its number (1-based) above it if `named`."""
    for epoch, step in starts:
        ax.axvline(step - 0.5, color="0.55", linestyle=":", linewidth=0.9, zorder=1)
        if named:
            ax.annotate(
                f"epoch {epoch + 1}",
                (step - 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=6,
                color="0.4",
            )


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    _pyplot().close(fig)
    return path


def draw(figure: str, summary: Summary, split: str | None = None, out: Path | None = None) -> Path:
    """Draw `figure` from `summary` to `out` (default `{results}/figures/...`); the PNG's path."""
    if summary.spans_datasets:
        raise UserError(
            f"grid {summary.name!r} ({summary.table} table) has no figure: "
            "its numbers are in `petl-bench table` and its page in `petl-bench report`"
        )
    one_split = default_figure(figure)[1]
    chosen = choose_split(summary, split) if one_split else None
    path = Path(out) if out else figure_path(summary, figure, chosen)
    key = _drawing_key(figure, str(chosen), _summary_text(summary))
    if _drawn(path, key):
        return path
    if figure == "fewshot":
        return _remember(path, key, fewshot(summary, path))
    if chosen is None:
        return _remember(path, key, fig5(summary, path))
    if figure == "fig1":
        return _remember(path, key, fig1(summary, chosen, path))
    return _remember(path, key, fig4(summary, chosen, path))


def _pyplot():
    """pyplot on the Agg backend (files only: no display, none on a cluster node), imported at the
    first drawing: a report whose figures are all drawn already never loads matplotlib (0.6 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# A figure is redrawn only when what it shows changed: drawing one takes 0.3-1 s of CPU, and a report
# draws every grid's figures and every run's curves each time it is built.
def _drawing_key(*inputs: str) -> str:
    """What a drawing depends on: the drawing code (this file), matplotlib's version and `inputs`."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(importlib.metadata.version("matplotlib").encode())
    for text in inputs:
        digest.update(b"\0" + text.encode(ENCODING, "surrogateescape"))
    return digest.hexdigest()


def _summary_text(summary: Summary) -> str:
    """Everything of `summary` a figure may show (its results folder aside), as text."""
    parts = [summary.name, summary.table, summary.dataset, summary.root, summary.seeds.to_csv(), summary.cells.to_csv()]
    parts += map(repr, (summary.labels, summary.methods, summary.splits, summary.tasks, sorted(summary.params.items())))
    parts += map(repr, (summary.n_expected, summary.missing, summary.stale, summary.off_paper, summary.unusable))
    return "\n".join(parts)


def _key_file(path: Path) -> Path:
    return path.with_name(path.name + ".key")


def _drawn(path: Path, key: str) -> bool:
    """Whether `path` holds the drawing `key` names already (its `.key` file beside it says so)."""
    key_file = _key_file(path)
    return path.is_file() and key_file.is_file() and key_file.read_text(encoding=ENCODING) == key


def _remember(path: Path, key: str, drawn: Path) -> Path:
    write_text_atomic(_key_file(path), key)
    return drawn
