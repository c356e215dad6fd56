"""BitFit (Zaken et al., ACL 2022): train only the bias terms of the backbone.

Trainable: every backbone parameter whose name ends in `bias`, in both towers: the attention
`in_proj_bias` and `out_proj.bias`, the MLP biases and the LayerNorm biases (ln_pre, ln_1, ln_2,
ln_post, ln_final). One set shared by all tasks; no hooks, the backbone's own biases change.
ViT-B/16 (conv1, the projections and the embeddings have no bias): per block
LN 2w + attention 3w + w + MLP 4w + w = 11w, so the image tower 12 x 11 x 768 + 2 x 768 = 102,912
and the text tower 12 x 11 x 512 + 512 = 68,096: 171,008 (the paper's 0.17 M).
"""

from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import BitFitConfig


@register_method("bitfit", BitFitConfig)
class BitFit(PetlModule):
    """BitFit: every bias of both towers trains, shared by all tasks."""

    shared = True
    text_depends_on_task = False

    def trainable(self):
        return ((n, p) for n, p in self.backbone.named_parameters(prefix="backbone") if n.endswith("bias"))
