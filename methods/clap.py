"""CLAP (Silva-Rodriguez et al., CVPR 2024): a linear probe that starts at the zero-shot prototypes
and is held near them by class-adaptive penalties.

Trainable: per task the prototypes w [classes, d] (d = embed dim); the logits are CLIP's logit scale
times cos(image feature, w_c) (the `text_features` hook gives w, `logits` is the base class's).
Each task's loss adds the penalty mean over classes c of lambda_c |w_c - t_c|^2 (the `regularizer`
hook), t the frozen zero-shot prototypes: the text features of the task's template, not normalised.
`prepare` computes t and the multipliers lambda_c, the zero-shot softmax probability of class c
averaged over class c's training shots under `augment_epochs` augmented passes (one in a
`fast_dev_run`; their `init_lagrangian_multipliers` on 20 passes); both go to `seed{K}/clap.pt`
(the resolved `state`) as buffers beside the initial prototypes. With `lagrangian`, the augmented
Lagrangian's outer step (their `outer_step`, the PHR penalty's gradient) updates them after every
epoch: lambda <- lambda + rho * h, rho <- h, with h_c = |w_c - t_c|^2 and rho starting at 0; their
experiments keep lambda fixed (`CONSTRAINT l2`), so it is off by default. Neither tower runs with a hook.
`clap` holds one probe per task, `clap-mt` one shared by all tasks, anchored at the mean of the
tasks' zero-shot prototypes (the prototypes themselves when the tasks share a template), with
multipliers from all their shots.
ViT-B/16, 65 classes: 65 x 512 = 33,280 per task, 133,120 for four tasks.

Init: w = t, so a prepared, untrained CLAP gives exactly zero-shot's logits and a zero penalty. A
module built without `state` has zero prototypes and multipliers (uniform logits) until loaded.

Departures from the official code (trainers/adapters.py, `AdapterMethod`, `ADAPTER.train`): they
train on the features of 20 augmented passes, cached once; here every step encodes freshly augmented
shots (the same number of steps per epoch, its augmentations never repeat). Their base averages
CoOp's seven ImageNet templates on ImageNet; ours is the task's template. A checkpoint holds the
prototypes only: a run resumed with `lagrangian` restarts from the prepared multipliers.
"""

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from petl_bench.module import PetlModule
from petl_bench.prepared import (
    load_state,
    save_state,
    set_state,
    shot_feature_passes,
    template_text_features,
    writes_state,
)
from petl_bench.registry import register_method

from .configs import CLAPConfig


@register_method("clap", CLAPConfig)
class CLAP(PetlModule):
    """CLAP: a linear probe from the zero-shot prototypes under class-adaptive penalties, one per task."""

    shared = False
    text_frozen = True  # no text pass: the prototypes are the classifier
    image_frozen = True
    open_vocabulary = False  # a prototype per trained class
    per_class = "probe"
    text_depends_on_task = False
    cfg: CLAPConfig

    def __init__(self, cfg: CLAPConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.prototypes = self.class_rows(backbone.embed_dim)
        self.anchors = self.class_rows(backbone.embed_dim, buffer=True)  # t: the zero-shot prototypes
        self.multipliers = self.class_rows(buffer=True)  # lambda
        self.penalty_weights = self.class_rows(buffer=True)  # rho of the outer step
        if cfg.state:
            load_state(self, cfg.state)

    @classmethod
    @writes_state
    def prepare(cls, run, backbone, data, work_dir):
        cfg = run.params
        # A fast_dev_run checks the path, not the scores: one pass.
        n_passes = 1 if run.train.fast_dev_run else cfg.augment_epochs
        passes = shot_feature_passes(backbone, data, data.train_transform, n_passes)
        scale = backbone.logit_scale.exp().clamp(max=100).item()  # the logit scale of `PetlModule.logits`
        sets = cls.tasks_by_set(data.tasks)
        anchors, multipliers = [], []
        for tasks in sets.values():
            texts = [template_text_features(backbone, task) for task in tasks]
            probabilities, labels = [], []
            for task, text in zip(tasks, texts, strict=True):
                features, task_labels = passes[task.name]
                logits = scale * F.normalize(features, dim=-1) @ F.normalize(text, dim=-1).t()
                probabilities.append(logits.softmax(-1).flatten(0, 1))
                labels.append(task_labels.repeat(len(features)))
            anchors.append(torch.stack(texts).mean(0))
            multipliers.append(class_mean_of_true_probability(torch.cat(probabilities), torch.cat(labels)))
        state = {**set_state("prototypes", anchors), **set_state("anchors", anchors)}
        path = save_state(Path(work_dir) / "clap.pt", {**state, **set_state("multipliers", multipliers)})
        means = {name: round(m.mean().item(), 4) for name, m in zip(sets, multipliers, strict=True)}
        return dataclasses.replace(cfg, state=path), {"clap": {"mean_multiplier": means}}

    def text_features(self, image_feat, task):
        return self.prototypes[self.set_index(task)]

    def distances(self, s: int) -> torch.Tensor:
        """h: each class's squared distance from its zero-shot prototype."""
        return (self.prototypes[s] - self.anchors[s]).pow(2).sum(-1)

    def regularizer(self, task):
        s = self.set_index(task)
        return (self.multipliers[s] * self.distances(s)).mean()

    def on_train_epoch_end(self) -> None:
        if not self.cfg.lagrangian:
            return
        with torch.no_grad():
            # The PHR penalty's gradient in lambda + rho h, never negative here, is the new lambda.
            for s in range(self.n_sets):
                distances = self.distances(s)
                self.multipliers[s].add_(self.penalty_weights[s] * distances)
                self.penalty_weights[s].copy_(distances)


def class_mean_of_true_probability(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[classes]: class c's probability under the zero-shot classifier, averaged over the shots of class c."""
    one_hot = F.one_hot(labels, probabilities.shape[1]).float()
    return (probabilities * one_hot).sum(0) / one_hot.sum(0)


@register_method("clap-mt", CLAPConfig)
class CLAPMT(CLAP):
    """CLAP-MT: one linear probe from the zero-shot prototypes under class-adaptive penalties, shared by all tasks."""

    shared = True
