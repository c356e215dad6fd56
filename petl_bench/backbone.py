"""The frozen open_clip CLIP, wrapped once, with hooks where tuning methods insert prompts.

`ClipBackbone.encode_image` / `encode_text` spell out open_clip's forward passes as explicit loops
over the residual blocks, reusing open_clip's own modules, and call a `Hooks` object between them.
With the identity hooks the features equal `open_clip.CLIP.encode_image` / `encode_text`
(tests/test_backbone.py guards this). The backbone knows no method: methods are `Hooks`.

Inside the blocks (LoRA on the fused attention weight, adapters beside the MLP) a method names the
`Site`s it changes and `ClipBackbone.attach`es to them: a weight site gets a parametrization, a
module site a forward hook, each of which asks the hooks running the backbone at that moment
(`block_weight` / `block_output`, with the task) and is the identity for any other caller.
Detaching removes them, restoring open_clip's module tree and state-dict keys.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip.transformer import QuickGELU, VisionTransformer, text_global_pool
from torch import nn
from torch.nn.utils import parametrize

from .config import TINY
from .errors import UserError
from .weights import load_weights, resolve_weights, trained_with_quick_gelu

# A tiny CLIP for tests and the demo (vision 64 wide x 3 layers on 32 px images, text 48 wide x 3
# layers). The context of 32 tokens leaves room for 16 learnable context tokens plus a class name.
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 3},
}
TOWERS = ("text", "vision")


@dataclass(frozen=True)
class Site:
    """A weight or a sub-module inside residual block `layer` of a tower, which a weight- or
    module-level method (LoRA, adapters) changes."""

    tower: str  # "text" or "vision"
    layer: int  # residual block index
    path: str  # inside the block: a parameter ("attn.in_proj_weight") or a module ("mlp")


class Hooks:
    """Where a method may change the forward pass. Every default is the identity.

    `task` is the task (domain) name the batch belongs to; a single-task method picks its
    parameters by it, a multi-task method may ignore it.
    """

    def text_embed(self, emb: torch.Tensor, tokens: torch.Tensor, task: str) -> torch.Tensor:
        """Token embeddings [classes, context, width] before the positional embedding."""
        return emb

    def text_layer(self, i: int, x: torch.Tensor, task: str) -> torch.Tensor:
        """Text tokens [classes, context, width] before residual block i."""
        return x

    def vision_embed(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Image tokens [batch, 1 + patches, width] after the positional embedding, before ln_pre."""
        return x

    def vision_layer(self, i: int, x: torch.Tensor, task: str) -> torch.Tensor:
        """Image tokens before residual block i."""
        return x

    def vision_post(self, x: torch.Tensor) -> torch.Tensor:
        """Image tokens after the last block: strip appended prompts before pooling."""
        return x

    def head(
        self, image_feat: torch.Tensor, text_feat: torch.Tensor | None, task: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected features, before normalisation (no text features for a module that compares
        images with none)."""
        return image_feat, text_feat

    def block_weight(self, site: Site, weight: torch.Tensor, task: str) -> torch.Tensor:
        """The weight at an attached parameter site, as its block uses it in this pass (LoRA)."""
        return weight

    def block_output(self, site: Site, inputs: torch.Tensor, output: torch.Tensor, task: str) -> torch.Tensor:
        """The output of the module at an attached module site, given its input (adapters)."""
        return output


IDENTITY = Hooks()


class ClipBackbone(nn.Module):
    """An open_clip CLIP (ViT image tower, standard text tower), frozen, with method hooks."""

    def __init__(self, model: open_clip.CLIP, tokenizer, name: str, pretrained: str | None):
        super().__init__()
        if type(model) is not open_clip.CLIP or not isinstance(model.visual, VisionTransformer):
            raise UserError(
                f"model {name!r}: petl-bench supports open_clip CLIP models with a ViT "
                "image tower and the standard text tower"
            )
        if model.visual.attn_pool is not None:
            raise UserError(f"model {name!r}: attentional pooling is not supported")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.requires_grad_(False)
        preprocess = dict(open_clip.get_model_preprocess_cfg(model))
        self.preprocess_cfg = PreprocessCfg(**preprocess)
        # Plain objects, not modules: no state-dict entries. Which hooks run the backbone now, and
        # what is attached where (Site -> _Attached).
        self._running = _Running()
        self._attached: dict[Site, _Attached] = {}

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict, name: str = TINY) -> ClipBackbone:
        """A random-init CLIP from an open_clip model config dict (e.g. `TINY_CONFIG`)."""
        model = open_clip.CLIP(**copy.deepcopy(config))
        context = config.get("text_cfg", {}).get("context_length", 77)
        return cls(model, open_clip.SimpleTokenizer(context_length=context), name, None)

    @classmethod
    def from_pretrained(
        cls, arch: str, pretrained: str | None = "openai", quick_gelu: bool | None = None
    ) -> ClipBackbone:
        """`arch` is an open_clip architecture or `tiny`; `pretrained` an open_clip tag, a local
        checkpoint file, or None for random init; `quick_gelu` the activation, or None to take it
        from the architecture, the tag or the file (`weights.trained_with_quick_gelu`)."""
        if arch == TINY:
            config, tokenizer = TINY_CONFIG, open_clip.SimpleTokenizer(context_length=32)
        else:
            if arch not in open_clip.list_models():
                raise UserError(
                    f"unknown model {arch!r}: use 'tiny' or an open_clip architecture "
                    f"such as ViT-B-16 (open_clip.list_models() lists them)"
                )
            config, tokenizer = open_clip.get_model_config(arch), open_clip.get_tokenizer(arch)
        config = copy.deepcopy(config)
        weights, extra = resolve_weights(arch, pretrained)
        config["quick_gelu"] = trained_with_quick_gelu(arch, config, weights, extra, quick_gelu)
        model = open_clip.CLIP(**config)
        if weights is not None:
            load_weights(model, weights, arch)
        if extra.get("mean"):
            open_clip.set_model_preprocess_cfg(
                model,
                {
                    **open_clip.get_model_preprocess_cfg(model),
                    **{k: extra[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in extra},
                },
            )
        return cls(model, tokenizer, arch, pretrained)

    # -- sizes, all read from the model ---------------------------------------------------------
    @property
    def text_width(self) -> int:
        return self.model.transformer.width

    @property
    def vision_width(self) -> int:
        return self.model.visual.transformer.width

    @property
    def text_depth(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def vision_depth(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def embed_dim(self) -> int:
        """Width of the projected image and text features, where the two towers meet."""
        projection = self.model.text_projection
        if isinstance(projection, nn.Linear):
            return projection.out_features
        return self.text_width if projection is None else projection.shape[1]

    @property
    def quick_gelu(self) -> bool:
        """Whether the blocks run QuickGELU (OpenAI's x * sigmoid(1.702 x)) rather than GELU."""
        return isinstance(self.model.transformer.resblocks[0].mlp.gelu, QuickGELU)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.size
        return size if isinstance(size, int) else size[0]

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def preprocess_val(self):
        """open_clip's validation transform for this model."""
        return image_transform_v2(self.preprocess_cfg, is_train=False)

    # -- forward passes -------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, hooks: Hooks = IDENTITY, task: str = "") -> torch.Tensor:
        visual = self.model.visual
        with self._running_as(hooks, task):
            x = visual.conv1(images.to(visual.conv1.weight.dtype))
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [batch, patches, width]
            cls_token = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([cls_token, x], dim=1) + visual.positional_embedding.to(x.dtype)
            x = visual.patch_dropout(x)
            x = hooks.vision_embed(x, task)
            x = visual.ln_pre(x)
            for i, block in enumerate(visual.transformer.resblocks):
                x = block(hooks.vision_layer(i, x, task))
            x = hooks.vision_post(x)
            pooled, _ = visual._pool(x)
            return pooled @ visual.proj if visual.proj is not None else pooled

    def encode_text(self, tokens: torch.Tensor, hooks: Hooks = IDENTITY, task: str = "") -> torch.Tensor:
        model = self.model
        dtype = model.transformer.get_cast_dtype()
        tokens = tokens[:, : self.text_context(tokens)]
        length = tokens.shape[1]
        mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
        with self._running_as(hooks, task):
            x = hooks.text_embed(model.token_embedding(tokens).to(dtype), tokens, task)
            x = x + model.positional_embedding[:length].to(dtype)
            for i, block in enumerate(model.transformer.resblocks):
                x = block(hooks.text_layer(i, x, task), attn_mask=mask)
            x = model.ln_final(x)
            x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
            projection = model.text_projection
            if projection is None:
                return x
            return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    def text_context(self, tokens: torch.Tensor) -> int:
        """Positions the text tower must run on: up to the pooled (EOT) token of the longest prompt
        (learnt context tokens are placeholders inside the prompts). Under the causal mask no
        position sees a later one, so the features are those of the full context; only the
        padding's wasted work goes."""
        model = self.model
        if model.attn_mask is None or model.text_pool_type not in ("argmax", "eos") or not tokens.numel():
            return tokens.shape[1]  # without a causal mask or with last-token pooling, padding counts
        if model.text_pool_type == "argmax":  # EOT has the largest id
            pooled = tokens.argmax(-1)
        else:
            pooled = (tokens == model.text_eos_id).int().argmax(-1)
        return int(pooled.max()) + 1

    @contextlib.contextmanager
    def _running_as(self, hooks: Hooks, task: str):
        before = self._running.hooks, self._running.task
        self._running.hooks, self._running.task = hooks, task
        try:
            with parametrize.cached():  # each attached weight is computed once per pass
                yield
        finally:
            self._running.hooks, self._running.task = before

    # -- inside the blocks ------------------------------------------------------------------------
    def blocks(self, tower: str) -> nn.ModuleList:
        if tower not in TOWERS:
            raise ValueError(f"unknown tower {tower!r} (towers: {', '.join(TOWERS)})")
        return self.model.transformer.resblocks if tower == "text" else self.model.visual.transformer.resblocks

    def attach(self, hooks: Hooks, sites: Iterable[Site]) -> Attachment:
        """From now on, whenever `hooks` runs this backbone, the weights at parameter sites come from
        `hooks.block_weight` and the outputs of module sites from `hooks.block_output`; for any
        other caller they stay as they are. `.remove()` on the result undoes it; once nothing is
        attached the module tree and state-dict keys are open_clip's again."""
        sites = list(dict.fromkeys(sites))
        for site in sites:
            if site not in self._attached:
                self._attached[site] = _Attached.install(self, site)
            self._attached[site].owners.append(weakref.ref(hooks))
        return Attachment(self, hooks, sites)

    def _detach(self, hooks: Hooks, sites: list[Site]) -> None:
        for site in sites:
            attached = self._attached.get(site)
            if attached is None:
                continue
            attached.owners[:] = [ref for ref in attached.owners if ref() not in (None, hooks)]
            if not attached.owners:
                attached.uninstall()
                del self._attached[site]


class _Running:
    """The hooks and task of the pass in progress (None outside `encode_image` / `encode_text`)."""

    def __init__(self) -> None:
        self.hooks: Hooks | None = None
        self.task = ""

    def owner_among(self, owners: list) -> Hooks | None:
        """The running hooks if they attached the site (`owners`: weak references), else None."""
        hooks = self.hooks
        return hooks if hooks is not None and any(ref() is hooks for ref in owners) else None


class _SiteWeight(nn.Module):
    """The parametrization of one block weight: the running hooks' `block_weight`, if they
    attached it. It holds no tensors, so the state dict gains only the weight's new name."""

    def __init__(self, site: Site, running: _Running, owners: list):
        super().__init__()
        self.site, self.running, self.owners = site, running, owners

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        hooks = self.running.owner_among(self.owners)
        return weight if hooks is None else hooks.block_weight(self.site, weight, self.running.task)


class _Attached:
    """One site's parametrization or forward hook, shared by every hooks object attached to it."""

    def __init__(self, owners: list, uninstall):
        self.owners, self.uninstall = owners, uninstall

    @classmethod
    def install(cls, backbone: ClipBackbone, site: Site) -> _Attached:
        block = backbone.blocks(site.tower)[site.layer]
        owners: list = []
        running = backbone._running
        try:
            module = block.get_submodule(site.path)
        except AttributeError:
            module = None
        if module is not None:

            def hook(mod, args, output):
                hooks = running.owner_among(owners)
                return None if hooks is None else hooks.block_output(site, args[0], output, running.task)

            return cls(owners, module.register_forward_hook(hook).remove)
        owner_path, _, name = site.path.rpartition(".")
        owner = block.get_submodule(owner_path) if owner_path else block
        if not isinstance(owner._parameters.get(name), nn.Parameter):
            raise ValueError(f"{site}: no module or parameter {site.path!r} in the block")
        order = list(owner._parameters)
        parametrize.register_parametrization(owner, name, _SiteWeight(site, running, owners))

        def uninstall():
            parametrize.remove_parametrizations(owner, name, leave_parametrized=False)
            # Back in its place, so the state dict lists keys in open_clip's order again.
            owner._parameters = {key: owner._parameters[key] for key in order}

        return cls(owners, uninstall)


class Attachment:
    """What `ClipBackbone.attach` returns: `remove()` detaches the hooks from those sites."""

    def __init__(self, backbone: ClipBackbone, hooks: Hooks, sites: list[Site]):
        self.backbone, self.hooks, self.sites = backbone, hooks, sites

    def remove(self) -> None:
        self.backbone._detach(self.hooks, self.sites)
        self.sites = []
