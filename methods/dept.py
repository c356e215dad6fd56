"""DePT (Zhang et al., CVPR 2024, "DePT: Decoupled Prompt Tuning"): a plug-in for a prompt method,
which adds a base-specific head beside the method's own image-text matching.

Trainable: the base method's parameters (`method.base`: coop, kgcoop, maple or ivlp; `dept-mt`
wraps its -mt variant; `method.base_set` sets its fields) and, per set, DePT's channel-wise
transforms (cwT: a scale, starting at 1, and a shift, at 0, per feature channel) for the image
and the text features, and a Linear(d, classes) head. Training loss per task:
(1 - lambda) CE(the base method's logits) + lambda CE(head(cwT_text(t_y)) and head(cwT_image(f)),
each image's feature f and its class's text feature t_y, labelled y) + the base method's
regulariser (KgCoOp's), lambda = `weight` = 0.7. Logits of the classes trained on: (1 - lambda)
the base method's + lambda head(cwT_image(f)). The head and transforms train at `head_lr_scale`
(6.5) times `optim.lr`, as DePT's staged lr. The features are the base method's before
normalisation (after its `head` hook), so the base's hooks run the backbone unchanged.

Built as a subclass of the base method's class, generated once per base (`with_head`): the base's
file is untouched and its hooks, caches and flags (`image_frozen`, `text_frozen`) are the module's.
Its own parameter names are the base's, so DePT's checkpoint loads into the base method.

Classes never trained on: the head has a row per trained class (`open_vocabulary = False`). As
DePT's `_forward_new`, such classes are scored by the prompt branch alone: load a DePT checkpoint
into its base method (`coop` for `dept` on coop) built on them; its head and transforms are left out.
ViT-B/16 (d = 512): per set 4 x 512 + 512 x classes + classes on top of the base method; on coop
(8,192) with 65 classes, 8,192 + 2,048 + 33,345 = 43,585 per task.

Init: cwT identity, the head PyTorch's default Linear; `weight = 0` gives exactly the base method's
logits (and loss), whatever the head holds.

Departures from the official code (trainers/elp_coop.py, elp_kgcoop.py, elp_maple.py; train.py's
LINEAR_PROBE and FILM settings): their warm-up epoch trains the head at the constant warm-up lr,
here at `head_lr_scale` times it; their KgCoOp weight 2.0 and MaPLe's 2 tokens in 9 layers are
`method.base_set` away (kgcoop's and maple's own defaults otherwise).
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from petl_bench.config import validate_params
from petl_bench.module import PetlModule
from petl_bench.registry import get_method, register_method

from .configs import DePTConfig

HEAD_PREFIX = "dept_"  # DePT's own parameters, which train at head_lr_scale


class ChannelTransform(nn.Module):
    """DePT's cwT: x * scale + shift, per channel (their FiLM), starting as the identity."""

    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.shift = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class DecoupledHead:
    """DePT's part of a generated subclass (`with_head`): the base method's class follows it in the MRO."""

    dept_cfg: DePTConfig

    def __init__(self, cfg: DePTConfig, backbone, tasks, optim=None):
        validate_params(cfg)  # DePT's own fields; the base's __init__ checks the base's
        super().__init__(cfg.base_config(), backbone, tasks, optim)  # type: ignore[call-arg]
        module = self._module()
        self.dept_cfg = cfg
        width = backbone.embed_dim
        classes = [len(module.tasks[0 if module.shared else s].classnames) for s in range(module.n_sets)]
        self.dept_image = nn.ModuleList(ChannelTransform(width) for _ in classes)
        self.dept_text = nn.ModuleList(ChannelTransform(width) for _ in classes)
        self.dept_head = nn.ModuleList(nn.Linear(width, n) for n in classes)

    def _module(self) -> PetlModule:
        assert isinstance(self, PetlModule)
        return self

    def lr_scale(self, name: str) -> float:
        return self.dept_cfg.head_lr_scale if name.startswith(HEAD_PREFIX) else super().lr_scale(name)  # type: ignore[misc]

    def branches(self, image_feat: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The base method's logits, and the image and class text features they compare."""
        module = self._module()
        image, text = module.head(image_feat, module.text_features(image_feat, task), task)
        assert text is not None and text.dim() == 2, "DePT's bases compare images with class text features"
        return module.logits(image, text, task), image, text

    def classify(self, image_feat: torch.Tensor, task: str) -> torch.Tensor:
        logits, image, _ = self.branches(image_feat, task)
        s, weight = self._module().set_index(task), self.dept_cfg.weight
        return (1 - weight) * logits + weight * self.dept_head[s](self.dept_image[s](image))

    def training_loss(self, task: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        module = self._module()
        logits, image, text = self.branches(module.encoder(task).encode_image(images, module, task), task)
        s, weight = module.set_index(task), self.dept_cfg.weight
        features = torch.cat([self.dept_text[s](text[labels]), self.dept_image[s](image)])
        head_loss = F.cross_entropy(self.dept_head[s](features), labels.repeat(2))
        return (1 - weight) * F.cross_entropy(logits, labels) + weight * head_loss + module.regularizer(task)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["petl_bench"]["params"] = dataclasses.asdict(self.dept_cfg)  # the run's config, not the base's


_GENERATED: dict[tuple[type, type], type] = {}  # (base class, registered class) -> their subclass, made once


def with_head(base: type[PetlModule], registered: type[PetlModule]) -> type[PetlModule]:
    """The base method's class with DePT's head, as the registered DePT class (`registered`) names it."""
    key = (base, registered)
    if key not in _GENERATED:
        _GENERATED[key] = type(
            f"{registered.__name__}{base.__name__}",
            (DecoupledHead, base, registered),
            {
                "method_name": registered.method_name,
                "shared": registered.shared,
                "open_vocabulary": False,
                "per_class": registered.per_class,
            },
        )
    return _GENERATED[key]


@register_method("dept", DePTConfig)
class DePT(PetlModule):
    """DePT: a prompt method plus a decoupled channel-wise transform and linear head, one set per task."""

    shared = False
    open_vocabulary = False  # a head row per trained class; see the module docstring for novel classes
    per_class = "head"
    # Whether images are frozen depends on the base; a built module carries its base's flags.
    image_frozen = False

    def __new__(cls, cfg: DePTConfig | None = None, *args, **kwargs):
        built: type[PetlModule] = cls
        if cfg is not None and not issubclass(cls, DecoupledHead):  # building the registered class
            built = with_head(get_method(f"{cfg.base}-mt" if cls.shared else cfg.base).cls, cls)
        return super().__new__(built)


@register_method("dept-mt", DePTConfig)
class DePTMT(DePT):
    """DePT-MT: the base method's -mt variant plus one transform and head shared by all tasks."""

    shared = True
