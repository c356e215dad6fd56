"""Every method's config: its fields, each with its default and range (`rule`), and the checks
between fields (`check()`). No torch: `--set` checks, `petl-bench config`, the config hash and a
sweep's dry run read them without the training stack. A method's module (its own file) imports its
config from here; `methods/__init__.py` registers the two together.
"""

import dataclasses
import typing
from dataclasses import dataclass

from petl_bench.config import MethodConfig, parse_value, rule, validate_params
from petl_bench.errors import UserError


# -- zero-shot, BitFit, full fine-tuning: nothing to set ------------------------------------------
@dataclass
class ZeroShotConfig(MethodConfig):
    pass


@dataclass
class BitFitConfig(MethodConfig):
    pass


@dataclass
class FullFTConfig(MethodConfig):
    pass


# -- text context: CoOp, KgCoOp, CoCoOp ------------------------------------------------------------
@dataclass
class CoOpConfig(MethodConfig):
    n_ctx: int = rule(16, ge=1)  # learnable context tokens (ignored when ctx_init is set)
    ctx_init: str = ""  # phrase whose embeddings initialise the context, e.g. "a photo of a"


@dataclass
class KgCoOpConfig(CoOpConfig):
    n_ctx: int = rule(4, ge=1)  # learnable context tokens (ignored when ctx_init is set), CoOp's rule
    ctx_init: str = "a photo of a"  # phrase whose embeddings initialise the context
    weight: float = rule(8.0, ge=0)  # lambda: weight of 1 - cos(learnt, hand-written) in each task's loss


@dataclass
class CoCoOpConfig(MethodConfig):
    n_ctx: int = rule(4, ge=0)  # learnable context tokens (ignored when ctx_init is set)
    ctx_init: str = "a photo of a"  # phrase whose embeddings initialise the context
    # images per checkpointed text pass while training; 0 = one pass, no checkpointing
    text_chunk: int = rule(4, ge=0)

    def check(self) -> None:
        if not self.ctx_init and self.n_ctx < 1:
            raise UserError(f"method.n_ctx={self.n_ctx}: must be >= 1 when method.ctx_init is empty")


# -- deep prompts: VPT, MaPLe and IVLP, MmAP -------------------------------------------------------
@dataclass
class VPTConfig(MethodConfig):
    n_prompts: int = rule(18, ge=0)  # visual prompt tokens per layer
    depth: int = rule(12, ge=0)  # layers that get their own prompts (capped at the image tower's depth)


@dataclass
class MaPLeConfig(MethodConfig):
    n_ctx: int = rule(4, ge=0)  # context tokens per layer
    depth: int = rule(12, ge=1)  # layers of both towers that get prompts (capped at the shallower tower)
    ctx_init: str = "a photo of a"  # phrase whose first n_ctx token embeddings start P_0; "" = noise


PROMPTSRC_TEMPLATES = ("ensemble", "task")  # what PromptSRC's frozen text features average over


@dataclass
class PromptSRCConfig(MaPLeConfig):
    depth: int = rule(9, ge=1)  # layers of both towers that get prompts (PROMPT_DEPTH_VISION / _TEXT)
    text_weight: float = rule(25.0, ge=0)  # L1 of prompted to frozen text features (TEXT_LOSS_WEIGHT)
    image_weight: float = rule(10.0, ge=0)  # L1 of prompted to frozen image features (IMAGE_LOSS_WEIGHT)
    logits_weight: float = rule(1.0, ge=0)  # KL of the prompted logits to the frozen ones (the code's 1)
    gpa_mean: float = rule(15.0, gt=0)  # the epoch (1-based) of the Gaussian prompt aggregation's peak (GPA_MEAN)
    gpa_std: float = rule(1.0, gt=0)  # its width in epochs (GPA_STD)
    # the frozen text features: the mean over PromptSRC's 60 templates, or the task's template alone
    templates: str = rule("ensemble", choices=PROMPTSRC_TEMPLATES)


