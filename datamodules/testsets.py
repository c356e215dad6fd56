"""Each task's test batches from the first source that is there: cached image features, else cached
images, else the image files decoded.

- Features: for a frozen image tower that the runner handed to the data module (an `ImageEncoder`,
  e.g. `petl_bench.frozen_features.FrozenImageEncoder`), a domain's features computed once and
  kept in the cache under the images' key plus the encoder's.
- Images: a domain's images after the test transform's PIL steps, decoded once per root and
  resolution and kept as uint8 (`loading.StoredImages` normalises them as the transform would).
- Decoding: the files through the whole transform, skipping those that fail (`SkipUnreadable`).

Images that fail to decode are named in the `unreadable` dict the caller passes; where each task's
batches came from, in `sources`. Imports the loaders, the cache and the records; nothing of the
model (the encoder is duck-typed by `ImageEncoder`) and no Lightning module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from .cache import Cache, Entry, digest
from .images import DECODED_OK
from .loading import (
    FeatureBatches,
    ImageFiles,
    SkipUnreadable,
    SplitTransform,
    StoredImages,
    collate_images,
    make_loader,
    named_batches,
    split_transform,
    transform_key,
)
from .records import Manifest, Record

FEATURE_FILL_BATCH = 256  # images per forward pass when a domain's features are cached


class ImageEncoder(Protocol):
    """A frozen image tower as the run computes it."""

    dim: int  # feature width

    @property
    def key(self) -> str:
        """Everything the features depend on besides the images (model, weights, precision, device)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features [batch, dim] of normalised images, on the CPU."""


def _entry_file(array: np.memmap) -> Path:
    """The file a cached array is mapped from, for loader workers to map it again."""
    assert array.filename is not None  # `Cache.load` maps every entry from its file
    return Path(array.filename)


class TaskTestSets:
    """Test loaders of one manifest's tasks. `cache` None: every image decoded; `encoder` None: no
    cached features (test images go through the model)."""

    def __init__(
        self,
        manifest: Manifest,
        cache: Cache | None,
        transform,
        batch_size: int,
        workers: int,
        encoder: ImageEncoder | None,
        unreadable: dict[str, str],
        sources: dict[str, str],
    ):
        self.manifest, self.cache, self.transform = manifest, cache, transform
        self.batch_size, self.workers, self.encoder = batch_size, workers, encoder
        self.unreadable, self.sources = unreadable, sources

    def loader(self, domain: str, records: list[Record]):
        """Batches of `records` (of `domain`): cached features, else cached images, else decoding."""
        entry = self._entry_key(domain)
        if entry is not None:
            key, split, domain_records = entry
            features = self._features(domain, key, split, domain_records) if self.encoder else None
            if features is not None:
                array, meta = features
                rows, labels = self._rows(meta, records)
                dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
                return FeatureBatches(array, rows, labels, dtype)
            stored = self._stored_images(domain, key, split, domain_records)
            if stored is not None:
                array, meta = stored
                rows, labels = self._rows(meta, records)
                return make_loader(
                    StoredImages(_entry_file(array), rows, labels, *split[1:], self.batch_size),
                    None,
                    self.workers,
                    None,
                )
        self.sources[domain] = "decoded"
        loader = make_loader(
            ImageFiles(self.manifest.root, records, self.transform), self.batch_size, self.workers, collate_images
        )
        return SkipUnreadable(loader, records, self.unreadable)

    def _entry_key(self, domain: str) -> tuple[str, SplitTransform, list[Record]] | None:
        """(cache key of the domain's test images, the split test transform, the domain's
        records), or None when they cannot be cached."""
        split = split_transform(self.transform)
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

    def _stored_images(
        self, domain: str, key: str, split: SplitTransform, domain_records: list[Record]
    ) -> Entry | None:
        """The domain's images after the test transform's PIL steps, cached (filled now if absent)."""
        assert self.cache is not None  # an entry key is made only with a cache (`_entry_key`)
        found = self.cache.load("images", key)
        if found is None:
            with self.cache.lock("images", key):
                found = self.cache.load("images", key)  # a concurrent run may have filled it
                shape = None if found else self._probe_shape(split[0], domain_records)
                if shape is not None:
                    found = self.cache.store(
                        "images",
                        key,
                        (len(domain_records), *shape),
                        np.uint8,
                        lambda array: self._fill_images(array, split[0], domain_records),
                    )
                    self.sources[domain] = "images (cached now)" if found else "decoded"
        else:
            self.sources[domain] = "images (cached)"
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
        loader = make_loader(
            ImageFiles(self.manifest.root, records, pil_steps), self.batch_size, self.workers, collate_images
        )
        for positions, images, _ in tqdm(
            named_batches(loader, records, failed),
            total=len(loader),
            desc="caching test images",
            unit="batch",
            disable=None,
            leave=False,
        ):
            if len(positions):
                if images.shape[1:] != array.shape[1:]:
                    return None  # a transform without a fixed output size: not cacheable
                array[positions] = images.numpy()
        return {"paths": [r.path for r in records], "failed": failed}

    def _remember_verdicts(self, meta: dict) -> None:
        checks, failed = self.manifest.checks, meta["failed"]
        assert checks is not None  # an entry key is made only with checks (`_entry_key`)
        for path in meta["paths"]:
            checks.mark(path, failed.get(path, DECODED_OK))

    def _features(
        self, domain: str, images_key: str, split: SplitTransform, domain_records: list[Record]
    ) -> Entry | None:
        """The domain's image features from the frozen encoder, cached (computed now if absent)."""
        assert self.cache is not None and self.encoder is not None  # asked only with both (`loader`)
        key = digest(images_key, self.encoder.key)
        found = self.cache.load("features", key)
        if found is not None:
            self.sources[domain] = "features (cached)"
            return found
        with self.cache.lock("features", key):
            found = self.cache.load("features", key)
            if found is None:
                stored = self._stored_images(domain, images_key, split, domain_records)
                found = self.cache.store(
                    "features",
                    key,
                    (len(domain_records), self.encoder.dim),
                    np.float32,
                    lambda array: self._fill_features(array, stored, split, domain_records),
                )
                self.sources[domain] = "features (cached now)"
        return found

    def _fill_features(
        self,
        array: np.ndarray,
        stored: Entry | None,
        split: SplitTransform,
        records: list[Record],
    ) -> dict:
        assert self.encoder is not None  # features are filled only with an encoder (`_features`)
        batches: Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]  # (rows, images, labels)
        if stored is not None:  # from the cached images
            path, meta = _entry_file(stored[0]), stored[1]
            rows = [i for i, p in enumerate(meta["paths"]) if p not in meta["failed"]]
            loader = make_loader(
                StoredImages(path, rows, rows, *split[1:], FEATURE_FILL_BATCH), None, self.workers, None
            )
            batches = ((labels.tolist(), images, labels) for images, labels in loader)
            failed = dict(meta["failed"])
        else:  # decoding the files
            failed = {}
            loader = make_loader(
                ImageFiles(self.manifest.root, records, self.transform),
                FEATURE_FILL_BATCH,
                self.workers,
                collate_images,
            )
            batches = named_batches(loader, records, failed)
        dtype = None
        for rows, images, _ in tqdm(
            batches, total=len(loader), desc="caching image features", unit="batch", disable=None, leave=False
        ):
            if len(rows):
                features = self.encoder.encode(images)
                dtype = str(features.dtype)
                array[rows] = features.float().numpy()
        return {"paths": [r.path for r in records], "failed": failed, "dtype": dtype or "torch.float32"}
