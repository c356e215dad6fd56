"""Contrastive pre-training of the tiny CLIP on synthetic images, for the demo and learning tests.

Each image is rendered in a random style (attributes noisy, blurry, grey, striped, outlined, each
drawn on its own) that no benchmark domain uses as such, and captioned with its class and its
style's words ("a noisy drawing of a desk lamp."). Zero-shot accuracy on the benchmark domains is
well above chance but far from perfect: on a held-out synthetic set (65 classes) 39.2 % after the
2,000 steps `data tiny-clip` takes by default, 29.6 % after 700, while class means of 6 image
features per class reach 67.7 % (59.8 % after 700): the image tower knows more than the text tower
says, and the longer pre-training is what lets prompts recover some of it (benchmarks/demo.yaml).
The style words do not help there: "a noisy blurry picture of a {}." reaches 34.5 % after 2,000 steps.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .backbone import TINY, TINY_CONFIG, ClipBackbone
from .datamodules.records import Manifest
from .datamodules.synth import pretrain_style, render
from .files import atomic_path


def _pretrain_pairs(backbone: ClipBackbone, classnames: list[str], per_class: int, seed: int):
    """Images [classes, per_class, 3, H, W] (model's validation transform) and their captions'
    tokens [classes, per_class, context], each caption naming the class and its image's style."""
    rng, transform = random.Random(seed), backbone.preprocess_val()
    images, captions = [], []
    for label, name in enumerate(classnames):
        styled = [pretrain_style(rng) for _ in range(per_class)]
        images.append(torch.stack([transform(render(label, style, rng)) for style, _ in styled]))
        captions.append(backbone.tokenize([f"{words} {name}." for _, words in styled]))
    return torch.stack(images), torch.stack(captions)


def pretrain(
    manifest: Manifest, steps: int, batch: int = 64, lr: float = 1e-3, per_class: int = 32, seed: int = 0
) -> ClipBackbone:
    """Train the tiny CLIP from random init for `steps` steps (`data tiny-clip --steps`: its default is the
    one step count); return it (frozen again, in eval mode)."""
    threads = torch.get_num_threads()
    # Its matrices are so small that a second thread costs more than it saves: 1 s of CPU a step
    # with two threads on a busy 2-core machine, 0.1 s with one.
    torch.set_num_threads(1)
    try:
        return _pretrain(manifest, steps, batch, lr, per_class, seed)
    finally:
        torch.set_num_threads(threads)


def _pretrain(manifest: Manifest, steps: int, batch: int, lr: float, per_class: int, seed: int) -> ClipBackbone:
    torch.manual_seed(seed)
    backbone = ClipBackbone.from_config(TINY_CONFIG, TINY)
    model = backbone.model
    n_classes = len(manifest.classnames)
    images, captions = _pretrain_pairs(backbone, manifest.classnames, per_class, seed)
    full_embedding = model.token_embedding
    model.token_embedding, captions, used = _used_rows(full_embedding, captions)
    model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    # Each class appears twice per batch, in two styles: captions must then tell styles apart,
    # so the text tower learns what style words mean and a prompt can describe a domain's look.
    width = min(batch // 2, n_classes)
    for _ in tqdm(range(steps), desc="tiny-clip pre-training", unit="step"):
        labels = torch.randperm(n_classes, generator=generator)[:width].repeat(2)
        first = torch.randint(per_class, (width,), generator=generator)
        second = (first + torch.randint(1, per_class, (width,), generator=generator)) % per_class
        picks = torch.cat([first, second])
        x = images[labels, picks]
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=generator) < 0.5, x, x.flip(-1))
        image = F.normalize(model.encode_image(x), dim=-1)
        text = F.normalize(model.encode_text(captions[labels, picks]), dim=-1)
        logits = model.logit_scale.exp() * image @ text.t()
        target = torch.arange(len(x))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        full_embedding.weight[used] = model.token_embedding.weight
    model.token_embedding = full_embedding
    model.eval()
    backbone.requires_grad_(False)
    return backbone


def _used_rows(embedding: torch.nn.Embedding, tokens: torch.Tensor):
    """An embedding of only the vocabulary rows `tokens` use, the tokens renumbered into it, and the
    rows' ids. The captions use ~100 of 49,408 rows: training the whole table made AdamW's step and
    the dense embedding gradient most of a step's time. The renumbering keeps the ids' order, so the
    end token stays each caption's largest id, where open_clip pools the text features."""
    used = torch.unique(tokens)  # sorted
    small = torch.nn.Embedding.from_pretrained(embedding.weight[used].clone(), freeze=False)
    return small, torch.searchsorted(used, tokens), used


def save(backbone: ClipBackbone, path: Path) -> None:
    """An open_clip checkpoint: `--model tiny --pretrained PATH` loads it."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": backbone.model.state_dict(), "created": time.strftime("%Y-%m-%d %H:%M")}, tmp)


@torch.inference_mode()
def zero_shot_accuracy(backbone: ClipBackbone, manifest: Manifest, batch: int = 256) -> dict[str, float]:
    """Top-1 % per task over every image of the manifest, with the zero-shot template."""
    from PIL import Image

    from .methods.zeroshot import ZeroShot, ZeroShotConfig

    model = ZeroShot(ZeroShotConfig(), backbone, manifest.tasks).eval()
    transform = backbone.preprocess_val()
    scores = {}
    for task in manifest.domains:
        records = [r for r in manifest.records if r.domain == task]
        correct = 0
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            images = torch.stack([transform(Image.open(manifest.root / r.path).convert("RGB")) for r in chunk])
            labels = torch.tensor([r.label for r in chunk])
            correct += int((model(images, task).argmax(-1) == labels).sum())
        scores[task] = 100.0 * correct / max(1, len(records))
    return scores
