"""One LightningDataModule for every multi-domain dataset: one task per domain.

Training: one loader per task, combined (`CombinedLoader`, max_size_cycle) so that every step sees a
batch of every task and an epoch is one pass over the largest task. Test: one loader per task, in
task order (`dataloader_idx` = task index), with open_clip's validation transform for the model.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from petl_bench.config import DataConfig

from .counts import warn_if_short
from .records import Manifest, Record, Task, read_manifest
from .splits import draw_split, parse_shots, split_path, write_split

# Images per task per step, as in the paper.
PAPER_BATCH_SIZE = {"officehome": 16, "minidomainnet": 4}


class ImageRecords(Dataset):
    def __init__(self, root: Path, records: list[Record], transform):
        self.root, self.records, self.transform = root, records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        with Image.open(self.root / record.path) as image:
            return self.transform(image.convert("RGB")), record.label


def train_transform(size: int, mean, std, scale_min: float):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


class MultiDomainDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, train_transform, test_transform, out: str | Path = "results"):
        super().__init__()
        self.cfg = cfg
        self.shots = parse_shots(cfg.dataset, cfg.split)  # fail on a bad split before any I/O
        self.train_transform, self.test_transform = train_transform, test_transform
        self.out = Path(out)
        self.train_records: list[Record] = []
        self.test_records: list[Record] = []
        self.split_file: Path | None = None
        self.split_sha256: str | None = None

    @classmethod
    def for_backbone(cls, cfg: DataConfig, backbone, out: str | Path = "results") -> "MultiDomainDataModule":
        """Transforms sized and normalised for the backbone's model."""
        pp = backbone.preprocess_cfg
        return cls(cfg, train_transform(backbone.image_size, pp.mean, pp.std, cfg.crop_scale_min),
                   backbone.preprocess_val(), out)

    @cached_property
    def manifest(self) -> Manifest:
        manifest = read_manifest(self.cfg.dataset, self.cfg.root)
        warn_if_short(self.cfg.dataset, manifest)
        return manifest

    @property
    def tasks(self) -> list[Task]:
        return self.manifest.tasks

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size or PAPER_BATCH_SIZE.get(self.cfg.dataset, 16)

    def setup(self, stage: str | None = None) -> None:
        if self.split_file is not None:
            return
        self.train_records, self.test_records = draw_split(self.manifest, self.shots, self.cfg.seed)
        path = split_path(self.out, self.cfg.dataset, self.cfg.split, self.cfg.seed)
        self.split_sha256 = write_split(path, self.train_records, self.test_records)
        self.split_file = path

    def _loader(self, records: list[Record], transform, batch_size: int, shuffle: bool,
                drop_last: bool = False) -> DataLoader:
        # One budget for all per-task loaders: every worker process imports torch, and N workers
        # for each of four loaders would swamp a small machine.
        budget = min(self.cfg.num_workers, os.cpu_count() or 1)
        workers = budget // len(self.tasks)
        return DataLoader(ImageRecords(self.manifest.root, records, transform), batch_size=batch_size,
                          shuffle=shuffle, num_workers=workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=workers > 0, drop_last=drop_last)

    def _per_task(self, records: list[Record]) -> dict[str, list[Record]]:
        return {task.name: [r for r in records if r.domain == task.name] for task in self.tasks}

    def train_dataloader(self) -> CombinedLoader:
        # Dassl's rule: drop a task's incomplete last batch only if the task fills a batch.
        loaders = {name: self._loader(records, self.train_transform, self.batch_size, shuffle=True,
                                      drop_last=self.cfg.drop_last and len(records) >= self.batch_size)
                   for name, records in self._per_task(self.train_records).items()}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(records, self.test_transform, self.cfg.eval_batch_size, shuffle=False)
                for records in self._per_task(self.test_records).values()]
