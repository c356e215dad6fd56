"""One LightningDataModule for every multi-domain dataset: one task per domain.

Training: one loader per task, combined (`CombinedLoader`, max_size_cycle) so that every step sees a
batch of every task and an epoch is one pass over the largest task; the worker budget is shared
among them. On a GPU the loaders only read JPEG bytes: `on_before_batch_transfer` decodes them on
the GPU and does the random crop and flip there (`device_images.RandomResizedCropFlip`).
Test: one loader per task, in task order (`dataloader_idx` = task index), with open_clip's
validation transform for the model, run one after another, each with the whole worker budget.
Validation (a fixed split's val shots, once per epoch): loaders made as the test's.
With a cache (`datamodules/cache.py`), a domain's images are decoded and resized once per root and
resolution, and when the runner hands over a frozen image tower (`image_encoder`: nothing trains
it), its test batches are cached image features (`testsets.py`).

A class subset (`data.classes` base or novel, CoOp's base-to-novel protocol) is taken from the
manifest as it is read, before anything else sees it: the split, the tasks and the test all see the
subset's classes only, relabelled from 0. A held-out domain (`data.holdout`, leave-one-domain-out:
`holdout.py`) makes the manifest one task, trained on the pooled other domains and tested on it.

Images that cannot be decoded are skipped at every stage and named in `skipped_images`: the split
decodes the images it draws for training and draws again where one fails, the test leaves out
those that fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import Dataset
from torchvision import transforms as T

from petl_bench.config import DataConfig
from petl_bench.cpus import loader_workers

from .cache import Cache
from .catalog import images_per_step
from .classes import subsample_classes
from .counts import warn_if_short
from .device_images import RandomResizedCropFlip, decode_on
from .holdout import as_read, draw_held_out_split, held_out
from .loading import EncodedBatch, EncodedFiles, ImageFiles, collate_encoded, collate_train, make_loader
from .manifest import read_manifest
from .records import Manifest, Record, Task
from .splits import draw_split, parse_shots, split_path, write_split
from .testsets import ImageEncoder, TaskTestSets


def train_transform(size: int, mean, std, scale_min: float):
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class MultiDomainDataModule(L.LightningDataModule):
    def __init__(
        self,
        cfg: DataConfig,
        train_transform,
        test_transform,
        out: str | Path = "results",
        gpu_train_transform: RandomResizedCropFlip | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.shots = parse_shots(cfg.dataset, cfg.split)  # fail on a bad split before any I/O
        self.train_transform, self.test_transform = train_transform, test_transform
        # The same augmentation on decoded tensors, for training on a GPU (None: CPU only).
        self.gpu_train_transform = gpu_train_transform
        # Where training images are decoded: None = on the GPU when training on one, else in the
        # loader workers. Tests set a CPU device to run the GPU path's code.
        self.decode_device: torch.device | None = None
        self.out = Path(out)
        self.cache = Cache.for_run(cfg.cache_dir, out, cfg.cache_gb)
        self.train_records: list[Record] = []
        self.val_records: list[Record] = []  # a fixed split's validation shots; none for a pool
        self.test_records: list[Record] = []
        self.split_file: Path | None = None
        # A leave-one-domain-out run's pooled source: the images of the domains not held out -> their domain
        self.source_domains: dict[str, str] = {}
        self.split_sha256: str | None = None
        self.unreadable: dict[str, str] = {}  # path -> reason, found after the manifest was read
        self.timings: dict[str, float] = {}  # seconds spent reading the manifest, drawing the split
        self.test_sources: dict[str, str] = {}  # task -> where its test batches came from
        # The frozen image tower as the run computes it, handed by the runner: test features are
        # cached. None: the test images go through the model.
        self.image_encoder: ImageEncoder | None = None

    @classmethod
    def for_backbone(cls, cfg: DataConfig, backbone, out: str | Path = "results") -> MultiDomainDataModule:
        """Transforms sized and normalised for the backbone's model."""
        pp, size = backbone.preprocess_cfg, backbone.image_size
        return cls(
            cfg,
            train_transform(size, pp.mean, pp.std, cfg.crop_scale_min),
            backbone.preprocess_val(),
            out,
            RandomResizedCropFlip(size, (cfg.crop_scale_min, 1.0), pp.mean, pp.std),
        )

    @cached_property
    def manifest(self) -> Manifest:
        start = time.perf_counter()
        manifest = read_manifest(self.cfg.dataset, self.cfg.root, self.cache)
        self.timings["manifest_s"] = round(time.perf_counter() - start, 3)
        for part in manifest.parts or (manifest,):
            warn_if_short(part.dataset, part)  # the dataset's counts are of all its classes
        manifest = subsample_classes(manifest, self.cfg.classes)  # before the split is drawn
        if self.cfg.holdout:
            manifest, self.source_domains = held_out(manifest, self.cfg.holdout)
        # data.template, where given, replaces the dataset's own: every task prompts with it.
        return manifest.with_template(self.cfg.template) if self.cfg.template else manifest

    @property
    def tasks(self) -> list[Task]:
        return self.manifest.tasks

    @property
    def batch_size(self) -> int:
        return images_per_step(self.cfg.dataset, self.cfg.batch_size)

    @property
    def workers(self) -> int:
        """Loader worker processes in all (data.num_workers; -1 follows the machine)."""
        return loader_workers(self.cfg.num_workers)

    @property
    def skipped_images(self) -> list[str]:
        """Every image of the root left out of this run: unreadable by header, by the split's
        check, or while testing."""
        return sorted({*self.manifest.skipped, *self.unreadable})

    @property
    def tested_records(self) -> list[Record]:
        """The test records less those that turned out undecodable while testing."""
        return [r for r in self.test_records if r.path not in self.unreadable]

    def setup(self, stage: str | None = None) -> None:
        if self.split_file is None:
            self._draw_split()
        if self.trainer is not None and not self.val_records:
            # No validation shots (a pool): no validation loop. Lightning would ask for the loaders
            # (whatever limit fast_dev_run set) and warn on none.
            self.trainer.limit_val_batches = 0

    def _draw_split(self) -> None:
        checks = self.manifest.checks
        start = time.perf_counter()
        unreadable = self._unreadable if checks else None
        if self.cfg.holdout:
            split = draw_held_out_split(self.manifest, self.source_domains, self.shots, self.cfg.seed, unreadable)
        else:
            split = draw_split(self.manifest, self.shots, self.cfg.seed, unreadable)
        self.train_records, self.val_records, self.test_records = split.train, split.val, split.test
        if checks:
            checks.save()
        cfg = self.cfg
        path = split_path(self.out, cfg.dataset, cfg.root, cfg.split, cfg.seed, cfg.classes, cfg.holdout)
        written = as_read(split, self.source_domains, cfg.holdout) if cfg.holdout else split  # each image's own domain
        self.split_sha256 = write_split(path, written)
        self.split_file = path
        self.timings["split_s"] = round(time.perf_counter() - start, 3)

    def _unreadable(self, records: list[Record]) -> set[str]:
        """Paths of `records` that cannot be decoded (each file decoded once, then remembered)."""
        checks = self.manifest.checks
        assert checks is not None  # `setup` asks only a manifest with checks
        errors = checks.verify([r.path for r in records])
        self.unreadable.update(errors)
        return set(errors)

    def _per_task(self, records: list[Record]) -> dict[str, list[Record]]:
        return {task.name: [r for r in records if r.domain == task.name] for task in self.tasks}

    # -- training ---------------------------------------------------------------------------------
    def _train_decode_device(self) -> torch.device | None:
        if self.gpu_train_transform is None:  # nothing augments decoded tensors: decoded in the workers
            return None
        if self.decode_device is not None or self.trainer is None:
            return self.decode_device
        device = self.trainer.strategy.root_device
        return device if device.type == "cuda" else None

    def train_dataloader(self) -> CombinedLoader:
        per_task = self._per_task(self.train_records)
        # The loaders run at once: they share the budget, the remainder going to the first ones.
        budget, n = self.workers, len(per_task)
        shares = [budget // n + (i < budget % n) for i in range(n)]
        on_device = self._train_decode_device() is not None
        loaders = {}
        dataset: Dataset
        collate: Callable[[list], EncodedBatch | tuple[torch.Tensor, torch.Tensor]]
        for (name, records), workers in zip(per_task.items(), shares, strict=True):
            if on_device:
                dataset, collate = EncodedFiles(self.manifest.root, records), collate_encoded
            else:
                dataset, collate = ImageFiles(self.manifest.root, records, self.train_transform), collate_train
            # Dassl's rule: drop a task's incomplete last batch only if the task fills a batch.
            drop_last = self.cfg.drop_last and len(records) >= self.batch_size
            # Workers started afresh each epoch take their seeds from the global RNG at the epoch's
            # start, so a resumed run draws the uninterrupted run's crops (checkpoints.py's contract).
            loaders[name] = make_loader(dataset, self.batch_size, workers, collate, shuffle=True, drop_last=drop_last)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """On the GPU path, decode and augment training images on the device (in the main
        process, drawing crops from the global RNG as the CPU transform does in its workers)."""
        if isinstance(batch, dict) and any(isinstance(b, EncodedBatch) for b in batch.values()):
            return {task: self._decode_train(b) for task, b in batch.items()}
        return batch

    def _decode_train(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        device, augment = self._train_decode_device(), self.gpu_train_transform
        assert device is not None and augment is not None  # encoded batches come only when both are there
        images = decode_on(batch.payloads, device)
        decoded = {i: image for i, image in enumerate(images) if image is not None}  # position -> image
        self.unreadable.update(batch.failed)
        self.unreadable.update({batch.paths[i]: "cannot be decoded" for i, image in enumerate(images) if image is None})
        return augment(list(decoded.values())), batch.labels[list(decoded)]

    # -- test -------------------------------------------------------------------------------------
    def test_sets(self, cached: bool = True) -> TaskTestSets:
        """Where the test batches come from (`testsets.py`); `cached=False`: every image decoded."""
        # A held-out domain's images alone key its cache entries, as the domain's do in a run of every
        # domain: the two runs share them.
        tested = self.manifest
        if self.source_domains:
            tested = replace(tested, records=[r for r in tested.records if r.path not in self.source_domains])
        return TaskTestSets(
            tested,
            self.cache if cached else None,
            self.test_transform,
            self.cfg.eval_batch_size,
            self.workers,
            self.image_encoder,
            self.unreadable,
            self.test_sources,
        )

    def test_dataloader(self) -> list:
        return self._evaluation_loaders(self.test_records, "test")

    def val_dataloader(self) -> list:
        """The validation shots of a fixed split, per task as the test's; none for a pool (the
        runner then turns validation off)."""
        return self._evaluation_loaders(self.val_records, "val") if self.val_records else []

    def _evaluation_loaders(self, records: list[Record], stage: str) -> list:
        """One loader per task of `records`, in task order; `stage`: test or val (its batch limit)."""
        # Caching takes a task's whole root: not for a smoke test of a few batches.
        whole = self.trainer is None or (
            # Lightning sets fast_dev_run from outside the class (trainer/setup.py), so Trainer does not declare it
            not self.trainer.fast_dev_run  # type: ignore[attr-defined]
            and getattr(self.trainer, f"limit_{stage}_batches") == 1.0
        )
        sets = self.test_sets(cached=whole)
        loaders = [sets.loader(name, task_records) for name, task_records in self._per_task(records).items()]
        if self.manifest.checks:
            self.manifest.checks.save()  # verdicts the caching found, for the next run's split
        return loaders
