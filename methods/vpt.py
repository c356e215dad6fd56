"""VPT-deep (Jia et al., ECCV 2022): learnable tokens appended to the image tokens of every layer.

Trainable: `n_prompts` visual prompt tokens (vision width each) for each of the first `depth`
residual blocks of the image tower (`depth` is capped at the tower's depth). `vision_embed`
appends layer 0's prompts after [CLS + patches] (after the positional embedding, before ln_pre);
before each deeper block i < depth the appended tokens are replaced by layer i's prompts (deeper
blocks keep what the block before produced); `vision_post` strips them before pooling, so the
image feature is still read from CLS. The text side is untouched: class features come from the
zero-shot template "a photo of a {class}." and are computed once.
`vpt` holds one prompt set per task, `vpt-mt` one set shared by all tasks.
ViT-B/16: 18 tokens x 768 x 12 layers = 165,888 parameters per set (the paper's 0.17 M for
VPT-MT, and 4 x 0.17 = 0.68 M for VPT).

Init: uniform(-v, v) with v = sqrt(6 / (3 * patch_h * patch_w + width)), VPT's Xavier-style
bound from the patch embedding's fan-in. `n_prompts = 0` appends nothing: exactly zero-shot.
"""

import math

import torch
from torch import nn

from petl_bench.module import PetlModule
from petl_bench.prompts import DeepVisualPrompts
from petl_bench.registry import register_method

from .configs import VPTConfig


@register_method("vpt", VPTConfig)
class VPT(DeepVisualPrompts, PetlModule):
    """VPT-deep: learnable visual prompt tokens in every image layer, one set per task."""

    shared = False  # one prompt set for all tasks (vpt-mt)
    text_frozen = True
    text_depends_on_task = False  # the text side is the zero-shot template for every task

    def __init__(self, cfg: VPTConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.n_visual = cfg.n_prompts
        self.visual_depth = min(cfg.depth, backbone.vision_depth)
        width = backbone.vision_width
        patch_h, patch_w = backbone.model.visual.conv1.kernel_size
        bound = math.sqrt(6.0 / (3 * patch_h * patch_w + width))
        self.visual_prompts = nn.Parameter(
            torch.empty(self.n_sets, self.visual_depth, self.n_visual, width).uniform_(-bound, bound)
        )

    def visual_prompts_at(self, layer, task):
        return self.visual_prompts[self.set_index(task), layer]


@register_method("vpt-mt", VPTConfig)
class VPTMT(VPT):
    """VPT-MT: one set of deep visual prompts shared by all tasks."""

    shared = True
