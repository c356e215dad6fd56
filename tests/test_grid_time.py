"""benchmarks/grid_time.py's arithmetic: a grid's runs at given rates (the rates themselves are measured
on the device it runs on, not here), on pools and on fixed splits, over one dataset or several."""

import argparse
import contextlib
import io
import json
from collections import Counter

import pytest

from petl_bench.benchmarks.grid_time import (
    DataSize,
    RunImages,
    data_size,
    dataset_sizes,
    estimate,
    group_of,
    run_images,
    run_times,
)
from petl_bench.benchmarks.speed import Throughput
from petl_bench.datamodules.catalog import DATASET_FOLDERS
from petl_bench.datamodules.coopsynth import write_coop_synthetic
from petl_bench.sweep.grid import expand_grid, grid_file


def rates(grid, cached=("zeroshot", "coop-mt")):
    """Every (label, group) of the grid at 100 training and 1000 test images/s; `cached`: labels whose
    test features come from the cache."""
    return {
        (run.label, group_of(run.cfg)): Throughput(
            1, None if run.label == "zeroshot" else 100.0, 1000.0, 0.0, cached_features=run.label in cached
        )
        for run in grid.runs
    }


def by_run(grid, times):
    return {
        (run.label, run.cfg.data.dataset, run.cfg.data.classes, run.cfg.data.split, run.cfg.data.seed): t
        for run, t in zip(grid.runs, times, strict=True)
    }


