"""CLIP-Adapter (Gao et al. 2021): residual bottleneck MLPs on CLIP's image and text features.

Trainable: an adapter on the projected image features, on the projected text features, or one on
each (`towers`; width d = the backbone's embed dim), each Linear(d, d/r) -> ReLU -> Linear(d/r, d)
-> ReLU with biases; the output blends them, `ratio * adapter(f) + (1 - ratio) * f`. Shared by all
tasks (the multi-task placement of the MmAP paper's table). The towers stay frozen, so the class
text features are computed once and only the `head` hook (after the projections) changes.
ViT-B/16 (d = 512): both towers, r = 2: 2 x (512*256 + 256 + 256*512 + 512) = 525,824; one tower,
r = 1: 512*512 + 512 + 512*512 + 512 = 525,312. Both print as the paper's 0.53 M, which says the
method "learns new features on either a visual or a language branch"; the default is both towers.

Init: PyTorch's default, as in the official code (an image-feature adapter without biases, r = 4:
131,072 parameters, which does not give the paper's count). `ratio = 0` reproduces zero-shot CLIP
exactly, whatever the weights.
"""

from torch import nn

from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import CLIPAdapterConfig


def bottleneck(width: int, reduction: int, bias: bool = True) -> nn.Sequential:
    hidden = width // reduction
    return nn.Sequential(nn.Linear(width, hidden, bias), nn.ReLU(), nn.Linear(hidden, width, bias), nn.ReLU())


def blend(adapter: nn.Module | None, feat, ratio: float):
    """`ratio * adapter(feat) + (1 - ratio) * feat`; the features themselves where there is no adapter."""
    return feat if adapter is None else ratio * adapter(feat) + (1 - ratio) * feat


@register_method("clip-adapter", CLIPAdapterConfig)
class CLIPAdapter(PetlModule):
    """CLIP-Adapter: residual bottleneck adapters on the image and text features, shared by all tasks."""

    cfg: CLIPAdapterConfig
    shared = True
    text_frozen = True  # the adapters act after the text tower, in `head`
    image_frozen = True  # and after the image tower
    text_depends_on_task = False

    def __init__(self, cfg: CLIPAdapterConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        width = backbone.embed_dim
        self.image_adapter = bottleneck(width, cfg.reduction) if cfg.towers != "text" else None
        self.text_adapter = bottleneck(width, cfg.reduction) if cfg.towers != "image" else None

    def head(self, image_feat, text_feat, task):
        ratio = self.cfg.ratio
        return blend(self.image_adapter, image_feat, ratio), blend(self.text_adapter, text_feat, ratio)
