"""benchmarks/grid_time.py's arithmetic: a grid's runs at given rates (the rates themselves are measured
on the device it runs on, not here)."""

import pytest

from petl_bench.benchmarks.grid_time import dataset_sizes, run_times
from petl_bench.benchmarks.speed import Throughput
from petl_bench.sweep.grid import expand_grid, grid_file


def test_dataset_sizes_are_the_papers():
    assert sum(dataset_sizes("officehome", None).values()) == 15_588
    assert dataset_sizes("minidomainnet", None) == dict.fromkeys(["clipart", "painting", "real", "sketch"], 35_000)


def test_table1_runs_train_their_whole_batches_and_test_the_rest():
    grid = expand_grid(grid_file("table1"), ["model.arch=tiny"])
    speeds = {
        label: Throughput(
            1, None if label == "zeroshot" else 100.0, 1000.0, 0.0, cached_features=label in ("zeroshot", "coop-mt")
        )
        for label in grid.labels
    }
    times = run_times(grid, dataset_sizes("officehome", None), 65, speeds)
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
