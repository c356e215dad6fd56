"""CoOp (Zhou et al., IJCV 2022): learnable text context tokens in front of the class name.

Trainable: a context of `n_ctx` token embeddings (text width each) that replaces the embeddings
of placeholder tokens right after the start token: "SOT [ctx_1..ctx_n] {class}. EOT".
`coop` holds one context per task, `coop-mt` one context shared by all tasks.
ViT-B/16: 16 tokens x 512 = 8,192 parameters per context (the paper's 0.01 M per task).

Init: N(0, 0.02), or `ctx_init` = a phrase such as "a photo of a", whose token embeddings become
the context (and whose token count sets `n_ctx`); an untrained CoOp so initialised equals
zero-shot with the template "a photo of a {class}.".
"""

import torch
from torch import nn

from petl_bench.module import PetlModule
from petl_bench.prompts import check_context_fits, context_prompts, phrase_embeddings, with_text_context
from petl_bench.registry import register_method

from .configs import CoOpConfig


@register_method("coop", CoOpConfig)
class CoOp(PetlModule):
    """CoOp: learnable text context, one per task."""

    cfg: CoOpConfig
    shared = False  # one context for all tasks (coop-mt)
    image_frozen = True  # the context is text only

    def __init__(self, cfg: CoOpConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.ctx = nn.Parameter(self.initial_context())
        self.n_ctx = self.ctx.shape[1]
        check_context_fits(self, self.n_ctx)

    def initial_context(self) -> torch.Tensor:
        """The context's start, [n_sets, n_ctx, text width]: the phrase's embeddings, else noise."""
        if self.cfg.ctx_init:
            return phrase_embeddings(self.backbone, self.cfg.ctx_init).unsqueeze(0).repeat(self.n_sets, 1, 1)
        return torch.randn(self.n_sets, self.cfg.n_ctx, self.backbone.text_width) * 0.02

    def prompts(self, task: str) -> list[str]:
        return context_prompts(self.task(task).classnames, self.n_ctx, self.cfg.ctx_init)

    def text_embed(self, emb, tokens, task):
        return with_text_context(emb, self.ctx[self.set_index(task)])


@register_method("coop-mt", CoOpConfig)
class CoOpMT(CoOp):
    """CoOp-MT: one learnable text context shared by all tasks."""

    shared = True
    text_depends_on_task = False