@dataclass
class CoPromptConfig(MaPLeConfig):
    n_ctx: int = rule(2, ge=0)  # context tokens per layer (TRAINER.CoPrompt.N_CTX)
    depth: int = rule(9, ge=1)  # layers of both towers that get prompts (PROMPT_DEPTH)
    weight: float = rule(1.0, ge=0)  # W: weight of the consistency terms (their config's TRAINER.W)
    image_ratio: float = rule(0.1, ge=0, le=1)  # weight of the image adapter's output in its blend
    text_ratio: float = rule(0.2, ge=0, le=1)  # weight of the text adapter's output in its blend
    reduction: int = rule(4, ge=1)  # adapter bottleneck width = embed dim // reduction
    descriptions: str = ""  # JSON file: class name -> sentences (their gpt_file format); "" = the task's template


GROUPINGS = ("gradient", "random", "all")  # how MmAP's `prepare` finds task groups


@dataclass
class MmAPConfig(MethodConfig):
    b: int = rule(7, ge=1)  # prompt tokens per set per layer (per tower)
    m: int = rule(7, ge=1)  # rows of the source prompt; must divide b
    n: int = rule(256, ge=1)  # columns of the source prompt; lowered to the largest that divides both widths
    depth: int = rule(12, ge=1)  # layers of both towers that get prompts (capped at the shallower tower)
    groups: str = ""  # fixed groups, e.g. "Art,Clipart|Product,Real World"; empty: see `grouping`
    grouping: str = rule("gradient", choices=GROUPINGS)  # how `prepare` finds groups when none are fixed
    max_groups: int = rule(2, ge=1)  # at most this many groups (gradient, random)
    grouping_warmup_steps: int = rule(20, ge=0)  # SGD steps of the global prompt set before gradients are read
    grouping_batches: int = rule(8, ge=1)  # batches each task's gradient is averaged over
    task_specific: bool = True  # one set per task
    group_shared: bool = True  # one set per group

    def check(self) -> None:
        if self.b % self.m:
            raise UserError(f"method.m={self.m}: m must divide b ({self.b}): the scaling matrices have b/m rows")
        if not (self.task_specific or self.group_shared):
            raise UserError(
                "method.task_specific=False, method.group_shared=False: at least one of "
                "task_specific and group_shared must be on"
            )


@dataclass
class MmAPMLPConfig(MmAPConfig):
    s: int = rule(96, ge=1)  # width of the source prompt [b, s]
    hidden: int = rule(36, ge=1)  # hidden width of the two MLPs


# -- adapters and weight updates: CLIP-Adapter, LoRA, AdaptFormer ----------------------------------
ADAPTED_TOWERS = ("both", "image", "text")  # whose features CLIP-Adapter adapts


@dataclass
class CLIPAdapterConfig(MethodConfig):
    reduction: int = rule(2, ge=1)  # bottleneck width = embed dim // reduction
    ratio: float = rule(0.2, ge=0, le=1)  # weight of the adapted feature in the residual blend
    towers: str = rule("both", choices=ADAPTED_TOWERS)  # whose features get an adapter: both | image | text


@dataclass
class MMAConfig(MethodConfig):
    layers: int = rule(8, ge=1)  # adapters in the last `layers` blocks of each tower (ADAPTER_START 5 to END 12 of 12)
    dim: int = rule(32, ge=1)  # width of the shared space (ADAPTER_DIM)
    scale: float = rule(0.001, ge=0)  # weight of the adapters' output (ADAPTER_SCALE); 0: zero-shot


@dataclass
class LoRAConfig(MethodConfig):
    rank: int = rule(2, ge=1)  # r
    alpha: float = rule(1.0, ge=0)  # the update is scaled by alpha / sqrt(rank); 0: zero-shot
    dropout: float = rule(0.25, ge=0, lt=1)  # on the input features of A while training


@dataclass
class AdaptFormerConfig(MethodConfig):
    bottleneck: int = rule(64, ge=1)  # h: the adapter's hidden width
    scale: float = rule(0.1, ge=0)  # s: the adapter's output weight; 0: zero-shot
    dropout: float = rule(0.1, ge=0, lt=1)  # on the adapter's hidden layer while training


# -- built from the training shots: Tip-Adapter-F, the linear probe --------------------------------
@dataclass
class TipAdapterFConfig(MethodConfig):
    alpha: float = rule(1.17, ge=0)  # weight of the cache logits; 0: zero-shot
    beta: float = rule(1.0, ge=0)  # sharpness of the affinity exp(-beta (1 - f . k))
    augment_epochs: int = rule(10, ge=1)  # augmented passes over the shots averaged into each key
    shots: int = rule(0, ge=0)  # cache entries per class and task: the split's shots, set by `prepare`
    state: str = ""  # the cache keys, written by `prepare` and read when the module is built