def write_grid(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_dataset_sizes_are_the_papers():
    assert sum(dataset_sizes("officehome", None).values()) == 15_588
    assert dataset_sizes("minidomainnet", None) == dict.fromkeys(["clipart", "painting", "real", "sketch"], 35_000)


def test_table1_runs_train_their_whole_batches_and_test_the_rest():
    grid = expand_grid(grid_file("table1"), ["model.arch=tiny"])
    group = group_of(grid.runs[0].cfg)
    times = run_times(grid, {group: DataSize(dataset_sizes("officehome", None), 65)}, rates(grid))
    by_run = {(run.label, run.cfg.data.split, run.cfg.data.seed): t for run, t in zip(grid.runs, times, strict=True)}
    # 10pct: 6 shots x 65 classes = 390 images per task, 24 whole batches of 16, 5 epochs, 4 tasks.
    coop = by_run[("coop", "10pct", 0)]
    assert coop.train_s == pytest.approx(5 * 24 * 16 * 4 / 100)
    assert coop.test_s == pytest.approx((15_588 - 4 * 390) / 1000)
    # MmAP also searches its groups: 20 warm-up steps and 8 gradient batches.
    assert by_run[("mmap", "10pct", 0)].train_s == pytest.approx((5 * 24 + 28) * 16 * 4 / 100)
    # 20pct: 12 shots, 48 batches.
    assert by_run[("coop", "20pct", 2)].train_s == pytest.approx(5 * 48 * 16 * 4 / 100)
    # Cached features: zeroshot's first run encodes its test set, seed 1 only the 1,560 images left,
    # and coop-mt (later in the grid) none.
    assert by_run[("zeroshot", "10pct", 0)].test_s == pytest.approx(14.028)
    assert by_run[("zeroshot", "10pct", 1)].test_s == pytest.approx(1.56)
    assert by_run[("zeroshot", "10pct", 0)].train_s == 0
    assert all(by_run[("coop-mt", split, seed)].test_s == 0 for split in ("10pct", "20pct") for seed in (0, 1, 2))
    assert all(t.val_s == 0 for t in times)  # a pool has no val part


def test_a_fixed_split_counts_the_split_files_parts(tmp_path):
    write_coop_synthetic(tmp_path, "eurosat", per_class=10, n_classes=4)  # 5 train, 2 val, 3 test per class
    split = json.loads((tmp_path / "split_zhou_EuroSAT.json").read_text())
    listed = {part: Counter(label for _, label, _ in split[part]) for part in ("train", "val", "test")}
    size = data_size(("eurosat", str(tmp_path), "all"))
    assert size.parts == {part: [listed[part][label] for label in range(4)] for part in listed}
    assert size.tasks == {"EuroSAT": 40} and size.classes == 4
    # 4 shots: 4 train and 4 val per class where there are (val holds 2); the test is the test part, and
    # the cache takes the whole root.
    assert run_images(size, 4) == RunImages(train=16, val=8, test=12, encode=40)
    assert run_images(size, 8).train == 20  # a class with fewer than 8 takes all 5
    base = data_size(("eurosat", str(tmp_path), "base"))
    assert base.classes == 2 and run_images(base, 1) == RunImages(2, 2, 6, 20)


def test_a_grid_over_several_fixed_split_datasets_counts_each_test_part(tmp_path):
    path = write_grid(
        tmp_path,
        "table: fewshot\ndatasets: [imagenet, eurosat]\nsplits: [1shot, 16shot]\nseeds: [1, 2]\n"
        "methods: [zeroshot, coop]\n",
    )
    grid = expand_grid(path, ["model.arch=tiny"])
    sizes = {group_of(run.cfg): data_size(group_of(run.cfg)) for run in grid.runs}  # the published sizes
    assert [sum(size.tasks.values()) for size in sizes.values()] == [1_331_167, 27_000]
    times = by_run(grid, run_times(grid, sizes, rates(grid)))
    epochs = grid.runs[0].cfg.train.epochs
    # ImageNet, 16 shots: 16,000 images, 1,000 batches of 16 an epoch; no val part; the 50,000 val images.
    coop = times[("coop", "imagenet", "all", "16shot", 1)]
    assert (coop.train_s, coop.val_s, coop.test_s) == pytest.approx((epochs * 1000 * 16 / 100, 0, 50))
    # EuroSAT, 1 shot: 10 images, one (partial) batch an epoch; 10 val shots each epoch; the 8,100 test images.
    coop = times[("coop", "eurosat", "all", "1shot", 2)]
    assert (coop.train_s, coop.val_s, coop.test_s) == pytest.approx((epochs * 16 / 100, epochs * 10 / 1000, 8.1))
    # Cached features: the first run on a root encodes all of it, every later one nothing.
    assert times[("zeroshot", "imagenet", "all", "1shot", 1)].test_s == pytest.approx(1331.167)
    assert times[("zeroshot", "eurosat", "all", "1shot", 1)].test_s == pytest.approx(27.0)
    later = [t for key, t in times.items() if key[0] == "zeroshot" and key[3:] != ("1shot", 1)]
    assert len(later) == 6 and all(t.test_s == 0 for t in later)


def test_base_to_novel_transfers_only_test_the_novel_half():
    grid = expand_grid(grid_file("base2novel"), ["model.arch=tiny"])
    sizes = {group_of(run.cfg): data_size(group_of(run.cfg)) for run in grid.runs}
    assert len(sizes) == 22  # 11 datasets x (base, novel)
    times = by_run(grid, run_times(grid, sizes, rates(grid)))
    # EuroSAT's 8,100 test images over 10 classes: 5 base classes, 5 novel; DTD's 1,692 over 47: 24 and 23.
    base, novel = (times[("coop", "eurosat", classes, "16shot", 1)] for classes in ("base", "novel"))
    assert base.train_s > 0 and base.test_s == pytest.approx(4.05)
    assert (novel.train_s, novel.val_s, novel.test_s) == pytest.approx((0, 0, 4.05))
    assert times[("coop", "dtd", "novel", "16shot", 3)].test_s == pytest.approx(23 * 36 / 1000)


def test_the_estimate_of_a_grid_over_several_generated_roots_prints_each(tmp_path):
    data = tmp_path / "data"
    for name in ("dtd", "eurosat"):
        write_coop_synthetic(data / DATASET_FOLDERS[name], name, per_class=10, n_classes=3)
    path = write_grid(
        tmp_path, "table: fewshot\ndatasets: [dtd, eurosat]\nsplits: [2shot]\nseeds: [1]\nmethods: [coop]\n"
    )
    args = argparse.Namespace(set=["model.arch=tiny"], root=str(data), steps=1, overhead=1.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        wall = estimate(str(path), args)
    lines = out.getvalue().splitlines()
    for name in ("dtd", "eurosat"):
        assert f"  {name}: 1 runs, 1 tasks x 3 classes, 30 images (train 15, val 6, test 9), 16 images per task" in (
            "\n".join(lines)
        )
    assert lines[-1].startswith("  estimated wall time of the sweep: ") and "2 runs x 1 s overhead" in lines[-1]
    assert wall > 2.0
