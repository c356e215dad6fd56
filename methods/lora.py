"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): low-rank updates of the query, key and value
projections of every residual block of both towers.

Trainable: for every block l of each tower (width w) and each of q, k, v, a pair A [r, w], B [w, r];
the block's attention uses W_qkv + s * [B_q A_q; B_k A_k; B_v A_v] with s = alpha / sqrt(r) (the
official code's scaling). open_clip's blocks keep q, k and v fused in
`nn.MultiheadAttention.in_proj_weight` [3w, w], which PEFT cannot wrap; the method attaches to that
weight (`Site(tower, l, "attn.in_proj_weight")`) and `block_weight` returns the sum, so neither the
block's forward nor the backbone knows LoRA. `release()` detaches it.
`lora` holds one set of (A, B) per task, `lora-mt` one set shared by all tasks.
ViT-B/16, r = 2: per projection r * 2w; per block 3 * 4w = 12w; text 12 x 12 x 512 = 73,728 and
vision 12 x 12 x 768 = 110,592: 184,320 per set (0.18 M; the CLIP-LoRA paper gives no count).
`lora` with four tasks: 737,280.

Init: A as nn.Linear's weight (Kaiming-uniform, a = sqrt(5)), B = 0, as the official code: the
update is exactly zero, so an untrained LoRA gives exactly zero-shot's logits.

Departures from the official code (loralib/layers.py, PlainMultiheadAttentionLoRA): it re-splits
the attention into q/k/v Linear layers and drops out the LoRA branch's input x element-wise; a
weight update sees no input, so here dropout masks the input features of A (one mask per projection
per pass, shared by all tokens and images of the pass): the same expected update, coarser noise.
Their recipe (AdamW, lr 2e-4, batch 32, 500 x shots iterations) is not ours: runs use the suite's
SGD recipe, and `--set optim.lr=2e-4` gives their learning rate.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from petl_bench.backbone import TOWERS, Site
from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import LoRAConfig

SITE = "attn.in_proj_weight"  # q, k and v, fused


@register_method("lora", LoRAConfig)
class LoRA(PetlModule):
    """LoRA on q, k, v of every block of both towers, one set per task."""

    shared = False

    def __init__(self, cfg: LoRAConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.scaling = cfg.alpha / math.sqrt(cfg.rank)
        self.lora_a, self.lora_b = nn.ParameterDict(), nn.ParameterDict()
        for tower in TOWERS:
            depth, width = len(backbone.blocks(tower)), self._width(tower)
            a = torch.empty(self.n_sets, depth, 3, cfg.rank, width)
            for matrix in a.view(-1, cfg.rank, width):
                nn.init.kaiming_uniform_(matrix, a=math.sqrt(5))
            self.lora_a[tower] = nn.Parameter(a)
            self.lora_b[tower] = nn.Parameter(torch.zeros(self.n_sets, depth, 3, width, cfg.rank))
        self.attach_to_blocks(
            [Site(tower, layer, SITE) for tower in TOWERS for layer in range(len(backbone.blocks(tower)))]
        )

    def _width(self, tower: str) -> int:
        return self.backbone.text_width if tower == "text" else self.backbone.vision_width

    def block_weight(self, site, weight, task):
        s = self.set_index(task)
        a, b = self.lora_a[site.tower][s, site.layer], self.lora_b[site.tower][s, site.layer]
        if self.training and self.cfg.dropout:
            keep = torch.ones(3, 1, a.shape[-1], device=a.device, dtype=a.dtype)
            a = a * F.dropout(keep, self.cfg.dropout)  # masks (and rescales) A's input features
        update = (b @ a).reshape(weight.shape) * self.scaling  # [3, w, w] -> [3w, w]: q, k, v rows
        return weight + update.to(weight.dtype)


@register_method("lora-mt", LoRAConfig)
class LoRAMT(LoRA):
    """LoRA-MT: one set of q, k, v low-rank updates in both towers, shared by all tasks."""

    shared = True
    text_depends_on_task = False
