"""PromptSRC (Khattak et al., ICCV 2023): IVLP prompts regulated towards the frozen CLIP.

Trainable: IVLP's deep text and visual prompts (methods/ivlp.py), `n_ctx` = 4 tokens per tower in
the first `depth` = 9 layers, as the official config (`vit_b16_c2_ep20_batch4_4+4ctx.yaml`).
Each task's loss adds to the cross-entropy three self-regulating terms (`training_loss`, `terms`):
- `text_weight` (25) x L1 of the prompted class text features to the frozen ones, both normalised;
  the frozen ones are the mean over the 60 templates of petl_bench/data/promptsrc-templates.txt
  (their textual diversity) of CLIP's unnormalised features, then normalised, as theirs;
- `image_weight` (10) x L1 of the prompted image features to the frozen CLIP's, both normalised;
- `logits_weight` (1) x KL(frozen logits || prompted logits), summed and divided by the logits'
  count, the frozen logits being the frozen image features against the frozen text features.
Gaussian prompt aggregation (GPA): at the end of each epoch e (1-based) of N, the prompts' values
times w_e = g(e) / sum_k g(k), g the N(gpa_mean, gpa_std) density, are added to a running sum;
after the last epoch the prompts become that sum, so the tested and checkpointed prompts are the
aggregate. The running sum rides in each epoch checkpoint, so a resumed run ends with the same one.
`promptsrc` holds one set per task, `promptsrc-mt` one set shared by all tasks.
ViT-B/16 (text 512, vision 768), 4 tokens, depth 9: 9 x 4 x (512 + 768) = 46,080 per set.

Init: IVLP's (P_0 from "a photo of a", the rest N(0, 0.02)). `n_ctx = 0` is exactly zero-shot CLIP
(no prompts), where the image term is 0, and with `templates = task` the text term too (the KL to rounding).

Departures from the official code (trainers/promptsrc.py): GPA weights each epoch's prompts, not the
whole model's state dict (only the prompts train, so the same); `gpa_mean`/`gpa_std` count epochs as
theirs, so the base-to-novel defaults (15, 1) weight the last epoch alone in a run of 5 epochs.
One token count serves both towers. fp32 throughout (their default casts prompts to fp16).
"""

from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from petl_bench.backbone import IDENTITY
from petl_bench.errors import UserError
from petl_bench.registry import register_method

from .configs import PromptSRCConfig
from .ivlp import IVLP

GPA = "promptsrc_gpa"  # the checkpoint's key for the running Gaussian sum of the prompts


def ensemble_templates() -> list[str]:
    text = resources.files("petl_bench").joinpath("data", "promptsrc-templates.txt").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """Each epoch's weight in the aggregate: the N(mean, std) density at epochs 1..N, normalised."""
    density = np.exp(-0.5 * ((np.arange(1, epochs + 1) - mean) / std) ** 2)
    return (density / density.sum()).tolist()


@register_method("promptsrc", PromptSRCConfig)
class PromptSRC(IVLP):
    """PromptSRC: IVLP prompts regulated towards the frozen CLIP and averaged over epochs, one set per task."""

    cfg: PromptSRCConfig

    def __init__(self, cfg: PromptSRCConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self._frozen_text: dict = {}  # (classnames, template) -> the frozen, template-averaged text features
        self.gpa_sum: dict[str, torch.Tensor] = {}  # parameter name -> sum of w_e x its value after epoch e

    def frozen_text_features(self, task: str) -> torch.Tensor:
        """The frozen CLIP's normalised class text features, averaged over the templates."""
        spec = self.task(task)
        key = (spec.classnames, spec.template)
        if key not in self._frozen_text:
            templates = ensemble_templates() if self.cfg.templates == "ensemble" else [spec.template]
            with torch.no_grad():
                features = [
                    self.backbone.encode_text(
                        self.backbone.tokenize([t.format(c) for c in spec.classnames]).to(self.device), IDENTITY, task
                    )
                    for t in templates
                ]
            self._frozen_text[key] = F.normalize(torch.stack(features).mean(0), dim=-1)
        return self._frozen_text[key].to(self.device)

    def terms(self, task: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss's terms, weighted: cross-entropy, and the text, image and logits regulators."""
        image = self.encoder(task).encode_image(images, self, task)
        logits = self.classify(image, task)
        with torch.no_grad():
            frozen_image = F.normalize(self.backbone.encode_image(images, IDENTITY, task), dim=-1)
            frozen_text = self.frozen_text_features(task)
            frozen_logits = self.logits(frozen_image, frozen_text, task)
        text = F.normalize(self.class_text_features(task), dim=-1)  # the step's own: no extra text pass
        kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(frozen_logits, 1), reduction="sum", log_target=True)
        return {
            "cross_entropy": F.cross_entropy(logits, labels),
            "text": self.cfg.text_weight * F.l1_loss(text, frozen_text),
            "image": self.cfg.image_weight * F.l1_loss(F.normalize(image, dim=-1), frozen_image),
            "logits": self.cfg.logits_weight * kl / logits.numel(),
        }

    def training_loss(self, task, images, labels):
        return torch.stack(list(self.terms(task, images, labels).values())).sum()

    # -- Gaussian prompt aggregation -------------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        if (self.trainer.max_epochs or -1) < 1:  # `train.iterations`: steps, not epochs, end the run
            raise UserError("promptsrc averages its prompts over epochs (GPA): give train.epochs, not train.iterations")

    def on_train_epoch_end(self) -> None:
        epochs = int(self.trainer.max_epochs or 1)  # on_train_start refused a run without epochs
        weight = gpa_weights(epochs, self.cfg.gpa_mean, self.cfg.gpa_std)[self.current_epoch]
        with torch.no_grad():
            for name, param in self.trainable():
                self.gpa_sum[name] = self.gpa_sum.get(name, torch.zeros_like(param)).to(param) + weight * param
                if self.current_epoch + 1 == epochs:  # before the checkpoint callback saves this epoch
                    param.copy_(self.gpa_sum[name])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[GPA] = {name: value.clone() for name, value in self.gpa_sum.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.gpa_sum = dict(checkpoint.get(GPA, {}))


@register_method("promptsrc-mt", PromptSRCConfig)
class PromptSRCMT(PromptSRC):
    """PromptSRC-MT: one set of regulated, epoch-averaged IVLP prompts shared by all tasks."""

    shared = True
    text_depends_on_task = False
