"""Registry-driven: every registered method is tested here the moment it registers.

On the tiny CLIP, each method built as the runner builds it (`prepare`, then the class): a few SGD
steps change only the parameters the method declares, each of which gets a gradient, and released,
it leaves the backbone as it found it; training lowers the loss on a fixed batch; `petl-bench run`
goes through with `fast_dev_run`. On ViT-B-16 built without weights: the trainable count agrees
with the paper.
"""

import contextlib
import copy
import dataclasses
import io
import re

import pytest
import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.cli import main
from petl_bench.config import DataConfig
from petl_bench.datamodules import MultiDomainDataModule
from petl_bench.module import PetlModule
from petl_bench.params import OwnPaperFigure, agrees, count_rows, own_paper_figures, paper_figures
from petl_bench.registry import get_method, method_names

from cli_calls import call

TRAINED = [name for name in method_names() if name != "zeroshot"]


@pytest.fixture(scope="module")
def batch_and_tasks(folder_root, tiny_backbone, tmp_path_factory):
    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", batch_size=4, num_workers=0),
        tiny_backbone,
        out=tmp_path_factory.mktemp("methods"),
    )
    data.setup()
    torch.manual_seed(0)  # the same shuffle and crops whatever ran before: one fixed batch
    return next(iter(data.train_dataloader()))[0], data


