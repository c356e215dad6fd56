"""CLIP-Adapter, BitFit and full fine-tuning: exact parameter counts, what trains, where tasks go."""

import copy

import pytest
import torch

from petl_bench.datamodules.records import Task
from petl_bench.methods.bitfit import BitFit, BitFitConfig
from petl_bench.methods.clip_adapter import CLIPAdapter, CLIPAdapterConfig
from petl_bench.methods.fullft import FullFT, FullFTConfig, FullFTMT
from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig
from petl_bench.registry import get_method

METHODS = ["clip-adapter", "bitfit", "fullft-mt", "fullft"]

# Sizes of the two models, as their open_clip configs give them.
TINY = dict(
    vision_width=64,
    vision_layers=3,
    patch=8,
    image_size=32,
    text_width=48,
    text_layers=3,
    context=32,
    vocab=49408,
    embed=64,
)
VIT_B_16 = dict(
    vision_width=768,
    vision_layers=12,
    patch=16,
    image_size=224,
    text_width=512,
    text_layers=12,
    context=77,
    vocab=49408,
    embed=512,
)


def block_params(w: int) -> int:
    """A residual block of width w: ln_1 2w, in_proj 3w^2 + 3w, out_proj w^2 + w, ln_2 2w,
    MLP w*4w + 4w and 4w*w + w."""
    return 12 * w * w + 13 * w


def clip_params(vision_width, vision_layers, patch, image_size, text_width, text_layers, context, vocab, embed) -> int:
    w, t = vision_width, text_width
    vision = (
        3 * patch * patch * w
        + w
        + ((image_size // patch) ** 2 + 1) * w  # conv1, class, positions
        + 2 * w
        + vision_layers * block_params(w)
        + 2 * w
        + w * embed
    )  # ln_pre, blocks, ln_post, proj
    text = vocab * t + context * t + text_layers * block_params(t) + 2 * t + t * embed  # ..., ln_final, proj
    return vision + text + 1  # logit_scale


def bias_params(vision_width, vision_layers, text_width, text_layers, **_) -> int:
    """Per block 11w (ln_1 w, in_proj 3w, out_proj w, ln_2 w, MLP 4w + w), plus ln_pre, ln_post, ln_final."""
    return 11 * vision_width * vision_layers + 2 * vision_width + 11 * text_width * text_layers + text_width


def adapter_params(embed, reduction=2, **_) -> int:
    hidden = embed // reduction
    return 2 * (embed * hidden + hidden + hidden * embed + embed)


def expected_count(name: str, sizes: dict, n_tasks: int) -> int:
    return {
        "clip-adapter": adapter_params(**sizes),
        "bitfit": bias_params(**sizes),
        "fullft-mt": clip_params(**sizes),
        "fullft": n_tasks * clip_params(**sizes),
    }[name]


def build(name: str, backbone, tasks):
    entry = get_method(name)
    return entry.cls(entry.config_cls(), backbone, tasks)


def test_the_methods_are_registered():
    assert [get_method(name).cls for name in METHODS] == [CLIPAdapter, BitFit, FullFTMT, FullFT]
    assert CLIPAdapterConfig() == CLIPAdapterConfig(reduction=2, ratio=0.2)


def test_the_count_formulas_match_the_paper_for_vit_b16():
    assert clip_params(**VIT_B_16) == 149_620_737
    assert bias_params(**VIT_B_16) == 171_008
    assert adapter_params(**VIT_B_16) == 525_824


@pytest.mark.parametrize("name", METHODS)
def test_parameter_counts_on_the_tiny_model(name, tiny_backbone, folder_data):
    assert len(folder_data.tasks) == 4
    assert build(name, tiny_backbone, folder_data.tasks).num_trainable == expected_count(name, TINY, 4)


@pytest.mark.parametrize(
    "name, count", [("clip-adapter", 525_824), ("bitfit", 171_008), ("fullft-mt", 149_620_737), ("fullft", 598_482_948)]
)
def test_parameter_counts_on_vit_b16(name, count, vit_b16):
    tasks = [Task(f"task{i}", tuple(f"class {k}" for k in range(65))) for i in range(4)]
    module = build(name, vit_b16, tasks)  # fullft: four full copies, about 2.4 GB
    assert module.num_trainable == count


@pytest.mark.parametrize("name", METHODS)
def test_only_the_declared_parameters_change_after_a_few_sgd_steps(name, tiny_backbone, batch, folder_data):
    backbone = copy.deepcopy(tiny_backbone)  # bitfit and fullft-mt train it; the fixture is shared
    torch.manual_seed(0)
    module = build(name, backbone, folder_data.tasks)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    before = {k: v.clone() for k, v in module.state_dict().items()}
    params = module.apply_trainable()
    declared = {n for n, _ in module.trainable()}
    assert {n for n, p in module.named_parameters() if p.requires_grad} == declared
    optimizer = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        assert [n for n, p in module.trainable() if p.grad is None] == []
        optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == declared  # for fullft: every copy, and never the original backbone
    if name == "fullft":
        assert not any(n.startswith("backbone.") for n in declared)


def test_fullft_routes_each_task_to_its_own_copy(tiny_backbone, batch, folder_data):
    module = FullFT(FullFTConfig(), tiny_backbone, folder_data.tasks)
    module.log = lambda *args, **kwargs: None
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=0.1)
    first = module.task_names[0]
    module.training_step({first: batch[first]}, 0).backward()
    optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {n for n, _ in module.copies[0].named_parameters(prefix="copies.0")}


def test_clip_adapter_with_ratio_zero_is_zero_shot(tiny_backbone, batch, folder_data):
    tasks = folder_data.tasks
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, tasks)
    untouched = CLIPAdapter(CLIPAdapterConfig(ratio=0.0), tiny_backbone, tasks)
    blended = CLIPAdapter(CLIPAdapterConfig(), tiny_backbone, tasks)
    with torch.no_grad():
        for task, (images, _) in batch.items():
            assert torch.allclose(untouched(images, task), zeroshot(images, task))
            assert not torch.allclose(blended(images, task), zeroshot(images, task))


def test_a_bitfit_checkpoint_holds_only_biases(tiny_backbone, folder_data):
    state = BitFit(BitFitConfig(), tiny_backbone, folder_data.tasks).trainable_state_dict()
    assert all(name.startswith("backbone.") and name.endswith("bias") for name in state)
    # Six bias tensors per block (ln_1, in_proj, out_proj, ln_2, c_fc, c_proj); ln_pre, ln_post, ln_final.
    assert len(state) == 6 * 3 + 2 + 6 * 3 + 1
    assert sum(v.numel() for v in state.values()) == bias_params(**TINY)
