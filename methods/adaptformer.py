"""AdaptFormer (Chen et al., NeurIPS 2022): a bottleneck adapter beside the MLP of every block of
the image tower.

Trainable: for every image block l, an adapter Linear(w, h) -> ReLU -> Dropout -> Linear(h, w)
(w the vision width, h the bottleneck, with biases) whose output, times `scale`, is added to the
block's MLP output, in parallel with it: x_l = x' + MLP(LN(x')) + s * adapter(LN(x')), the paper's
eqs. (2)-(3), x' being the block's stream after attention. The method attaches to each block's
`mlp` (`Site("vision", l, "mlp")`) and `block_output` adds the adapter to what the MLP returns,
from the MLP's own input LN(x'); the block's forward is untouched, the text tower too (its class
features are computed once). `release()` detaches it.
`adaptformer` holds one set of adapters per task, `adaptformer-mt` one set shared by all tasks.
ViT-B/16, h = 64: per block 768*64 + 64 + 64*768 + 768 = 99,136, x 12 = 1,189,632 per set
(1.19 M). The paper's 1.26 M for AdaptFormer-64 on ViT-B counts its 100-class head too
(768*100 + 100 = 76,900 on CIFAR-100): 1,189,632 + 76,900 = 1.27 M.

Init: the official code's "lora" option: the down projection Kaiming-uniform (a = sqrt(5)), its
bias, the up projection and its bias zero, so an untrained AdaptFormer is exactly zero-shot CLIP.

Departures from the official code (models/custom_modules.py, Block): there the adapter reads the
stream x' without a LayerNorm (`ffn_adapter_layernorm_option="none"`), here LN(x') as the paper's
eq. (2) writes, which is what the MLP module's input is. Scale 0.1 and dropout 0.1 are the code's.
"""

import math

from torch import nn

from petl_bench.backbone import Site
from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import AdaptFormerConfig


def adapter(width: int, bottleneck: int, dropout: float) -> nn.Sequential:
    down, up = nn.Linear(width, bottleneck), nn.Linear(bottleneck, width)
    nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
    for tensor in (down.bias, up.weight, up.bias):
        nn.init.zeros_(tensor)
    return nn.Sequential(down, nn.ReLU(), nn.Dropout(dropout), up)


@register_method("adaptformer", AdaptFormerConfig)
class AdaptFormer(PetlModule):
    """AdaptFormer: parallel bottleneck adapters beside the image tower's MLPs, one set per task."""

    shared = False
    text_frozen = True  # the text tower is untouched
    text_depends_on_task = False

    def __init__(self, cfg: AdaptFormerConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.adapters = nn.ModuleList(
            nn.ModuleList(
                adapter(backbone.vision_width, cfg.bottleneck, cfg.dropout) for _ in range(backbone.vision_depth)
            )
            for _ in range(self.n_sets)
        )
        self.attach_to_blocks([Site("vision", layer, "mlp") for layer in range(backbone.vision_depth)])

    def block_output(self, site, inputs, output, task):
        adapters = self.adapters[self.set_index(task)]
        return output + self.cfg.scale * adapters[site.layer](inputs)


@register_method("adaptformer-mt", AdaptFormerConfig)
class AdaptFormerMT(AdaptFormer):
    """AdaptFormer-MT: one set of parallel adapters in the image tower, shared by all tasks."""

    shared = True
