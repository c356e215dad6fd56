"""The cache folder: a manifest scanned once, test images decoded once, frozen image features encoded
once, bounded, shared by concurrent runs, and never changing a number; the worker budget."""

import contextlib
import json
import os
import threading

import numpy as np
import pytest
import torch

from petl_bench import cpus
from petl_bench.config import DataConfig
from petl_bench.datamodules import MultiDomainDataModule, read_manifest
from petl_bench.datamodules import images as images_module
from petl_bench.datamodules.cache import Cache, cache_folder
from petl_bench.datamodules.images import UNKNOWN, ImageChecks
from petl_bench.datamodules.readers import read_folder
from petl_bench.datamodules.testsets import TaskTestSets
from petl_bench.frozen_features import FrozenImageEncoder

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
    assert code == 1 and len(header_reads) == 49 and "1 unreadable" in stdout


def test_a_reader_uses_the_cache_it_is_given_and_no_other(folder_root, copy_tree, tmp_path, header_reads):
    root = copy_tree(folder_root)
    first, second = Cache(tmp_path / "first", 10**9), Cache(tmp_path / "second", 10**9)
    manifest = read_folder(root, first)
    assert len(header_reads) == 48 and len(first.load_verdicts(root)) == 48
    header_reads.clear()
    assert read_folder(root, first) == manifest and header_reads == []  # the verdicts it was given
    assert read_folder(root, None) == manifest and len(header_reads) == 48  # none: every header again
    header_reads.clear()
    assert read_folder(root, second) == manifest and len(header_reads) == 48  # not the first one's
    assert second.load_verdicts(root) == first.load_verdicts(root)


def _zeroshot(root, checkpoint, out, *extra, seed=0):
    code, _, stderr = call(
        [
            "run",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            root,
            "--split",
            "2shot",
            "--model",
            "tiny",
            "--pretrained",
            checkpoint,
            "--out",
            out,
            "--no-progress",
            "--set",
            "data.num_workers=0",
            "--force",
            "--seed",
            seed,
            *extra,
        ]
    )
    assert code == 0, stderr
    return json.loads(next((out / "runs").rglob(f"seed{seed}.json")).read_text())


def test_a_rescan_in_another_order_reuses_the_verdicts_and_checks_only_changed_files(
    folder_root, copy_tree, tmp_path, header_reads
):
    root = copy_tree(folder_root)
    cache = Cache(tmp_path / "cache", 10**9)
    rels = [r.path for r in read_manifest("folder", root, cache).records]
    header_reads.clear()
    again = ImageChecks(root, cache.load_verdicts(root))
    assert again.scan(rels[::-1]) == ["header"] * len(rels) and header_reads == []  # looked up by path
    changed = root / rels[3]
    changed.write_bytes(changed.read_bytes() + b"\0")
    third = ImageChecks(root, cache.load_verdicts(root))
    assert third.scan([*rels, "art/absent.jpg"]) == ["header"] * len(rels) + [None]  # the absent one: None
    assert header_reads == [str(changed)]  # the same order: compared whole, the changed file read again


def test_the_manifest_cache_keeps_any_file_name_and_stat_exactly(tmp_path):
    cache, root = Cache(tmp_path / "cache", 10**9), tmp_path / "root"
    files = {
        "caf\udce9/a.jpg": (10, -(2**70), 2**64 + 1, 2**64 - 1, "header"),  # a name that is not UTF-8; big numbers
        "b\nc.jpg": (*UNKNOWN, "PermissionError: denied"),  # a newline in a name; a file that could not be stat-ed
        "d.jpg": (0, 1, 2, 3, "empty file"),
    }
    cache.saver(root)(files)
    assert cache.load_verdicts(root) == files
    assert list(cache.load_verdicts(root)) == list(files)  # in the scan's order
    assert cache.load_verdicts(tmp_path / "another root") == {}
    old = next((tmp_path / "cache" / "manifests").iterdir())
    cache._write_sealed(old, json.dumps({"version": 3, "root": str(root.resolve()), "paths": []}).encode())
    assert cache.load_verdicts(root) == {}  # a format of an earlier version: scanned afresh


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
            tiny_backbone,
            out=tmp_path,
        )
        data.setup()
        return [list(loader) for loader in data.test_dataloader()], data.test_sources

    decoded, sources = batches("off")
    assert set(sources.values()) == {"decoded"}
    for expected in ("images (cached now)", "images (cached)"):
        cached, sources = batches("")
        assert set(sources.values()) == {expected}
        for task_cached, task_decoded in zip(cached, decoded, strict=True):
            assert len(task_cached) == len(task_decoded) == 2  # 4 images in batches of 3
            for (images, labels), (images_d, labels_d) in zip(task_cached, task_decoded, strict=True):
                assert torch.equal(images, images_d) and torch.equal(labels, labels_d)


