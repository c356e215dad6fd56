"""The cache folder: a manifest scanned once, test images decoded once, frozen image features encoded
once, bounded, shared by concurrent runs, and never changing a number; the worker budget."""

import json
import threading

import numpy as np
import pytest
import torch
from petl_bench.datamodules import MultiDomainDataModule, read_manifest
from petl_bench.datamodules import images as images_module
from petl_bench.datamodules.cache import Cache, cache_folder

from petl_bench import hardware
from petl_bench.config import DataConfig
from cli_calls import call


@pytest.fixture
def header_reads(monkeypatch):
    """Counts the image headers read."""
    calls = []
    real = images_module.header_error

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(images_module, "header_error", counted)
    return calls


def test_cache_folder_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("PETL_BENCH_CACHE", raising=False)
    assert cache_folder("", tmp_path / "results") == tmp_path / "results" / "cache"
    monkeypatch.setenv("PETL_BENCH_CACHE", str(tmp_path / "shared"))
    assert cache_folder("", tmp_path / "results") == tmp_path / "shared"
    assert cache_folder(str(tmp_path / "mine"), "results") == tmp_path / "mine"  # the config wins
    assert cache_folder("off", "results") is None
    monkeypatch.setenv("PETL_BENCH_CACHE", "off")
    assert cache_folder("", "results") is None


def test_manifest_is_scanned_once_and_changed_files_again(folder_root, copy_tree, tmp_path, header_reads):
    root = copy_tree(folder_root)
    cache = Cache(tmp_path / "cache", 10**9)
    first = read_manifest("folder", root, cache)
    assert len(header_reads) == 48
    header_reads.clear()
    again = read_manifest("folder", root, cache)
    assert header_reads == [] and again == first
    changed = root / first.records[5].path
    changed.write_bytes(changed.read_bytes() + b"\0")  # size and mtime change
    (root / "art" / "anchor" / "empty.jpg").write_bytes(b"")
    after = read_manifest("folder", root, cache)
    assert sorted(header_reads) == sorted([str(changed), str(root / "art" / "anchor" / "empty.jpg")])
    assert after.skipped == ["art/anchor/empty.jpg"] and after.records == first.records

    header_reads.clear()  # `data check` rescans everything, cache or not
    code, stdout, _ = call(["data", "check", "--dataset", "folder", "--root", root, "--no-progress"])
    assert code == 0 and len(header_reads) == 49 and "1 unreadable" in stdout


def _zeroshot(root, checkpoint, out, *extra, seed=0):
    code, _, stderr = call(["run", "--method", "zeroshot", "--dataset", "folder", "--root", root,
                            "--split", "2shot", "--model", "tiny", "--pretrained", checkpoint, "--out", out,
                            "--no-progress", "--set", "data.num_workers=0", "--force", "--seed", seed, *extra])
    assert code == 0, stderr
    return json.loads(next((out / "runs").rglob(f"seed{seed}.json")).read_text())


def test_cached_features_give_the_uncached_accuracy(folder_root, tiny_checkpoint, tmp_path, header_reads):
    out = tmp_path / "results"
    cold = _zeroshot(folder_root, tiny_checkpoint, out)
    assert set(cold["test_sources"].values()) == {"features (cached now)"}
    header_reads.clear()
    warm = _zeroshot(folder_root, tiny_checkpoint, out)
    assert header_reads == []
    assert set(warm["test_sources"].values()) == {"features (cached)"}
    off = _zeroshot(folder_root, tiny_checkpoint, out, "--set", "data.cache_dir=off")
    assert set(off["test_sources"].values()) == {"decoded"}
    assert cold["accuracy"] == warm["accuracy"] == off["accuracy"]
    assert cold["split_sha256"] == warm["split_sha256"] == off["split_sha256"]
    assert warm["precision"] == "32-true" and warm["tf32"] is False  # `auto` on a CPU
    # another seed shares the features: its other test set is read from the same entries
    seed1 = _zeroshot(folder_root, tiny_checkpoint, out, seed=1)
    assert set(seed1["test_sources"].values()) == {"features (cached)"}


def test_cached_test_images_equal_decoded_ones(folder_root, tiny_backbone, tmp_path):
    def batches(cache_dir):
        data = MultiDomainDataModule.for_backbone(
            DataConfig("folder", str(folder_root), "2shot", num_workers=0, eval_batch_size=3, cache_dir=cache_dir),
            tiny_backbone, out=tmp_path)
        data.setup()
        return [list(loader) for loader in data.test_dataloader()], data.test_sources

    decoded, sources = batches("off")
    assert set(sources.values()) == {"decoded"}
    for expected in ("images (cached now)", "images (cached)"):
        cached, sources = batches("")
        assert set(sources.values()) == {expected}
        for task_cached, task_decoded in zip(cached, decoded):
            assert len(task_cached) == len(task_decoded) == 2  # 4 images in batches of 3
            for (images, labels), (images_d, labels_d) in zip(task_cached, task_decoded):
                assert torch.equal(images, images_d) and torch.equal(labels, labels_d)


def test_concurrent_runs_fill_an_entry_once(folder_root, tiny_backbone, tmp_path, monkeypatch):
    fills = []
    real = MultiDomainDataModule._fill_images

    def counted(self, *args):
        fills.append(threading.get_ident())
        return real(self, *args)

    monkeypatch.setattr(MultiDomainDataModule, "_fill_images", counted)
    results = []

    def run():
        data = MultiDomainDataModule.for_backbone(DataConfig("folder", str(folder_root), "2shot", num_workers=0),
                                                  tiny_backbone, out=tmp_path)
        data.setup()
        results.append([[labels.tolist() for _, labels in loader] for loader in data.test_dataloader()])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fills) == 4  # one per domain, whichever run came first
    assert len(results) == 2 and results[0] == results[1]


def test_cache_bound_removes_least_recently_used(tmp_path):
    cache = Cache(tmp_path, max_bytes=2500)

    def store(key):
        return cache.store("images", key, (1000,), np.uint8, lambda array: {"key": key})

    assert store("a") is not None and store("b") is not None
    cache.load("images", "a")  # a is now more recent than b
    assert store("c") is not None  # 3 x 1000 bytes do not fit: b goes
    assert cache.load("images", "b") is None
    assert cache.load("images", "a")[1] == {"key": "a"} and cache.load("images", "c") is not None
    assert cache.store("images", "huge", (5000,), np.uint8, lambda array: {}) is None  # over the bound
    assert cache.load("images", "a") is not None  # nothing removed for it

    code, stdout, _ = call(["cache", "--dir", tmp_path])
    assert code == 0 and "images         2 entries" in stdout
    code, stdout, _ = call(["cache", "clear", "--dir", tmp_path])
    assert code == 0 and cache.entries() == []


def test_worker_budget_follows_the_machine_and_goes_to_the_loader_that_runs(
        folder_root, tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert hardware.loader_workers(-1) == 5 and hardware.loader_workers(8) == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert hardware.loader_workers(-1) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")

    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", cache_dir="off"), tiny_backbone, out=tmp_path)
    data.setup()
    assert [loader.loader.num_workers for loader in data.test_dataloader()] == [5, 5, 5, 5]  # one after another
    train = data.train_dataloader()  # at once: they share the budget
    assert [loader.num_workers for loader in train.iterables.values()] == [2, 1, 1, 1]
