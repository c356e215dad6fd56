"""Task grouping: the partition search on constructed similarities, the gradients it reads, and
MmAP.prepare's grouping modes (fixed, all, gradient, random), its record facts and its cache."""

import json
import math

import pytest
import torch

from petl_bench import grouping
from petl_bench.config import OptimConfig, RunConfig
from petl_bench.errors import UserError
from petl_bench.methods.mmap import MmAP, MmAPConfig, MmAPJoint, format_groups


def block_cosine(blocks: list[list[int]], within: float, across: float) -> torch.Tensor:
    n = sum(len(b) for b in blocks)
    cos = torch.full((n, n), across, dtype=torch.float64)
    for block in blocks:
        for i in block:
            for j in block:
                cos[i, j] = within
    return cos.fill_diagonal_(1.0)


def canonical(partition):
    return sorted(sorted(g) for g in partition)


@pytest.mark.parametrize("n, max_groups, count", [(4, 4, 15), (4, 2, 8), (4, 1, 1), (5, 5, 52), (8, 8, 4140)])
def test_set_partitions_are_the_bell_and_stirling_counts(n, max_groups, count):
    partitions = list(grouping.set_partitions(n, max_groups))
    assert len(partitions) == count
    assert len({tuple(map(tuple, canonical(p))) for p in partitions}) == count  # each once
    assert all(sorted(i for g in p for i in g) == list(range(n)) and len(p) <= max_groups for p in partitions)


def test_best_partition_finds_the_planted_pairs():
    cos = block_cosine([[0, 2], [1, 3]], within=0.8, across=0.1)
    assert canonical(grouping.best_partition(cos, max_groups=2)) == [[0, 2], [1, 3]]
    # All similarities positive: plain within-group similarity would merge everything.
    assert canonical(grouping.best_partition(cos, max_groups=4)) == [[0, 2], [1, 3]]
    assert canonical(grouping.best_partition(cos, max_groups=1)) == [[0, 1, 2, 3]]


def test_best_partition_on_a_hand_computed_case():
    cos = torch.tensor(
        [[1.0, 0.5, 0.1, 0.0], [0.5, 1.0, 0.3, -0.2], [0.1, 0.3, 1.0, 0.4], [0.0, -0.2, 0.4, 1.0]], dtype=torch.float64
    )
    mean = (0.5 + 0.1 + 0.0 + 0.3 - 0.2 + 0.4) / 6  # 0.18333
    assert grouping.mean_pairwise(cos) == pytest.approx(mean)
    # {0,1},{2,3}: (0.5 - m) + (0.4 - m); every other partition into <= 2 groups scores less.
    assert grouping.partition_score([[0, 1], [2, 3]], cos) == pytest.approx(0.9 - 2 * mean)
    scores = {tuple(map(tuple, canonical(p))): grouping.partition_score(p, cos) for p in grouping.set_partitions(4, 2)}
    assert max(scores, key=scores.get) == ((0, 1), (2, 3))
    assert canonical(grouping.best_partition(cos, 2)) == [[0, 1], [2, 3]]


def test_equal_similarities_give_one_group():
    assert grouping.best_partition(block_cosine([[0, 1, 2, 3]], 0.5, 0.5), 4) == [[0, 1, 2, 3]]


