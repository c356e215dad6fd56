"""IVLP (the MaPLe paper's "independent V-L prompting" baseline, Khattak et al., CVPR 2023): deep
text prompts and deep visual prompts, learnt independently.

Trainable, for each of the first `depth` layers k of both towers: text context tokens P_k
[n_ctx, text width] and visual prompt tokens V_k [n_ctx, vision width]. The text side is MaPLe's
(methods/maple.py: P_0 replaces the placeholders after SOT, P_k the same slots before block k);
the visual side is VPT-deep's (V_0 appended after [CLS + patches], V_k replacing them before block
k, stripped before pooling). It is MaPLe with each coupling Linear V_k = coupling_k(P_k) replaced by
free V_k, and takes MaPLe's config (n_ctx, depth, ctx_init) and its defaults, so an `ivlp` run
differs from the `maple` run beside it in the coupling alone, not in depth or tokens.
`ivlp` holds one set per task, `ivlp-mt` one set shared by all tasks.
ViT-B/16 (text 512, vision 768), n_ctx = 4, depth 12: 12 x 4 x (512 + 768) = 61,440 per set;
four tasks 245,760 (MaPLe's 4,752,384 per set is almost all coupling weights).

Init: P_k and V_k ~ N(0, 0.02), as the official code; P_0 from `ctx_init`'s token embeddings when
given. Untrained IVLP is not zero-shot (the image attends to the visual prompts); `n_ctx = 0`
(no ctx_init) means no prompts anywhere and exactly zero-shot logits.

Departures from the official code (trainers/independentVL.py with its 2+2ctx config): that config
uses 2 text and 2 visual tokens and ctx_init "a photo of a"; `--set method.n_ctx=2` gives its
token count (one count for both towers here).
"""

import torch
from torch import nn

from petl_bench.registry import register_method

from .configs import MaPLeConfig
from .maple import MaPLe


@register_method("ivlp", MaPLeConfig)
class IVLP(MaPLe):
    """IVLP: independent deep text and visual prompts, one set per task."""

    def build_visual(self, n_sets: int) -> None:
        shape = (n_sets, self.depth, self.n_ctx, self.backbone.vision_width)
        self.visual_ctx = nn.Parameter(torch.randn(shape) * 0.02)

    def visual_prompts_at(self, layer, task):
        return self.visual_ctx[self.set_index(task), layer]


@register_method("ivlp-mt", MaPLeConfig)
class IVLPMT(IVLP):
    """IVLP-MT: one set of independent deep text and visual prompts shared by all tasks."""

    shared = True
    text_depends_on_task = False
