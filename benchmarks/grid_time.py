"""Estimated wall time of a grid's sweep (`make table1`, `make fewshot`, any benchmarks/*.yaml) on this machine.

    python benchmarks/grid_time.py table1 table2                          # on a GPU: ViT-B/16, as the grids say
    python benchmarks/grid_time.py table1 --set model.arch=tiny --steps 3  # to try it on a CPU
    python benchmarks/grid_time.py fewshot --root ~/data/coop             # the sizes of the roots there

For each method of a grid and each dataset (and class subset) it runs on, measures training and test
images/s (`speed.measure`: random images, the grid's batch size, the dataset's tasks and class names, the
device and precision a run would use), then adds up the grid's runs: `train.epochs` epochs over each run's
k-shot set (whole batches where the loaders drop the last), MmAP's group search (`grouping_warmup_steps +
grouping_batches` steps), each epoch's validation over a fixed split's val shots, and the test. A pool's
test is every image not drawn for training; a fixed split's (CoOp's datasets) is its test part, and its
shots are drawn per class from the train and val parts as `splits.draw_split` draws them (a class with
fewer takes all it has). A transfer run (`eval --from`: base-to-novel, cross-dataset) only tests. A
method whose test features come from the shared cache (the frozen image tower) encodes only images no
earlier run of the grid encoded; the cache takes a task's whole root, so on a fixed split its first run
encodes every image there. Dataset sizes: `--root`'s split files and image lists where the dataset has
them (a grid over several datasets: each in its folder under the root, as a sweep's `data.root`), else
the counts shipped with the package (MiniDomainNet: the paper's 140,000 images, in four equal domains;
CoOp's datasets: `data/coop-counts.csv`, its classes taken as equal).

Assumes the data path keeps up with the model (GPU decoding for training, cached test tensors) and
adds `--overhead` seconds per run (a sweep worker's; benchmarks/sweep_overhead.py measures it); runs
one after another on one device, as `petl-bench sweep` with one GPU.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.benchmarks.scale import MINI_DOMAINS, MINI_PER_DOMAIN
from petl_bench.benchmarks.speed import Throughput, measure
from petl_bench.config import RunConfig
from petl_bench.datamodules import coop, parse_shots
from petl_bench.datamodules.catalog import images_per_step
from petl_bench.datamodules.classes import class_subset
from petl_bench.datamodules.counts import expected_counts
from petl_bench.datamodules.datasets import canonical_tasks
from petl_bench.datamodules.records import PARTS, Task
from petl_bench.datamodules.splits import VAL_SHOTS
from petl_bench.errors import UserError
from petl_bench.hardware import allow_tf32, run_device, run_precision
from petl_bench.sweep.grid import Grid, GridRun, expand_grid, grid_file

Group = tuple[str, str, str]  # (dataset, root, class subset): runs that share their data, test set and cache


@dataclass
class RunTime:
    train_s: float
    val_s: float  # each epoch's validation (a fixed split's val shots)
    test_s: float


@dataclass(frozen=True)
class DataSize:
    """The images a group's runs see."""

    tasks: dict[str, int]  # images per task
    classes: int
    parts: dict[str, list[int]] | None = None  # a fixed split: images per class (by label) of train, val, test


@dataclass(frozen=True)
class RunImages:
    train: int  # per task, each epoch
    val: int  # per task, each epoch
    test: int  # over all tasks
    encode: int  # what a cached-feature run encodes when no earlier run did (the cache takes whole roots)


def group_of(cfg: RunConfig) -> Group:
    return cfg.data.dataset, cfg.data.root, cfg.data.classes


def dataset_sizes(dataset: str, root: str | None) -> dict[str, int]:
    """Images per domain of a pool dataset."""
    if dataset == "minidomainnet" and not root:
        return dict.fromkeys(MINI_DOMAINS, MINI_PER_DOMAIN)
    expected = expected_counts(dataset, Path(root or "."))
    if expected is None or not expected.domains:  # every shipped counts file and image list gives domain totals
        raise UserError(f"{dataset}: no known size; give --root with the dataset")
    return expected.domains


