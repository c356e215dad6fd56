"""docs/faithfulness.md's checkable claims: the settings it lists as fitting the paper's parameter
counts do (on ViT-B-16 built without weights), their named neighbours do not, and the page is
linked from README with its sections in place."""

import re
from pathlib import Path

import pytest

from petl_bench.datamodules import Task
from petl_bench.params import agrees, paper_figures
from petl_bench.registry import get_method

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "faithfulness.md"
TASKS = [Task(f"task{i}", tuple(f"class {c}" for c in range(65))) for i in range(4)]
GROUPS = {
    1: "task0,task1,task2,task3",
    2: "task0,task1|task2,task3",
    3: "task0|task1,task2|task3",
    4: "task0|task1|task2|task3",
}


def count(backbone, method: str, **params) -> int:
    entry = get_method(method)
    return entry.cls(entry.config_cls(**params), backbone, TASKS).num_trainable


def fits(method: str, n: int) -> bool:
    return agrees(n, paper_figures()[method])


@pytest.mark.parametrize("n_ctx, fit", [(3, False), (4, True), (19, True), (20, False)])
def test_maple_contexts_that_print_as_the_papers_count(vit_b16, n_ctx, fit):
    per_set = count(vit_b16, "maple-mt", n_ctx=n_ctx, ctx_init="a photo of a" if n_ctx <= 4 else "")
    assert per_set == 12 * (512 * n_ctx + 512 * 768 + 768)
    assert fits("maple-mt", per_set) is fit and fits("maple", 4 * per_set) is fit


def test_maples_own_config_is_smaller(vit_b16):
    assert count(vit_b16, "maple-mt", n_ctx=2, depth=9) == 3_555_072


@pytest.mark.parametrize(
    "b, m, n, depth, groups",
    [
        (5, 1, 4, 12, 3),
        (6, 6, 256, 12, 3),
        (7, 1, 4, 12, 1),
        (7, 7, 256, 12, 2),
        (11, 1, 8, 12, 2),
        (12, 6, 256, 12, 3),
        (12, 12, 128, 12, 3),
        (13, 1, 8, 12, 1),
        (14, 1, 8, 12, 1),
        (14, 2, 4, 12, 1),
        (14, 7, 256, 12, 2),
        (14, 14, 128, 12, 2),
        (7, 7, 256, 10, 3),
        (7, 7, 256, 9, 4),
    ],
)
def test_mmap_settings_that_print_as_the_papers_count(vit_b16, b, m, n, depth, groups):
    assert fits("mmap", count(vit_b16, "mmap", b=b, m=m, n=n, depth=depth, groups=GROUPS[groups]))


@pytest.mark.parametrize("groups", [1, 3])
def test_mmap_defaults_with_other_group_counts_do_not(vit_b16, groups):
    assert not fits("mmap", count(vit_b16, "mmap", groups=GROUPS[groups]))


@pytest.mark.parametrize(
    "params, expected, fit",
    [
        ({}, 525_824, True),
        ({"towers": "image", "reduction": 1}, 525_312, True),
        ({"towers": "text", "reduction": 1}, 525_312, True),
        ({"towers": "image", "reduction": 4}, 131_712, False),  # the reference's size (it has no biases)
    ],
)
def test_clip_adapter_placements_that_print_as_the_papers_count(vit_b16, params, expected, fit):
    assert count(vit_b16, "clip-adapter", **params) == expected
    assert fits("clip-adapter", expected) is fit


@pytest.mark.parametrize(
    "n_prompts, depth, fit", [(17, 12, False), (18, 12, True), (19, 12, False), (24, 9, True), (25, 9, True)]
)
def test_vpt_lengths_that_print_as_the_papers_count(vit_b16, n_prompts, depth, fit):
    per_set = count(vit_b16, "vpt-mt", n_prompts=n_prompts, depth=depth)
    assert fits("vpt-mt", per_set) is fit and fits("vpt", 4 * per_set) is fit


def test_the_page_is_linked_and_every_row_names_its_sources():
    assert "docs/faithfulness.md" in (ROOT / "README.md").read_text()
    text = PAGE.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[-1] == "Methods beyond the paper"  # where rows for later methods go
    for table, least in (
        ("## The training recipe", 10),
        ("## The methods of Tables 1 and 2", 10),
        ("## Methods beyond the paper", 7),
    ):
        rows = text.split(table)[1].split("\n## ")[0].splitlines()
        body = [
            row
            for row in rows
            if row.startswith("| ") and not row.startswith("| item") and not row.startswith("| method")
        ]
        assert len(body) >= least
        for row in body:
            cells = [cell.strip() for cell in row.strip("|").split(" | ")]
            assert len(cells) == 5 and all(cells), row[:60]


def test_every_recipe_file_has_its_row_with_its_values_and_source():
    from petl_bench.recipes import all_recipes, set_items

    def cells(values) -> str:
        return ", ".join(f"`{item}`" for item in set_items(values))

    text = PAGE.read_text()
    for recipe in {r.path: r for r in all_recipes().values()}.values():
        names = ", ".join(f"`{m}`" for m in recipe.methods)
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {names} | `benchmarks/recipes/")]
        assert f"`benchmarks/recipes/{recipe.path.name}`" in row and row.rstrip(" |").endswith(recipe.source)
        if recipe.values:  # a recipe without values is the shared one, which its row says in words
            assert cells(recipe.values) in row, recipe.path.name
        for shots, values in recipe.shots.items():
            assert f"{shots}: {cells(values)}" in row, recipe.path.name
        for dataset, values in recipe.datasets.items():
            assert f"{dataset}: {cells(values)}" in row, recipe.path.name
