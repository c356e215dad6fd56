"""Full fine-tuning: every parameter of CLIP trains (the upper bound of the MmAP paper's table).

`fullft-mt`: the backbone itself trains, shared by all tasks: 149,620,737 parameters for ViT-B/16
(both towers, the projections and logit_scale).
`fullft`: one full copy of CLIP per task, each task's images and class texts routed to its copy by
the `encoder` hook: 4 x 149,620,737 = 598,482,948 for four tasks (the paper's 598.48 M). This is
the one method that does not share the backbone; the original stays frozen and unused. Each copy
has its own logit_scale, which trains too (`PetlModule.forward` reads the encoder's).
"""

import copy

from torch import nn

from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import FullFTConfig


@register_method("fullft-mt", FullFTConfig)
class FullFTMT(PetlModule):
    """Full fine-tuning, multi-task: the whole CLIP trains, shared by all tasks."""

    shared = True
    text_depends_on_task = False  # one text tower for all tasks

    def trainable(self):
        return self.backbone.named_parameters(prefix="backbone")


@register_method("fullft", FullFTConfig)
class FullFT(FullFTMT):
    """Full fine-tuning, one full copy of CLIP per task."""

    shared = False
    text_depends_on_task = True  # each task has its own text tower

    def __init__(self, cfg: FullFTConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        # The memo shares the tokenizer (its BPE tables are large and never change) with the copies.
        self.copies = nn.ModuleList(
            copy.deepcopy(backbone, {id(backbone.tokenizer): backbone.tokenizer}) for _ in range(self.n_sets)
        )

    def encoder(self, task):
        return self.copies[self.set_index(task)]

    def trainable(self):
        return self.copies.named_parameters(prefix="copies")
