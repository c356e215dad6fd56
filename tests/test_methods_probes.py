"""TaskRes, CLAP and LP++: classifiers on the frozen image features, built from the zero-shot text
classifier. Exact ViT-B/16 counts, what each equals at init, CLAP's penalties and outer step,
LP++'s closed-form step sizes and initialisation. tests/test_methods.py adds the registry-wide checks."""

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from petl_bench.config import root_folder
from petl_bench.datamodules import Task
from petl_bench.errors import UserError
from petl_bench.methods.clap import class_mean_of_true_probability
from petl_bench.methods.lpp import ALPHA_INIT, fit_lpp
from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig
from petl_bench.prepared import shot_features
from petl_bench.registry import get_method

from cli_calls import call_ok


def zero_shot_logits(backbone, tasks, batch):
    zeroshot = ZeroShot(ZeroShotConfig(), backbone, tasks).eval()
    with torch.no_grad():
        return {task: zeroshot(images, task) for task, (images, _) in batch.items()}


def logits(module, batch):
    module.eval()
    module.on_test_epoch_start()
    with torch.no_grad():
        return {task: module(images, task) for task, (images, _) in batch.items()}


def deterministic(data):
    """The data module with the test transform for training too: `prepare`'s passes repeat exactly."""
    data = copy.copy(data)
    data.train_transform = data.test_transform
    return data


@pytest.mark.parametrize(
    "name, expected",
    [
        ("taskres", 4 * 33_280),
        ("taskres-mt", 33_280),  # 65 x 512
        ("clap", 4 * 33_280),
        ("clap-mt", 33_280),  # 65 x 512
        ("lpp", 4 * 33_410),
        ("lpp-mt", 33_410),  # 65 x 512 + 65 + 65
    ],
)
def test_vit_b16_counts(vit_b16, name, expected):
    tasks = [Task(f"task{i}", tuple(f"class {c}" for c in range(65))) for i in range(4)]
    entry = get_method(name)
    module = entry.cls(entry.config_cls(), vit_b16, tasks)
    assert module.num_trainable == expected


def test_one_residual_for_tasks_of_other_classes_is_refused_one_per_task_fits_each(tiny_backbone):
    tasks = [Task("a", ("cat", "dog")), Task("b", ("cat", "dog", "pug"))]
    with pytest.raises(UserError, match=r"^taskres-mt: its one residual, shared by every task, holds a row per class"):
        get_method("taskres-mt").cls(get_method("taskres-mt").config_cls(), tiny_backbone, tasks)
    module = get_method("taskres").cls(get_method("taskres").config_cls(), tiny_backbone, tasks)
    assert [rows.shape for rows in module.residual] == [(2, 64), (3, 64)] and module.num_trainable == 5 * 64


@pytest.mark.parametrize("name", ["taskres", "taskres-mt"])
def test_taskres_starts_as_zero_shot_and_its_residual_moves_the_classifier(name, tiny_backbone, folder_data, batch):
    entry = get_method(name)
    reference = zero_shot_logits(tiny_backbone, folder_data.tasks, batch)
    module = entry.cls(entry.config_cls(), tiny_backbone, folder_data.tasks)
    ours = logits(module, batch)
    assert all(torch.allclose(ours[task], reference[task], atol=1e-5) for task in batch)
    with torch.no_grad():
        for rows in module.residual:
            rows.normal_()
    moved = logits(module, batch)
    assert all(not torch.allclose(moved[task], reference[task], atol=1e-3) for task in batch)
    unscaled = entry.cls(entry.config_cls(scale=0.0), tiny_backbone, folder_data.tasks)
    unscaled.load_trainable_state(module.trainable_state_dict())
    ours = logits(unscaled, batch)
    assert all(torch.allclose(ours[task], reference[task], atol=1e-5) for task in batch)


