"""ProGrad, TCP and DePT on the tiny CLIP: ProGrad's projected gradient against hand-computed
ones, untrained ProGrad as zero-shot, TCP's class-aware tokens, DePT over each base it takes (at
weight 0 exactly its base; its checkpoint loads into the base for classes it never trained), and
the ViT-B/16 counts the module docstrings give."""

import pytest
import torch
import torch.nn.functional as F

from petl_bench.datamodules.records import Task
from petl_bench.errors import UserError
from petl_bench.methods.configs import DePTConfig, MaPLeConfig
from petl_bench.methods.prograd import conflict_free, with_gradient
from petl_bench.module import PetlModule
from petl_bench.registry import get_method

TASKS = [Task("art", ("anchor", "bicycle", "candle")), Task("clipart", ("anchor", "bicycle", "candle"))]


def build(name: str, backbone, tasks=TASKS, **params) -> PetlModule:
    torch.manual_seed(0)
    entry = get_method(name)
    module = entry.cls(entry.config_cls(**params), backbone, tasks)
    module.apply_trainable()
    return module


def batch(labels=(0, 1, 2, 1)) -> dict:
    images = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor(labels)
    return {task.name: (images, labels) for task in TASKS}


# -- ProGrad ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "g_ce, g_kd, weight, expected",
    [
        ((1.0, 0.0), (-1.0, 1.0), 1.0, (0.5, 0.5)),  # conflict: g_ce - (g_ce . g_kd / |g_kd|^2) g_kd
        ((1.0, 0.0), (-1.0, 1.0), 0.5, (0.75, 0.25)),  # half of the conflicting component removed
        ((1.0, 0.0), (1.0, 1.0), 1.0, (1.0, 0.0)),  # no conflict: g_ce as it is
        ((1.0, 0.0), (0.0, 0.0), 1.0, (1.0, 0.0)),  # no KD gradient (student = teacher): g_ce
    ],
)
def test_conflict_free_on_a_two_parameter_toy(g_ce, g_kd, weight, expected):
    """Through autograd, as ProGrad uses it: two linear losses of w = (w1, w2), their gradients the
    given vectors, and the surrogate loss whose value is the CE's and whose gradient the projection."""
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    ce, kd = (w * torch.tensor(g_ce)).sum() + 2.0, (w * torch.tensor(g_kd)).sum()
    (a,) = torch.autograd.grad(ce, [w], retain_graph=True)
    (b,) = torch.autograd.grad(kd, [w])
    loss = with_gradient(ce, [w], [conflict_free(a, b, weight)])
    loss.backward()
    assert loss.item() == pytest.approx(ce.item())
    assert w.grad.tolist() == pytest.approx(list(expected))


@pytest.mark.parametrize("name, conflicting", [("prograd", [True, False]), ("prograd-mt", [True, True])])
def test_prograd_steps_along_the_projected_cross_entropy_gradient(name, conflicting, tiny_backbone):
    """The gradient a training step leaves on the context is each task's CE gradient, projected off
    its KD gradient where they conflict, summed over tasks; the logged loss is the cross-entropy.
    Labels zero-shot ranks low and a random context (whose KD gradient is not zero), so that both
    cases occur: `conflicting` says in which tasks the two gradients point apart."""
    module = build(name, tiny_backbone, ctx_init="")
    steps = batch(labels=(2, 2, 2, 0))
    expected, cross_entropies, conflicts = torch.zeros_like(module.ctx), [], []
    for task, (images, labels) in steps.items():
        logits = module(images, task)
        with torch.no_grad():
            teacher = module.logits(module.backbone.encode_image(images), module.handwritten_features(task), task)
        ce = F.cross_entropy(logits, labels)
        kd = -(F.softmax(teacher, -1) * F.log_softmax(logits, -1)).sum(-1).mean()
        (a,) = torch.autograd.grad(ce, [module.ctx], retain_graph=True)
        (b,) = torch.autograd.grad(kd, [module.ctx])
        dot = float((a * b).sum())
        expected += a - dot / float((b * b).sum()) * b if dot < 0 else a
        cross_entropies.append(ce.item())
        conflicts.append(dot < 0)
    assert conflicts == conflicting
    loss = module.training_step(steps, 0)
    loss.backward()
    assert loss.item() == pytest.approx(sum(cross_entropies), rel=1e-5)
    assert torch.allclose(module.ctx.grad, expected, atol=1e-6)


