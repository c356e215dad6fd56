"""CLIP-Adapter (Gao et al. 2021): residual bottleneck MLPs on CLIP's image and text features.

Trainable: two adapters, one on the projected image features and one on the projected text
features (width d = the backbone's embed dim), each Linear(d, d/r) -> ReLU -> Linear(d/r, d) -> ReLU
with biases; the output blends them, `ratio * adapter(f) + (1 - ratio) * f`. One pair is shared by
all tasks (the multi-task placement of the MmAP paper's table). The towers stay frozen, so the class
text features are computed once and only the `head` hook (after the projections) changes.
ViT-B/16, r = 2: 2 x (512*256 + 256 + 256*512 + 512) = 2 x 262,912 = 525,824 (the paper's 0.53 M).

Init: PyTorch's default, as in the official code (which has no biases and r = 4; biases and r = 2
give the paper's count). `ratio = 0` reproduces zero-shot CLIP exactly, whatever the weights.
"""

from dataclasses import dataclass

from torch import nn

from petl_bench.config import MethodConfig
from petl_bench.module import PetlModule
from petl_bench.registry import register_method


@dataclass
class CLIPAdapterConfig(MethodConfig):
    reduction: int = 2  # bottleneck width = embed dim // reduction
    ratio: float = 0.2  # weight of the adapted feature in the residual blend


def bottleneck(width: int, reduction: int) -> nn.Sequential:
    hidden = width // reduction
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width), nn.ReLU())


@register_method("clip-adapter", CLIPAdapterConfig)
class CLIPAdapter(PetlModule):
    """CLIP-Adapter: residual bottleneck adapters on the image and text features, shared by all tasks."""

    shared = True
    text_frozen = True  # the adapters act after the text tower, in `head`
    text_depends_on_task = False

    def __init__(self, cfg: CLIPAdapterConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.image_adapter = bottleneck(backbone.embed_dim, cfg.reduction)
        self.text_adapter = bottleneck(backbone.embed_dim, cfg.reduction)

    def head(self, image_feat, text_feat, task):
        ratio = self.cfg.ratio
        image = ratio * self.image_adapter(image_feat) + (1 - ratio) * image_feat
        text = ratio * self.text_adapter(text_feat) + (1 - ratio) * text_feat
        return image, text
