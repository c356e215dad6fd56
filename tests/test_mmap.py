"""MmAP and its two ablations: the Kronecker product, counts (ViT-B/16 and tiny), shapes, which
sets a step on one task trains, and bad configs refused."""

import pytest
import torch

from petl_bench.datamodules import Task
from petl_bench.errors import UserError
from petl_bench.methods.mmap import MmAP, MmAPConfig, MmAPJoint, MmAPMLP, MmAPMLPConfig
from petl_bench.registry import get_method

TINY_PATCHES = 16
VIT_TASKS = [Task(name, tuple(f"class {c}" for c in range(65))) for name in ("a", "b", "c", "d")]
GROUPINGS = {1: "", 2: "a,b|c,d", 3: "a|b,c|d", 4: "a|b|c|d"}
TWO_GROUPS = "art,clipart|product,real world"


def _quiet(module):
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    return module


def mmap_per_layer(b, m, n, d_l, d_v):
    return m * n + (b // m) * (d_l // n) + (b // m) * (d_v // n)


def mlp_per_layer(b, s, h, d_l, d_v):
    return b * s + 2 * (s * h + h) + (h * d_l + d_l) + (h * d_v + d_v)


def test_registered_names():
    for name, cls, config in [
        ("mmap", MmAP, MmAPConfig),
        ("mmap-joint", MmAPJoint, MmAPConfig),
        ("mmap-mlp", MmAPMLP, MmAPMLPConfig),
    ]:
        entry = get_method(name)
        assert (entry.cls, entry.config_cls, cls.method_name) == (cls, config, name)
    assert not MmAP.text_frozen and MmAP.text_depends_on_task


def test_kron_is_the_block_matrix():
    scale = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # b/m x d/n = 2 x 3
    source = torch.arange(6.0).reshape(2, 3) + 1  # m x n = 2 x 3
    blocks = torch.cat([torch.cat([scale[i, j] * source for j in range(3)], dim=1) for i in range(2)])
    out = torch.kron(scale, source)
    assert out.shape == (4, 9)
    assert torch.equal(out, blocks)
    assert out[3, 8] == scale[1, 2] * source[1, 2]


# -- counts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_groups", [1, 2, 3, 4])
def test_vit_b16_counts(vit_b16, n_groups):
    module = MmAP(MmAPConfig(groups=GROUPINGS[n_groups]), vit_b16, VIT_TASKS)
    assert module.n == 256 and module.depth == 12 and len(module.groups) == n_groups
    per_set = 12 * mmap_per_layer(7, 7, 256, 512, 768)
    assert per_set == 21_564
    assert module.num_trainable == (n_groups + 4) * per_set
    assert module.num_trainable == {1: 107_820, 2: 129_384, 3: 150_948, 4: 172_512}[n_groups]


def test_vit_b16_two_groups_is_the_papers_figure(vit_b16):
    count = MmAP(MmAPConfig(groups=GROUPINGS[2]), vit_b16, VIT_TASKS).num_trainable
    assert round(count / 1e6, 2) == 0.13


@pytest.mark.parametrize("task_specific, group_shared, sets", [(True, False, 4), (False, True, 2)])
def test_vit_b16_counts_with_one_kind_of_set(vit_b16, task_specific, group_shared, sets):
    cfg = MmAPConfig(groups=GROUPINGS[2], task_specific=task_specific, group_shared=group_shared)
    assert MmAP(cfg, vit_b16, VIT_TASKS).num_trainable == sets * 21_564


def test_tiny_counts_and_caps(tiny_backbone, folder_data):
    module = MmAP(MmAPConfig(), tiny_backbone, folder_data.tasks)  # n 256 -> 16, depth 12 -> 3
    assert (module.n, module.depth) == (16, 3)
    prompt_set = module.task_sets[0]
    assert prompt_set.source.shape == (3, 7, 16)
    assert prompt_set.scale_text.shape == (3, 1, 3) and prompt_set.scale_visual.shape == (3, 1, 4)
    assert module.num_trainable == 5 * 3 * mmap_per_layer(7, 7, 16, 48, 64) == 5 * 3 * 119
    assert MmAP(MmAPConfig(n=8, depth=2), tiny_backbone, folder_data.tasks).n == 8


def test_joint_and_mlp_counts(vit_b16, tiny_backbone, folder_data):
    joint = MmAPJoint(MmAPConfig(groups=GROUPINGS[2]), vit_b16, VIT_TASKS)
    assert joint.num_trainable == 6 * 12 * 7 * (512 + 768) == 645_120
    mlp = MmAPMLP(MmAPMLPConfig(groups=GROUPINGS[2]), vit_b16, VIT_TASKS)
    assert mlp.num_trainable == 6 * 12 * mlp_per_layer(7, 96, 36, 512, 768) == 3_961_152
    assert round(mlp.num_trainable / 1e6, 2) == 3.96  # the paper's Figure 4 count
    tasks = folder_data.tasks
    assert MmAPJoint(MmAPConfig(), tiny_backbone, tasks).num_trainable == 5 * 3 * 7 * (48 + 64)
    assert MmAPMLP(MmAPMLPConfig(), tiny_backbone, tasks).num_trainable == 5 * 3 * mlp_per_layer(7, 96, 36, 48, 64)


# -- groups ----------------------------------------------------------------------------------------
def test_groups_are_parsed(tiny_backbone, folder_data):
    module = MmAP(MmAPConfig(groups="Art, Clipart|Product,Real World"), tiny_backbone, folder_data.tasks)
    assert module.groups == [["art", "clipart"], ["product", "real world"]]
    assert module.group_of == {"art": 0, "clipart": 0, "product": 1, "real world": 1}
    default = MmAP(MmAPConfig(), tiny_backbone, folder_data.tasks)
    assert default.groups == [["art", "clipart", "product", "real world"]] and len(default.group_sets) == 1


# -- shapes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, cfg, tokens",
    [
        (MmAP, MmAPConfig(groups=TWO_GROUPS), 14),
        (MmAP, MmAPConfig(groups=TWO_GROUPS, group_shared=False), 7),
        (MmAP, MmAPConfig(groups=TWO_GROUPS, task_specific=False), 7),
        (MmAPJoint, MmAPConfig(groups=TWO_GROUPS), 14),
        (MmAPMLP, MmAPMLPConfig(groups=TWO_GROUPS), 14),
    ],
    ids=["mmap", "mmap-group-only", "mmap-task-only", "mmap-joint", "mmap-mlp"],
)
def test_feature_shapes_and_token_counts(cls, cfg, tokens, tiny_backbone, folder_data, batch, monkeypatch):
    module = cls(cfg, tiny_backbone, folder_data.tasks).eval()
    task, (images, _) = next(iter(batch.items()))
    assert module.prompts(task)[0] == " ".join(["X"] * tokens) + " anchor."
    assert module.visual_prompts_at(1, task).shape == (tokens, 64)
    text_seen, layer_tokens, pooled_tokens = [], [], []
    text_layer, vision_layer, pool = module.text_layer, module.vision_layer, tiny_backbone.model.visual._pool
    module.text_layer = lambda i, x, t: (text_seen.append(x.shape), text_layer(i, x, t))[1]
    module.vision_layer = lambda i, x, t: (layer_tokens.append(x.shape[1]), vision_layer(i, x, t))[1]
    monkeypatch.setattr(tiny_backbone.model.visual, "_pool", lambda x: (pooled_tokens.append(x.shape[1]), pool(x))[1])
    with torch.no_grad():
        text = tiny_backbone.encode_text(module.tokens(task), module, task)
        image = tiny_backbone.encode_image(images, module, task)
    assert text.shape == (4, 64) and image.shape == (len(images), 64)
    context = tokens + 4  # the text tower runs up to the longest prompt's EOT: SOT, X..X, a word, ".", EOT
    assert tiny_backbone.text_context(module.tokens(task)) == context
    assert text_seen == [torch.Size([4, context, 48])] * 3
    assert layer_tokens == [1 + TINY_PATCHES + tokens] * 3
    assert pooled_tokens == [1 + TINY_PATCHES]


