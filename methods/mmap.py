"""MmAP (Xin et al., AAAI 2024): multi-modal alignment prompts in a grouped multi-task framework.

Trainable: prompt *sets*, one per task group (group-shared) and one per task (task-specific).
A set holds, for each of the first `depth` layers k of both towers, a source prompt P_s^k [m, n]
and two scaling matrices M_l^k [b/m, d_l/n] and M_v^k [b/m, d_v/n] (d_l, d_v: text and vision
widths). Layer k's prompts are Kronecker products (paper eqs. 6-7):
text P_l^k = kron(M_l^k, P_s^k) [b, d_l], visual P_v^k = kron(M_v^k, P_s^k) [b, d_v]
(eqs. 9-10 write the factors the other way round; the shapes are the same and eq. 6 is followed).

Hooks, MaPLe's semantics in every layer k < depth of both towers: task T's tokens at layer k are
[group set of T's group, T's own set] concatenated, 2b tokens with both kinds of set on (b with
one). Text: the prompts read "X X .. X {class}." (one placeholder per token) and the prompt tokens
replace the positions right after SOT, via `text_embed` at layer 0 and `text_layer` before deeper
blocks. Vision: `DeepVisualPrompts` appends them after [CLS + patches], replaces them before each
deeper block and strips them before pooling. Task T's forward touches only its own set and its
group's set, so a loss on T trains exactly those (eqs. 11-12: a group set sums its tasks' losses).

Count, per set per layer: m*n + (b/m)*(d_l/n) + (b/m)*(d_v/n). ViT-B/16 (d_l 512, d_v 768),
b = m = 7, n = 256: 7*256 + 1*2 + 1*3 = 1,797 per layer, x 12 layers = 21,564 per set. With 4
tasks (4 task sets) and G groups: 1 group -> 5 sets 107,820; 2 groups -> 6 sets 129,384 (the
paper's 0.13 M, its Office-Home grouping is 2 groups); 3 -> 7 sets 150,948; 4 -> 8 sets 172,512.

Caps: `n` becomes the largest n' <= n that divides both widths (M's widths d/n are whole numbers),
so that the default fits any model: 256 on ViT-B/16 (512, 768), 192 on ViT-S-32 (384, 384), 16 on
the tiny model (48, 64); the run record's `resolved_params` holds it. `depth` is capped at the
shallower tower, as MaPLe does. `m` must divide `b`.
Init: P_s ~ N(0, 0.02), the paper's. It gives none for the scaling matrices; M_l, M_v ~ N(0, 1)
make the prompts start at std 0.02, MaPLe's and VPT's prompt scale, and keep P_s's gradients
(scaled by M) from being damped 50-fold. Measured on the demo (tiny CLIP, synthetic Office-Home
6-shot, seed 0) under the earlier per-step schedule (`optim.schedule=linear-cosine`): untrained
10.73, trained 33.15 average accuracy; with M ~ N(0, 0.02) 32.65.

Groups: `groups` fixes them, e.g. "Art,Clipart|Product,Real World" ("," within a group, "|"
between groups, task names matched ignoring case). Empty: `prepare` settles them before the module
is built, by `grouping`: `gradient` (the paper's: warm up a global set shared by all tasks, compare
the tasks' gradients, best partition into at most `max_groups` groups; petl_bench.grouping),
`random` (a seeded random partition with the gradient grouping's group sizes, Table 3) or `all`
(one group). The run record's `prepared.grouping` holds the groups, the similarities and the
heatmap's path; the resolved `groups` go into the checkpoint. A module built directly with empty
`groups` has one group. `self.groups` and `self.group_of` expose the grouping.

Ablations (the same framework, only a set's per-layer prompts differ, see `layer_prompts`):
`mmap-joint` (Figure 4a) learns the text prompt [b, d_l] and the visual prompt [b, d_v] of each
layer as free, independent parameters: b*(d_l + d_v) per set per layer; ViT-B/16 b = 7:
8,960 x 12 = 107,520 per set; 6 sets 645,120, 5 sets (1 group, the default) 537,600.
`mmap-mlp` (Figure 4b) learns one source prompt [b, s] per layer and makes both prompts from it
with two 2-layer MLPs s -> h -> d_l and s -> h -> d_v (Linear, ReLU, Linear, with biases):
b*s + 2*(s*h + h) + (h*d_l + d_l) + (h*d_v + d_v) per set per layer. s = 96, h = 36 on ViT-B/16:
672 + 6,984 + 18,944 + 28,416 = 55,016, x 12 = 660,192 per set; 6 sets (2 groups) 3,961,152 =
the paper's 3.96 M; 5 sets 3,300,960. (The paper gives neither s nor h; these fit its count.)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from torch import nn

from petl_bench import grouping
from petl_bench.errors import UserError
from petl_bench.files import write_json_atomic
from petl_bench.hardware import run_device
from petl_bench.module import PetlModule
from petl_bench.prompts import DeepVisualPrompts, check_context_fits, context_prompts, with_text_context
from petl_bench.registry import register_method

from .configs import MmAPConfig, MmAPMLPConfig

INIT_STD = 0.02  # the paper's, for the source prompt
SCALE_INIT_STD = 1.0  # so that the products start at the source prompt's scale (see the docstring)


def parse_groups(spec: str, task_names: list[str], method: str) -> list[list[str]]:
    """ "a,b|c,d" -> [[a, b], [c, d]] in the tasks' own spelling; every task exactly once."""
    if not spec.strip():
        return [list(task_names)]
    by_lower = {name.lower(): name for name in task_names}
    groups, seen = [], []
    for part in spec.split("|"):
        names = [name.strip() for name in part.split(",") if name.strip()]
        if not names:
            raise UserError(f"{method}: groups {spec!r} has an empty group")
        group = []
        for name in names:
            if name.lower() not in by_lower:
                raise UserError(f"{method}: groups name unknown task {name!r} (tasks: {', '.join(task_names)})")
            task = by_lower[name.lower()]
            if task in seen:
                raise UserError(f"{method}: groups name task {task!r} more than once")
            seen.append(task)
            group.append(task)
        groups.append(group)
    missing = [name for name in task_names if name not in seen]
    if missing:
        raise UserError(
            f"{method}: groups must name every task exactly once; missing {', '.join(repr(name) for name in missing)}"
        )
    return groups