def test_greedy_merge_beyond_the_exact_limit_finds_planted_blocks():
    blocks = [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    cos = block_cosine(blocks, within=0.7, across=-0.1)
    assert len(cos) > grouping.EXACT_UP_TO
    assert canonical(grouping.best_partition(cos, max_groups=3)) == canonical(blocks)
    # Fewer groups allowed than planted: the least costly merge is forced.
    assert len(grouping.best_partition(cos, max_groups=2)) == 2


def test_greedy_agrees_with_exact_on_planted_blocks_within_the_limit():
    cos = block_cosine([[0, 4], [1, 2, 5], [3, 6, 7]], within=0.6, across=0.05)
    assert canonical(grouping.greedy_partition(cos, 3)) == canonical(grouping.best_partition(cos, 3))


def test_random_partition_keeps_sizes_is_seeded_and_avoids_the_given_one():
    avoid = [[0, 1], [2, 3]]
    draws = [grouping.random_partition(4, [2, 2], seed, avoid=avoid) for seed in range(20)]
    assert all(sorted(map(len, p)) == [2, 2] for p in draws)
    assert all(canonical(p) != avoid for p in draws)
    assert {tuple(map(tuple, canonical(p))) for p in draws} == {((0, 2), (1, 3)), ((0, 3), (1, 2))}
    assert grouping.random_partition(4, [2, 2], 7, avoid) == grouping.random_partition(4, [2, 2], 7, avoid)
    assert grouping.random_partition(3, [3], 0, avoid=[[0, 1, 2]]) == [[0, 1, 2]]  # the only one


def test_similarity_is_the_dot_product_and_cosine():
    sim = grouping.similarity(
        {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([2.0, 2.0]), "c": torch.tensor([0.0, -3.0])}
    )
    assert sim.tasks == ["a", "b", "c"]
    assert sim.dot.tolist() == [[1, 2, 0], [2, 8, -6], [0, -6, 9]]
    assert sim.cosine[0, 1].item() == pytest.approx(1 / math.sqrt(2))
    assert sim.cosine[1, 2].item() == pytest.approx(-1 / math.sqrt(2))


def test_task_gradients_average_each_tasks_gradient_after_the_warm_up(tiny_backbone, folder_data):
    torch.manual_seed(0)
    module = MmAP(MmAPConfig(task_specific=False), tiny_backbone, folder_data.tasks)
    before = torch.cat([p.detach().flatten().clone() for _, p in module.trainable()])
    optimizer = torch.optim.SGD(module.apply_trainable(), lr=0.1)
    grads = grouping.task_gradients(
        module, folder_data.train_dataloader(), warmup_steps=2, batches=2, optimizer=optimizer
    )
    after = torch.cat([p.detach().flatten() for _, p in module.trainable()])
    assert not torch.equal(before, after)  # the warm-up trained the global set
    assert list(grads) == module.task_names
    assert all(g.shape == (module.num_trainable,) and g.abs().sum() > 0 for g in grads.values())
    assert torch.equal(after, torch.cat([p.detach().flatten() for _, p in module.trainable()]))  # read only


# -- MmAP.prepare ----------------------------------------------------------------------------------
def prepare(cls, cfg, backbone, data, tmp_path):
    run = RunConfig(cls.method_name, cfg, optim=OptimConfig(lr=0.01))
    return cls.prepare(run, backbone, data, tmp_path / "run")


def test_fixed_groups_and_task_specific_only_skip_the_search(tiny_backbone, folder_data, tmp_path):
    cfg = MmAPConfig(groups="art,clipart|product,real world")
    assert prepare(MmAP, cfg, tiny_backbone, folder_data, tmp_path) == (
        cfg,
        {"grouping": {"method": "fixed", "groups": [["art", "clipart"], ["product", "real world"]]}},
    )
    cfg = MmAPConfig(group_shared=False)
    resolved, facts = prepare(MmAP, cfg, tiny_backbone, folder_data, tmp_path)
    assert resolved == cfg and facts["grouping"]["method"].startswith("none")
    assert not (tmp_path / "run").exists()


def test_all_is_one_group(tiny_backbone, folder_data, tmp_path):
    resolved, facts = prepare(MmAP, MmAPConfig(grouping="all"), tiny_backbone, folder_data, tmp_path)
    assert resolved.groups == "art,clipart,product,real world"
    assert facts == {"grouping": {"method": "all", "groups": [["art", "clipart", "product", "real world"]]}}


@pytest.mark.parametrize("cls", [MmAP, MmAPJoint])
def test_gradient_grouping_resolves_groups_writes_facts_heatmap_and_cache(cls, tiny_backbone, folder_data, tmp_path):
    torch.manual_seed(0)
    cfg = MmAPConfig(grouping_warmup_steps=1, grouping_batches=2)
    resolved, facts = prepare(cls, cfg, tiny_backbone, folder_data, tmp_path)
    found = facts["grouping"]
    assert found["method"] == "gradient" and found["groups"] == found["gradient_groups"]
    assert resolved.groups == format_groups(found["groups"]) and 1 <= len(found["groups"]) <= 2
    module = cls(resolved, tiny_backbone, folder_data.tasks)
    assert module.groups == found["groups"]
    cos = torch.tensor(found["cosine"], dtype=torch.float64)
    assert cos.shape == (4, 4) and torch.allclose(cos.diagonal(), torch.ones(4, dtype=torch.float64))
    assert canonical(grouping.best_partition(cos, 2)) == canonical(
        [[found["tasks"].index(t) for t in g] for g in found["groups"]]
    )
    assert (tmp_path / "run" / "grouping.png").stat().st_size > 5000
    # A resumed run reads the cached result: same facts even when the search would now differ.
    saved = json.loads((tmp_path / "run" / "grouping.json").read_text())
    saved["facts"]["groups"] = [["art"], ["clipart", "product", "real world"]]
    (tmp_path / "run" / "grouping.json").write_text(json.dumps(saved))
    again, _ = prepare(cls, cfg, tiny_backbone, folder_data, tmp_path)
    assert again.groups == "art|clipart,product,real world"


def test_random_grouping_keeps_the_gradient_sizes_but_not_its_groups(tiny_backbone, folder_data, tmp_path):
    torch.manual_seed(0)
    cfg = MmAPConfig(grouping="random", grouping_warmup_steps=1, grouping_batches=2, max_groups=2)
    _, facts = prepare(MmAP, cfg, tiny_backbone, folder_data, tmp_path)
    found = facts["grouping"]
    assert sorted(map(len, found["groups"])) == sorted(map(len, found["gradient_groups"]))
    if len(found["groups"]) > 1:
        assert canonical(found["groups"]) != canonical(found["gradient_groups"])


def test_bad_grouping_config_fails_in_prepare(tiny_backbone, folder_data, tmp_path):
    with pytest.raises(UserError, match=r"^method\.grouping='best': must be one of gradient, random, all$"):
        prepare(MmAP, MmAPConfig(grouping="best"), tiny_backbone, folder_data, tmp_path)
    with pytest.raises(UserError, match=r"contains ',' or '\|'"):
        format_groups([["a,b"], ["c"]])