def test_text_prompts_sit_after_sot_as_group_then_task(tiny_backbone, folder_data):
    module = MmAP(MmAPConfig(groups=TWO_GROUPS, depth=2), tiny_backbone, folder_data.tasks)
    task = "product"
    x = torch.zeros(4, 32, 48)
    out = module.text_layer(1, x, task)
    group_text, _ = module.layer_prompts(module.group_sets[1], 1)
    task_text, _ = module.layer_prompts(module.task_sets[2], 1)
    assert torch.equal(out[0, 1:8], group_text) and torch.equal(out[0, 8:15], task_text)
    assert torch.equal(out[:, 15:], x[:, 15:]) and torch.equal(out[:, 0], x[:, 0])
    assert torch.equal(module.text_layer(2, x, task), x)  # past depth: unchanged


# -- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, cfg",
    [
        (MmAP, MmAPConfig(groups=TWO_GROUPS)),
        (MmAPJoint, MmAPConfig(groups=TWO_GROUPS)),
        (MmAPMLP, MmAPMLPConfig(groups=TWO_GROUPS)),
    ],
    ids=["mmap", "mmap-joint", "mmap-mlp"],
)
def test_steps_on_one_task_train_only_its_sets(cls, cfg, tiny_backbone, folder_data, batch):
    torch.manual_seed(0)
    module = _quiet(cls(cfg, tiny_backbone, folder_data.tasks))
    task = "clipart"  # group 0, task set 1
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        optimizer.zero_grad()
        module.training_step({task: batch[task]}, 0).backward()
        optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    own = {k for k in before if k.startswith(("group_sets.0.", "task_sets.1."))}
    assert changed == own
    assert changed <= {n for n, _ in module.trainable()}
    assert not any(k.startswith("backbone.") for k in changed)


