"""VPT and MaPLe: parameter shapes and counts (tiny and ViT-B/16), zero-shot at zero prompts, what
trains, per-task isolation, appended tokens stripped, bad sizes refused."""

import pytest
import torch

from petl_bench.datamodules import Task
from petl_bench.errors import UserError
from petl_bench.methods.maple import MaPLe, MaPLeConfig, MaPLeMT
from petl_bench.methods.vpt import VPT, VPTMT, VPTConfig
from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig
from petl_bench.registry import get_method

TINY_PATCHES = 16  # 32 px images in 8 px patches
ALL = [
    (VPT, VPTConfig(n_prompts=5)),
    (VPTMT, VPTConfig(n_prompts=5)),
    (MaPLe, MaPLeConfig(n_ctx=4, depth=3)),
    (MaPLeMT, MaPLeConfig(n_ctx=4, depth=3)),
]
IDS = ["vpt", "vpt-mt", "maple", "maple-mt"]


def _quiet(module):
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    return module


def _set_state(module, index: int) -> dict[str, torch.Tensor]:
    """The parameters of prompt set `index` (a task's set, for single-task methods)."""
    if isinstance(module, VPT):
        return {"visual_prompts": module.visual_prompts[index].detach().clone()}
    coupling = {f"coupling.{k}": v.clone() for k, v in module.coupling[index].state_dict().items()}
    return {"text_ctx": module.text_ctx[index].detach().clone(), **coupling}


# -- registration, shapes and counts --------------------------------------------------------------
def test_registered_names():
    for name, cls, config in [
        ("vpt", VPT, VPTConfig),
        ("vpt-mt", VPTMT, VPTConfig),
        ("maple", MaPLe, MaPLeConfig),
        ("maple-mt", MaPLeMT, MaPLeConfig),
    ]:
        entry = get_method(name)
        assert (entry.cls, entry.config_cls, cls.method_name) == (cls, config, name)
    assert VPT.text_frozen and not MaPLe.text_frozen


@pytest.mark.parametrize("cls, sets", [(VPT, 4), (VPTMT, 1)], ids=["vpt", "vpt-mt"])
def test_vpt_shapes_on_tiny(cls, sets, tiny_backbone, folder_data):
    module = cls(VPTConfig(n_prompts=5), tiny_backbone, folder_data.tasks)
    assert module.visual_prompts.shape == (sets, 3, 5, 64)
    assert module.num_trainable == sets * 3 * 5 * 64
    # The default depth 12 is capped at the tiny image tower's 3 layers.
    assert cls(VPTConfig(), tiny_backbone, folder_data.tasks).visual_prompts.shape == (sets, 3, 18, 64)


@pytest.mark.parametrize("cls, sets", [(MaPLe, 4), (MaPLeMT, 1)], ids=["maple", "maple-mt"])
def test_maple_shapes_on_tiny(cls, sets, tiny_backbone, folder_data):
    module = cls(MaPLeConfig(n_ctx=4, depth=3, ctx_init=""), tiny_backbone, folder_data.tasks)
    assert module.text_ctx.shape == (sets, 3, 4, 48)
    assert len(module.coupling) == sets and all(len(layers) == 3 for layers in module.coupling)
    assert module.coupling[0][0].weight.shape == (64, 48) and module.coupling[0][0].bias.shape == (64,)
    assert module.num_trainable == sets * 3 * (4 * 48 + 48 * 64 + 64)
    assert module.prompts(module.task_names[0])[0] == "X X X X anchor."


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("vpt-mt", {}, 165_888),
        ("vpt", {}, 4 * 165_888),
        ("maple-mt", {"n_ctx": 4}, 4_752_384),
        ("maple", {"n_ctx": 4}, 4 * 4_752_384),
        ("maple-mt", {"n_ctx": 2}, 4_740_096),
    ],
)
def test_vit_b16_counts(vit_b16, name, params, expected):
    tasks = [Task(f"task{i}", tuple(f"class {c}" for c in range(65))) for i in range(4)]
    entry = get_method(name)
    assert entry.cls(entry.config_cls(**params), vit_b16, tasks).num_trainable == expected


def test_maple_ctx_init_sets_first_layer_context(tiny_backbone, folder_data):
    # MaPLe's rule: P_0 is the phrase's first n_ctx tokens; the prompt keeps the whole phrase.
    module = MaPLeMT(MaPLeConfig(n_ctx=2, depth=2, ctx_init="a photo of a"), tiny_backbone, folder_data.tasks)
    assert module.n_ctx == 2 and module.text_ctx.shape == (1, 2, 2, 48)
    tokens = tiny_backbone.tokenize(["a photo of a"])[0, 1:3]
    assert torch.equal(module.text_ctx[0, 0], tiny_backbone.model.token_embedding.weight[tokens])
    assert module.prompts(module.task_names[0])[0] == "a photo of a anchor."


