"""KgCoOp (Yao et al., CVPR 2023): CoOp regularised towards the hand-written prompt's text features.

Trainable: CoOp's context (see methods/coop.py), initialised from "a photo of a" as in the official
configs (`CTX_INIT: True`, 4 tokens). Each task's loss adds
`weight * (1 - mean over classes of cos(w_c, w_c^clip))`, w_c the learnt class text feature and
w_c^clip the frozen CLIP feature of "a photo of a {class}." (the `regularizer` hook); weight 8.0
as in the official scripts. The paper writes the squared Euclidean distance of normalised features,
2 (1 - cos): the code's form is used, so weight 8.0 means what it means there.
`kgcoop` holds one context per task, `kgcoop-mt` one shared by all tasks.
ViT-B/16: 4 tokens x 512 = 2,048 per context; four tasks 8,192.

Init: the context equals the phrase's token embeddings, so an untrained KgCoOp gives exactly
zero-shot's logits with the template "a photo of a {class}." and its regulariser is 0.

The hand-written prompt is the task's template, as the official code's per-dataset CUSTOM_TEMPLATES
(trainers/kgcoop.py): CoOp's for its datasets, "a photo of a {class}." where a dataset has none.
"""

import torch.nn.functional as F

from petl_bench.registry import register_method

from .configs import KgCoOpConfig
from .coop import CoOp


@register_method("kgcoop", KgCoOpConfig)
class KgCoOp(CoOp):
    """KgCoOp: CoOp pulled towards the hand-written prompt's text features, one context per task."""

    def regularizer(self, task):
        learnt = self.class_text_features(task)  # the step's own features: no extra text pass
        cos = F.cosine_similarity(learnt, self.handwritten_features(task), dim=-1, eps=1e-7)
        return self.cfg.weight * (1.0 - cos.mean())


@register_method("kgcoop-mt", KgCoOpConfig)
class KgCoOpMT(KgCoOp):
    """KgCoOp-MT: one context shared by all tasks, pulled towards the hand-written prompt."""

    shared = True
    text_depends_on_task = False
