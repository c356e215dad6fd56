"""Where prompt methods put their prompts, written once: learnt text context after SOT (its prompt
strings, its initial phrase, the check that it fits), and deep visual prompts with MaPLe's semantics.

Visual: layer 0's prompts are appended after [CLS + patches] (after the positional embedding, before
ln_pre); before each deeper block i < `visual_depth` the appended tokens are replaced by layer i's
prompts (blocks past it keep what the block before produced); they are stripped before pooling.
"""

from __future__ import annotations

import torch

from .errors import UserError


class DeepVisualPrompts:
    """Mixin for a PetlModule: set `n_visual` and `visual_depth`, define `visual_prompts_at`."""

    n_visual = 0  # tokens appended to the image sequence; 0 = none, every hook the identity
    visual_depth = 0  # layers that get their own prompts

    def visual_prompts_at(self, layer: int, task: str) -> torch.Tensor:
        """The [n_visual, vision width] prompts of one layer for the task."""
        raise NotImplementedError

    def _expanded(self, layer: int, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.visual_prompts_at(layer, task).to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)

    def vision_embed(self, x, task):
        if not (self.n_visual and self.visual_depth):
            return x
        return torch.cat([x, self._expanded(0, x, task)], dim=1)

    def vision_layer(self, i, x, task):
        if not self.n_visual or not 1 <= i < self.visual_depth:
            return x
        return torch.cat([x[:, : -self.n_visual], self._expanded(i, x, task)], dim=1)

    def vision_post(self, x):
        return x[:, : -self.n_visual] if self.n_visual and self.visual_depth else x


def with_text_context(x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Text tokens [rows, context, width] with the slots right after SOT replaced by `ctx`, [n, width]
    for every row or [rows, n, width] per row: where CoOp, MaPLe and MmAP put their learnt context,
    at one layer or every layer, and CoCoOp its per-image context."""
    ctx = ctx.to(x.dtype)
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :1], ctx, x[:, 1 + ctx.shape[1] :]], dim=1)


def context_prompts(classnames, n_ctx: int, ctx_init: str = "") -> list[str]:
    """ "{ctx_init} {class}." or, with no phrase, n_ctx placeholders: "X X .. X {class}."."""
    context = ctx_init or " ".join(["X"] * n_ctx)
    return [f"{context} {name}." for name in classnames]


def phrase_embeddings(backbone, phrase: str) -> torch.Tensor:
    """The token embeddings [n, text width] of a phrase such as "a photo of a" (no SOT, no EOT):
    a learnt context initialised from them starts as that phrase."""
    tokens = backbone.tokenize([phrase])[0]
    n = int((tokens > 0).sum()) - 2  # drop SOT and EOT
    return backbone.model.token_embedding.weight[tokens[1 : 1 + n]].detach().clone()


def check_context_fits(module, n_ctx: int) -> None:
    """Every class prompt of every task of a PetlModule, with `n_ctx` context tokens, fits the
    model's context length; else one clear error."""
    for task in module.task_names:
        tokens = module.tokens(task)
        # A cut prompt ends in EOT at the last position, which the class name should not reach.
        if bool((tokens[:, -1] != 0).any()):
            raise UserError(
                f"{module.method_name}: {n_ctx} context tokens plus a class name of task "
                f"{task!r} exceed the model's context length {module.backbone.context_length}"
            )
