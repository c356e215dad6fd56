"""Every tuning method, one file each, declared here: this explicit list is how plugins load (add
yours here). A declaration names the method, its config (methods/configs.py, no torch), where its
module class lives, whether it holds one parameter set shared by all tasks (MT), one per task (ST)
or none, and the line `petl-bench methods` shows; the method's file is imported when a run needs
its class, and its `@register_method` must agree with this.
"""

from petl_bench.registry import declare_method

from . import configs as c

ST, MT, NONE = False, True, None


def _method(name: str, config_cls: type, where: str, shared: bool | None, summary: str) -> None:
    declare_method(name, config_cls, f"{__name__}.{where}", shared, summary)


_method("zeroshot", c.ZeroShotConfig, "zeroshot:ZeroShot", NONE,
        'Zero-shot CLIP with the template "a photo of a {class}."; no trainable parameters.')
_method("fullft", c.FullFTConfig, "fullft:FullFT", ST, "Full fine-tuning, one full copy of CLIP per task.")
_method("fullft-mt", c.FullFTConfig, "fullft:FullFTMT", MT,
        "Full fine-tuning, multi-task: the whole CLIP trains, shared by all tasks.")
_method("bitfit", c.BitFitConfig, "bitfit:BitFit", MT, "BitFit: every bias of both towers trains, shared by all tasks.")
_method("coop", c.CoOpConfig, "coop:CoOp", ST, "CoOp: learnable text context, one per task.")
_method("coop-mt", c.CoOpConfig, "coop:CoOpMT", MT, "CoOp-MT: one learnable text context shared by all tasks.")
_method("kgcoop", c.KgCoOpConfig, "kgcoop:KgCoOp", ST,
        "KgCoOp: CoOp pulled towards the hand-written prompt's text features, one context per task.")
_method("kgcoop-mt", c.KgCoOpConfig, "kgcoop:KgCoOpMT", MT,
        "KgCoOp-MT: one context shared by all tasks, pulled towards the hand-written prompt.")
_method("cocoop", c.CoCoOpConfig, "cocoop:CoCoOp", ST,
        "CoCoOp: a learnable context shifted per image by a meta-net, one pair per task.")
_method("cocoop-mt", c.CoCoOpConfig, "cocoop:CoCoOpMT", MT, "CoCoOp-MT: one context and meta-net shared by all tasks.")
_method("vpt", c.VPTConfig, "vpt:VPT", ST,
        "VPT-deep: learnable visual prompt tokens in every image layer, one set per task.")
_method("vpt-mt", c.VPTConfig, "vpt:VPTMT", MT, "VPT-MT: one set of deep visual prompts shared by all tasks.")
_method("maple", c.MaPLeConfig, "maple:MaPLe", ST,
        "MaPLe: deep text prompts coupled to deep visual prompts, one set per task.")
_method("maple-mt", c.MaPLeConfig, "maple:MaPLeMT", MT, "MaPLe-MT: one set of coupled deep prompts shared by all tasks.")
_method("ivlp", c.MaPLeConfig, "ivlp:IVLP", ST, "IVLP: independent deep text and visual prompts, one set per task.")
_method("ivlp-mt", c.MaPLeConfig, "ivlp:IVLPMT", MT,
        "IVLP-MT: one set of independent deep text and visual prompts shared by all tasks.")
_method("mmap", c.MmAPConfig, "mmap:MmAP", MT,
        "MmAP: Kronecker-product text and visual prompts, group-shared and task-specific sets.")
_method("mmap-joint", c.MmAPConfig, "mmap:MmAPJoint", MT,
        "MmAP's joint-train baseline: free, independent text and visual prompts in MmAP's framework.")
_method("mmap-mlp", c.MmAPMLPConfig, "mmap:MmAPMLP", MT,
        "MmAP's MLP baseline: two MLPs make the text and visual prompts from one source prompt.")
_method("clip-adapter", c.CLIPAdapterConfig, "clip_adapter:CLIPAdapter", MT,
        "CLIP-Adapter: residual bottleneck adapters on the image and text features, shared by all tasks.")
_method("lora", c.LoRAConfig, "lora:LoRA", ST, "LoRA on q, k, v of every block of both towers, one set per task.")
_method("lora-mt", c.LoRAConfig, "lora:LoRAMT", MT,
        "LoRA-MT: one set of q, k, v low-rank updates in both towers, shared by all tasks.")
_method("adaptformer", c.AdaptFormerConfig, "adaptformer:AdaptFormer", ST,
        "AdaptFormer: parallel bottleneck adapters beside the image tower's MLPs, one set per task.")
_method("adaptformer-mt", c.AdaptFormerConfig, "adaptformer:AdaptFormerMT", MT,
        "AdaptFormer-MT: one set of parallel adapters in the image tower, shared by all tasks.")
_method("tip-adapter-f", c.TipAdapterFConfig, "tip_adapter:TipAdapterF", ST,
        "Tip-Adapter-F: zero-shot plus a fine-tuned cache of the training shots' features, one per task.")
_method("tip-adapter-f-mt", c.TipAdapterFConfig, "tip_adapter:TipAdapterFMT", MT,
        "Tip-Adapter-F-MT: zero-shot plus one fine-tuned cache of every task's shots, shared by all tasks.")
_method("linear-probe", c.LinearProbeConfig, "linear_probe:LinearProbe", ST,
        "Linear probe: logistic regression on frozen image features, fitted per task (CLIP's protocol).")
