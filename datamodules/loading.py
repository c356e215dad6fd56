"""Datasets and batches the data module's loaders are made of.

- `ImageFiles`: decodes files (PIL, `to_rgb`) and applies a transform; an image that cannot be
  decoded comes out as None with the reason, and the collate functions leave it out of the batch.
- `EncodedFiles` / `EncodedBatch`: training images for the GPU path, still encoded.
- `StoredImages`: batches of rows of a cached uint8 image entry, turned into the test transform's
  tensors exactly (`split_transform` says how).
- `FeatureBatches`: test batches of cached image features, `{"image_features", "labels"}`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from petl_bench.guard import quiet_worker, stops_held

from .device_images import read_encoded
from .images import open_rgb, reason
from .records import Record


def init_worker(worker_id: int) -> None:
    """The start of each worker of the data module's loaders: stops are the main process's
    (`guard.quiet_worker`); then the seeding Lightning gives a loader without an init function of
    its own (`seed_everything(workers=True)`), so that the crops stay what they were."""
    quiet_worker()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


class QuietLoader(DataLoader):
    """A DataLoader whose workers start with the stop signals held until their init function
    (`quiet_worker`) takes them (`guard.stops_held`): a Ctrl-C or SIGTERM that reached a worker
    between its fork and that function killed it, and the stopped run printed the loader's
    traceback instead of its one line."""

    def __iter__(self):
        with stops_held():  # the workers of a new pass are forked here
            return super().__iter__()


def make_loader(
    dataset, batch_size: int | None, workers: int, collate, shuffle: bool = False, drop_last: bool = False
) -> DataLoader:
    """A DataLoader as every loader of the data module is made: pinned memory on a GPU machine and
    `init_worker` in each worker. Only a shuffled (training) loader draws from the global RNG: an
    in-order one has its own generator, so that validating (or caching) between epochs leaves the
    random numbers the next epoch's training draws as they were."""
    return QuietLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=None if shuffle else torch.Generator(),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=init_worker,
    )


# -- decoding files --------------------------------------------------------------------------------
class ImageFiles(Dataset):
    """(transform(image), label, None), or (None, label, reason) for a file that cannot be decoded."""

    def __init__(self, root: Path, records: list[Record], transform):
        self.root, self.records, self.transform = root, records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            return self.transform(open_rgb(self.root / record.path)), record.label, None
        except Exception as err:  # a file that cannot be decoded is skipped, never fatal
            return None, record.label, reason(err)


def collate_images(samples) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """(images, labels) of the decodable samples, and (position, reason) of the others."""
    ok = [(torch.as_tensor(image), label) for image, label, _ in samples if image is not None]
    failed = [(i, error) for i, (image, _, error) in enumerate(samples) if image is None]
    if not ok:
        return torch.empty(0), torch.empty(0, dtype=torch.long), failed
    return torch.stack([image for image, _ in ok]), torch.tensor([label for _, label in ok]), failed


