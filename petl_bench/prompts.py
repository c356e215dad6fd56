"""Where prompt methods put their prompts, written once: learnt text context after SOT, and deep
visual prompts with MaPLe's semantics.

Visual: layer 0's prompts are appended after [CLS + patches] (after the positional embedding, before
ln_pre); before each deeper block i < `visual_depth` the appended tokens are replaced by layer i's
prompts (blocks past it keep what the block before produced); they are stripped before pooling.
"""

from __future__ import annotations

import torch


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
        return torch.cat([x[:, :-self.n_visual], self._expanded(i, x, task)], dim=1)

    def vision_post(self, x):
        return x[:, :-self.n_visual] if self.n_visual and self.visual_depth else x


def with_text_context(x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Text tokens [classes, context, width] with the slots right after SOT replaced by `ctx`
    [n, width]: where CoOp, MaPLe and MmAP put their learnt context, at one layer or every layer."""
    ctx = ctx.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :1], ctx, x[:, 1 + ctx.shape[1]:]], dim=1)
