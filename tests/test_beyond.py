"""The methods beyond the paper (LoRA, CoCoOp, KgCoOp, IVLP, Tip-Adapter-F, linear probe,
AdaptFormer; TaskRes, CLAP and LP++ here for isolation and round trips, tests/test_methods_probes.py
for the rest) and the backbone extension LoRA and AdaptFormer use: exact ViT-B/16 counts, what each
equals at init, per-task isolation (ST) or sharing (MT), checkpoint round trips.
tests/test_methods.py adds the registry-wide checks, tests/test_learning.py their learning on the
synthetic data with the pre-trained tiny CLIP."""

import copy
import io
import json
import re
from pathlib import Path

import pytest
import torch

from petl_bench.backbone import IDENTITY, Hooks, Site
from petl_bench.config import root_folder
from petl_bench.datamodules import Task
from petl_bench.methods.cocoop import CoCoOp, CoCoOpConfig, CoCoOpMT
from petl_bench.methods.linear_probe import choose_c, fit_logistic, held_out_split
from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig
from petl_bench.params import count_rows
from petl_bench.prepared import shot_features
from petl_bench.registry import get_method

from cli_calls import call_ok

ST = ["lora", "cocoop", "kgcoop", "ivlp", "tip-adapter-f", "linear-probe", "adaptformer", "taskres", "clap", "lpp"]
MT = [
    *("lora-mt", "cocoop-mt", "kgcoop-mt", "ivlp-mt", "tip-adapter-f-mt", "adaptformer-mt"),
    *("taskres-mt", "clap-mt", "lpp-mt"),
]
CHEAP = {
    "tip-adapter-f": {"augment_epochs": 2},
    "tip-adapter-f-mt": {"augment_epochs": 2},
    "linear-probe": {"c": 1.0},
    "lpp": {"epochs": 20},
    "lpp-mt": {"epochs": 20},
}  # the fit and the cache as the runner makes them, in fewer passes


def zero_shot_logits(backbone, tasks, batch):
    zeroshot = ZeroShot(ZeroShotConfig(), backbone, tasks).eval()
    with torch.no_grad():
        return {task: zeroshot(images, task) for task, (images, _) in batch.items()}


def logits(module, batch):
    module.eval()
    module.on_test_epoch_start()  # as Lightning's test loop: class text features cached afresh
    with torch.no_grad():
        return {task: module(images, task) for task, (images, _) in batch.items()}


# -- counts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("lora", {}, 4 * 184_320),
        ("lora-mt", {}, 184_320),  # 12w per block: 12 x 12 x (512 + 768)
        ("cocoop", {}, 4 * 35_360),
        ("cocoop-mt", {}, 35_360),  # 4 x 512 + (512*32 + 32 + 32*512 + 512)
        ("kgcoop", {}, 4 * 2_048),
        ("kgcoop-mt", {}, 2_048),  # 4 tokens x 512
        ("ivlp", {}, 4 * 61_440),
        ("ivlp-mt", {}, 61_440),  # 12 x 4 x (512 + 768)
        ("tip-adapter-f", {"shots": 6}, 798_720),
        ("tip-adapter-f-mt", {"shots": 6}, 798_720),  # 4 x 65 x 6 x 512
        ("linear-probe", {}, 4 * 33_345),  # 65 x 512 + 65 per task
        ("adaptformer", {}, 4 * 1_189_632),
        ("adaptformer-mt", {}, 1_189_632),  # 12 x (2 x 768 x 64 + 64 + 768)
    ],
)
def test_vit_b16_counts(vit_b16, name, params, expected):
    tasks = [Task(f"task{i}", tuple(f"class {c}" for c in range(65))) for i in range(4)]
    entry = get_method(name)
    module = entry.cls(entry.config_cls(**params), vit_b16, tasks)
    try:
        assert module.num_trainable == expected
    finally:
        module.release()  # the ViT-B/16 fixture is shared


def test_params_lists_tip_adapter_per_paper_split():
    rows = {row["method"]: row["trainable"] for row in count_rows("ViT-B-16", "officehome")}
    assert rows["tip-adapter-f (10pct, 6 shots)"] == 798_720
    assert rows["tip-adapter-f-mt (20pct, 12 shots)"] == 1_597_440
    assert rows["lora"] == 737_280 and rows["linear-probe"] == 133_380