def sgd_steps(module, batch, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", TRAINED)
def test_only_declared_parameters_change_and_all_get_gradients(name, tiny_backbone, batch_and_tasks, build_method):
    """And `release()` then leaves the backbone as a fresh one is (what sweeps rely on to reuse one
    loaded backbone): module types, state-dict keys and, unless the method trains the backbone
    itself, image features."""
    batch, data = batch_and_tasks
    # A copy: BitFit and full fine-tuning train the backbone they are given.
    module = build_method(name, copy.deepcopy(tiny_backbone), data)
    declared = {n for n, _ in module.trainable()}
    assert declared and module.num_trainable > 0
    before = {k: v.clone() for k, v in module.state_dict().items()}
    sgd_steps(module, batch, steps=2, lr=0.05)
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= declared, sorted(changed - declared)[:5]
    without_grad = [n for n, p in module.trainable() if p.grad is None]
    assert not without_grad, without_grad[:5]
    assert all(not p.requires_grad for n, p in module.named_parameters() if n not in declared)

    module.release()
    assert list(module.backbone.state_dict()) == list(tiny_backbone.state_dict())
    assert [type(m) for m in module.backbone.modules()] == [type(m) for m in tiny_backbone.modules()]
    if not any(n.startswith("backbone.") for n in declared):
        images = next(iter(batch.values()))[0]
        with torch.no_grad():
            assert torch.equal(module.backbone.encode_image(images), tiny_backbone.encode_image(images))


@pytest.mark.parametrize("name", TRAINED)
def test_training_lowers_the_loss(name, tiny_backbone, batch_and_tasks, build_method):
    """At lr 0.01, or a tenth or a hundredth of it where that overshoots: KgCoOp starts at its
    regulariser's minimum, and the random tiny CLIP's text features swing with the context."""
    batch, data = batch_and_tasks
    tried = {}
    for lr in (0.01, 0.001, 0.0001):
        module = build_method(name, copy.deepcopy(tiny_backbone), data)
        tried[lr] = losses = sgd_steps(module, batch, steps=8, lr=lr)
        if losses[-1] < losses[0]:
            return
    pytest.fail(f"no learning rate lowered the loss: {tried}")


SINGLE_TASK = [name for name in method_names() if get_method(name).cls.shared is False]


@pytest.mark.parametrize("name", SINGLE_TASK)
def test_a_single_task_method_sizes_and_picks_its_sets_through_the_base(
    name, tiny_backbone, batch_and_tasks, build_method, monkeypatch
):
    """The ST/MT choice is made once, in PetlModule: a method builds `n_sets` parameter sets and a
    task's forward picks its set by `set_index(task)`, never by a copy of that choice."""
    batch, data = batch_and_tasks
    asked = []
    n_sets, set_index = PetlModule.n_sets, PetlModule.set_index
    monkeypatch.setattr(PetlModule, "n_sets", property(lambda self: asked.append("n_sets") or n_sets.fget(self)))
    monkeypatch.setattr(PetlModule, "set_index", lambda self, task: asked.append(task) or set_index(self, task))
    module = build_method(name, copy.deepcopy(tiny_backbone), data)
    assert "n_sets" in asked
    task = module.task_names[-1]  # the last task: its set is not set 0
    with torch.no_grad():
        module(batch[task][0], task)
    assert task in asked


FROZEN_IMAGES = [name for name in method_names() if get_method(name).cls.image_frozen]


def test_the_image_frozen_declarations_of_the_paper_methods():
    assert {"zeroshot", "coop", "coop-mt", "clip-adapter"} <= set(FROZEN_IMAGES)
    assert not {"vpt", "vpt-mt", "maple", "mmap", "bitfit", "fullft"} & set(FROZEN_IMAGES)


@pytest.mark.parametrize("name", FROZEN_IMAGES)
def test_declared_frozen_image_tower_gives_the_backbone_features(name, tiny_backbone, batch_and_tasks, build_method):
    """The feature cache holds the frozen backbone's image features: a method that declares
    `image_frozen` must give exactly those, whatever its trainable parameters hold."""
    batch, data = batch_and_tasks
    module = build_method(name, copy.deepcopy(tiny_backbone), data).eval()
    with torch.no_grad():
        for _, parameter in module.trainable():
            parameter.add_(torch.randn_like(parameter))
        for task, (images, _) in batch.items():
            assert module.encoder(task) is module.backbone
            assert torch.equal(module.backbone.encode_image(images, module, task), tiny_backbone.encode_image(images))
    assert module.frozen_image_encoder() is not None


@pytest.mark.parametrize("name", method_names())
def test_fast_dev_run_through_the_cli(name, folder_root, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(
            [
                "run",
                "--method",
                name,
                "--dataset",
                "folder",
                "--root",
                str(folder_root),
                "--split",
                "2shot",
                "--model",
                "tiny",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--set",
                "data.num_workers=0",
                "--set",
                "train.fast_dev_run=true",
            ]
        )
    assert code == 0, err.getvalue()


# -- every method field's range: one line from the command line, before any backbone or data ------
NUMBERS = (int, float, "int", "float")  # annotations, evaluated or not (`from __future__ import annotations`)
METHOD_FIELDS = [
    (name, f)
    for name in method_names()
    for f in dataclasses.fields(get_method(name).config_cls)
    if f.type in NUMBERS or "rule" in f.metadata
]


def _outside(rule) -> str:
    """A value the rule refuses, as `--set` spells it."""
    if rule.choices is not None:
        return "no-such-choice"
    if rule.ge is not None:
        return str(rule.ge - 1)
    if rule.gt is not None:
        return str(rule.gt)
    return str((rule.le if rule.le is not None else rule.lt) + 1)


@pytest.fixture
def no_backbone(monkeypatch):
    """Building any backbone fails the test: what is checked here is checked before it."""

    def refuse(*args, **kwargs):
        pytest.fail("a backbone was built before the config was checked")

    monkeypatch.setattr(ClipBackbone, "from_pretrained", classmethod(refuse))


def _run_with(tmp_path, method: str, *items: str) -> tuple[int, str]:
    """`petl-bench run` on a root that does not exist (scanning it would be another error)."""
    code, _, err = call(
        [
            "run",
            "--method",
            method,
            "--dataset",
            "folder",
            "--root",
            tmp_path / "no-such-root",
            "--model",
            "tiny",
            "--out",
            tmp_path,
            "--no-progress",
            *(arg for item in items for arg in ("--set", item)),
        ]
    )
    return code, err


@pytest.mark.parametrize("name, field", METHOD_FIELDS, ids=[f"{n}.{f.name}" for n, f in METHOD_FIELDS])
def test_every_method_field_refuses_a_value_out_of_range_before_the_backbone(name, field, tmp_path, no_backbone):
    assert "rule" in field.metadata, f"{name}: method.{field.name} has no range: `x: int = rule(1, ge=0)`"
    bad = _outside(field.metadata["rule"])
    code, err = _run_with(tmp_path, name, f"method.{field.name}={bad}")
    assert code == 2
    assert re.fullmatch(rf"petl-bench: error: method\.{field.name}=\S+: must be [^\n]+\n", err), err


@pytest.mark.parametrize(
    "name, items, message",
    [
        ("mmap", ["method.b=7", "method.m=2"], "method.m=2: m must divide b (7)"),
        (
            "mmap-mlp",
            ["method.task_specific=false", "method.group_shared=false"],
            "method.task_specific=False, method.group_shared=False: at least one of",
        ),
        (
            "cocoop",
            ["method.ctx_init=", "method.n_ctx=0"],
            "method.n_ctx=0: must be >= 1 when method.ctx_init is empty",
        ),
    ],
    ids=["mmap-m-divides-b", "mmap-some-sets", "cocoop-context"],
)
def test_fields_that_must_agree_are_checked_before_the_backbone(name, items, message, tmp_path, no_backbone):
    code, err = _run_with(tmp_path, name, *items)
    assert code == 2 and err.startswith(f"petl-bench: error: {message}") and err.count("\n") == 1, err


def test_vit_b16_counts_agree_with_the_paper():
    rows = {row["method"]: row for row in count_rows("ViT-B-16", "officehome")}
    figures = paper_figures()
    for name, row in rows.items():
        if name in figures:
            assert row["agrees"] == "yes", row
    # Methods with task groups are counted for 1 to 4 groups; the paper's figures fit 2.
    grouped = {name: row["trainable"] for name, row in rows.items() if "group" in name}
    assert grouped["mmap (1 group)"] == 107_820 and grouped["mmap (4 groups)"] == 172_512
    assert [name for name, row in rows.items() if "group" in name and row["agrees"] == "yes"] == [
        "mmap (2 groups)",
        "mmap-mlp (2 groups)",
    ]
    assert rows["mmap (2 groups)"]["trainable"] == 129_384 and rows["mmap-mlp (2 groups)"]["trainable"] == 3_961_152


def test_vit_b16_counts_agree_with_the_methods_own_papers_per_parameter_set():
    rows = {row["method"]: row for row in count_rows("ViT-B-16", "officehome")}
    own = own_paper_figures()
    assert set(own) == {"promptsrc", "mma"}
    for name in own:  # the single-task count is one set per task, the -mt one a single set
        assert rows[name]["own_paper"] == rows[f"{name}-mt"]["own_paper"] == own[name].text
        assert rows[name]["own_agrees"] == rows[f"{name}-mt"]["own_agrees"] == "yes", (rows[name], rows[f"{name}-mt"])
    assert rows["mma-mt"]["trainable"] == 674_560 and rows["promptsrc-mt"]["trainable"] == 46_080
    assert rows["coop"]["own_paper"] == "" and rows["coop"]["own_agrees"] == ""


def test_an_own_paper_figure_agrees_only_at_its_printed_digits():
    assert OwnPaperFigure("46K", "").agrees(46_080) and not OwnPaperFigure("46K", "").agrees(46_600)
    assert OwnPaperFigure("0.675M", "").agrees(674_560) and not OwnPaperFigure("0.675M", "").agrees(676_000)


def test_the_agreement_rule_counts_single_task_figures_per_task():
    figures = paper_figures()
    assert agrees(4 * 8_192, figures["coop"])  # 4 x round(0.008192, 2) = 0.04, not 0.03
    assert agrees(8_192, figures["coop-mt"])
    assert agrees(149_620_737, figures["fullft-mt"]) and agrees(4 * 149_620_737, figures["fullft"])
    assert not agrees(4 * 4_740_096, figures["maple"])  # 2 MaPLe tokens: 4 x 4.7 != 19.2
    assert not agrees(1, figures["zeroshot"]) and agrees(0, figures["zeroshot"])


def test_a_task_s_template_makes_zero_shot_s_prompts_and_kgcoop_s_target(tiny_backbone):
    """The hand-written prompt is the task's template (CoOp's per-dataset one where it has one): it
    reaches zero-shot's text and KgCoOp's regulariser target, and tasks of other templates do not
    share a text pass."""
    from petl_bench.datamodules.records import Task

    tasks = [Task("pets", ("beagle", "pug"), "a photo of a {}, a type of pet."), Task("plain", ("beagle", "pug"))]
    zeroshot = get_method("zeroshot").cls(get_method("zeroshot").config_cls(), tiny_backbone, tasks)
    assert zeroshot.prompts("pets") == ["a photo of a beagle, a type of pet.", "a photo of a pug, a type of pet."]
    assert zeroshot.prompts("plain") == ["a photo of a beagle.", "a photo of a pug."]
    assert zeroshot.text_key("pets") != zeroshot.text_key("plain")
    with torch.no_grad():
        pets, plain = zeroshot.class_text_features("pets"), zeroshot.class_text_features("plain")
    assert not torch.allclose(pets, plain)
    kgcoop = get_method("kgcoop-mt").cls(get_method("kgcoop-mt").config_cls(), tiny_backbone, tasks)
    assert torch.allclose(kgcoop.handwritten_features("pets"), pets, atol=1e-6)
    assert torch.allclose(kgcoop.handwritten_features("plain"), plain, atol=1e-6)