def test_untrained_prograd_with_only_the_phrase_as_context_is_zero_shot(tiny_backbone):
    zeroshot = build("zeroshot", tiny_backbone)
    prograd = build("prograd", tiny_backbone, n_ctx=4)
    images = batch()["art"][0]
    with torch.no_grad():
        assert torch.allclose(prograd(images, "art"), zeroshot(images, "art"), atol=1e-5)


def test_prograds_context_is_zeros_then_the_phrase(tiny_backbone):
    module = build("prograd", tiny_backbone)  # 16 tokens, "a photo of a"
    phrase = tiny_backbone.model.token_embedding(tiny_backbone.tokenize(["a photo of a"])[0, 1:5])
    assert module.ctx.shape == (2, 16, tiny_backbone.text_width)
    assert torch.equal(module.ctx[:, :12], torch.zeros(2, 12, tiny_backbone.text_width))
    assert torch.equal(module.ctx[:, 12:], phrase.detach().expand(2, -1, -1))
    with pytest.raises(UserError, match="ctx_init 'a photo of a' has 4 tokens, more than n_ctx 3"):
        build("prograd", tiny_backbone, n_ctx=3)


# -- TCP -------------------------------------------------------------------------------------------
def test_tcp_tokens_are_class_aware_so_it_scores_classes_it_never_trained(tiny_backbone):
    """A class's text feature depends on its own zero-shot feature only: "candle" gets the same one
    among other classes, under the same trained parameters; the prompt keeps the template's tail."""
    pets = [Task("art", ("anchor", "bicycle", "candle"), "a photo of a {}, a type of pet.")]
    others = [Task("art", ("candle", "dolphin"), "a photo of a {}, a type of pet.")]
    trained, unseen = build("tcp", tiny_backbone, pets), build("tcp", tiny_backbone, others)
    unseen.load_trainable_state(trained.trainable_state_dict())
    assert unseen.prompts("art") == ["X X X X candle, a type of pet.", "X X X X dolphin, a type of pet."]
    assert trained.layer == tiny_backbone.text_depth - 1  # 8, capped at the tiny CLIP's last block
    with torch.no_grad():
        assert torch.allclose(trained.class_text_features("art")[2], unseen.class_text_features("art")[0], atol=1e-4)
        before = trained.class_text_features("art").clone()
        trained.token_net[0][2].bias.add_(1.0)
        trained._text_cache.clear()
        assert not torch.allclose(trained.class_text_features("art"), before)  # the tokens reach the features


# -- DePT ------------------------------------------------------------------------------------------
BASES = ["coop", "kgcoop", "maple", "ivlp"]


@pytest.mark.parametrize("shared", [False, True], ids=["dept", "dept-mt"])
@pytest.mark.parametrize("base", BASES)
def test_dept_at_weight_zero_is_its_base_and_its_state_loads_into_the_base(base, shared, tiny_backbone):
    """With the head at weight 0, DePT's logits and loss are its base method's; its parameters
    keep the base's names, so the base method loads them: how classes never trained are scored."""
    name, base_name = ("dept-mt", f"{base}-mt") if shared else ("dept", base)
    dept = build(name, tiny_backbone, base=base, weight=0.0)
    plain = build(base_name, tiny_backbone)
    assert isinstance(dept, type(plain)) and dept.method_name == name and dept.shared is shared
    assert dept.image_frozen is plain.image_frozen and dept.open_vocabulary is False
    with torch.no_grad():
        for _, parameter in dept.trainable():
            parameter.add_(0.1 * torch.randn_like(parameter))  # trained-looking values, head too
    plain.load_trainable_state(dept.trainable_state_dict())
    assert {n for n, _ in dept.trainable()} - {n for n, _ in plain.trainable()} == {
        f"dept_{part}.{s}.{p}"
        for s in range(dept.n_sets)
        for part in ("image", "text", "head")
        for p in (("weight", "bias") if part == "head" else ("scale", "shift"))
    }
    images = batch()["art"][0]
    with torch.no_grad():
        assert torch.allclose(dept(images, "art"), plain(images, "art"), atol=1e-6)
        assert torch.allclose(dept.task_losses(batch())["art"], plain.task_losses(batch())["art"], atol=1e-6)


