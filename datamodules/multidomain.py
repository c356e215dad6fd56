"""One LightningDataModule for every multi-domain dataset: one task per domain.

Training: one loader per task, combined (`CombinedLoader`, max_size_cycle) so that every step sees a
batch of every task and an epoch is one pass over the largest task; the worker budget is shared
among them. On a GPU the loaders only read JPEG bytes: `on_before_batch_transfer` decodes them on
the GPU and does the random crop and flip there (`images.RandomResizedCropFlip`).
Test: one loader per task, in task order (`dataloader_idx` = task index), with open_clip's
validation transform for the model, run one after another, each with the whole worker budget.
With a cache (`datamodules/cache.py`), a domain's images are decoded and resized once per root and
resolution, and for a module whose image tower nothing trains (`frozen_image_encoder()`), its test
batches are cached image features.

Images that cannot be decoded are skipped at every stage and named in `skipped_images`: the split
decodes the images it draws for training and draws again where one fails, the test leaves out
those that fail.
"""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm import tqdm

from petl_bench.config import DataConfig
from petl_bench.hardware import loader_workers

from .cache import Cache, digest
from .catalog import PAPER_BATCH_SIZE
from .counts import warn_if_short
from .images import DECODED_OK, RandomResizedCropFlip, decode_on
from .loading import (
    EncodedBatch,
    EncodedFiles,
    FeatureBatches,
    ImageFiles,
    SkipUnreadable,
    StoredImages,
    collate_encoded,
    collate_images,
    collate_train,
    init_worker,
    named_batches,
    split_transform,
    transform_key,
)
from .records import Manifest, Record, Task, read_manifest
from .splits import draw_split, parse_shots, split_path, write_split

FEATURE_FILL_BATCH = 256  # images per forward pass when a domain's features are cached


