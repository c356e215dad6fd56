"""Tip-Adapter-F (Zhang et al., ECCV 2022): zero-shot CLIP plus a cache of the training shots'
image features, whose keys are fine-tuned.

Trainable: the cache keys. For an image with normalised feature f, cache logits are
sum over entries j of exp(-beta (1 - f . k_j)) for the class of entry j (the one-hot values), and
the logits are zero-shot's (template "a photo of a {class}.") plus alpha times them. The keys are
held class-major, [classes, entries per class, d], so the values are implied and not stored.
`prepare` builds the cache: each shot's key is its image feature averaged over `augment_epochs`
passes of the training augmentation, L2-normalised; the keys go to `seed{K}/tip-adapter.pt` (the
resolved `state`) and `shots` is set to the split's. Only the logits change (`logits` hook); the
towers are untouched and the class text features computed once.
`tip-adapter-f` holds one cache per task (its own shots), `tip-adapter-f-mt` one cache of every
task's shots shared by all tasks (classes are shared: a shot of class c from any domain votes for c).
ViT-B/16, 65 classes, 6 shots (Office-Home 10%): 65 x 6 x 512 = 199,680 per task; four tasks, or the
shared cache of all four tasks' shots, 798,720; 12 shots (20%) 1,597,440. The paper's 16-shot
ImageNet cache on RN50 is 16,000 x 1,024 = 16.4 M.

Init: keys from the shots as above. `alpha = 0` gives exactly zero-shot's logits whatever the keys;
a module built without `state` has zero keys, whose cache logits are the same for every class, so
its predictions are zero-shot's.

Departures from the official code (main.py, utils.py): alpha and beta stay at their initial values
(their ImageNet config's 1.17 and 1.0) instead of being searched on a validation set, which a k-shot
split does not have; the cache's augmentation is the suite's training transform (their crop scale
is 0.5-1); keys train with the suite's SGD recipe, or with theirs (AdamW lr 1e-3, eps 1e-4, 20 epochs,
batch 256, each dataset's initial alpha) under `--recipe paper` (benchmarks/recipes/tip-adapter-f.yaml); zero-shot
logits use the model's logit scale (100 for OpenAI CLIP, their fixed factor).
"""

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from petl_bench.errors import UserError
from petl_bench.module import PetlModule
from petl_bench.prepared import load_state, save_state, set_state, shot_features, writes_state
from petl_bench.registry import register_method

from .configs import TipAdapterFConfig


@register_method("tip-adapter-f", TipAdapterFConfig)
class TipAdapterF(PetlModule):
    """Tip-Adapter-F: zero-shot plus a fine-tuned cache of the training shots' features, one per task."""

    shared = False
    text_frozen = True
    image_frozen = True  # the cache and its keys act on the frozen tower's features
    open_vocabulary = False  # a cache value per trained class
    per_class = "cache"
    text_depends_on_task = False

    def __init__(self, cfg: TipAdapterFConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        if cfg.shots < 1:  # not a range: a cache is built on a split, by `prepare`
            raise UserError(
                f"{self.method_name}: shots must be >= 1 (`prepare` sets it to the split's, "
                f"as petl-bench run does); got {cfg.shots}"
            )
        per_class = cfg.shots * len(self.tasks) // self.n_sets  # a cache holds the shots of the tasks sharing it
        self.cache_keys = self.class_rows(per_class, backbone.embed_dim)
        if cfg.state:
            load_state(self, cfg.state)

    @classmethod
    @writes_state
    def prepare(cls, run, backbone, data, work_dir):
        cfg = run.params
        features = shot_features(backbone, data, data.train_transform, passes=cfg.augment_epochs)
        caches = [
            class_major(*features[task.name], len(task.classnames), data.shots, cls.method_name, task.name)
            for task in data.tasks
        ]
        keys = [F.normalize(key, dim=-1) for key in ([torch.cat(caches, dim=1)] if cls.shared else caches)]
        path = save_state(Path(work_dir) / "tip-adapter.pt", set_state("cache_keys", keys))
        sets = cls.tasks_by_set(data.tasks)
        entries = {name: key.shape[0] * key.shape[1] for name, key in zip(sets, keys, strict=True)}
        return dataclasses.replace(cfg, shots=data.shots, state=path), {"tip_adapter": {"entries_per_cache": entries}}

    def logits(self, image_feat, text_feat, task):
        zero_shot = super().logits(image_feat, text_feat, task)
        keys = self.cache_keys[self.set_index(task)]  # [classes, k, d]
        affinity = F.normalize(image_feat, dim=-1) @ keys.flatten(0, 1).t()  # [batch, classes * k]
        votes = torch.exp(-self.cfg.beta * (1.0 - affinity)).view(len(image_feat), *keys.shape[:2])
        return zero_shot + self.cfg.alpha * votes.sum(-1)


def class_major(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, shots: int, method: str, task: str
) -> torch.Tensor:
    """A task's shot features [n, d] as [classes, shots, d], class by class."""
    rows = []
    for label in range(n_classes):
        index = (labels == label).nonzero().flatten()
        if len(index) != shots:
            raise UserError(
                f"{method}: task {task!r} has {len(index)} training images of class {label}, "
                f"its cache needs {shots} of every class"
            )
        rows.append(features[index])
    return torch.stack(rows)


@register_method("tip-adapter-f-mt", TipAdapterFConfig)
class TipAdapterFMT(TipAdapterF):
    """Tip-Adapter-F-MT: zero-shot plus one fine-tuned cache of every task's shots, shared by all tasks."""

    shared = True