def test_dept_logits_blend_the_head_on_trained_classes(tiny_backbone):
    dept = build("dept", tiny_backbone, weight=0.7)
    images, labels = batch()["clipart"]
    with torch.no_grad():
        dept.dept_image[1].scale.mul_(2.0)
        image = tiny_backbone.encode_image(images)
        text = dept.class_text_features("clipart")
        prompt = dept.logits(image, text, "clipart")
        head = dept.dept_head[1](2.0 * image)
        assert torch.allclose(dept(images, "clipart"), 0.3 * prompt + 0.7 * head, atol=1e-5)
        both = torch.cat([dept.dept_text[1](text[labels]), 2.0 * image])
        loss = 0.3 * F.cross_entropy(prompt, labels) + 0.7 * F.cross_entropy(dept.dept_head[1](both), labels.repeat(2))
        assert dept.task_losses({"clipart": (images, labels)})["clipart"].item() == pytest.approx(loss.item(), rel=1e-5)


def test_dept_trains_its_head_and_transforms_at_its_lr_scale(tiny_backbone):
    dept = build("dept", tiny_backbone)
    groups = dept.optimizer_groups()
    assert [g["lr"] for g in groups] == pytest.approx([dept.optim.lr, 6.5 * dept.optim.lr])
    assert [sum(p.numel() for p in g["params"]) for g in groups] == [
        dept.ctx.numel(),
        dept.num_trainable - dept.ctx.numel(),
    ]


def test_dept_base_set_reaches_the_base_config_and_is_checked():
    assert DePTConfig(base="maple", base_set="n_ctx=2, depth=9").base_config() == MaPLeConfig(n_ctx=2, depth=9)
    with pytest.raises(UserError, match=r"^method\.n_ctx=-1: must be >= 0$"):
        DePTConfig(base="maple", base_set="n_ctx=-1").check()
    with pytest.raises(UserError, match=r"'rank=2' is not field=value of coop \(n_ctx, ctx_init\)$"):
        DePTConfig(base_set="rank=2").check()


def test_one_dept_head_for_all_tasks_needs_the_same_classes(tiny_backbone):
    tasks = [Task("art", ("anchor", "bicycle")), Task("clipart", ("anchor", "candle"))]
    with pytest.raises(
        UserError,
        match=r"^dept-mt: its one head, shared by every task, holds a row per class, so every task needs the same "
        r"classes \(those of clipart differ from those of art\); its single-task variant keeps one per task$",
    ):
        build("dept-mt", tiny_backbone, tasks)
    assert [head.out_features for head in build("dept", tiny_backbone, tasks).dept_head] == [2, 2]


# -- ViT-B/16 counts, as the module docstrings give them ---------------------------------------------
OFFICEHOME = [Task(f"task{i}", tuple(f"class {c}" for c in range(65))) for i in range(4)]


@pytest.mark.parametrize(
    "name, per_set",
    [
        ("prograd-mt", 16 * 512),
        ("tcp-mt", 4 * 512 + 512 * 128 + 128 + 128 * 2048 + 2048),
        ("dept-mt", 16 * 512 + 4 * 512 + 512 * 65 + 65),
    ],
)
def test_vit_b16_counts(name, per_set, vit_b16):
    assert build(name, vit_b16, OFFICEHOME).num_trainable == per_set
    assert build(name.removesuffix("-mt"), vit_b16, OFFICEHOME).num_trainable == 4 * per_set


@pytest.mark.parametrize(
    "base_set, message",
    [
        ("depth=0", "method.depth=0: must be >= 1"),
        ("n_ctx", "method.base_set='n_ctx': 'n_ctx' is not field=value of maple (n_ctx, depth, ctx_init)"),
    ],
)
def test_dept_base_set_errors_are_one_line_before_the_backbone(base_set, message, tmp_path, monkeypatch):
    from petl_bench.backbone import ClipBackbone

    from cli_calls import call

    monkeypatch.setattr(ClipBackbone, "from_pretrained", classmethod(lambda *a, **k: pytest.fail("backbone built")))
    argv = ["run", "--method", "dept", "--dataset", "folder", "--root", tmp_path / "none", "--model", "tiny"]
    argv += ["--out", tmp_path, "--set", "method.base=maple", "--set", f"method.base_set={base_set}"]
    code, _, err = call(argv)
    assert code == 2 and err == f"petl-bench: error: {message}\n", err
