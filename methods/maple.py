"""MaPLe (Khattak et al., CVPR 2023): deep text prompts coupled to deep visual prompts.

Trainable, for each of the first `depth` layers k of both towers: text context tokens P_k
[n_ctx, text width] and a coupling Linear(text width -> vision width, with bias) that makes the
layer's visual prompts from P_k. Text: `text_embed` puts P_0 in place of the embeddings of the
n_ctx tokens after SOT (see Init) and before block k (1 <= k < depth) the same positions are
replaced by P_k. Vision: `vision_embed` appends coupling_0(P_0) after [CLS + patches] (before
ln_pre), before block k the appended tokens are replaced by coupling_k(P_k), and `vision_post`
strips them before pooling. As in the official code.
`maple` holds one set per task, `maple-mt` one set shared by all tasks.
ViT-B/16 (text 512, vision 768), depth 12: per layer n_ctx x 512 + 512 x 768 + 768; with
n_ctx = 4, 12 x (2,048 + 393,984) = 4,752,384 = 4.75 M per set, printed 4.8 M by the paper for
MaPLe-MT; MaPLe is 4 x 4,752,384 = 19.0 M, printed 19.2 M because the paper rounds per task first
(4 x 4.8). With n_ctx = 2 a set is 4,740,096 (4.74 M), which would not round to 4.8.

Init, as MaPLe's code with its configs' CTX_INIT "a photo of a" (the `ctx_init` default): P_0 is
the token embeddings of the phrase's first n_ctx tokens, the prompts read "{ctx_init} {class}." and
P_0 replaces those first n_ctx tokens, so an untrained MaPLe's text tokens at layer 0 are exactly
zero-shot's ("a photo of a {class}."). MaPLe takes this branch only for n_ctx <= 4, the phrase's
token count, and silently falls back to noise beyond; here a phrase shorter than n_ctx is an error.
`ctx_init = ""`: P_0 ~ N(0, 0.02) behind "X" placeholders. Deeper P_k ~ N(0, 0.02). Couplings as
nn.Linear; the deeper ones (k >= 1) start as copies of one Linear, as the official code clones them.
Untrained MaPLe is not zero-shot (the image attends to the visual prompts), but `n_ctx = 0`
means no prompts anywhere, the zero-shot template, and exactly zero-shot logits.
"""

import copy

import torch
from torch import nn

from petl_bench.errors import UserError
from petl_bench.module import PetlModule
from petl_bench.prompts import (
    DeepVisualPrompts,
    check_context_fits,
    context_prompts,
    phrase_embeddings,
    with_text_context,
)
from petl_bench.registry import register_method

from .configs import MaPLeConfig


@register_method("maple", MaPLeConfig)
class MaPLe(DeepVisualPrompts, PetlModule):
    """MaPLe: deep text prompts coupled to deep visual prompts, one set per task."""

    cfg: MaPLeConfig
    shared = False  # one set for all tasks (maple-mt)

    def __init__(self, cfg: MaPLeConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.n_ctx = cfg.n_ctx
        phrase = phrase_embeddings(backbone, cfg.ctx_init) if cfg.ctx_init and self.n_ctx else None
        if phrase is not None and len(phrase) < self.n_ctx:
            raise UserError(
                f"{self.method_name}: ctx_init {cfg.ctx_init!r} has {len(phrase)} tokens, fewer "
                f"than n_ctx {self.n_ctx}; lower n_ctx, or set method.ctx_init= for noise"
            )
        # Capped at the shallower tower, as VPT caps; no context means no prompts, no couplings.
        self.depth = min(cfg.depth, backbone.text_depth, backbone.vision_depth) if self.n_ctx else 0
        self.n_visual, self.visual_depth = self.n_ctx, self.depth  # one visual token per text token
        text_ctx = torch.randn(self.n_sets, self.depth, self.n_ctx, backbone.text_width) * 0.02
        if phrase is not None:
            text_ctx[:, 0] = phrase[: self.n_ctx]
        self.text_ctx = nn.Parameter(text_ctx)
        self.build_visual(self.n_sets if self.depth else 0)
        check_context_fits(self, self.n_ctx)

    def build_visual(self, n_sets: int) -> None:
        """What makes the visual prompts: per set, a coupling Linear per layer (IVLP overrides it)."""
        self.coupling = nn.ModuleList(self._couplings() for _ in range(n_sets))

    def _couplings(self) -> nn.ModuleList:
        first, deeper = (nn.Linear(self.backbone.text_width, self.backbone.vision_width) for _ in range(2))
        # The official code clones one Linear for every deeper layer, so those start equal.
        return nn.ModuleList([first] + [copy.deepcopy(deeper) for _ in range(self.depth - 1)])

    def prompts(self, task: str) -> list[str]:
        if not self.n_ctx:
            return super().prompts(task)  # the zero-shot template
        return context_prompts(self.task(task).classnames, self.n_ctx, self.cfg.ctx_init)

    def _with_text_ctx(self, layer: int, x: torch.Tensor, task: str) -> torch.Tensor:
        return with_text_context(x, self.text_ctx[self.set_index(task), layer])

    def visual_prompts_at(self, layer, task):
        s = self.set_index(task)
        return self.coupling[s][layer](self.text_ctx[s, layer])

    def text_embed(self, emb, tokens, task):
        return self._with_text_ctx(0, emb, task) if self.depth else emb

    def text_layer(self, i, x, task):
        # Layer 0's context came in through text_embed; blocks past `depth` keep their input.
        return self._with_text_ctx(i, x, task) if 1 <= i < self.depth else x


@register_method("maple-mt", MaPLeConfig)
class MaPLeMT(MaPLe):
    """MaPLe-MT: one set of coupled deep prompts shared by all tasks."""

    shared = True
    text_depends_on_task = False