# -- what each method equals at init ---------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params",
    [
        ("lora", {}),
        ("lora-mt", {}),
        ("adaptformer", {}),
        ("adaptformer-mt", {}),
        ("tip-adapter-f", {"alpha": 0.0, "shots": 2}),
        ("tip-adapter-f-mt", {"alpha": 0.0, "shots": 2}),
    ],
)
def test_untrained_is_exactly_zero_shot(name, params, tiny_backbone, folder_data, batch):
    """LoRA's B = 0 and AdaptFormer's zero up-projection change nothing; Tip-Adapter-F with
    alpha = 0 adds nothing, whatever its keys (random ones here)."""
    entry = get_method(name)
    module = entry.cls(entry.config_cls(**params), tiny_backbone, folder_data.tasks)
    try:
        for p in (p for n, p in module.named_parameters() if n.startswith("cache_keys")):
            torch.nn.init.normal_(p)
        ours, reference = logits(module, batch), zero_shot_logits(tiny_backbone, folder_data.tasks, batch)
        assert all(torch.equal(ours[task], reference[task]) for task in batch)
        if name.startswith(("lora", "adaptformer")):  # ...and the sites are live: an update changes the logits
            with torch.no_grad():
                for p in (p for n, p in module.named_parameters() if n.startswith(("lora_b", "adapters"))):
                    p.normal_()
            changed = logits(module, batch)
            assert all(not torch.allclose(changed[task], reference[task], atol=1e-4) for task in batch)
    finally:
        module.release()


@pytest.mark.parametrize("name", ["kgcoop", "kgcoop-mt"])
def test_kgcoop_starts_as_zero_shot_with_no_regulariser(name, tiny_backbone, folder_data, batch):
    entry = get_method(name)
    module = entry.cls(entry.config_cls(), tiny_backbone, folder_data.tasks)
    reference = zero_shot_logits(tiny_backbone, folder_data.tasks, batch)
    assert all(torch.allclose(logits(module, batch)[task], reference[task], atol=1e-5) for task in batch)
    module.train()
    assert all(abs(module.regularizer(task).item()) < 1e-6 for task in batch)
    with torch.no_grad():
        module.ctx.add_(0.05 * torch.randn_like(module.ctx))
    assert all(module.regularizer(task).item() > 1e-4 for task in batch)


def test_cocoop_with_a_zero_shift_is_zero_shot_and_per_image_texts_are_batched(tiny_backbone, folder_data, batch):
    module = CoCoOpMT(CoCoOpConfig(), tiny_backbone, folder_data.tasks)
    task, (images, _) = next(iter(batch.items()))
    image = tiny_backbone.encode_image(images).detach()
    with torch.no_grad():
        batched = module.text_features(image, task)
        one_by_one = torch.cat([module.text_features(image[i : i + 1], task) for i in range(len(image))])
    assert batched.shape == (len(images), 4, 64)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)  # the shift differs per image
    torch.nn.init.zeros_(module.meta_net[0][2].weight)
    torch.nn.init.zeros_(module.meta_net[0][2].bias)
    reference = zero_shot_logits(tiny_backbone, folder_data.tasks, batch)
    assert all(torch.allclose(logits(module, batch)[t], reference[t], atol=1e-5) for t in batch)


def test_cocoop_checkpointed_text_passes_give_the_same_loss_and_gradients(tiny_backbone, folder_data, batch):
    task, (images, labels) = next(iter(batch.items()))
    grads = []
    for chunk in (0, 1):  # one pass, no checkpointing; one image per recomputed pass
        torch.manual_seed(0)
        module = CoCoOp(CoCoOpConfig(text_chunk=chunk), tiny_backbone, folder_data.tasks)
        loss = torch.nn.functional.cross_entropy(module(images, task), labels)
        loss.backward()
        grads.append((loss.item(), module.ctx.grad.clone(), module.meta_net[0][0].weight.grad.clone()))
    (loss_a, *grad_a), (loss_b, *grad_b) = grads
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grad_a, grad_b, strict=True))


def test_ivlp_has_maples_text_side_and_free_visual_prompts(tiny_backbone, folder_data, batch):
    maple, ivlp = (get_method(name) for name in ("maple-mt", "ivlp-mt"))
    torch.manual_seed(0)
    coupled = maple.cls(maple.config_cls(), tiny_backbone, folder_data.tasks)
    torch.manual_seed(0)
    free = ivlp.cls(ivlp.config_cls(), tiny_backbone, folder_data.tasks)
    assert not hasattr(free, "coupling") and free.visual_ctx.shape == (1, 3, 4, 64)
    task, (images, _) = next(iter(batch.items()))
    with torch.no_grad():
        assert torch.equal(free.class_text_features(task), coupled.class_text_features(task))
    # The image side does not depend on the text prompts: no coupling.
    free.apply_trainable()
    tiny_backbone.encode_image(images, free, task).sum().backward()
    assert free.text_ctx.grad is None and free.visual_ctx.grad.abs().sum() > 0