# -- zero prompts == zero-shot; prompts change the logits -------------------------------------------
@pytest.mark.parametrize(
    "cls, cfg",
    [
        (VPT, VPTConfig(n_prompts=0)),
        (VPTMT, VPTConfig(n_prompts=0)),
        (MaPLe, MaPLeConfig(n_ctx=0, depth=3)),
        (MaPLeMT, MaPLeConfig(n_ctx=0, depth=3)),
    ],
    ids=IDS,
)
def test_zero_prompts_is_exactly_zero_shot(cls, cfg, tiny_backbone, folder_data, batch):
    module = cls(cfg, tiny_backbone, folder_data.tasks).eval()
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, folder_data.tasks).eval()
    assert module.num_trainable == 0
    with torch.no_grad():
        for task, (images, _) in batch.items():
            assert torch.allclose(module(images, task), zeroshot(images, task), atol=1e-6)


@pytest.mark.parametrize("cls, cfg", ALL, ids=IDS)
def test_prompts_change_the_logits(cls, cfg, tiny_backbone, folder_data, batch):
    module = cls(cfg, tiny_backbone, folder_data.tasks).eval()
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, folder_data.tasks).eval()
    task, (images, _) = next(iter(batch.items()))
    with torch.no_grad():
        assert not torch.allclose(module(images, task), zeroshot(images, task), atol=1e-4)


@pytest.mark.parametrize("cls, cfg", ALL, ids=IDS)
def test_appended_tokens_are_stripped_before_pooling(cls, cfg, tiny_backbone, folder_data, batch, monkeypatch):
    module = cls(cfg, tiny_backbone, folder_data.tasks).eval()
    n = cfg.n_prompts if isinstance(cfg, VPTConfig) else cfg.n_ctx
    layer_tokens, pooled_tokens = [], []
    vision_layer, pool = module.vision_layer, tiny_backbone.model.visual._pool
    module.vision_layer = lambda i, x, task: (layer_tokens.append(x.shape[1]), vision_layer(i, x, task))[1]
    monkeypatch.setattr(tiny_backbone.model.visual, "_pool", lambda x: (pooled_tokens.append(x.shape[1]), pool(x))[1])
    task, (images, _) = next(iter(batch.items()))
    with torch.no_grad():
        features = tiny_backbone.encode_image(images, module, task)
    assert features.shape == (len(images), 64)
    assert layer_tokens == [1 + TINY_PATCHES + n] * 3  # every block sees the prompts
    assert pooled_tokens == [1 + TINY_PATCHES]


# -- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, cfg", ALL, ids=IDS)
def test_only_declared_parameters_change_and_every_layer_learns(cls, cfg, tiny_backbone, folder_data, batch):
    torch.manual_seed(0)
    module = _quiet(cls(cfg, tiny_backbone, folder_data.tasks))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    params = module.apply_trainable()
    declared = {n for n, _ in module.trainable()}
    assert declared == {n for n, p in module.named_parameters() if p.requires_grad}
    assert all(not n.startswith("backbone.") for n in declared)
    optimizer = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        for name, param in module.trainable():
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        # Each set's prompts of each layer matter (the batch holds every task).
        per_layer = module.visual_prompts.grad if cls in (VPT, VPTMT) else module.text_ctx.grad
        assert bool((per_layer.abs().sum(dim=(2, 3)) > 0).all())
        optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == declared


@pytest.mark.parametrize("cls, cfg", [ALL[0], ALL[2]], ids=["vpt", "maple"])
def test_a_step_on_one_task_leaves_the_other_tasks_sets_alone(cls, cfg, tiny_backbone, folder_data, batch):
    module = _quiet(cls(cfg, tiny_backbone, folder_data.tasks))
    task_a, _ = module.task_names[:2]
    a_before, b_before = _set_state(module, 0), _set_state(module, 1)
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=0.1)
    module.training_step({task_a: batch[task_a]}, 0).backward()
    optimizer.step()
    a_after, b_after = _set_state(module, 0), _set_state(module, 1)
    assert all(torch.equal(b_before[k], b_after[k]) for k in b_before)
    assert all(not torch.equal(a_before[k], a_after[k]) for k in a_before)


# -- bad sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, cfg, match",
    [
        (MaPLeMT, MaPLeConfig(depth=0), r"^method\.depth=0: must be >= 1$"),
        (MaPLeMT, MaPLeConfig(n_ctx=-1, depth=3), r"^method\.n_ctx=-1: must be >= 0$"),
        (MaPLe, MaPLeConfig(n_ctx=30, depth=3, ctx_init=""), "exceed the model's context length 32"),
        (VPT, VPTConfig(n_prompts=-1), "must be >= 0"),
    ],
    ids=["maple-depth0", "maple-negative-ctx", "maple-context", "vpt-negative"],
)
def test_bad_sizes_are_user_errors(cls, cfg, match, tiny_backbone, folder_data):
    with pytest.raises(UserError, match=match):
        cls(cfg, tiny_backbone, folder_data.tasks)


@pytest.mark.parametrize("cls", [MaPLe, MaPLeMT])
def test_maple_depth_is_capped_at_the_shallower_tower(cls, tiny_backbone, folder_data):
    module = cls(MaPLeConfig(), tiny_backbone, folder_data.tasks)  # default depth 12, tiny has 3 layers
    assert module.depth == 3 and module.text_ctx.shape[1] == 3 and len(module.coupling[0]) == 3
