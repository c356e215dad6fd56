"""LP++ (Huang et al., CVPR 2024): a linear probe blended with the zero-shot text classifier by
class-wise weights, fitted full-batch with step sizes computed from the data.

Trainable (fitted): per task a weight W [classes, d], a bias b [classes] and blending weights alpha
[classes] (d = embed dim). With f the normalised image feature and t_c the normalised text feature
of the task's template for class c, logits_c = W_c f + b_c + alpha_c (f . t_c) (the `logits` hook;
the text features are the frozen tower's, computed once). `prepare` fits them on the normalised
features of the training shots (one pass of the training augmentation, as their training loader):
W starts at each class's feature sum, b at 0, every alpha_c at 250 times the mean over classes of
the shots' zero-shot cosine with their own class; `epochs` full-batch steps of SGD (momentum 0.9) on
W and b at lr 4 n / lambda_max(F^T F), and every `alpha_every` epochs a gradient step on alpha at
lr n / (4 max_c sum_i (f_i . t_c)^2), n the number of shots (their `calculate_lr_w`,
`calculate_init_alpha`, `calculate_lr_alpha`). As in their code, alpha's gradient is never zeroed:
its step uses the sum of all gradients since the start. The fit is float64; the fitted state goes
to `seed{K}/lpp.pt` (the resolved `state`); the runner skips SGD (`trained_by_sgd = False`).
`lpp` fits one probe per task, `lpp-mt` one on every task's shots, each shot blended with its own
task's text features.
ViT-B/16, 65 classes: 65 x 512 + 2 x 65 = 33,410 per task, 133,640 for four tasks.

Init: a module built without `state` has W = 0, b = 0, alpha = 0 (uniform logits) until loaded.

Departures from the official code (methods/linear_probe_p2.py, main.py): they test the epoch with the
best accuracy on a k-shot validation set; a split here has no validation set and model selection
never reads the test set, so the last epoch is the fitted probe, as the paper's fixed,
data-computed step sizes intend. Their bias starts at nn.Linear's random init, ours at 0; they run
in the CLIP model's float16 on a GPU, we fit in float64; the augmentation is the suite's training
transform (theirs: crop scale 0.5-1).
"""

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from petl_bench.module import PetlModule
from petl_bench.prepared import load_state, save_state, set_state, shot_features, template_text_features, writes_state
from petl_bench.registry import register_method

from .configs import LPPConfig

ALPHA_INIT = 250.0  # their calculate_init_alpha's factor


def fit_lpp(
    features: torch.Tensor, labels: torch.Tensor, text_logits: torch.Tensor, epochs: int, alpha_every: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LP++ on normalised features [n, d] with labels [n] and zero-shot cosines [n, classes];
    -> (W [classes, d], b [classes], alpha [classes])."""
    x, z, y = features.double(), text_logits.double(), labels.long()
    one_hot = F.one_hot(y, z.shape[1]).double()
    weight = (one_hot.t() @ x).requires_grad_(True)  # each class's feature sum (their compute_centroids)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    true_class_cosine = (one_hot * z).sum(0) / one_hot.sum(0)
    alpha = torch.full((z.shape[1],), ALPHA_INIT * true_class_cosine.mean().item(), dtype=torch.float64)
    alpha.requires_grad_(True)
    lr_weight = 4 * len(x) / torch.linalg.eigvalsh(x.t() @ x).max().item()
    lr_alpha = len(x) / (4 * z.pow(2).sum(0).max().item())
    optimizer = torch.optim.SGD([weight, bias], lr=lr_weight, momentum=0.9)
    with torch.enable_grad():
        for epoch in range(epochs):
            loss = F.cross_entropy(x @ weight.t() + bias + alpha * z, y)
            optimizer.zero_grad()  # W and b only: alpha's gradient accumulates, as theirs
            loss.backward()
            optimizer.step()
            if (epoch + 1) % alpha_every == 0:
                assert alpha.grad is not None  # the loss depends on alpha
                with torch.no_grad():
                    alpha -= lr_alpha * alpha.grad
    return weight.detach().float(), bias.detach().float(), alpha.detach().float()


@register_method("lpp", LPPConfig)
class LPP(PetlModule):
    """LP++: a linear probe blended with the zero-shot text classifier, fitted per task."""

    shared = False
    trained_by_sgd = False
    text_frozen = True
    image_frozen = True  # a classifier on the frozen tower's features
    open_vocabulary = False  # a weight row per trained class
    per_class = "probe"
    text_depends_on_task = False

    def __init__(self, cfg: LPPConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.probe_weight = self.class_rows(backbone.embed_dim)
        self.probe_bias = self.class_rows()
        self.blend = self.class_rows()  # alpha
        if cfg.state:
            load_state(self, cfg.state)

    @classmethod
    @writes_state
    def prepare(cls, run, backbone, data, work_dir):
        cfg = run.params
        shots = shot_features(backbone, data, data.train_transform)
        inputs = {}
        for task in data.tasks:
            features, labels = shots[task.name]
            features = F.normalize(features, dim=-1)
            text = F.normalize(template_text_features(backbone, task), dim=-1)
            inputs[task.name] = (features, labels, features @ text.t())
        sets = cls.tasks_by_set(data.tasks)
        fits = []
        for tasks in sets.values():
            parts = zip(*(inputs[task.name] for task in tasks), strict=True)
            features, labels, text_logits = (torch.cat(part) for part in parts)
            fits.append(fit_lpp(features, labels, text_logits, cfg.epochs, cfg.alpha_every))
        weight, bias, blend = (list(part) for part in zip(*fits, strict=True))
        state = {**set_state("probe_weight", weight), **set_state("probe_bias", bias), **set_state("blend", blend)}
        path = save_state(Path(work_dir) / "lpp.pt", state)
        means = {name: round(alpha.mean().item(), 4) for name, alpha in zip(sets, blend, strict=True)}
        return dataclasses.replace(cfg, state=path), {"lpp": {"mean_alpha": means}}

    def logits(self, image_feat, text_feat, task):
        assert text_feat is not None  # the class text features: `text_features` is the base class's
        s = self.set_index(task)
        image = F.normalize(image_feat, dim=-1)
        probe = image @ self.probe_weight[s].t() + self.probe_bias[s]
        return probe + self.blend[s] * (image @ F.normalize(text_feat, dim=-1).t())


@register_method("lpp-mt", LPPConfig)
class LPPMT(LPP):
    """LP++-MT: one linear probe blended with the zero-shot text classifier, fitted on every task's shots."""

    shared = True
