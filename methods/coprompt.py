"""CoPrompt (Roy & Etemad, ICLR 2024): MaPLe's coupled prompts plus feature adapters, trained with
a consistency loss to the frozen CLIP.

Trainable: MaPLe's deep text prompts and their couplings to the visual prompts (methods/maple.py),
`n_ctx` = 2 tokens in the first `depth` = 9 layers as their config (`configs/trainers/coprompt.yaml`),
and, as their `Adapter(512, 4)`, two bias-free bottlenecks Linear(d, d/4) -> ReLU -> Linear(d/4, d)
-> ReLU on the projected features (the `head` hook): image `0.1 * adapter(f) + 0.9 * f`, text
`0.2 * adapter(w) + 0.8 * w`. Each task's loss (`training_loss`, `terms`) is the cross-entropy plus
`weight` x (text + image), text = 1 - mean over classes of cos(w_c, d_c) and image = 1 - mean over
images of cos(f, f^clip): d_c the frozen CLIP's features of one of class c's descriptions (one
index drawn per step, as theirs), f^clip the frozen CLIP's image features.
Descriptions: `method.descriptions` names a JSON file in their format (class name -> list of
sentences, their gpt_file/*_prompt.json; a name is looked up as given, then with "_" as " ").
Their LLM-generated files cannot be downloaded here, so without one each class's single
"description" is the task's template prompt (`template_prompts`), KgCoOp's target.
`coprompt` holds one set per task, `coprompt-mt` one set shared by all tasks.
ViT-B/16 (text 512, vision 768, embed 512), n_ctx 2, depth 9: MaPLe's 9 x (2 x 512 + 512 x 768 +
768) = 3,555,072 plus adapters 2 x (512 x 128 + 128 x 512) = 262,144: 3,817,216 per set.

Init: MaPLe's (P_0 from "a photo of a"), adapters as nn.Linear. `n_ctx = 0` with both ratios 0 and
no descriptions is zero-shot CLIP, and both consistency terms are then 0 (to rounding).

Departures from the official code (trainers/coprompt.py): their frozen image features come from a
second augmented view of each image (K_TRANSFORMS 2, RandAugment); the suite's loader gives one
view, so the frozen encoder sees the same one. With unequal description counts, class c takes
description i mod its count (theirs needs equal counts). Only their "cosine" consistency
(DISTILL), fp32 (their fp16). The descriptions file is named in the config hash; the run record
keeps its sha256 (`prepare`).
"""

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from petl_bench.backbone import IDENTITY
from petl_bench.errors import UserError
from petl_bench.registry import register_method

from .clip_adapter import blend, bottleneck
from .configs import CoPromptConfig
from .maple import MaPLe


def read_descriptions(path: str) -> dict[str, list[str]]:
    """Their format: a JSON object of class name -> list of sentences; else one clear error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"method.descriptions={path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and v and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise UserError(f"method.descriptions={path}: must map each class name to a non-empty list of sentences")
    return data


@register_method("coprompt", CoPromptConfig)
class CoPrompt(MaPLe):
    """CoPrompt: MaPLe prompts and feature adapters held consistent with the frozen CLIP, one set per task."""

    cfg: CoPromptConfig

    def __init__(self, cfg: CoPromptConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        width = backbone.embed_dim
        self.image_adapters = nn.ModuleList(bottleneck(width, cfg.reduction, bias=False) for _ in range(self.n_sets))
        self.text_adapters = nn.ModuleList(bottleneck(width, cfg.reduction, bias=False) for _ in range(self.n_sets))
        self.descriptions = read_descriptions(cfg.descriptions) if cfg.descriptions else None
        self._described: dict = {}  # (classnames, template) -> per class, its descriptions' frozen features

    @classmethod
    def prepare(cls, run, backbone, data, work_dir):
        facts = {}
        if run.params.descriptions:
            read_descriptions(run.params.descriptions)  # a bad file is one line, before any training
            facts["descriptions_sha256"] = hashlib.sha256(Path(run.params.descriptions).read_bytes()).hexdigest()
        return run.params, facts

    def class_descriptions(self, task: str) -> list[list[str]]:
        """Each class's sentences: from the descriptions file, else the task's template prompt."""
        spec = self.task(task)
        if self.descriptions is None:
            return [[prompt] for prompt in self.template_prompts(task)]
        found = []
        for name in spec.classnames:
            sentences = self.descriptions.get(name) or self.descriptions.get(name.replace("_", " "))
            if not sentences:
                raise UserError(f"method.descriptions={self.cfg.descriptions}: no sentences for class {name!r}")
            found.append(sentences)
        return found

    def described_features(self, task: str) -> list[torch.Tensor]:
        spec = self.task(task)
        key = (spec.classnames, spec.template)
        if key not in self._described:
            with torch.no_grad():
                self._described[key] = [
                    F.normalize(
                        self.backbone.encode_text(self.backbone.tokenize(s).to(self.device), IDENTITY, task), dim=-1
                    )
                    for s in self.class_descriptions(task)
                ]
        return [features.to(self.device) for features in self._described[key]]

    def head(self, image_feat, text_feat, task):
        s, cfg = self.set_index(task), self.cfg
        return (
            blend(self.image_adapters[s], image_feat, cfg.image_ratio),
            blend(self.text_adapters[s], text_feat, cfg.text_ratio),
        )

    def terms(self, task: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss's terms, weighted: cross-entropy and the text and image consistency."""
        image, text = self.head(
            self.encoder(task).encode_image(images, self, task), self.class_text_features(task), task
        )
        described = self.described_features(task)
        pick = int(torch.randint(max(len(d) for d in described), ()))  # one description index per step, as theirs
        target = torch.stack([d[pick % len(d)] for d in described])
        with torch.no_grad():
            frozen_image = self.backbone.encode_image(images, IDENTITY, task)
        weight = self.cfg.weight
        return {
            "cross_entropy": F.cross_entropy(self.logits(image, text, task), labels),
            "text": weight * (1 - F.cosine_similarity(text, target, dim=-1, eps=1e-7).mean()),
            "image": weight * (1 - F.cosine_similarity(image, frozen_image, dim=-1, eps=1e-7).mean()),
        }

    def training_loss(self, task, images, labels):
        return torch.stack(list(self.terms(task, images, labels).values())).sum()


@register_method("coprompt-mt", CoPromptConfig)
class CoPromptMT(CoPrompt):
    """CoPrompt-MT: one set of prompts and adapters, held consistent with the frozen CLIP, shared by all tasks."""

    shared = True
    text_depends_on_task = False
