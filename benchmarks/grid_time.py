"""Estimated wall time of a grid's sweep (`make table1`, `make table2`, any benchmarks/*.yaml) on this machine.

    python benchmarks/grid_time.py table1 table2                          # on a GPU: ViT-B/16, as the grids say
    python benchmarks/grid_time.py table1 --set model.arch=tiny --steps 3  # to try it on a CPU

For each method of a grid, measures training and test images/s (`speed.measure`: random images, the
grid's batch size, its dataset's tasks and class names, the device and precision a run would use),
then adds up the grid's runs: `train.epochs` epochs over each run's k-shot set (whole batches, as the
loaders drop the last), MmAP's group search (`grouping_warmup_steps + grouping_batches` steps), and a
test over every image not drawn for training. A method whose test features come from the shared
cache (the frozen image tower) encodes only images no earlier run of the grid encoded. Dataset
sizes: `--root`'s image lists where the dataset has them, else the counts shipped with the package
(MiniDomainNet: the paper's 140,000 images, in four equal domains).

Assumes the data path keeps up with the model (GPU decoding for training, cached test tensors) and
adds `--overhead` seconds per run (a sweep worker's; benchmarks/sweep_overhead.py measures it); runs
one after another on one device, as `petl-bench sweep` with one GPU.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.benchmarks.scale import MINI_DOMAINS, MINI_PER_DOMAIN
from petl_bench.benchmarks.speed import Throughput, measure
from petl_bench.datamodules import parse_shots
from petl_bench.datamodules.counts import expected_counts
from petl_bench.datamodules.datasets import canonical_tasks
from petl_bench.errors import UserError
from petl_bench.hardware import allow_tf32, run_device, run_precision
from petl_bench.sweep.grid import Grid, expand_grid, grid_file


@dataclass
class RunTime:
    train_s: float
    test_s: float


def dataset_sizes(dataset: str, root: str | None) -> dict[str, int]:
    """Images per domain."""
    if dataset == "minidomainnet" and not root:
        return dict.fromkeys(MINI_DOMAINS, MINI_PER_DOMAIN)
    expected = expected_counts(dataset, Path(root or "."))
    if expected is None or not expected.domains:  # every shipped counts file and image list gives domain totals
        raise UserError(f"{dataset}: no known size; give --root with the dataset")
    return expected.domains


def group_search_steps(params) -> int:
    """Training steps of MmAP's group search (see `MmAP.prepare`); 0 for every other method."""
    searches = getattr(params, "group_shared", False) and not params.groups.strip() and params.grouping != "all"
    return params.grouping_warmup_steps + params.grouping_batches if searches else 0


def run_times(
    grid: Grid, sizes: dict[str, int], classes: int, speeds: dict[str, Throughput | None]
) -> list[RunTime | None]:
    """Each run's training and test seconds at the measured rates, in the grid's order; None
    where its method was not measured."""
    total, encoded, times = sum(sizes.values()), 0, []
    for run in grid.runs:
        cfg, speed = run.cfg, speeds[run.label]
        if speed is None:
            times.append(None)
            continue
        per_task = parse_shots(cfg.data.dataset, cfg.data.split) * classes
        batch = cfg.data.batch_size
        steps = cfg.train.epochs * (per_task // batch if cfg.data.drop_last else -(-per_task // batch))
        steps += group_search_steps(cfg.params)
        train_s = steps * batch * len(sizes) / speed.train if speed.train else 0.0
        test = total - per_task * len(sizes)
        if speed.cached_features:
            test = min(test, total - encoded)  # the other images' features are in the cache
            encoded += test
        times.append(RunTime(train_s, test / speed.test))
    return times


def estimate(name: str, args) -> float:
    """Measure and print one grid; -> its estimated wall seconds."""
    grid = expand_grid(grid_file(name), args.set)
    first = grid.runs[0].cfg
    device = run_device(first.train.accelerator)
    allow_tf32(device)
    precision = "bf16" if run_precision(first.train.precision, device) == "bf16-mixed" else "fp32"
    tasks = canonical_tasks(grid.dataset)
    sizes = dataset_sizes(grid.dataset, args.root)
    backbone = ClipBackbone.from_pretrained(first.model.arch, None)  # random weights: speed only
    print(
        f"\n{grid.name}: {len(grid.runs)} runs on {grid.dataset} ({len(tasks)} tasks x "
        f"{len(tasks[0].classnames)} classes, {sum(sizes.values()):,} images), {first.model.arch} on "
        f"{device.type} in {precision}, {first.data.batch_size} images per task per step"
    )
    speeds, unmeasured = {}, {}
    for run in grid.runs:
        if run.label in speeds:
            continue
        try:
            speeds[run.label] = measure(
                run.cfg.method,
                copy.deepcopy(backbone),
                tasks,
                run.cfg.data.batch_size,
                args.steps,
                device.type,
                precision,
                params=run.cfg.params,
            )
        except UserError as error:  # a module that only its `prepare` step, on real data, can build
            speeds[run.label], unmeasured[run.label] = None, str(error)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    times = run_times(grid, sizes, len(tasks[0].classnames), speeds)
    print(
        f"  {'method':<16}{'trainable':>12}{'train img/s':>13}{'test img/s':>12}{'test from':>11}"
        f"{'peak MiB':>10}{'runs':>6}{'train min':>11}{'test min':>10}"
    )
    for label, speed in speeds.items():
        if speed is None:
            print(f"  {label:<16} not measured: {unmeasured[label]}")
            continue
        mine = [t for run, t in zip(grid.runs, times, strict=True) if run.label == label]
        train = f"{speed.train:.1f}" if speed.train else "-"
        source = "cache" if speed.cached_features else "images"
        print(
            f"  {label:<16}{speed.trainable:>12,}{train:>13}{speed.test:>12.1f}{source:>11}{speed.peak_mib:>10,.0f}"
            f"{len(mine):>6}{sum(t.train_s for t in mine) / 60:>11.1f}{sum(t.test_s for t in mine) / 60:>10.1f}"
        )
    times = [t for t in times if t is not None]
    train_s, test_s = sum(t.train_s for t in times), sum(t.test_s for t in times)
    wall = train_s + test_s + args.overhead * len(times)
    left_out = f", without the {len(grid.runs) - len(times)} runs not measured" if unmeasured else ""
    print(
        f"  estimated wall time of the sweep: {wall / 3600:.2f} h (train {train_s / 3600:.2f} h, "
        f"test {test_s / 3600:.2f} h, {len(times)} runs x {args.overhead:g} s overhead{left_out})"
    )
    return wall


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
    parser.add_argument("--root", help="the dataset's folder, for its exact size (one dataset's grids)")
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
