"""Trainable parameters of every registered method against the paper's Table 1 row.

The paper counts all four tasks together and prints single-task figures as 4 x (per-task count,
rounded): CoOp's 0.04 M is 4 x 0.01 M although 4 x 8,192 = 32,768. So our count agrees when, per
task for single-task methods, rounded to the paper's printed digits (then times the task count),
it equals the paper's figure. MmAP's count depends on its number of task groups (found from
data at run time): it is listed for 1 group up to one per task; the paper's 0.13 M fits 2.
Tip-Adapter-F's depends on the split's shots (its cache holds every shot): it is listed for the
dataset's paper splits (4 and 16 shots, its grids' splits, for the other datasets). Other datasets
are counted on their own tasks and classes, without the paper's figures. The MLP-prompt ablation's
3.96 M is from the paper's Figure 4 text, not Table 1.

A method beyond the paper is also set beside its own paper's figure where that paper prints one
(`own_paper_params.csv`, each row citing it): those papers count one parameter set on ViT-B/16
(their methods have no class-sized parts), so the figure is compared with one set of ours, the
-mt variant's count or a single-task count over its tasks, at the figure's printed digits.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from importlib import resources

from .datamodules.catalog import PAPER_SPLITS
from .registry import get_method, method_names

N_TASKS = 4  # both of the paper's datasets have four domains


@dataclass(frozen=True)
class PaperFigure:
    text: str  # as printed, e.g. "0.04"; "-" for none
    single_task: bool

    @property
    def digits(self) -> int:
        return len(self.text.partition(".")[2])


def paper_figures() -> dict[str, PaperFigure]:
    text = resources.files("petl_bench").joinpath("data", "paper_params.csv").read_text()
    return {
        row["method"]: PaperFigure(row["paper_params_m"], row["single_task"] == "yes")
        for row in csv.DictReader(io.StringIO(text))
    }


@dataclass(frozen=True)
class OwnPaperFigure:
    text: str  # as printed, e.g. "46K" or "0.675M"
    source: str

    def agrees(self, per_set: float) -> bool:
        number, unit = self.text[:-1], self.text[-1]
        scale = {"K": 1e3, "M": 1e6}[unit]
        return round(per_set / scale, len(number.partition(".")[2])) == float(number)


def own_paper_figures() -> dict[str, OwnPaperFigure]:
    text = resources.files("petl_bench").joinpath("data", "own_paper_params.csv").read_text()
    return {row["method"]: OwnPaperFigure(row["params"], row["source"]) for row in csv.DictReader(io.StringIO(text))}


def agrees(count: int, figure: PaperFigure, n_tasks: int = N_TASKS) -> bool:
    if figure.text == "-":
        return count == 0
    per_set = count / n_tasks if figure.single_task else count
    ours = round(round(per_set / 1e6, figure.digits) * (n_tasks if figure.single_task else 1), figure.digits)
    return ours == float(figure.text)


def count_rows(arch: str, dataset: str) -> list[dict]:
    from .backbone import ClipBackbone  # the model stack, for counting only: tables read the figures alone
    from .datamodules.datasets import canonical_tasks

    backbone = ClipBackbone.from_pretrained(arch, None)  # sizes only: no weights needed
    tasks = canonical_tasks(dataset)
    figures = paper_figures() if dataset in PAPER_SPLITS else {}  # the paper's datasets only
    own_figures = own_paper_figures() if arch == "ViT-B-16" else {}  # as those papers count: ViT-B/16
    rows = []
    for name in method_names():
        entry = get_method(name)
        figure = figures.get(name)
        own = own_figures.get(name.removesuffix("-mt"))
        for label, cfg in counted_configs(entry.config_cls, [task.name for task in tasks], dataset):
            module = entry.cls(cfg, backbone, tasks)
            count = module.num_trainable
            module.release()  # leave the backbone as it was for the next method
            rows.append(
                {
                    "method": name + label,
                    "trainable": count,
                    "trainable_m": f"{count / 1e6:.2f}",
                    "paper_m": figure.text if figure else "",
                    "agrees": ("yes" if figure and agrees(count, figure) else "no" if figure else ""),
                    "own_paper": own.text if own else "",
                    "own_agrees": _yes_no(own.agrees(count if entry.shared else count / len(tasks))) if own else "",
                }
            )
    return rows


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def counted_configs(config_cls, task_names: list[str], dataset: str) -> list[tuple[str, object]]:
    """The default config; where the count depends on what data settles at run time, one config per
    case: per number of task groups (a `groups` field: MmAP), per paper split's shots (a `shots`
    field: Tip-Adapter-F's cache)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if "shots" in fields:
        splits = PAPER_SPLITS.get(dataset) or {f"{k}shot": k for k in (4, 16)}  # the other datasets' grids
        return [(f" ({split}, {k} shots)", config_cls(shots=k)) for split, k in splits.items()]
    if "groups" not in fields:
        return [("", config_cls())]
    n = len(task_names)
    return [
        (
            f" ({k} group{'s' if k > 1 else ''})",
            config_cls(groups="|".join(",".join(task_names[i * n // k : (i + 1) * n // k]) for i in range(k))),
        )
        for k in range(1, n + 1)
    ]


def format_rows(rows: list[dict], fmt: str) -> str:
    columns = ["method", "trainable", "trainable_m", "paper_m", "agrees", "own_paper", "own_agrees"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    lines = [
        "| method | trainable | M | paper (M) | agrees | its own paper (one set) | agrees |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    lines += [
        f"| {r['method']} | {r['trainable']:,} | {r['trainable_m']} | {r['paper_m']} | {r['agrees']} "
        f"| {r['own_paper']} | {r['own_agrees']} |"
        for r in rows
    ]
    return "\n".join(lines)
