"""PromptSRC, MMA and CoPrompt on the tiny CLIP: their extra loss terms, their aggregation and
resume, zero-shot where they start from it, and their ViT-B/16 counts (built without weights)."""

import copy
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from petl_bench.cli import main
from petl_bench.datamodules.records import Task
from petl_bench.errors import UserError
from petl_bench.methods.promptsrc import GPA, PromptSRC, ensemble_templates, gpa_weights
from petl_bench.module import PetlModule
from petl_bench.registry import get_method

from cli_calls import call

VIT_B16_TASKS = [Task(f"task{i}", tuple(f"class {k}" for k in range(65))) for i in range(4)]


def build(name: str, backbone, tasks, **params) -> PetlModule:
    torch.manual_seed(0)
    entry = get_method(name)
    module = entry.cls(entry.config_cls(**params), backbone, tasks)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    return module


def sgd_losses(module: PetlModule, batch, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# -- PromptSRC -----------------------------------------------------------------------------------
def test_promptsrc_templates_are_their_sixty():
    templates = ensemble_templates()
    assert len(templates) == len(set(templates)) == 60 and all(t.count("{}") == 1 for t in templates)
    assert templates[0] == "a photo of a {}." and templates[-1] == "itap of the {}."


def test_promptsrc_terms_are_zero_where_the_prompts_are_none_and_the_frozen_text_is_the_task_s(
    tiny_backbone, folder_data, batch
):
    """No prompts: the image term is 0; with the task's template as the frozen text, every
    regulator is 0 and the loss is zero-shot's cross-entropy. The 60-template mean moves the text
    and logits terms off 0."""
    task, (images, labels) = next(iter(batch.items()))
    zeroshot = build("zeroshot", tiny_backbone, folder_data.tasks)
    with torch.no_grad():
        zero_shot_ce = torch.nn.functional.cross_entropy(zeroshot(images, task), labels)
        alone = build("promptsrc", tiny_backbone, folder_data.tasks, n_ctx=0, templates="task")
        terms = alone.terms(task, images, labels)
        assert terms["text"].item() == terms["image"].item() == 0 and terms["logits"].abs() < 1e-7  # rounding
        assert torch.allclose(terms["cross_entropy"], zero_shot_ce, atol=1e-6)
        diverse = build("promptsrc", tiny_backbone, folder_data.tasks, n_ctx=0).terms(task, images, labels)
        assert diverse["image"].item() == 0 and diverse["text"] > 0 and diverse["logits"] > 0
        prompted = build("promptsrc", tiny_backbone, folder_data.tasks).terms(task, images, labels)
        assert all(prompted[k] > 0 for k in ("text", "image", "logits"))


def test_promptsrc_frozen_text_is_the_normalised_mean_of_the_templates_features(tiny_backbone, folder_data):
    module = build("promptsrc-mt", tiny_backbone, folder_data.tasks)
    task = folder_data.tasks[0]
    features = []
    with torch.no_grad():
        for template in ensemble_templates():
            tokens = tiny_backbone.tokenize([template.format(c) for c in task.classnames])
            features.append(tiny_backbone.encode_text(tokens))
        expected = torch.nn.functional.normalize(torch.stack(features).mean(0), dim=-1)
    assert torch.allclose(module.frozen_text_features(task.name), expected, atol=1e-6)


def test_promptsrc_loss_falls_with_every_term_in(tiny_backbone, folder_data, batch):
    module = build("promptsrc", copy.deepcopy(tiny_backbone), folder_data.tasks)
    losses = sgd_losses(module, batch, steps=8, lr=0.001)
    assert losses[-1] < losses[0], losses


def test_gpa_weights_are_the_normalised_gaussian_over_the_epochs():
    weights = gpa_weights(5, mean=3, std=1)
    assert sum(weights) == pytest.approx(1) and weights.index(max(weights)) == 2
    assert weights[1] == pytest.approx(weights[3]) and weights[0] / weights[1] == pytest.approx(
        torch.tensor(-1.5).exp().item(), rel=1e-6
    )
    assert gpa_weights(5, mean=15, std=1)[-1] > 0.9999  # their base-to-novel peak, past 5 epochs


def _last_checkpoint(out: Path) -> dict:
    (path,) = out.rglob("last.ckpt")
    return torch.load(path, weights_only=True)


def _promptsrc_run_argv(root: Path) -> list[str]:
    return [
        "run",
        "--method",
        "promptsrc-mt",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--no-progress",
        "--set",
        "data.num_workers=0",
        "--set",
        "data.batch_size=4",
        "--set",
        "train.epochs=2",
        "--set",
        "method.gpa_mean=2",
    ]


def test_promptsrc_tests_and_checkpoints_the_gaussian_aggregate_and_a_resumed_run_gives_the_same(
    folder_root, tmp_path, monkeypatch
):
    argv = _promptsrc_run_argv(folder_root)
    epoch_end, epoch_start = PromptSRC.on_train_epoch_end, PetlModule.on_train_epoch_start
    seen: list[dict[str, torch.Tensor]] = []

    def record_epoch_end(self):  # each epoch's prompts, before the aggregation hook
        seen.append({name: p.detach().clone() for name, p in self.trainable()})
        epoch_end(self)

    monkeypatch.setattr(PromptSRC, "on_train_epoch_end", record_epoch_end)
    assert main([*argv, "--out", str(tmp_path / "alone")]) == 0
    monkeypatch.setattr(PromptSRC, "on_train_epoch_end", epoch_end)
    alone = _last_checkpoint(tmp_path / "alone")
    weights = gpa_weights(2, 2, 1)
    assert len(seen) == 2 and set(alone["state_dict"]) == set(seen[0])
    for name, value in alone["state_dict"].items():
        expected = sum(w * epoch[name] for w, epoch in zip(weights, seen, strict=True))
        assert torch.allclose(value, expected, atol=1e-7) and not torch.allclose(value, seen[-1][name])
        assert torch.equal(alone[GPA][name], value)

    def sigterm_in_second_epoch(self):
        if self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        epoch_start(self)

    monkeypatch.setattr(PetlModule, "on_train_epoch_start", sigterm_in_second_epoch)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 143
    killed = _last_checkpoint(tmp_path / "resumed")
    assert killed["resume"]["epochs"] == 1 and set(killed[GPA]) == set(seen[0])
    monkeypatch.setattr(PetlModule, "on_train_epoch_start", epoch_start)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 0
    resumed = _last_checkpoint(tmp_path / "resumed")
    for name, value in alone["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def test_promptsrc_refuses_an_iteration_based_run_in_one_line(folder_root, tmp_path):
    """GPA weighs epochs: a run that steps cannot say which epoch is its last."""
    code, _, err = call(
        [
            *_promptsrc_run_argv(folder_root),
            "--set",
            "train.iterations=2",
            "--set",
            "optim.schedule=linear-cosine",
            "--out",
            tmp_path,
        ]
    )
    assert code == 2 and "give train.epochs, not train.iterations" in err and len(err.strip().splitlines()) == 1


def test_promptsrc_vit_b16_count(vit_b16):
    assert build("promptsrc-mt", vit_b16, VIT_B16_TASKS).num_trainable == 9 * 4 * (512 + 768) == 46_080
    assert build("promptsrc", vit_b16, VIT_B16_TASKS).num_trainable == 4 * 46_080


# -- MMA -------------------------------------------------------------------------------------------
def test_mma_at_scale_0_is_zero_shot_and_its_random_init_is_not(tiny_backbone, folder_data, batch):
    task, (images, _) = next(iter(batch.items()))
    with torch.no_grad():
        zero_shot = build("zeroshot", tiny_backbone, folder_data.tasks)(images, task)
        off = build("mma", tiny_backbone, folder_data.tasks, scale=0.0)
        assert torch.allclose(off(images, task), zero_shot, atol=1e-5)
        untrained = build("mma", tiny_backbone, folder_data.tasks, scale=1.0)
        assert not torch.allclose(untrained(images, task), zero_shot, atol=1e-3)  # Kaiming init, as theirs
    off.release()
    untrained.release()


def test_mma_shared_projection_learns_from_both_towers(tiny_backbone, folder_data, batch):
    task, (images, _) = next(iter(batch.items()))
    module = build("mma-mt", tiny_backbone, folder_data.tasks)
    module.apply_trainable()
    shared = module.adapters[0]["shared"]
    for encode in (
        lambda: module.backbone.encode_image(images, module, task),
        lambda: module.backbone.encode_text(module.tokens(task), module, task),
    ):
        module.zero_grad()
        encode().square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.parameters())
    module.release()


def test_mma_adapters_learn_as_at_scale_1_while_adding_scale_times_their_output(
    tiny_backbone, folder_data, batch, monkeypatch
):
    """Their gradient scaling: the parameters' gradient is 1 / scale times the plain product's."""
    import petl_bench.methods.mma as mma

    task, (images, _) = next(iter(batch.items()))

    def grads() -> dict[str, torch.Tensor]:
        module = build("mma", tiny_backbone, folder_data.tasks, scale=0.01)
        module.apply_trainable()
        module.backbone.encode_image(images, module, task).square().sum().backward()
        module.release()
        return {n: p.grad for n, p in module.trainable() if p.grad is not None}

    ours = grads()
    monkeypatch.setattr(mma, "scaled_gradient", lambda x, factor: x)
    plain = grads()
    assert set(ours) == set(plain) and any("vision" in n for n in ours)
    for name in ours:
        assert torch.allclose(ours[name], plain[name] / 0.01, rtol=1e-3, atol=1e-6), name


def test_mma_vit_b16_count(vit_b16):
    per_block = (512 * 32 + 32 + 32 * 512 + 512) + (768 * 32 + 32 + 32 * 768 + 768) + (32 * 32 + 32)
    mt = build("mma-mt", vit_b16, VIT_B16_TASKS)
    assert mt.num_trainable == 8 * per_block == 674_560
    assert [s.layer for s in mt._attachments[0].sites if s.tower == "vision"] == list(range(4, 12))
    mt.release()
    st = build("mma", vit_b16, VIT_B16_TASKS)
    assert st.num_trainable == 4 * 674_560
    st.release()


# -- CoPrompt --------------------------------------------------------------------------------------
def test_coprompt_consistency_is_zero_where_it_is_zero_shot_and_not_once_it_adapts(tiny_backbone, folder_data, batch):
    """No prompts, no adapter weight, the template as the description: zero-shot's cross-entropy
    and both consistency terms 0. Adapters or prompts in play move them off 0."""
    task, (images, labels) = next(iter(batch.items()))
    with torch.no_grad():
        zero_shot_ce = torch.nn.functional.cross_entropy(
            build("zeroshot", tiny_backbone, folder_data.tasks)(images, task), labels
        )
        frozen = build("coprompt", tiny_backbone, folder_data.tasks, n_ctx=0, image_ratio=0.0, text_ratio=0.0)
        terms = frozen.terms(task, images, labels)
        assert terms["text"].abs() < 1e-6 and terms["image"].abs() < 1e-6
        assert torch.allclose(terms["cross_entropy"], zero_shot_ce, atol=1e-6)
        adapted = build("coprompt", tiny_backbone, folder_data.tasks, n_ctx=0).terms(task, images, labels)
        assert adapted["text"] > 1e-4 and adapted["image"] > 1e-4
        prompted = build("coprompt", tiny_backbone, folder_data.tasks).terms(task, images, labels)
        assert prompted["text"] > 1e-4 and prompted["image"] > 1e-4


def test_coprompt_loss_falls(tiny_backbone, folder_data, batch):
    module = build("coprompt", copy.deepcopy(tiny_backbone), folder_data.tasks)
    losses = sgd_losses(module, batch, steps=8, lr=0.001)
    assert losses[-1] < losses[0], losses


def test_coprompt_descriptions_file_gives_the_text_target(tiny_backbone, folder_data, tmp_path):
    task = folder_data.tasks[0]
    sentences = {
        name.replace("_", " "): [f"a {name} has {k} parts." for k in range(1 + i)]
        for i, name in enumerate(task.classnames)
    }
    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps(sentences))
    module = build("coprompt-mt", tiny_backbone, folder_data.tasks, descriptions=str(path))
    features = module.described_features(task.name)
    assert [len(f) for f in features] == [1 + i for i in range(len(task.classnames))]
    with torch.no_grad():
        expected = tiny_backbone.encode_text(tiny_backbone.tokenize(sentences[task.classnames[-1].replace("_", " ")]))
    assert torch.allclose(features[-1], torch.nn.functional.normalize(expected, dim=-1), atol=1e-6)
    without = build("coprompt-mt", tiny_backbone, folder_data.tasks)
    assert without.class_descriptions(task.name) == [[p] for p in without.template_prompts(task.name)]


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a readable JSON file"),
        ('{"dog": "one sentence"}', "must map each class name to a non-empty list of sentences"),
        ('{"no such class": ["a sentence."]}', "no sentences for class"),
    ],
)
def test_coprompt_bad_descriptions_are_one_line(content, message, tiny_backbone, folder_data, tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as caught:
        build("coprompt-mt", tiny_backbone, folder_data.tasks, descriptions=str(path)).described_features(
            folder_data.tasks[0].name
        )
    assert "\n" not in str(caught.value)


def test_coprompt_vit_b16_count(vit_b16):
    maple = 9 * (2 * 512 + 512 * 768 + 768)
    adapters = 2 * (512 * 128 + 128 * 512)
    assert build("coprompt-mt", vit_b16, VIT_B16_TASKS).num_trainable == maple + adapters == 3_817_216
    assert build("coprompt", vit_b16, VIT_B16_TASKS).num_trainable == 4 * 3_817_216
