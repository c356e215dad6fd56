"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-net.

Trainable: a context of `n_ctx` token embeddings (text width t) as in CoOp, and a meta-net
Linear(d, d/16) -> ReLU -> Linear(d/16, t) (d = the embed dim, with biases) that maps each image's
normalised feature to a shift added to every context token; the class prompts, and so the text
features, are per image. `text_features` runs the text tower on all images x classes of a batch
in one pass (rows image-major, each row's context put in by `with_text_context`), or, while
training with `text_chunk` > 0, in passes of that many images that are recomputed in the backward
pass (activation checkpointing). Why: ViT-B/16's text tower keeps 18 MiB of activations per
prompt row for the backward pass (fp32, measured), 1.2 GiB per image of 65 classes, so 16 images x
4 tasks in one graph would need 76 GiB; a pass of 4 images needs 4.7 GiB.
`cocoop` holds one (context, meta-net) per task, `cocoop-mt` one pair shared by all tasks.
ViT-B/16 (d = t = 512, n_ctx = 4): context 2,048 + meta-net 512*32 + 32 + 32*512 + 512 = 33,312:
35,360 per set; four tasks 141,440.

Init: the context from "a photo of a" (the official `ctxv1` configs), the meta-net as nn.Linear.
The shift is not zero at init, so an untrained CoCoOp is not zero-shot; with the meta-net's last
layer zero it is exactly CoOp with the same context, i.e. zero-shot with "a photo of a {class}.".

Departures from the official code (trainers/cocoop.py): it loops over the images of a batch (its
recipe uses batch size 1), here one batched pass; the suite's recipe (batch 16 per task, 5 epochs,
lr 0.0035) replaces theirs (batch 1, 10 epochs, lr 0.002).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from petl_bench.backbone import Hooks
from petl_bench.module import PetlModule
from petl_bench.prompts import check_context_fits, context_prompts, phrase_embeddings, with_text_context
from petl_bench.registry import register_method

from .configs import CoCoOpConfig


class RowContext(Hooks):
    """The hooks of one batched text pass: row r gets its own context `ctx[r]` after SOT."""

    def __init__(self, ctx: torch.Tensor):
        self.ctx = ctx  # [rows, n_ctx, text width]

    def text_embed(self, emb, tokens, task):
        return with_text_context(emb, self.ctx)


@register_method("cocoop", CoCoOpConfig)
class CoCoOp(PetlModule):
    """CoCoOp: a learnable context shifted per image by a meta-net, one pair per task."""

    cfg: CoCoOpConfig
    shared = False
    image_frozen = True  # the meta-net reads the frozen tower's features; it shifts only the text

    def __init__(self, cfg: CoCoOpConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        if cfg.ctx_init:
            ctx = phrase_embeddings(backbone, cfg.ctx_init).unsqueeze(0).repeat(self.n_sets, 1, 1)
        else:
            ctx = torch.randn(self.n_sets, cfg.n_ctx, backbone.text_width) * 0.02
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = ctx.shape[1]
        d, hidden = backbone.embed_dim, max(1, backbone.embed_dim // 16)
        self.meta_net = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, backbone.text_width))
            for _ in range(self.n_sets)
        )
        check_context_fits(self, self.n_ctx)

    def prompts(self, task: str) -> list[str]:
        return context_prompts(self.task(task).classnames, self.n_ctx, self.cfg.ctx_init)

    def image_context(self, image_feat: torch.Tensor, task: str) -> torch.Tensor:
        """Each image's context [batch, n_ctx, text width]: the learnt one plus the meta-net's shift."""
        s = self.set_index(task)
        shift = self.meta_net[s](F.normalize(image_feat, dim=-1))
        return self.ctx[s].unsqueeze(0) + shift.unsqueeze(1)

    def text_features(self, image_feat, task):
        """Class text features per image [batch, classes, dim]."""
        ctx = self.image_context(image_feat, task)
        tokens, encoder = self.tokens(task), self.encoder(task)
        n_classes = tokens.shape[0]

        def encode(ctx_part: torch.Tensor) -> torch.Tensor:
            rows = RowContext(ctx_part.repeat_interleave(n_classes, dim=0))  # image-major rows
            text = encoder.encode_text(tokens.repeat(len(ctx_part), 1), rows, task)
            return text.view(len(ctx_part), n_classes, -1)

        chunk = self.cfg.text_chunk
        if not (torch.is_grad_enabled() and chunk):
            return encode(ctx)
        return torch.cat([checkpoint(encode, part, use_reentrant=False) for part in ctx.split(chunk)])


@register_method("cocoop-mt", CoCoOpConfig)
class CoCoOpMT(CoCoOp):
    """CoCoOp-MT: one context and meta-net shared by all tasks."""

    shared = True
    text_depends_on_task = False