@pytest.mark.parametrize("name", ["clap", "clap-mt"])
def test_clap_starts_as_zero_shot_with_its_zero_shot_scores_as_penalties(
    name, tiny_backbone, folder_data, batch, build_method
):
    data = deterministic(folder_data)
    module = build_method(name, tiny_backbone, data, augment_epochs=2)
    reference = zero_shot_logits(tiny_backbone, data.tasks, batch)
    ours = logits(module, batch)
    assert all(torch.allclose(ours[task], reference[task], atol=1e-5) for task in batch)
    assert all(module.regularizer(task).item() == 0 for task in batch)

    # The multipliers: each class's zero-shot probability over its own shots, through zero-shot's forward.
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, data.tasks).eval()
    features = shot_features(tiny_backbone, data, data.test_transform)
    with torch.no_grad():
        scored = {task: (zeroshot.classify(x, task).softmax(-1), y) for task, (x, y) in features.items()}
    groups = [list(scored)] if module.shared else [[task] for task in scored]
    for s, group in enumerate(groups):
        probabilities = torch.cat([scored[task][0] for task in group])
        labels = torch.cat([scored[task][1] for task in group])
        expected = torch.stack([probabilities[labels == c, c].mean() for c in range(4)])
        assert torch.allclose(module.multipliers[s], expected, atol=1e-5)

    # The penalty: lambda_c |w_c - t_c|^2, averaged over the classes.
    task = module.task_names[-1]
    s = module.set_index(task)
    with torch.no_grad():
        module.prototypes[s][1] += 0.5
    expected = module.multipliers[s][1] * 0.25 * module.prototypes[s].shape[-1] / 4
    assert torch.allclose(module.regularizer(task), expected)


def test_class_mean_of_true_probability():
    probabilities = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1])
    assert torch.allclose(class_mean_of_true_probability(probabilities, labels), torch.tensor([0.7, 0.8]))


@pytest.mark.parametrize("lagrangian", [False, True])
def test_clap_outer_step_updates_the_multipliers_only_when_asked(lagrangian, tiny_backbone, folder_data, build_method):
    module = build_method("clap-mt", tiny_backbone, deterministic(folder_data), augment_epochs=1, lagrangian=lagrangian)
    start = module.multipliers[0].clone()
    with torch.no_grad():
        module.prototypes[0].add_(0.1 * torch.randn_like(module.prototypes[0]))
    distances = (module.prototypes[0] - module.anchors[0]).pow(2).sum(-1)
    module.on_train_epoch_end()  # rho starts at 0: lambda stays, rho becomes h
    assert torch.equal(module.multipliers[0], start)
    module.on_train_epoch_end()  # lambda + rho h
    if lagrangian:
        assert torch.allclose(module.penalty_weights[0], distances)
        assert torch.allclose(module.multipliers[0], start + distances**2)
    else:
        assert torch.equal(module.multipliers[0], start) and not module.penalty_weights[0].any()


def separable_problem(n_classes=3, per_class=6, dim=8):
    torch.manual_seed(0)
    labels = torch.arange(n_classes * per_class) % n_classes
    features = F.normalize(torch.randn(len(labels), dim) + 1.5 * F.one_hot(labels, dim).float(), dim=-1)
    text = F.normalize(torch.randn(n_classes, dim) + F.one_hot(torch.arange(n_classes), dim).float(), dim=-1)
    return features, labels, features @ text.t()