def format_groups(groups: list[list[str]]) -> str:
    """[[a, b], [c, d]] -> "a,b|c,d", the `groups` field's syntax."""
    for name in (name for group in groups for name in group):
        if "," in name or "|" in name:
            raise UserError(f"task {name!r} contains ',' or '|', which the groups syntax uses")
    return "|".join(",".join(group) for group in groups)


def fitting_n(n: int, text_width: int, vision_width: int) -> int:
    """The largest n' <= n that divides both widths (a divisor of their gcd; 1 always fits)."""
    common = math.gcd(text_width, vision_width)
    return max(d for d in range(1, min(n, common) + 1) if common % d == 0)


@register_method("mmap", MmAPConfig)
class MmAP(DeepVisualPrompts, PetlModule):
    """MmAP: Kronecker-product text and visual prompts, group-shared and task-specific sets."""

    cfg: MmAPConfig
    shared = True  # a multi-task method (group-shared and task-specific sets)
    text_frozen = False
    text_depends_on_task = True  # task-specific sets, or tasks in different groups

    def __init__(self, cfg: MmAPConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.groups = parse_groups(cfg.groups, self.task_names, self.method_name)
        self.group_of = {task: g for g, group in enumerate(self.groups) for task in group}
        self.b, self.m = cfg.b, cfg.m
        self.n = fitting_n(cfg.n, backbone.text_width, backbone.vision_width)
        self.cfg = dataclasses.replace(cfg, n=self.n)  # what the run record and checkpoint keep
        self.depth = min(cfg.depth, backbone.text_depth, backbone.vision_depth)
        self.group_sets = nn.ModuleList(self.new_set() for _ in (self.groups if cfg.group_shared else ()))
        self.task_sets = nn.ModuleList(self.new_set() for _ in (self.tasks if cfg.task_specific else ()))
        self.n_ctx = cfg.b * (int(cfg.group_shared) + int(cfg.task_specific))  # tokens per tower
        self.n_visual, self.visual_depth = self.n_ctx, self.depth
        check_context_fits(self, self.n_ctx)

    # -- task groups, settled before the module is built -----------------------------------------
    @classmethod
    def prepare(cls, run, backbone, data, work_dir):
        """Fix the groups: as given, else by `cfg.grouping` (one group, or by gradient similarity,
        or random with the gradient grouping's sizes). The search's result is kept in
        `work_dir/grouping.json`, so a resumed run reuses it instead of searching again. A
        `fast_dev_run` searches on one batch."""
        cfg = run.params
        names = [task.name for task in data.tasks]
        if cfg.groups.strip() or not cfg.group_shared:
            facts = {
                "method": "fixed" if cfg.group_shared else "none (no group-shared sets)",
                "groups": parse_groups(cfg.groups, names, cls.method_name),
            }
            return cfg, {"grouping": facts}
        if cfg.grouping == "all":
            facts = {"method": "all", "groups": [names]}
        else:
            search = (
                dataclasses.replace(cfg, grouping_warmup_steps=0, grouping_batches=1) if run.train.fast_dev_run else cfg
            )
            facts = cls._search_groups(
                search, backbone, data, Path(work_dir), run.optim, run_device(run.train.accelerator)
            )
        return dataclasses.replace(cfg, groups=format_groups(facts["groups"])), {"grouping": facts}

    @classmethod
    def _search_groups(cls, cfg, backbone, data, work_dir: Path, optim, device: torch.device) -> dict:
        key = {"params": dataclasses.asdict(cfg), "optim": dataclasses.asdict(optim), "split_sha256": data.split_sha256}
        cache = work_dir / "grouping.json"
        if cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return saved["facts"]
        names = [task.name for task in data.tasks]
        # The global prompt set: one group of every task, no task-specific sets.
        shared = dataclasses.replace(cfg, groups="", task_specific=False, group_shared=True)
        module = cls(shared, backbone, data.tasks, optim).to(device)
        optimizer = torch.optim.SGD(
            module.apply_trainable(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )
        gradients = grouping.task_gradients(
            module, data.train_dataloader(), cfg.grouping_warmup_steps, cfg.grouping_batches, optimizer
        )
        module.to("cpu")
        sim = grouping.similarity(gradients)
        best = grouping.best_partition(sim.cosine, cfg.max_groups)
        facts = {
            "method": cfg.grouping,
            "tasks": names,
            "gradient_groups": [[names[i] for i in group] for group in best],
            "gradient_score": round(grouping.partition_score(best, sim.cosine), 6),
            "cosine": sim.cosine.round(decimals=6).tolist(),
            "dot": sim.dot.tolist(),
            "warmup_steps": cfg.grouping_warmup_steps,
            "batches": cfg.grouping_batches,
        }
        chosen = best
        if cfg.grouping == "random":
            chosen = grouping.random_partition(len(names), [len(g) for g in best], data.cfg.seed, avoid=best)
        facts["groups"] = [[names[i] for i in group] for group in chosen]
        facts["heatmap"] = str(grouping.save_heatmap(sim, facts["groups"], work_dir / "grouping.png"))
        write_json_atomic(cache, {"key": key, "facts": facts})
        return facts

    # -- what a set is and how it makes one layer's prompts: the ablations override these two ----
    def new_set(self) -> nn.Module:
        d_l, d_v, rows = self.backbone.text_width, self.backbone.vision_width, self.b // self.m
        prompt_set = nn.Module()
        prompt_set.source = nn.Parameter(torch.randn(self.depth, self.m, self.n) * INIT_STD)
        prompt_set.scale_text = nn.Parameter(torch.randn(self.depth, rows, d_l // self.n) * SCALE_INIT_STD)
        prompt_set.scale_visual = nn.Parameter(torch.randn(self.depth, rows, d_v // self.n) * SCALE_INIT_STD)
        return prompt_set

    def layer_prompts(self, prompt_set: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(text [b, d_l], visual [b, d_v]) prompts of one set at one layer."""
        source = prompt_set.get_parameter("source")[layer]
        return (
            torch.kron(prompt_set.get_parameter("scale_text")[layer], source),
            torch.kron(prompt_set.get_parameter("scale_visual")[layer], source),
        )

    # -- the framework ---------------------------------------------------------------------------
    def sets_of(self, task: str) -> list[nn.Module]:
        """The sets task `task` uses, in token order: [its group's set, its own set]."""
        sets = []
        if self.cfg.group_shared:
            sets.append(self.group_sets[self.group_of[task]])
        if self.cfg.task_specific:
            sets.append(self.task_sets[self.task_names.index(task)])
        return sets

    def _prompts_at(self, layer: int, task: str, which: int) -> torch.Tensor:
        return torch.cat([self.layer_prompts(s, layer)[which] for s in self.sets_of(task)])

    def prompts(self, task: str) -> list[str]:
        return context_prompts(self.task(task).classnames, self.n_ctx)

    def visual_prompts_at(self, layer, task):
        return self._prompts_at(layer, task, 1)

    def text_embed(self, emb, tokens, task):
        return with_text_context(emb, self._prompts_at(0, task, 0))

    def text_layer(self, i, x, task):
        # Layer 0's prompts came in through text_embed; blocks past `depth` keep their input.
        return with_text_context(x, self._prompts_at(i, task, 0)) if 1 <= i < self.depth else x


@register_method("mmap-joint", MmAPConfig)
class MmAPJoint(MmAP):
    """MmAP's joint-train baseline: free, independent text and visual prompts in MmAP's framework."""

    def new_set(self) -> nn.Module:
        prompt_set = nn.Module()
        prompt_set.text = nn.Parameter(torch.randn(self.depth, self.b, self.backbone.text_width) * INIT_STD)
        prompt_set.visual = nn.Parameter(torch.randn(self.depth, self.b, self.backbone.vision_width) * INIT_STD)
        return prompt_set

    def layer_prompts(self, prompt_set, layer):
        return prompt_set.text[layer], prompt_set.visual[layer]


@register_method("mmap-mlp", MmAPMLPConfig)
class MmAPMLP(MmAP):
    """MmAP's MLP baseline: two MLPs make the text and visual prompts from one source prompt."""

    cfg: MmAPMLPConfig

    def _mlps(self, width: int) -> nn.ModuleList:
        s, h = self.cfg.s, self.cfg.hidden
        return nn.ModuleList(nn.Sequential(nn.Linear(s, h), nn.ReLU(), nn.Linear(h, width)) for _ in range(self.depth))

    def new_set(self) -> nn.Module:
        prompt_set = nn.Module()
        prompt_set.source = nn.Parameter(torch.randn(self.depth, self.b, self.cfg.s) * INIT_STD)
        prompt_set.mlp_text = self._mlps(self.backbone.text_width)
        prompt_set.mlp_visual = self._mlps(self.backbone.vision_width)
        return prompt_set

    def layer_prompts(self, prompt_set, layer):
        source = prompt_set.source[layer]
        return prompt_set.mlp_text[layer](source), prompt_set.mlp_visual[layer](source)