def collate_train(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batches: an image that fails to decode (only if it changed since the split drew
    and checked it) is left out, with a warning."""
    images, labels, failed = collate_images(samples)
    for _, error in failed:
        warnings.warn(f"skipped a training image that cannot be decoded: {error}", stacklevel=2)
    return images, labels


def named_batches(
    loader, records: list[Record], unreadable: dict[str, str]
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(positions in `records`, images, labels) from an in-order loader of `collate_images`
    batches; undecodable records go to `unreadable` (path -> reason)."""
    offset = 0
    for images, labels, failed in loader:
        bad = {position for position, _ in failed}
        for position, error in failed:
            unreadable[records[offset + position].path] = error
        size = len(labels) + len(failed)
        yield [offset + i for i in range(size) if i not in bad], images, labels
        offset += size


class SkipUnreadable:
    """A test loader over decoded files whose undecodable images are left out of the batches and
    named in `unreadable`."""

    def __init__(self, loader, records: list[Record], unreadable: dict[str, str]):
        self.loader, self.records, self.unreadable = loader, records, unreadable

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for _, images, labels in named_batches(self.loader, self.records, self.unreadable):
            if len(labels):
                yield images, labels


# -- training images for the GPU ---------------------------------------------------------------------
class EncodedBatch(NamedTuple):
    payloads: list[torch.Tensor]  # JPEG bytes, or decoded [3, H, W] uint8 (other formats)
    labels: torch.Tensor
    paths: list[str]  # of the payloads, to name any that fails to decode
    failed: dict[str, str]  # path -> reason, for files that could not even be read


class EncodedFiles(Dataset):
    def __init__(self, root: Path, records: list[Record]):
        self.root, self.records = root, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            return read_encoded(self.root / record.path), record.label, record.path, None
        except Exception as err:  # skipped, never fatal
            return None, record.label, record.path, reason(err)


def collate_encoded(samples) -> EncodedBatch:
    ok = [s for s in samples if s[0] is not None]
    return EncodedBatch(
        [s[0] for s in ok],
        torch.tensor([s[1] for s in ok], dtype=torch.long),
        [s[2] for s in ok],
        {s[2]: s[3] for s in samples if s[0] is None},
    )


# -- cached test images ------------------------------------------------------------------------------
SplitTransform = tuple[T.Compose, tuple, tuple]  # (the PIL steps, mean, std)


def split_transform(transform) -> SplitTransform | None:
    """A test transform `Compose([..PIL steps.., ToTensor, Normalize])` as (the PIL steps, mean,
    std): the PIL steps' uint8 output can be stored, and `normalize` turns it into exactly the
    tensor the whole transform makes. None for a transform of another shape (no caching)."""
    steps = getattr(transform, "transforms", None)
    if not steps or len(steps) < 2:
        return None
    *pil_steps, to_tensor, normalize = steps
    if not isinstance(to_tensor, T.ToTensor) or not isinstance(normalize, T.Normalize):
        return None
    return T.Compose([*pil_steps, np.array]), tuple(normalize.mean), tuple(normalize.std)


def transform_key(transform) -> str:
    """A stable description of a transform (reprs, and names for plain functions)."""
    steps = getattr(transform, "transforms", [transform])
    return "|".join(getattr(step, "__qualname__", None) or repr(step) for step in steps)


def normalize(rows: np.ndarray | torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] as ToTensor then Normalize compute it, bit for bit."""
    batch = torch.as_tensor(np.asarray(rows)).permute(0, 3, 1, 2).to(torch.float32).div(255)
    return batch.sub(torch.tensor(mean).view(1, -1, 1, 1)).div(torch.tensor(std).view(1, -1, 1, 1))


class StoredImages(Dataset):
    """Batch k = (images, labels) of rows `rows[k*b:(k+1)*b]` of a cached image entry. The entry
    is opened in each process that reads it (loader workers included), never copied."""

    def __init__(self, path: Path, rows: list[int], labels: list[int], mean, std, batch_size: int):
        self.path, self.rows, self.labels = path, rows, labels
        self.mean, self.std, self.batch_size = mean, std, batch_size
        self._array: np.ndarray | None = None  # opened on first use, in the process that reads it

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __getitem__(self, index: int):
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return (
            normalize(self._array[self.rows[part]], self.mean, self.std),
            torch.tensor(self.labels[part], dtype=torch.long),
        )

    def __getstate__(self):
        return {**self.__dict__, "_array": None}


class FeatureBatches:
    """Test batches of cached image features: {"image_features": [b, D], "labels": [b]}."""

    def __init__(
        self, features: np.ndarray, rows: list[int], labels: list[int], dtype: torch.dtype, batch_size: int = 8192
    ):
        self.features, self.rows, self.labels = features, rows, labels
        self.dtype, self.batch_size = dtype, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.rows), self.batch_size):
            rows = self.rows[start : start + self.batch_size]
            yield {
                "image_features": torch.from_numpy(np.asarray(self.features[rows])).to(self.dtype),
                "labels": torch.tensor(self.labels[start : start + self.batch_size], dtype=torch.long),
            }