# -- Tip-Adapter-F's cache and the linear probe's fit, from `prepare` ------------------------------
def test_tip_adapter_cache_holds_the_shots_features_class_by_class(tiny_backbone, folder_data, build_method):
    data = copy.copy(folder_data)
    data.train_transform = folder_data.test_transform  # deterministic passes: keys = the shots' features
    st, mt = (
        build_method(name, tiny_backbone, data, augment_epochs=2) for name in ("tip-adapter-f", "tip-adapter-f-mt")
    )
    features = shot_features(tiny_backbone, data, data.test_transform)
    assert st.cfg.shots == 2 and [keys.shape for keys in st.cache_keys] == [(4, 2, 64)] * 4
    assert [keys.shape for keys in mt.cache_keys] == [(4, 8, 64)]
    for t, task in enumerate(data.tasks):
        x, y = features[task.name]
        for label in range(4):
            expected = torch.nn.functional.normalize(x[y == label], dim=-1)
            assert torch.allclose(st.cache_keys[t][label], expected, atol=1e-5)
            assert torch.allclose(mt.cache_keys[0][label, 2 * t : 2 * t + 2], expected, atol=1e-5)


def test_logistic_fit_is_the_regularised_optimum_and_c_is_searched_on_held_out_shots():
    torch.manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 8) + 2.0 * torch.nn.functional.one_hot(y, 8).float()
    c = 0.5
    weight, bias = fit_logistic(x, y, 3, c)
    # A stationary point of scikit-learn's objective C * sum CE + |W|^2 / 2 (bias unpenalised),
    # divided by C n as the fit scales it (its tolerance, 1e-4, is on that gradient).
    w, b = weight.double().requires_grad_(), bias.double().requires_grad_()
    objective = torch.nn.functional.cross_entropy(x.double() @ w.t() + b, y) + (w**2).sum() / (2 * c * len(y))
    objective.backward()
    assert w.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3
    assert w.norm() > 0.1  # not the zero start
    fit, held = held_out_split(y, seed=0)
    assert len(held) == 3 * 6 and not set(fit.tolist()) & set(held.tolist())
    c, accuracy = choose_c(x, y, 3, seed=0)
    assert 1e-6 <= c <= 1e6 and accuracy > 80
    assert held_out_split(torch.tensor([0, 1, 1]), seed=0) is None  # one shot of class 0: nothing to hold out
    assert choose_c(x[:2], torch.tensor([0, 1]), 2, seed=0) == (1.0, None)


def test_c_is_searched_on_the_validation_shots_where_the_split_has_them():
    """CoOp's protocol: every training shot fits, the validation shots score. Validation labels that
    are each class's shifted by one make the best C the one that fits worst: the search follows them."""
    torch.manual_seed(0)
    y = torch.arange(30) % 3
    x = torch.randn(30, 8) + 2.0 * torch.nn.functional.one_hot(y, 8).float()
    xv = torch.randn(12, 8) + 2.0 * torch.nn.functional.one_hot(torch.arange(12) % 3, 8).float()
    right, wrong = torch.arange(12) % 3, (torch.arange(12) + 1) % 3
    c_right, acc_right = choose_c(x, y, 3, seed=0, val=(xv, right))
    c_wrong, acc_wrong = choose_c(x, y, 3, seed=0, val=(xv, wrong))
    for c, accuracy, labels in ((c_right, acc_right, right), (c_wrong, acc_wrong, wrong)):
        weight, bias = fit_logistic(x, y, 3, c)  # fitted on all 30 shots, scored on the 12
        assert accuracy == 100.0 * ((xv @ weight.t() + bias).argmax(-1) == labels).float().mean().item()
    assert acc_right > 80 > acc_wrong and c_wrong < c_right
    assert choose_c(x[:3], y[:3], 3, seed=0, val=(xv, right))[1] is not None  # one shot each: val still scores


