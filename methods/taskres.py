"""TaskRes (Yu et al., CVPR 2023): a learnt residual on the zero-shot text classifier.

Trainable: per task a residual x [classes, d] (d = embed dim) on the frozen base classifier t, the
class text features of the task's template as the text tower gives them (not normalised):
the classifier is t + scale * x, normalised, against the normalised image feature, times CLIP's logit
scale (the `text_features` hook; `logits` is the base class's). Neither tower runs with a hook: the
base is computed once per task and the image features are the frozen tower's.
`taskres` holds one residual per task (of its own classes), `taskres-mt` one shared by all tasks
(every task needs the same classes).
ViT-B/16, 65 classes: 65 x 512 = 33,280 per task, 133,120 for four tasks.

Init: x = 0, so an untrained TaskRes gives exactly zero-shot's logits; so does `scale = 0`.

Departures from the official code (trainers/taskres.py, TaskResLearner and CustomCLIP): the base is
the task's template alone (theirs adds CoOp's seven ImageNet templates on ImageNet; a task's template
is our one hand-written prompt); training follows the suite's recipe unless `--set` gives theirs
(benchmarks/recipes/taskres.yaml: Adam lr 2e-3, batch 256, 100-200 epochs, scale 0.5).
"""

from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import TaskResConfig


@register_method("taskres", TaskResConfig)
class TaskRes(PetlModule):
    """TaskRes: a learnt residual on the zero-shot text classifier, one per task."""

    shared = False
    text_frozen = True  # the residual acts on the frozen text features
    image_frozen = True
    open_vocabulary = False  # a residual row per trained class
    per_class = "residual"
    text_depends_on_task = False  # the base: the task's classes and template only

    def __init__(self, cfg: TaskResConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.residual = self.class_rows(backbone.embed_dim)

    def text_features(self, image_feat, task):
        return self.class_text_features(task) + self.cfg.scale * self.residual[self.set_index(task)]


@register_method("taskres-mt", TaskResConfig)
class TaskResMT(TaskRes):
    """TaskRes-MT: one learnt residual on the zero-shot text classifier, shared by all tasks."""

    shared = True