def test_every_set_learns_when_every_task_is_in_the_batch(tiny_backbone, folder_data, batch):
    module = _quiet(MmAP(MmAPConfig(groups=TWO_GROUPS), tiny_backbone, folder_data.tasks))
    module.apply_trainable()
    module.training_step(batch, 0).backward()
    for name, param in module.trainable():
        assert param.grad is not None and bool((param.grad.flatten(1).abs().sum(1) > 0).all()), name


# -- bad configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg, match",
    [
        (MmAPConfig(b=7, m=2), "m must divide b"),
        (MmAPConfig(task_specific=False, group_shared=False), "at least one of task_specific and group_shared"),
        (MmAPConfig(groups="art,clipart|product,sculpture"), "unknown task 'sculpture'"),
        (MmAPConfig(groups="art,clipart|product"), "missing 'real world'"),
        (MmAPConfig(groups="art,clipart|product,clipart,real world"), "'clipart' more than once"),
        (MmAPConfig(groups="art,clipart||product,real world"), "empty group"),
        (MmAPConfig(depth=0), "must be >= 1"),
        (MmAPConfig(b=14), "exceed the model's context length 32"),
        (MmAPConfig(grouping="spectral"), r"^method\.grouping='spectral': must be one of gradient, random, all$"),
        (MmAPConfig(max_groups=0), r"^method\.max_groups=0: must be >= 1$"),
    ],
    ids=[
        "m-b",
        "no-sets",
        "unknown-task",
        "missing-task",
        "duplicate-task",
        "empty-group",
        "depth0",
        "context",
        "grouping",
        "max-groups",
    ],
)
def test_bad_configs_are_user_errors(cfg, match, tiny_backbone, folder_data):
    with pytest.raises(UserError, match=match):
        MmAP(cfg, tiny_backbone, folder_data.tasks)