@dataclass
class LinearProbeConfig(MethodConfig):
    c: float = rule(0.0, ge=0)  # inverse L2 strength (scikit-learn's C); 0 = chosen on held-out training shots
    state: str = ""  # the fitted weights, written by `prepare` and read when the module is built


# -- built on the prompt methods: ProGrad, TCP, DePT -----------------------------------------------
@dataclass
class ProGradConfig(CoOpConfig):
    n_ctx: int = rule(16, ge=1)  # context tokens; the last ones start as ctx_init's, the others at 0
    ctx_init: str = "a photo of a"  # phrase whose embeddings start the context's last tokens; "" = noise
    weight: float = rule(1.0, ge=0)  # lambda: share of the CE gradient's component against the KD gradient removed
    temperature: float = rule(1.0, gt=0)  # T of the distillation towards zero-shot's logits


@dataclass
class TCPConfig(KgCoOpConfig):
    n_ctx: int = rule(4, ge=1)  # learnable context tokens (ignored when ctx_init is set)
    ctx_init: str = ""  # phrase whose embeddings start the context; "" = noise, TCP's CTX_INIT False
    weight: float = rule(8.0, ge=0)  # weight of KgCoOp's 1 - cos(learnt, hand-written) in each task's loss
    layer: int = rule(8, ge=0)  # text block before which class-aware tokens replace the context (capped at the last)
    reduction: int = rule(4, ge=1)  # the token net's hidden width = embed dim // reduction


DEPT_BASES = {"coop": CoOpConfig, "kgcoop": KgCoOpConfig, "maple": MaPLeConfig, "ivlp": MaPLeConfig}


@dataclass
class DePTConfig(MethodConfig):
    base: str = rule("coop", choices=tuple(DEPT_BASES))  # the prompt method DePT plugs into (its -mt for dept-mt)
    base_set: str = ""  # the base method's own fields, e.g. "n_ctx=2,depth=9"; empty: its defaults
    weight: float = rule(0.7, ge=0, le=1)  # lambda: the head's share of the loss and of a trained class's logits
    head_lr_scale: float = rule(6.5, gt=0)  # lr of the head and transforms over optim.lr (DePT's LR_EXP)

    def base_config(self) -> MethodConfig:
        """The base method's config: its defaults with `base_set`'s fields, each checked by its rule."""
        cls = DEPT_BASES[self.base]
        types = typing.get_type_hints(cls)
        values = {}
        for item in filter(None, (part.strip() for part in self.base_set.split(","))):
            name, sep, raw = item.partition("=")
            if not sep or name.strip() not in types:
                fields = ", ".join(f.name for f in dataclasses.fields(cls))
                raise UserError(
                    f"method.base_set={self.base_set!r}: {item!r} is not field=value of {self.base} ({fields})"
                )
            values[name.strip()] = parse_value(raw.strip(), types[name.strip()], f"method.base_set={self.base_set}")
        return validate_params(cls(**values))

    def check(self) -> None:
        self.base_config()


# -- on the zero-shot classifier: TaskRes, CLAP, LP++ ----------------------------------------------
@dataclass
class TaskResConfig(MethodConfig):
    scale: float = rule(0.5, ge=0)  # alpha: weight of the residual on the base classifier; 0: zero-shot


@dataclass
class CLAPConfig(MethodConfig):
    augment_epochs: int = rule(20, ge=1)  # augmented passes over the shots whose zero-shot scores set the penalties
    lagrangian: bool = False  # after every epoch, the augmented Lagrangian's outer step updates the penalties
    state: str = ""  # the zero-shot prototypes and class penalties, written by `prepare`


@dataclass
class LPPConfig(MethodConfig):
    epochs: int = rule(300, ge=1)  # full-batch gradient steps of the probe
    alpha_every: int = rule(10, ge=1)  # the blending parameters take a step every this many epochs
    state: str = ""  # the fitted probe, written by `prepare` and read when the module is built
