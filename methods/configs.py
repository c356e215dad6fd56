"""Every method's config: its fields, each with its default and range (`rule`), and the checks
between fields (`check()`). No torch: `--set` checks, `petl-bench config`, the config hash and a
sweep's dry run read them without the training stack. A method's module (its own file) imports its
config from here; `methods/__init__.py` registers the two together.
"""

from dataclasses import dataclass

from petl_bench.config import MethodConfig, rule
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