def test_lpp_starts_at_the_class_sums_and_steps_with_the_closed_form_rates():
    features, labels, text_logits = separable_problem()
    n = len(labels)
    centroids = torch.stack([features[labels == c].sum(0) for c in range(3)]).double()
    alpha = ALPHA_INIT * torch.stack([text_logits[labels == c, c].mean() for c in range(3)]).mean().double()
    # One epoch, before alpha's first step: W = centroids - lr_w * dL/dW, lr_w = 4 n / lambda_max(F^T F).
    weight, bias, blend = fit_lpp(features, labels, text_logits, epochs=1, alpha_every=10)
    w = centroids.clone().requires_grad_()
    x = features.double()
    F.cross_entropy(x @ w.t() + alpha * text_logits.double(), labels).backward()
    lr_w = 4 * n / torch.linalg.eigvalsh(x.t() @ x).max()
    assert torch.allclose(weight.double(), centroids - lr_w * w.grad, atol=1e-5)
    assert torch.allclose(blend.double(), alpha.expand(3), atol=1e-5) and bias.abs().max() > 0

    # Alpha steps every `alpha_every` epochs by lr_alpha = n / (4 max_c sum_i (f_i . t_c)^2) times its summed gradient.
    _, _, blend_9 = fit_lpp(features, labels, text_logits, epochs=9, alpha_every=10)
    _, _, blend_10 = fit_lpp(features, labels, text_logits, epochs=10, alpha_every=10)
    assert torch.allclose(blend_9.double(), alpha.expand(3), atol=1e-5) and not torch.allclose(blend_10, blend_9)


def test_lpp_fit_lowers_the_loss_and_separates_the_shots():
    features, labels, text_logits = separable_problem()
    weight, bias, blend = fit_lpp(features, labels, text_logits, epochs=300, alpha_every=10)
    fitted = features @ weight.t() + bias + blend * text_logits
    centroids = torch.stack([features[labels == c].sum(0) for c in range(3)])
    alpha = ALPHA_INIT * torch.stack([text_logits[labels == c, c].mean() for c in range(3)]).mean()
    start = features @ centroids.t() + alpha * text_logits
    assert F.cross_entropy(fitted, labels) < F.cross_entropy(start, labels)
    assert torch.equal(fitted.argmax(-1), labels)


@pytest.mark.parametrize("name", ["lpp", "lpp-mt"])
def test_lpp_prepared_fits_each_set_on_its_shots(name, tiny_backbone, folder_data, build_method):
    data = deterministic(folder_data)
    module = build_method(name, tiny_backbone, data, epochs=20)
    features = shot_features(tiny_backbone, data, data.test_transform)
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, data.tasks).eval()
    groups = [list(features)] if module.shared else [[task] for task in features]
    assert len(module.probe_weight) == len(groups)
    module.eval()
    for s, group in enumerate(groups):
        x = torch.cat([F.normalize(features[task][0], dim=-1) for task in group])
        y = torch.cat([features[task][1] for task in group])
        scale = tiny_backbone.logit_scale.exp().clamp(max=100)
        with torch.no_grad():  # zero-shot's cosines: its logits over its scale
            cosines = torch.cat([zeroshot.classify(features[task][0], task) for task in group]) / scale
            expected = fit_lpp(x, y, cosines, epochs=20, alpha_every=10)
            got = torch.cat([module.classify(features[task][0], task) for task in group])
        for ours, theirs in zip((module.probe_weight[s], module.probe_bias[s], module.blend[s]), expected, strict=True):
            assert torch.allclose(ours, theirs, atol=1e-4)
        assert torch.allclose(got, x @ expected[0].t() + expected[1] + expected[2] * cosines, atol=1e-4)


def test_lpp_run_fits_without_sgd_and_records_its_blend(folder_root, tmp_path):
    stdout = call_ok(
        [
            *("run", "--method", "lpp", "--dataset", "folder", "--root", folder_root, "--split", "2shot"),
            *("--model", "tiny", "--out", tmp_path, "--no-progress", "--set", "data.num_workers=0"),
        ]
    )
    record = json.loads(Path(re.search(r"^record: (.+)$", stdout, re.M).group(1)).read_text())
    assert set(record["prepared"]["lpp"]["mean_alpha"]) == set(record["tasks"])
    assert record["trainable_params"] == 4 * (4 * 64 + 2 * 4)
    assert record["resolved_params"]["state"].endswith("lpp.pt")
    work_dir = tmp_path / "runs" / "folder" / root_folder(folder_root) / "2shot" / "lpp" / "seed0"
    assert not (work_dir / "checkpoints").exists()  # no SGD, no epochs