def test_linear_probe_run_fits_without_sgd_and_records_its_choice(folder_root, tmp_path):
    stdout = call_ok(
        [
            "run",
            "--method",
            "linear-probe",
            "--dataset",
            "folder",
            "--root",
            folder_root,
            "--split",
            "2shot",
            "--model",
            "tiny",
            "--out",
            tmp_path,
            "--no-progress",
            "--set",
            "data.num_workers=0",
        ]
    )
    record = json.loads(Path(re.search(r"^record: (.+)$", stdout, re.M).group(1)).read_text())
    fitted = record["prepared"]["linear_probe"]
    assert set(fitted["c"]) == set(record["tasks"]) and all(1e-6 <= c <= 1e6 for c in fitted["c"].values())
    assert record["trainable_params"] == 4 * (4 * 64 + 4)
    assert record["resolved_params"]["state"].endswith("linear-probe.pt")
    work_dir = tmp_path / "runs" / "folder" / root_folder(folder_root) / "2shot" / "linear-probe" / "seed0"
    assert not (work_dir / "checkpoints").exists()  # no SGD, no epochs
    assert record["accuracy"]["average"] > 50  # 4 classes; zero-shot of the random tiny CLIP is near 25


# -- ST isolation, MT sharing, checkpoint round trips ----------------------------------------------
@pytest.mark.parametrize("name", ST + MT)
def test_a_step_on_one_task_moves_only_what_it_should_and_checkpoints_round_trip(
    name, tiny_backbone, folder_data, batch, build_method
):
    """ST: a step on one task leaves every other task's logits bit for bit; MT: it moves them all.
    The trainable state, saved as a checkpoint holds it and loaded into a fresh module built from
    the same resolved config, gives the same logits."""
    module = build_method(name, tiny_backbone, folder_data, **CHEAP.get(name, {}))
    try:
        first, others = module.task_names[0], module.task_names[1:]
        before = logits(module, batch)
        module.train()
        optimizer = torch.optim.SGD(module.apply_trainable(), lr=0.1)
        module.training_step({first: batch[first]}, 0).backward()
        optimizer.step()
        after = logits(module, batch)
        assert not torch.equal(after[first], before[first])
        if module.shared:
            assert all(not torch.equal(after[task], before[task]) for task in others)
        else:
            assert all(torch.equal(after[task], before[task]) for task in others)

        saved = io.BytesIO()
        torch.save(module.trainable_state_dict(), saved)
        saved.seek(0)
        fresh = type(module)(module.cfg, tiny_backbone, folder_data.tasks)
        fresh.load_trainable_state(torch.load(saved, weights_only=True))
        restored = logits(fresh, batch)
        fresh.release()
        assert all(torch.allclose(restored[task], after[task], atol=1e-6) for task in batch)
    finally:
        module.release()


# -- the backbone extension ------------------------------------------------------------------------
class Scale(Hooks):
    """Scales one attached weight or module output, as a method would change it."""

    def __init__(self, factor):
        self.factor = factor

    def block_weight(self, site, weight, task):
        return weight * self.factor

    def block_output(self, site, inputs, output, task):
        return output * self.factor


@pytest.mark.parametrize("path", ["attn.in_proj_weight", "mlp"], ids=["weight", "module"])
def test_attached_sites_act_only_for_their_owner_and_detach_cleanly(tiny_backbone, path):
    backbone = copy.deepcopy(tiny_backbone)
    keys, types = list(backbone.state_dict()), [type(m) for m in backbone.modules()]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = backbone.encode_image(images)
        half, double = Scale(0.5), Scale(2.0)
        first = backbone.attach(half, [Site("vision", 1, path)])
        second = backbone.attach(double, [Site("vision", 1, path)])
        by_half, by_double = backbone.encode_image(images, half), backbone.encode_image(images, double)
        assert torch.equal(backbone.encode_image(images), plain)  # identity hooks: untouched
        assert torch.equal(backbone.encode_image(images, Scale(3.0)), plain)  # not an owner: untouched
        assert torch.equal(backbone.model.encode_image(images), plain)  # open_clip's own pass too
        assert not torch.allclose(by_half, plain, atol=1e-4) and not torch.allclose(by_double, by_half, atol=1e-4)
        first.remove()
        assert torch.equal(backbone.encode_image(images, double), by_double)  # the other owner still acts
        assert torch.equal(backbone.encode_image(images, half), plain)
        second.remove()
        assert torch.equal(backbone.encode_image(images, double), plain)
    assert list(backbone.state_dict()) == keys and [type(m) for m in backbone.modules()] == types


def test_a_site_that_is_not_in_the_block_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match="no module or parameter"):
        copy.deepcopy(tiny_backbone).attach(IDENTITY, [Site("text", 0, "attn.no_such_weight")])