class CountingEncoder:
    """The tiny backbone's image tower as an `ImageEncoder`, counting batches and forward contexts."""

    def __init__(self, backbone, key="tiny-test"):
        self.frozen = FrozenImageEncoder(backbone, "cpu", "32-true", self.context)
        self.dim, self.key, self.batches, self.contexts = backbone.embed_dim, key, 0, 0

    def context(self):
        self.contexts += 1
        return contextlib.nullcontext()

    def encode(self, images):
        self.batches += 1
        return self.frozen.encode(images)


def _test_batches(root, backbone, out, encoder=None, cache_dir=""):
    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(root), "2shot", num_workers=0, eval_batch_size=3, cache_dir=cache_dir),
        backbone,
        out=out,
    )
    data.image_encoder = encoder
    data.setup()
    return [list(loader) for loader in data.test_dataloader()], data.test_sources


def test_a_data_module_given_an_image_encoder_tests_on_its_features(folder_root, tiny_backbone, tmp_path):
    decoded, _ = _test_batches(folder_root, tiny_backbone, tmp_path, cache_dir="off")
    encoder = CountingEncoder(tiny_backbone)
    cold, sources = _test_batches(folder_root, tiny_backbone, tmp_path, encoder)
    assert set(sources.values()) == {"features (cached now)"}
    assert encoder.batches == encoder.contexts == 4  # one fill batch per domain, each in the given context
    for task_features, task_decoded in zip(cold, decoded, strict=True):
        (batch,) = task_features  # 4 test images per task, one feature batch
        images = torch.cat([images for images, _ in task_decoded])
        with torch.inference_mode():
            expected = tiny_backbone.encode_image(images)
        assert batch["image_features"].shape == (4, tiny_backbone.embed_dim)
        assert torch.allclose(batch["image_features"], expected, atol=1e-5)
        assert batch["labels"].tolist() == torch.cat([labels for _, labels in task_decoded]).tolist()
    _, sources = _test_batches(folder_root, tiny_backbone, tmp_path, CountingEncoder(tiny_backbone))
    assert set(sources.values()) == {"features (cached)"}
    _, sources = _test_batches(folder_root, tiny_backbone, tmp_path, CountingEncoder(tiny_backbone, "other"))
    assert set(sources.values()) == {"features (cached now)"}  # another encoder's key: its own features


def test_a_data_module_given_no_image_encoder_tests_on_images(folder_root, tiny_backbone, tmp_path):
    features = CountingEncoder(tiny_backbone)
    for encoder, cache_dir, source in (
        (None, "off", "decoded"),
        (None, "", "images (cached now)"),
        (features, "", "features (cached now)"),
        (None, "", "images (cached)"),
    ):
        batches, sources = _test_batches(folder_root, tiny_backbone, tmp_path, encoder, cache_dir)
        assert set(sources.values()) == {source}
        if encoder is None:  # images through the model, even with the features in the cache
            for task in batches:
                assert [tuple(images.shape) for images, _ in task] == [(3, 3, 32, 32), (1, 3, 32, 32)]


