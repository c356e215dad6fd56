"""ProGrad (Zhu et al., ICCV 2023, "Prompt-aligned Gradient for Prompt Tuning"): CoOp whose update
never works against zero-shot CLIP's knowledge.

Trainable: CoOp's context (methods/coop.py), `n_ctx` = 16 tokens, of which the last ones start as
the embeddings of `ctx_init` ("a photo of a") and the others at zero, as ProGrad's `PromptLearner`
with `CTX_INIT: True` (its scripts' NCTX 16). Each step and task, two gradients of the context:
g_ce of the cross-entropy and g_kd of the distillation loss towards zero-shot's logits
(soft-target cross-entropy at temperature T, times T^2; the teacher is the frozen CLIP with the
task's hand-written prompt). Where they conflict (g_ce . g_kd < 0) the update is
g_ce - lambda (g_ce . g_kd / |g_kd|^2) g_kd, else g_ce; lambda = `weight` = 1.0 as their scripts.
Both come from `torch.autograd.grad` inside `training_loss`, which returns a loss whose value is the
cross-entropy and whose gradient is that update (`with_gradient`), so the base's optimiser,
schedule, precision and checkpoints stay as they are. `prograd` holds one context per task,
`prograd-mt` one shared by all tasks (each task's gradient projected on its own KD gradient).
ViT-B/16: 16 x 512 = 8,192 per context, as CoOp.

Init: with `n_ctx` equal to the phrase's token count the context is the phrase and an untrained
ProGrad gives zero-shot's logits; with 16 tokens the 12 leading zeros make it differ.

Departures from the official code (trainers/prograd.py, Dassl's `prograd_backward_and_update`):
their projection runs per parameter tensor of one dataset's step; here per task, over the
context rows that task trains (its own set in `prograd`, the shared one in `prograd-mt`). Their
`ctx_init` is the dataset's template with " {}." cut; here one phrase (`ctx_init`) for all tasks,
while the teacher uses each task's own template. Their AMP branch skips the projection; here it
runs under every precision.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from petl_bench.errors import UserError
from petl_bench.prompts import context_prompts, phrase_embeddings
from petl_bench.registry import register_method

from .configs import ProGradConfig
from .coop import CoOp


def conflict_free(g_ce: torch.Tensor, g_kd: torch.Tensor, weight: float) -> torch.Tensor:
    """g_ce, less `weight` times its component along g_kd where the two point apart (ProGrad's rule)."""
    dot = (g_ce * g_kd).sum()
    along = dot / g_kd.square().sum().clamp_min(torch.finfo(g_kd.dtype).tiny) * g_kd
    return torch.where(dot < 0, g_ce - weight * along, g_ce)  # no host sync on the test


def with_gradient(value: torch.Tensor, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """A scalar equal to `value` whose gradient with respect to `params` is `grads`."""
    surrogate = torch.stack([(p * g.detach()).sum() for p, g in zip(params, grads, strict=True)]).sum()
    return value.detach() + surrogate - surrogate.detach()


def distillation(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target cross-entropy towards the teacher's logits at `temperature`, times its square
    (ProGradLoss's kl_loss: KL's gradient, without the teacher's constant entropy)."""
    target = F.softmax(teacher / temperature, dim=-1)
    return -(target * F.log_softmax(logits / temperature, dim=-1)).sum(-1).mean() * temperature**2


@register_method("prograd", ProGradConfig)
class ProGrad(CoOp):
    """ProGrad: CoOp whose gradient is cleared of what conflicts with zero-shot CLIP's, one context per task."""

    cfg: ProGradConfig

    def initial_context(self) -> torch.Tensor:
        if not self.cfg.ctx_init:
            return super().initial_context()
        phrase = phrase_embeddings(self.backbone, self.cfg.ctx_init)
        if len(phrase) > self.cfg.n_ctx:
            raise UserError(
                f"{self.method_name}: ctx_init {self.cfg.ctx_init!r} has {len(phrase)} tokens, more than "
                f"n_ctx {self.cfg.n_ctx}; raise n_ctx, or set method.ctx_init= for noise"
            )
        ctx = torch.zeros(self.n_sets, self.cfg.n_ctx, self.backbone.text_width)
        ctx[:, self.cfg.n_ctx - len(phrase) :] = phrase
        return ctx

    def prompts(self, task: str) -> list[str]:
        return context_prompts(self.task(task).classnames, self.n_ctx)  # the phrase sits in the context

    def teacher_logits(self, image_feat: torch.Tensor, task: str) -> torch.Tensor:
        """Zero-shot CLIP's logits: the same image features against the hand-written prompts'."""
        with torch.no_grad():
            return self.logits(image_feat, self.handwritten_features(task), task)

    def training_loss(self, task, images, labels):
        image_feat = self.encoder(task).encode_image(images, self, task)
        logits = self.classify(image_feat, task)
        cross_entropy = F.cross_entropy(logits, labels)
        params = [p for _, p in self.trainable() if p.requires_grad]
        if not (torch.is_grad_enabled() and params):
            return cross_entropy
        kd = distillation(logits, self.teacher_logits(image_feat, task), self.cfg.temperature)
        g_ce = torch.autograd.grad(cross_entropy, params, retain_graph=True, allow_unused=True)
        g_kd = torch.autograd.grad(kd, params, retain_graph=True, allow_unused=True)
        grads = [
            conflict_free(*(torch.zeros_like(p) if g is None else g for g in (a, b)), self.cfg.weight)
            for p, a, b in zip(params, g_ce, g_kd, strict=True)
        ]
        return with_gradient(cross_entropy, params, grads)


@register_method("prograd-mt", ProGradConfig)
class ProGradMT(ProGrad):
    """ProGrad-MT: one context shared by all tasks, its gradient cleared of conflicts with zero-shot's."""

    shared = True
    text_depends_on_task = False
