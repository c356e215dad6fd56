"""MMA, the Multi-Modal Adapter (Yang et al., CVPR 2024): adapters in the higher blocks of both
towers, joined by a projection that both towers share.

Trainable, for each of the last `layers` = 8 blocks of each tower (their ADAPTER_START 5 to
ADAPTER_END 12 of ViT-B/16's 12): a text adapter down_t = Linear(text width, dim) + ReLU and
up_t = Linear(dim, text width), a vision adapter down_v / up_v alike, and between them a shared
Linear(dim, dim) + ReLU, the same module for both towers at that depth. Block k's output becomes
block_k(x) + scale * up(shared(down(ln_1(x)))), x the block's input and ln_1 the block's own first
LayerNorm, as their `ModifiedResidualAttentionBlock`. The method attaches to each block
(`Site(tower, k, "")`, a forward hook through `block_output`); `release()` detaches it.
As theirs, the adapter's input gradient is scaled by `scale` and its output's by 1 / scale (their
`gradient_scale_layer`): the forward adds `scale` x the adapter, while the adapter's parameters
learn as if at scale 1.
`mma` holds one set per task, `mma-mt` one set shared by all tasks.
ViT-B/16, dim 32, 8 blocks: per block (512*32 + 32 + 32*512 + 512) + (768*32 + 32 + 32*768 + 768) +
(32*32 + 32) = 33,312 + 49,952 + 1,056 = 84,320; 674,560 per set.

Init: every Linear Kaiming-normal (fan_out, ReLU) with zero bias, as theirs, so an untrained MMA is
zero-shot CLIP plus scale (0.001) times the random adapters, not zero-shot; `scale = 0` is exactly
zero-shot (nothing is added, nothing trains).

Departures from the official code (trainers/mmadapter.py, clip/model.py; vit_b16_ep5.yaml): the
adapted blocks are counted from the top (`layers`), which is their START 5 to END 12 on 12 blocks
and keeps the higher blocks on shallower towers; their index-0 adapters (before the first block,
unused by their configs) are not offered. Their class prompt "a photo of a {class}." is the
task's template here. fp32 (their "amp").
"""

from collections import OrderedDict

import torch
from torch import nn

from petl_bench.backbone import TOWERS, Site
from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import MMAConfig


def scaled_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` in the forward pass, its gradient times `factor` in the backward."""
    return x.detach() + factor * (x - x.detach())


def _linear(width_in: int, width_out: int) -> nn.Linear:
    linear = nn.Linear(width_in, width_out)
    nn.init.kaiming_normal_(linear.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(linear.bias)
    return linear


def tower_adapter(width: int, dim: int) -> nn.Sequential:
    """A tower's adapter at one block: `down` (Linear + ReLU) into the shared space, `up` out of it."""
    return nn.Sequential(OrderedDict(down=nn.Sequential(_linear(width, dim), nn.ReLU()), up=_linear(dim, width)))


@register_method("mma", MMAConfig)
class MMA(PetlModule):
    """MMA: adapters in the higher blocks of both towers through a shared projection, one set per task."""

    cfg: MMAConfig
    shared = False

    def __init__(self, cfg: MMAConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.n_layers = min(cfg.layers, backbone.text_depth, backbone.vision_depth)
        widths = {"text": backbone.text_width, "vision": backbone.vision_width}
        self.adapters = nn.ModuleList(self._adapter_set(widths) for _ in range(self.n_sets))
        self.attach_to_blocks([Site(t, k, "") for t in TOWERS for k in self.adapted_blocks(len(backbone.blocks(t)))])

    def _adapter_set(self, widths: dict[str, int]) -> nn.ModuleDict:
        """Per adapted block: each tower's adapter and the projection both share."""
        n, dim = self.n_layers, self.cfg.dim
        towers = {t: nn.ModuleList(tower_adapter(widths[t], dim) for _ in range(n)) for t in TOWERS}
        shared = nn.ModuleList(nn.Sequential(_linear(dim, dim), nn.ReLU()) for _ in range(n))
        return nn.ModuleDict({**towers, "shared": shared})

    def adapted_blocks(self, depth: int) -> range:
        return range(depth - self.n_layers, depth)

    def block_output(self, site, inputs, output, task):
        scale = self.cfg.scale
        if not scale:
            return output
        adapters = self.adapters[self.set_index(task)]
        j = site.layer - self.adapted_blocks(len(self.backbone.blocks(site.tower)))[0]
        adapter = adapters[site.tower][j]
        x = self.backbone.blocks(site.tower)[site.layer].ln_1(scaled_gradient(inputs, scale))
        y = adapter.up(adapters["shared"][j](adapter.down(x)))
        return output + scaled_gradient(scale * y, 1 / scale)


@register_method("mma-mt", MMAConfig)
class MMAMT(MMA):
    """MMA-MT: one set of multi-modal adapters shared by all tasks."""

    shared = True
    text_depends_on_task = False
