"""Methods by name: what each is (its config class, ST or MT, whether it scores classes it never
trained on, a one-line summary) known without torch, its module class imported only when a run
builds it.

The list at the end of this file is the one explicit list: `declare_method("coop",
CoOpConfig, "petl_bench.methods.coop:CoOp", shared=False, summary=...)` for every method, with
the configs from the torch-free `methods/configs.py`. So `petl-bench methods`, `config`, `--set`
checks, the config hash and a sweep's dry run import no method file. Each method file's
`@register_method("coop", CoOpConfig)` is what its class says of itself; it must agree with the
declaration (the same class, config, sharing and `open_vocabulary`), or the import fails loudly.
A plugin outside that list registers with the decorator alone. A duplicate or malformed name fails
at once.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from .config import MethodConfig
from .errors import UserError, unknown_name
from .methods import configs as c

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass
class MethodEntry:
    name: str
    config_cls: type
    module_class: str  # "package.module:Class", imported on first use of `cls`
    shared: bool | None  # one set shared by all tasks (MT), one per task (ST), or nothing trained per task
    summary: str
    open_vocabulary: bool = True  # scores class names it never trained on (`PetlModule.open_vocabulary`)
    loaded: type | None = field(default=None, repr=False)

    @property
    def cls(self) -> type:
        """The module class (a PetlModule subclass); its file is imported on first use."""
        if self.loaded is None:
            importlib.import_module(self.module_class.partition(":")[0])  # its @register_method fills `loaded`
            if self.loaded is None:
                raise RuntimeError(f"method {self.name!r}: {self.module_class} is not registered by its module")
        return self.loaded


_METHODS: dict[str, MethodEntry] = {}


def _check_declaration(name: str, config_cls: type) -> None:
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} must be lower-case words joined by '-'")
    # `vars` and not `is_dataclass`: a subclass that forgot @dataclass inherits the base's fields.
    if not (
        isinstance(config_cls, type)
        and "__dataclass_fields__" in vars(config_cls)
        and issubclass(config_cls, MethodConfig)
    ):
        raise TypeError(f"method {name!r}: its config must be a dataclass subclassing MethodConfig")


def declare_method(
    name: str,
    config_cls: type,
    module_class: str,
    shared: bool | None,
    summary: str,
    open_vocabulary: bool = True,
) -> None:
    """Make a method known by name without importing its module (`module_class`, "pkg.mod:Class")."""
    _check_declaration(name, config_cls)
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered by {_METHODS[name].module_class}")
    _METHODS[name] = MethodEntry(name, config_cls, module_class, shared, summary, open_vocabulary)


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def register_method(name: str, config_cls: type):
    """Class decorator: `cls` is method `name`, configured by `config_cls`."""
    _check_declaration(name, config_cls)

    def add(cls):
        where = f"{cls.__module__}:{cls.__qualname__}"
        entry = _METHODS.get(name)
        if entry is None:
            entry = _METHODS[name] = MethodEntry(
                name, config_cls, where, cls.shared, _summary(cls), cls.open_vocabulary
            )
        elif entry.loaded is not None or (entry.module_class, entry.config_cls) != (where, config_cls):
            raise ValueError(f"method {name!r} is already registered by {entry.module_class}")
        elif (entry.shared, entry.open_vocabulary, entry.summary) != (cls.shared, cls.open_vocabulary, _summary(cls)):
            raise ValueError(
                f"method {name!r}: {where} says shared={cls.shared!r}, open_vocabulary={cls.open_vocabulary!r}, "
                f"{_summary(cls)!r}; its declaration says shared={entry.shared!r}, "
                f"open_vocabulary={entry.open_vocabulary!r}, {entry.summary!r}"
            )
        entry.loaded = cls
        cls.method_name = name
        return cls

    return add


def get_method(name: str) -> MethodEntry:
    if name not in _METHODS:
        raise UserError(unknown_name("method", name, sorted(_METHODS)))
    return _METHODS[name]


def method_names() -> list[str]:
    return sorted(_METHODS)


# -- the one explicit list of methods: add yours here --------------------------------------------
ST, MT, NONE = False, True, None


def _method(
    name: str, config_cls: type, where: str, shared: bool | None, summary: str, open_vocabulary: bool = True
) -> None:
    declare_method(name, config_cls, f"petl_bench.methods.{where}", shared, summary, open_vocabulary)


_method(
    "zeroshot",
    c.ZeroShotConfig,
    "zeroshot:ZeroShot",
    NONE,
    'Zero-shot CLIP with the dataset\'s template ("a photo of a {class}." by default); nothing trains.',
)
_method("fullft", c.FullFTConfig, "fullft:FullFT", ST, "Full fine-tuning, one full copy of CLIP per task.")
_method(
    "fullft-mt",
    c.FullFTConfig,
    "fullft:FullFTMT",
    MT,
    "Full fine-tuning, multi-task: the whole CLIP trains, shared by all tasks.",
)
_method("bitfit", c.BitFitConfig, "bitfit:BitFit", MT, "BitFit: every bias of both towers trains, shared by all tasks.")
_method("coop", c.CoOpConfig, "coop:CoOp", ST, "CoOp: learnable text context, one per task.")
_method("coop-mt", c.CoOpConfig, "coop:CoOpMT", MT, "CoOp-MT: one learnable text context shared by all tasks.")
_method(
    "kgcoop",
    c.KgCoOpConfig,
    "kgcoop:KgCoOp",
    ST,
    "KgCoOp: CoOp pulled towards the hand-written prompt's text features, one context per task.",
)
_method(
    "kgcoop-mt",
    c.KgCoOpConfig,
    "kgcoop:KgCoOpMT",
    MT,
    "KgCoOp-MT: one context shared by all tasks, pulled towards the hand-written prompt.",
)
_method(
    "cocoop",
    c.CoCoOpConfig,
    "cocoop:CoCoOp",
    ST,
    "CoCoOp: a learnable context shifted per image by a meta-net, one pair per task.",
)
_method("cocoop-mt", c.CoCoOpConfig, "cocoop:CoCoOpMT", MT, "CoCoOp-MT: one context and meta-net shared by all tasks.")
_method(
    "vpt",
    c.VPTConfig,
    "vpt:VPT",
    ST,
    "VPT-deep: learnable visual prompt tokens in every image layer, one set per task.",
)
_method("vpt-mt", c.VPTConfig, "vpt:VPTMT", MT, "VPT-MT: one set of deep visual prompts shared by all tasks.")
_method(
    "maple",
    c.MaPLeConfig,
    "maple:MaPLe",
    ST,
    "MaPLe: deep text prompts coupled to deep visual prompts, one set per task.",
)
_method(
    "maple-mt", c.MaPLeConfig, "maple:MaPLeMT", MT, "MaPLe-MT: one set of coupled deep prompts shared by all tasks."
)
_method("ivlp", c.MaPLeConfig, "ivlp:IVLP", ST, "IVLP: independent deep text and visual prompts, one set per task.")
_method(
    "ivlp-mt",
    c.MaPLeConfig,
    "ivlp:IVLPMT",
    MT,
    "IVLP-MT: one set of independent deep text and visual prompts shared by all tasks.",
)
_method(
    "promptsrc",
    c.PromptSRCConfig,
    "promptsrc:PromptSRC",
    ST,
    "PromptSRC: IVLP prompts regulated towards the frozen CLIP and averaged over epochs, one set per task.",
)
_method(
    "promptsrc-mt",
    c.PromptSRCConfig,
    "promptsrc:PromptSRCMT",
    MT,
    "PromptSRC-MT: one set of regulated, epoch-averaged IVLP prompts shared by all tasks.",
)
_method(
    "coprompt",
    c.CoPromptConfig,
    "coprompt:CoPrompt",
    ST,
    "CoPrompt: MaPLe prompts and feature adapters held consistent with the frozen CLIP, one set per task.",
)
_method(
    "coprompt-mt",
    c.CoPromptConfig,
    "coprompt:CoPromptMT",
    MT,
    "CoPrompt-MT: one set of prompts and adapters, held consistent with the frozen CLIP, shared by all tasks.",
)
_method(
    "mmap",
    c.MmAPConfig,
    "mmap:MmAP",
    MT,
    "MmAP: Kronecker-product text and visual prompts, group-shared and task-specific sets.",
)
_method(
    "mmap-joint",
    c.MmAPConfig,
    "mmap:MmAPJoint",
    MT,
    "MmAP's joint-train baseline: free, independent text and visual prompts in MmAP's framework.",
)
_method(
    "mmap-mlp",
    c.MmAPMLPConfig,
    "mmap:MmAPMLP",
    MT,
    "MmAP's MLP baseline: two MLPs make the text and visual prompts from one source prompt.",
)
_method(
    "clip-adapter",
    c.CLIPAdapterConfig,
    "clip_adapter:CLIPAdapter",
    MT,
    "CLIP-Adapter: residual bottleneck adapters on the image and text features, shared by all tasks.",
)
_method("lora", c.LoRAConfig, "lora:LoRA", ST, "LoRA on q, k, v of every block of both towers, one set per task.")
_method(
    "lora-mt",
    c.LoRAConfig,
    "lora:LoRAMT",
    MT,
    "LoRA-MT: one set of q, k, v low-rank updates in both towers, shared by all tasks.",
)
_method(
    "mma",
    c.MMAConfig,
    "mma:MMA",
    ST,
    "MMA: adapters in the higher blocks of both towers through a shared projection, one set per task.",
)
_method("mma-mt", c.MMAConfig, "mma:MMAMT", MT, "MMA-MT: one set of multi-modal adapters shared by all tasks.")
_method(
    "adaptformer",
    c.AdaptFormerConfig,
    "adaptformer:AdaptFormer",
    ST,
    "AdaptFormer: parallel bottleneck adapters beside the image tower's MLPs, one set per task.",
)
_method(
    "adaptformer-mt",
    c.AdaptFormerConfig,
    "adaptformer:AdaptFormerMT",
    MT,
    "AdaptFormer-MT: one set of parallel adapters in the image tower, shared by all tasks.",
)
_method(
    "tip-adapter-f",
    c.TipAdapterFConfig,
    "tip_adapter:TipAdapterF",
    ST,
    "Tip-Adapter-F: zero-shot plus a fine-tuned cache of the training shots' features, one per task.",
    open_vocabulary=False,
)
_method(
    "tip-adapter-f-mt",
    c.TipAdapterFConfig,
    "tip_adapter:TipAdapterFMT",
    MT,
    "Tip-Adapter-F-MT: zero-shot plus one fine-tuned cache of every task's shots, shared by all tasks.",
    open_vocabulary=False,
)
_method(
    "linear-probe",
    c.LinearProbeConfig,
    "linear_probe:LinearProbe",
    ST,
    "Linear probe: logistic regression on frozen image features, fitted per task (CLIP's protocol).",
    open_vocabulary=False,
)
_method(
    "prograd",
    c.ProGradConfig,
    "prograd:ProGrad",
    ST,
    "ProGrad: CoOp whose gradient is cleared of what conflicts with zero-shot CLIP's, one context per task.",
)
_method(
    "prograd-mt",
    c.ProGradConfig,
    "prograd:ProGradMT",
    MT,
    "ProGrad-MT: one context shared by all tasks, its gradient cleared of conflicts with zero-shot's.",
)
_method(
    "tcp",
    c.TCPConfig,
    "tcp:TCP",
    ST,
    "TCP: KgCoOp plus class-aware tokens made from zero-shot class text features, one set per task.",
)
_method("tcp-mt", c.TCPConfig, "tcp:TCPMT", MT, "TCP-MT: one context and token net shared by all tasks.")
_method(
    "dept",
    c.DePTConfig,
    "dept:DePT",
    ST,
    "DePT: a prompt method plus a decoupled channel-wise transform and linear head, one set per task.",
    open_vocabulary=False,
)
_method(
    "dept-mt",
    c.DePTConfig,
    "dept:DePTMT",
    MT,
    "DePT-MT: the base method's -mt variant plus one transform and head shared by all tasks.",
    open_vocabulary=False,
)
_method(
    "taskres",
    c.TaskResConfig,
    "taskres:TaskRes",
    ST,
    "TaskRes: a learnt residual on the zero-shot text classifier, one per task.",
    open_vocabulary=False,
)
_method(
    "taskres-mt",
    c.TaskResConfig,
    "taskres:TaskResMT",
    MT,
    "TaskRes-MT: one learnt residual on the zero-shot text classifier, shared by all tasks.",
    open_vocabulary=False,
)
_method(
    "clap",
    c.CLAPConfig,
    "clap:CLAP",
    ST,
    "CLAP: a linear probe from the zero-shot prototypes under class-adaptive penalties, one per task.",
    open_vocabulary=False,
)
_method(
    "clap-mt",
    c.CLAPConfig,
    "clap:CLAPMT",
    MT,
    "CLAP-MT: one linear probe from the zero-shot prototypes under class-adaptive penalties, shared by all tasks.",
    open_vocabulary=False,
)
_method(
    "lpp",
    c.LPPConfig,
    "lpp:LPP",
    ST,
    "LP++: a linear probe blended with the zero-shot text classifier, fitted per task.",
    open_vocabulary=False,
)
_method(
    "lpp-mt",
    c.LPPConfig,
    "lpp:LPPMT",
    MT,
    "LP++-MT: one linear probe blended with the zero-shot text classifier, fitted on every task's shots.",
    open_vocabulary=False,
)
