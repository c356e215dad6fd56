"""TCP (Yao et al., CVPR 2024, "TCP: Textual-based Class-aware Prompt tuning"): KgCoOp plus
class-aware tokens that a small network makes from each class's zero-shot text feature.

Trainable: KgCoOp's context (methods/kgcoop.py; `n_ctx` = 4 tokens ~ N(0, 0.02), TCP's
`CTX_INIT: False`) and the token net, Linear(d, d / `reduction`) -> QuickGELU -> Linear(d / r,
n_ctx x text width) with biases, d the embed dim. For each class, the net maps the normalised
frozen text feature of its hand-written prompt (the class-level text knowledge) to n_ctx tokens,
which replace that class's context slots (right after SOT) before text block `layer` (8, capped
at the last block) through the `text_layer` hook. The loss adds KgCoOp's `weight * (1 - mean cos)`
towards the same hand-written features, weight 8.0 as tcp.py. The prompt reads "X X X X {class}"
followed by the rest of the task's template after its class slot, as TCP's per-dataset templates.
`tcp` holds one set per task, `tcp-mt` one shared by all tasks. Class names it never trained on get
their own tokens from their own zero-shot features, so it scores them (open vocabulary).
ViT-B/16 (d = 512, text 512), r = 4: 4 x 512 + 512 x 128 + 128 + 128 x 2,048 + 2,048 = 331,904 per set.

Init: PyTorch's default Linears, as the official code; untrained TCP is not zero-shot.

Departures from the official code (trainers/tcp.py, clip_text/model.py): its net's output width is
4 x 512 and its insertion layer 8 hard-coded (here n_ctx x width and `layer`); it scales the
logits by a detached logit scale and detached image features, which are frozen here anyway.
"""

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from petl_bench.prompts import with_text_context
from petl_bench.registry import register_method

from .configs import TCPConfig
from .kgcoop import KgCoOp


def after_class_slot(template: str) -> str:
    """The template from its class slot on: "{}, a type of pet." of "a photo of a {}, a type of pet."."""
    return template[template.index("{}") :]


@register_method("tcp", TCPConfig)
class TCP(KgCoOp):
    """TCP: KgCoOp plus class-aware tokens made from zero-shot class text features, one set per task."""

    cfg: TCPConfig

    def __init__(self, cfg: TCPConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.layer = min(cfg.layer, backbone.text_depth - 1)
        width, hidden = backbone.embed_dim, backbone.embed_dim // cfg.reduction
        self.token_net = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), QuickGELU(), nn.Linear(hidden, self.n_ctx * backbone.text_width))
            for _ in range(self.n_sets)
        )

    def prompts(self, task: str) -> list[str]:
        spec = self.task(task)
        context = self.cfg.ctx_init or " ".join(["X"] * self.n_ctx)
        return [f"{context} {after_class_slot(spec.template).format(name)}" for name in spec.classnames]

    def class_tokens(self, task: str) -> torch.Tensor:
        """Each class's tokens [classes, n_ctx, text width], from its zero-shot text feature."""
        knowledge = F.normalize(self.handwritten_features(task), dim=-1)
        return self.token_net[self.set_index(task)](knowledge).view(len(knowledge), self.n_ctx, -1)

    def text_layer(self, i, x, task):
        return with_text_context(x, self.class_tokens(task)) if i == self.layer else x


@register_method("tcp-mt", TCPConfig)
class TCPMT(TCP):
    """TCP-MT: one context and token net shared by all tasks."""

    shared = True
    text_depends_on_task = False