def train_transform(size: int, mean, std, scale_min: float):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class MultiDomainDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, train_transform, test_transform, out: str | Path = "results",
                 gpu_train_transform: RandomResizedCropFlip | None = None):
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
        self.test_records: list[Record] = []
        self.split_file: Path | None = None
        self.split_sha256: str | None = None
        self.unreadable: dict[str, str] = {}  # path -> reason, found after the manifest was read
        self.timings: dict[str, float] = {}  # seconds spent reading the manifest, drawing the split
        self.test_sources: dict[str, str] = {}  # task -> where its test batches came from

    @classmethod
    def for_backbone(cls, cfg: DataConfig, backbone, out: str | Path = "results") -> "MultiDomainDataModule":
        """Transforms sized and normalised for the backbone's model."""
        pp, size = backbone.preprocess_cfg, backbone.image_size
        return cls(cfg, train_transform(size, pp.mean, pp.std, cfg.crop_scale_min), backbone.preprocess_val(),
                   out, RandomResizedCropFlip(size, (cfg.crop_scale_min, 1.0), pp.mean, pp.std))

    @cached_property
    def manifest(self) -> Manifest:
        start = time.perf_counter()
        manifest = read_manifest(self.cfg.dataset, self.cfg.root, self.cache)
        self.timings["manifest_s"] = round(time.perf_counter() - start, 3)
        warn_if_short(self.cfg.dataset, manifest)
        return manifest

    @property
    def tasks(self) -> list[Task]:
        return self.manifest.tasks

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size or PAPER_BATCH_SIZE.get(self.cfg.dataset, 16)

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
        if self.split_file is not None:
            return
        checks = self.manifest.checks
        start = time.perf_counter()
        self.train_records, self.test_records = draw_split(
            self.manifest, self.shots, self.cfg.seed, self._unreadable if checks else None)
        if checks:
            checks.save()
        path = split_path(self.out, self.cfg.dataset, self.cfg.root, self.cfg.split, self.cfg.seed)
        self.split_sha256 = write_split(path, self.train_records, self.test_records)
        self.split_file = path
        self.timings["split_s"] = round(time.perf_counter() - start, 3)

    def _unreadable(self, records: list[Record]) -> set[str]:
        """Paths of `records` that cannot be decoded (each file decoded once, then remembered)."""
        errors = self.manifest.checks.verify([r.path for r in records])
        self.unreadable.update(errors)
        return set(errors)

    def _per_task(self, records: list[Record]) -> dict[str, list[Record]]:
        return {task.name: [r for r in records if r.domain == task.name] for task in self.tasks}

    def _loader(self, dataset, batch_size: int | None, workers: int, collate, shuffle: bool = False,
                drop_last: bool = False) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                          worker_init_fn=init_worker)

    # -- training ---------------------------------------------------------------------------------
    def _train_decode_device(self) -> torch.device | None:
        if self.decode_device is not None or self.gpu_train_transform is None or self.trainer is None:
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
        for (name, records), workers in zip(per_task.items(), shares):
            if on_device:
                dataset, collate = EncodedFiles(self.manifest.root, records), collate_encoded
            else:
                dataset, collate = ImageFiles(self.manifest.root, records, self.train_transform), collate_train
            # Dassl's rule: drop a task's incomplete last batch only if the task fills a batch.
            drop_last = self.cfg.drop_last and len(records) >= self.batch_size
            # Workers started afresh each epoch take their seeds from the global RNG at the epoch's
            # start, so a resumed run draws the uninterrupted run's crops (checkpoints.py's contract).
            loaders[name] = self._loader(dataset, self.batch_size, workers, collate, shuffle=True, drop_last=drop_last)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """On the GPU path, decode and augment training images on the device (in the main
        process, drawing crops from the global RNG as the CPU transform does in its workers)."""
        if isinstance(batch, dict) and any(isinstance(b, EncodedBatch) for b in batch.values()):
            return {task: self._decode_train(b) for task, b in batch.items()}
        return batch

    def _decode_train(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        images = decode_on(batch.payloads, self._train_decode_device())
        keep = [i for i, image in enumerate(images) if image is not None]
        self.unreadable.update(batch.failed)
        self.unreadable.update({batch.paths[i]: "cannot be decoded" for i, image in enumerate(images)
                                if image is None})
        return self.gpu_train_transform([images[i] for i in keep]), batch.labels[keep]

    # -- test -------------------------------------------------------------------------------------
    def test_dataloader(self) -> list:
        module = self.trainer.lightning_module if self.trainer is not None else None
        encoder = module.frozen_image_encoder() if hasattr(module, "frozen_image_encoder") else None
        # Caching takes the whole test set: not for a smoke test of a few batches.
        whole = self.trainer is None or (not self.trainer.fast_dev_run and self.trainer.limit_test_batches == 1.0)
        loaders = [self._test_loader(name, records, encoder, whole)
                   for name, records in self._per_task(self.test_records).items()]
        if self.manifest.checks:
            self.manifest.checks.save()  # verdicts the caching found, for the next run's split
        return loaders

    def _test_loader(self, domain: str, records: list[Record], encoder, cache: bool = True):
        """Cached features, else cached images, else decoding: the first that is available."""
        entry = self._entry_key(domain) if cache else None
        if entry is not None:
            key, split, domain_records = entry
            features = self._features(domain, key, split, domain_records, encoder) if encoder else None
            if features is not None:
                array, meta = features
                rows, labels = self._rows(meta, records)
                dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
                return FeatureBatches(array, rows, labels, dtype)
            stored = self._stored_images(domain, key, split, domain_records)
            if stored is not None:
                array, meta = stored
                rows, labels = self._rows(meta, records)
                return self._loader(StoredImages(Path(array.filename), rows, labels, *split[1:],
                                                 self.cfg.eval_batch_size), None, self.workers, None)
        self.test_sources[domain] = "decoded"
        loader = self._loader(ImageFiles(self.manifest.root, records, self.test_transform),
                              self.cfg.eval_batch_size, self.workers, collate_images)
        return SkipUnreadable(loader, records, self.unreadable)

    def _entry_key(self, domain: str):
        """(cache key of the domain's test images, the split test transform, the domain's
        records), or None when they cannot be cached."""
        split = split_transform(self.test_transform)
        checks = self.manifest.checks
        if self.cache is None or split is None or checks is None:
            return None
        domain_records = [r for r in self.manifest.records if r.domain == domain]
        # Every file the scan saw in the domain, readable or not: a verdict learnt later does not
        # change the key (the files' paths and stats do: images.Stat).
        files = sorted({*(r.path for r in domain_records), *self.manifest.skipped})
        return digest(domain, checks.fingerprint(files), transform_key(split[0])), split, domain_records

    def _rows(self, meta: dict, records: list[Record]) -> tuple[list[int], list[int]]:
        """Rows of `records` in a cache entry, leaving out (and naming) those that failed to decode."""
        row_of = {path: i for i, path in enumerate(meta["paths"])}
        failed = meta["failed"]
        self.unreadable.update({r.path: failed[r.path] for r in records if r.path in failed})
        kept = [r for r in records if r.path not in failed]
        return [row_of[r.path] for r in kept], [r.label for r in kept]

    def _stored_images(self, domain: str, key: str, split, domain_records: list[Record]):
        """The domain's images after the test transform's PIL steps, cached (filled now if absent)."""
        found = self.cache.load("images", key)
        if found is None:
            with self.cache.lock("images", key):
                found = self.cache.load("images", key)  # a concurrent run may have filled it
                shape = None if found else self._probe_shape(split[0], domain_records)
                if shape is not None:
                    found = self.cache.store("images", key, (len(domain_records), *shape), np.uint8,
                                             lambda array: self._fill_images(array, split[0], domain_records))
                    self.test_sources[domain] = "images (cached now)" if found else "decoded"
        else:
            self.test_sources[domain] = "images (cached)"
        if found is not None:
            self._remember_verdicts(found[1])
        return found

    def _probe_shape(self, pil_steps, records: list[Record]) -> tuple[int, ...] | None:
        for record in records[:20]:
            loaded = ImageFiles(self.manifest.root, [record], pil_steps)[0][0]
            if loaded is not None:
                return loaded.shape
        return None

    def _fill_images(self, array: np.ndarray, pil_steps, records: list[Record]) -> dict | None:
        failed: dict[str, str] = {}
        loader = self._loader(ImageFiles(self.manifest.root, records, pil_steps), self.cfg.eval_batch_size,
                              self.workers, collate_images)
        for positions, images, _ in tqdm(named_batches(loader, records, failed), total=len(loader),
                                         desc="caching test images", unit="batch", disable=None, leave=False):
            if len(positions):
                if images.shape[1:] != array.shape[1:]:
                    return None  # a transform without a fixed output size: not cacheable
                array[positions] = images.numpy()
        return {"paths": [r.path for r in records], "failed": failed}

    def _remember_verdicts(self, meta: dict) -> None:
        checks, failed = self.manifest.checks, meta["failed"]
        for path in meta["paths"]:
            checks.mark(path, failed.get(path, DECODED_OK))

    def _features(self, domain: str, images_key: str, split, domain_records: list[Record], encoder):
        """The domain's image features from the frozen encoder, cached (computed now if absent)."""
        key = digest(images_key, encoder.key)
        found = self.cache.load("features", key)
        if found is not None:
            self.test_sources[domain] = "features (cached)"
            return found
        with self.cache.lock("features", key):
            found = self.cache.load("features", key)
            if found is None:
                stored = self._stored_images(domain, images_key, split, domain_records)
                found = self.cache.store("features", key, (len(domain_records), encoder.dim), np.float32,
                                         lambda array: self._fill_features(array, encoder, stored, split,
                                                                           domain_records))
                self.test_sources[domain] = "features (cached now)"
        return found

    def _fill_features(self, array: np.ndarray, encoder, stored, split, records: list[Record]) -> dict:
        if stored is not None:  # from the cached images
            path, meta = Path(stored[0].filename), stored[1]
            rows = [i for i, p in enumerate(meta["paths"]) if p not in meta["failed"]]
            loader = self._loader(StoredImages(path, rows, rows, *split[1:], FEATURE_FILL_BATCH), None,
                                  self.workers, None)
            batches = ((labels.tolist(), images, labels) for images, labels in loader)
            failed = dict(meta["failed"])
        else:  # decoding the files
            failed = {}
            loader = self._loader(ImageFiles(self.manifest.root, records, self.test_transform),
                                  FEATURE_FILL_BATCH, self.workers, collate_images)
            batches = named_batches(loader, records, failed)
        dtype = None
        for rows, images, _ in tqdm(batches, total=len(loader), desc="caching image features", unit="batch",
                                    disable=None, leave=False):
            if len(rows):
                features = encoder.encode(images)
                dtype = str(features.dtype)
                array[rows] = features.float().numpy()
        return {"paths": [r.path for r in records], "failed": failed, "dtype": dtype or "torch.float32"}