def split_parts(dataset: str, root: str | None) -> dict[str, list[int]]:
    """A fixed split's images per class of each part: what the root's split file (or the ImageNet family's
    class folders) lists, as the dataset's reader reads it; without a root, the published sizes."""
    if root:
        listed = coop.listing(dataset, root)
        label = {key: i for i, key in enumerate(listed.classes)}
        parts = {part: [0] * len(label) for part in PARTS[1:]}
        for (_, _, key), part in zip(listed.items, listed.parts, strict=True):
            parts[part][label[key]] += 1
        return parts
    sizes = coop.expected_sizes(dataset)
    n = sizes.classes
    return {part: [total // n + (i < total % n) for i in range(n)] for part, total in sizes.parts.items()}


def data_size(group: Group) -> DataSize:
    """The images of the group's dataset root, on its class subset (CoOp's `subsample_classes`)."""
    dataset, root, classes = group
    if dataset not in coop.SPECS:
        if classes != "all":
            raise UserError(f"{dataset}: a class subset of a pool: no per-class sizes to estimate it from")
        return DataSize(dataset_sizes(dataset, root or None), len(canonical_tasks(dataset)[0].classnames))
    parts = split_parts(dataset, root or None)
    if classes == "all":
        labels = list(range(len(parts["train"])))
    else:
        labels = class_subset([label for label, n in enumerate(parts["train"]) if n], classes)
    parts = {part: [counts[label] for label in labels] for part, counts in parts.items()}
    return DataSize({coop.SPECS[dataset].title: sum(map(sum, parts.values()))}, len(labels), parts)


def run_images(size: DataSize, shots: int) -> RunImages:
    total = sum(size.tasks.values())
    if size.parts is None:  # a pool: N per class from each task, the rest tested
        train = shots * size.classes
        test = total - train * len(size.tasks)
        return RunImages(train, 0, test, test)
    val_shots = min(shots, VAL_SHOTS)
    return RunImages(
        sum(min(shots, n) for n in size.parts["train"]),
        sum(min(val_shots, n) for n in size.parts["val"]),
        sum(size.parts["test"]),
        total,
    )


def group_search_steps(params) -> int:
    """Training steps of MmAP's group search (see `MmAP.prepare`); 0 for every other method."""
    searches = getattr(params, "group_shared", False) and not params.groups.strip() and params.grouping != "all"
    return params.grouping_warmup_steps + params.grouping_batches if searches else 0


def batch_of(cfg: RunConfig) -> int:
    return images_per_step(cfg.data.dataset, cfg.data.batch_size)


def train_steps(cfg: RunConfig, per_task: int) -> int:
    """Steps of a run's training: whole batches where the loader drops the last (it drops it only when
    there is a whole one), and MmAP's group search."""
    batch = batch_of(cfg)
    per_epoch = per_task // batch if cfg.data.drop_last and per_task >= batch else -(-per_task // batch)
    return cfg.train.epochs * per_epoch + group_search_steps(cfg.params)


def run_times(
    grid: Grid, sizes: dict[Group, DataSize], speeds: dict[tuple[str, Group], Throughput | None]
) -> list[RunTime | None]:
    """Each run's training, validation and test seconds at the measured rates (`speeds` by label and
    group), in the grid's order; None where its method was not measured."""
    encoded: dict[Group, int] = dict.fromkeys(sizes, 0)  # images whose features a run of the grid cached
    times: list[RunTime | None] = []
    for run in grid.runs:
        cfg, group = run.cfg, group_of(run.cfg)
        size, speed = sizes[group], speeds[(run.label, group)]
        if speed is None:
            times.append(None)
            continue
        images = run_images(size, parse_shots(cfg.data.dataset, cfg.data.split))
        tasks, test = len(size.tasks), images.test
        train_s = val_s = 0.0
        if cfg.transfer_from is None:  # a transfer run only tests
            steps = train_steps(cfg, images.train)
            train_s = steps * batch_of(cfg) * tasks / speed.train if speed.train else 0.0
            val_s = 0.0 if speed.cached_features else cfg.train.epochs * images.val * tasks / speed.test
        if speed.cached_features:
            test = min(images.encode, sum(size.tasks.values()) - encoded[group])  # the rest are in the cache
            encoded[group] += test
        times.append(RunTime(train_s, val_s, test / speed.test))
    return times


def task_set(group: Group, size: DataSize) -> list[Task]:
    """The tasks a group's runs train and test, as many classes as its root and subset hold (what a rate
    depends on; the names are the package's, as `canonical_tasks` gives them)."""
    dataset, _, classes = group
    tasks = canonical_tasks(dataset)
    names = tasks[0].classnames
    names = tuple(names[i] for i in class_subset(range(len(names)), classes))[: size.classes]
    return [dataclasses.replace(task, classnames=names) for task in tasks]


def measure_group(runs: list[GridRun], group: Group, size: DataSize, backbone, args, device, precision):
    """{label: its rates on the group's tasks, or None}, {label: why not measured}."""
    tasks = task_set(group, size)
    speeds: dict[str, Throughput | None] = {}
    unmeasured: dict[str, str] = {}
    for run in runs:
        if run.label in speeds:
            continue
        try:
            speeds[run.label] = measure(
                run.cfg.method,
                copy.deepcopy(backbone),
                tasks,
                batch_of(run.cfg),
                args.steps,
                device.type,
                precision,
                params=run.cfg.params,
            )
        except UserError as error:  # a module that only its `prepare` step, on real data, can build
            speeds[run.label], unmeasured[run.label] = None, str(error)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return speeds, unmeasured


def estimate(name: str, args) -> float:
    """Measure and print one grid; -> its estimated wall seconds."""
    overrides = [*args.set, *([f"data.root={args.root}"] if args.root else [])]
    grid = expand_grid(grid_file(name), overrides)
    first = grid.runs[0].cfg
    device = run_device(first.train.accelerator)
    allow_tf32(device)
    precision = "bf16" if run_precision(first.train.precision, device) == "bf16-mixed" else "fp32"
    backbone = ClipBackbone.from_pretrained(first.model.arch, None)  # random weights: speed only
    groups = list(dict.fromkeys(group_of(run.cfg) for run in grid.runs))  # in the grid's order
    sizes = {group: data_size(group) for group in groups}
    print(f"\n{grid.name}: {len(grid.runs)} runs, {first.model.arch} on {device.type} in {precision}")
    speeds: dict[tuple[str, Group], Throughput | None] = {}
    measured = {}
    for group in groups:
        runs = [run for run in grid.runs if group_of(run.cfg) == group]
        measured[group] = measure_group(runs, group, sizes[group], backbone, args, device, precision)
        speeds |= {(label, group): speed for label, speed in measured[group][0].items()}
    times = run_times(grid, sizes, speeds)
    for group in groups:
        print_group(grid, group, sizes[group], measured[group], times)
    done = [t for t in times if t is not None]
    train_s, val_s, test_s = (sum(getattr(t, f) for t in done) for f in ("train_s", "val_s", "test_s"))
    wall = train_s + val_s + test_s + args.overhead * len(done)
    left_out = f", without the {len(grid.runs) - len(done)} runs not measured" if len(done) < len(grid.runs) else ""
    print(
        f"  estimated wall time of the sweep: {wall / 3600:.2f} h (train {train_s / 3600:.2f} h, "
        f"validation {val_s / 3600:.2f} h, test {test_s / 3600:.2f} h, {len(done)} runs x {args.overhead:g} s "
        f"overhead{left_out})"
    )
    return wall


def print_group(grid: Grid, group: Group, size: DataSize, measured, times: list[RunTime | None]) -> None:
    """The group's heading and a line per method: rates, runs, minutes."""
    speeds, unmeasured = measured
    dataset, _, classes = group
    mine = [(run, t) for run, t in zip(grid.runs, times, strict=True) if group_of(run.cfg) == group]
    subset = "" if classes == "all" else f", {classes} classes"
    split = ""
    if size.parts is not None:
        split = " (" + ", ".join(f"{p} {sum(n):,}" for p, n in size.parts.items() if sum(n)) + ")"
    print(
        f"  {dataset}{subset}: {len(mine)} runs, {len(size.tasks)} tasks x {size.classes} classes, "
        f"{sum(size.tasks.values()):,} images{split}, {batch_of(mine[0][0].cfg)} images per task per step"
    )
    print(
        f"  {'method':<16}{'trainable':>12}{'train img/s':>13}{'test img/s':>12}{'test from':>11}"
        f"{'peak MiB':>10}{'runs':>6}{'train min':>11}{'val min':>9}{'test min':>10}"
    )
    for label, speed in speeds.items():
        if speed is None:
            print(f"  {label:<16} not measured: {unmeasured[label]}")
            continue
        run_times_ = [t for run, t in mine if run.label == label and t is not None]
        train = f"{speed.train:.1f}" if speed.train else "-"
        source = "cache" if speed.cached_features else "images"
        minutes = [sum(getattr(t, f) for t in run_times_) / 60 for f in ("train_s", "val_s", "test_s")]
        print(
            f"  {label:<16}{speed.trainable:>12,}{train:>13}{speed.test:>12.1f}{source:>11}{speed.peak_mib:>10,.0f}"
            f"{len(run_times_):>6}{minutes[0]:>11.1f}{minutes[1]:>9.1f}{minutes[2]:>10.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="+", help="grid names (benchmarks/*.yaml) or files")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="as petl-bench sweep --set, e.g. model.arch=tiny",
    )
    parser.add_argument(
        "--root",
        help="the dataset root, as a sweep's data.root (a grid over several datasets: their common root), "
        "for exact sizes",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method and phase")
    parser.add_argument("--overhead", type=float, default=1.0, help="fixed seconds per run in a sweep")
    args = parser.parse_args()
    try:
        for name in args.grids:
            estimate(name, args)
    except UserError as error:
        print(f"grid_time.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