def test_concurrent_runs_fill_an_entry_once(folder_root, tiny_backbone, tmp_path, monkeypatch):
    fills = []
    real = TaskTestSets._fill_images

    def counted(self, *args):
        fills.append(threading.get_ident())
        return real(self, *args)

    monkeypatch.setattr(TaskTestSets, "_fill_images", counted)
    results = []

    def run():
        data = MultiDomainDataModule.for_backbone(
            DataConfig("folder", str(folder_root), "2shot", num_workers=0), tiny_backbone, out=tmp_path
        )
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
    folder_root, tiny_backbone, tmp_path, monkeypatch
):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpus.loader_workers(-1) == 5 and cpus.loader_workers(8) == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpus.loader_workers(-1) == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")

    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", cache_dir="off"), tiny_backbone, out=tmp_path
    )
    data.setup()
    assert [loader.loader.num_workers for loader in data.test_dataloader()] == [5, 5, 5, 5]  # one after another
    train = data.train_dataloader()  # at once: they share the budget
    assert [loader.num_workers for loader in train.iterables.values()] == [2, 1, 1, 1]


def test_an_image_replaced_with_its_size_and_mtime_kept_is_not_served_stale(
    folder_root, copy_tree, tiny_backbone, tmp_path
):
    root = copy_tree(folder_root)

    def batches(cache_dir):
        data = MultiDomainDataModule.for_backbone(
            DataConfig("folder", str(root), "2shot", num_workers=0, cache_dir=cache_dir), tiny_backbone, out=tmp_path
        )
        data.setup()
        return [list(loader) for loader in data.test_dataloader()], data

    _, data = batches("")  # the test images are cached now
    # `cp -p` of another image over a test image: the bytes change, the size and mtime do not
    victim = max((root / r.path for r in data.test_records), key=lambda p: p.stat().st_size)
    other = next(
        root / r.path
        for r in data.test_records
        if r.label != data.test_records[0].label and (root / r.path).stat().st_size <= victim.stat().st_size
    )
    kept = victim.stat()
    victim.write_bytes(other.read_bytes().ljust(kept.st_size, b"\0"))  # JPEG readers ignore the tail
    os.utime(victim, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (kept.st_size, kept.st_mtime_ns)

    cached, data = batches("")
    decoded, _ = batches("off")
    assert "images (cached now)" in data.test_sources.values()  # the changed domain, cached again
    for task_cached, task_decoded in zip(cached, decoded, strict=True):
        for (images, _), (images_d, _) in zip(task_cached, task_decoded, strict=True):
            assert torch.equal(images, images_d)


def test_a_cache_entry_changed_in_place_is_dropped_not_trusted(tmp_path):
    cache = Cache(tmp_path, 10**9)

    def store(key, value):
        return cache.store("images", key, (4, 8), np.uint8, lambda array: array.fill(value) or {"key": key})

    store("a", 1)
    array_file = tmp_path / "images" / "a.npy"
    data = bytearray(array_file.read_bytes())
    data[-8:] = b"\2" * 8  # other bytes of the same size, written in place
    with open(array_file, "r+b") as handle:
        handle.write(data)
    with pytest.warns(UserWarning, match="images entry a: its array changed since it was written"):
        assert cache.load("images", "a") is None
    assert not array_file.exists()  # dropped: the next run computes it again
    assert store("a", 1)[0].tolist() == [[1] * 8] * 4

    store("b", 1)
    meta_file = tmp_path / "images" / "b.json"
    meta_file.write_text(meta_file.read_text().replace('"key": "b"', '"key": "c"'))
    with pytest.warns(UserWarning, match="images entry b: its file changed"):
        assert cache.load("images", "b") is None

    root = tmp_path / "root"
    cache.saver(root)({"art/a.jpg": (10, 1, 2, 3, "ok")})
    manifest = next((tmp_path / "manifests").iterdir())
    assert cache.load_verdicts(root) == {"art/a.jpg": (10, 1, 2, 3, "ok")}
    manifest.write_text(manifest.read_text().replace('"ok"', '"no"'))
    with pytest.warns(UserWarning, match="its file changed"):
        assert cache.load_verdicts(root) == {}  # scanned afresh


def test_cache_files_are_flushed_to_the_disk_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", str(src))) or real_replace(src, dst))
    cache = Cache(tmp_path, 10**9)
    cache.store("features", "a", (2, 3), np.float32, lambda array: {})
    cache.saver(tmp_path / "root")({"art/a.jpg": (10, 1, 2, 3, "ok")})
    replaced = [path for event, path in events if event == "replace"]
    assert len(replaced) == 3  # the array, its metadata, the manifest
    for path in replaced:
        assert events.index(("fsync", path)) < events.index(("replace", path))
