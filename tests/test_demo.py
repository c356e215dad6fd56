"""`make demo` shows learning on benchmarks/demo.yaml's recipe, and its closing summary states the
recipe, the margins over zero-shot and MmAP's groups.

Scaled down to keep the suite near 10 minutes: the demo's first seed only (`make demo` averages
every seed of the grid; README quotes those numbers), on the data and tiny CLIP `make demo` makes
(the `demo_setup` fixture), each run in-process through `petl-bench run` with the arguments the
sweep would give it. Everything else is the grid's own config.

Each trained method must be at least 5 points above zero-shot on this seed's average (issue 19's
target), MmAP at least CoOp-MT (the paper's ordering). On the held-out images the recipe was chosen
on, the margins were +8.8 and +12.5 in seed 0, +9.7 and +13.7 in seed 1 (benchmarks/demo.yaml),
each well above zero-shot's standard error on the 2,600 test images (about 1 point).
"""

import re

import pytest

from petl_bench.demo import margins, recipe, summary_text, task_groups
from petl_bench.report import AVERAGE, summarize
from petl_bench.runargs import run_argv
from petl_bench.sweep.grid import expand_grid, grid_file

from cli_calls import call_ok

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_seed(demo_setup, tmp_path_factory):
    """The demo grid on the demo's data and weights, its first seed's runs done."""
    out = tmp_path_factory.mktemp("demo-results")
    grid = expand_grid(
        grid_file("demo"),
        [f"data.root={demo_setup['root']}", f"model.pretrained={demo_setup['weights']}", "data.num_workers=0"],
        str(out),
    )
    for run in grid.runs:
        if run.cfg.data.seed == grid.seeds[0]:
            call_ok(run_argv(run.cfg))
    return grid


def test_the_demo_is_zeroshot_coop_mt_and_mmap_on_the_tiny_clip(first_seed):
    assert first_seed.labels == ["zeroshot", "coop-mt", "mmap"]
    assert {run.cfg.model.arch for run in first_seed.runs} == {"tiny"}
    assert len(first_seed.seeds) >= 2  # the demo's promise is about a mean over seeds


def test_each_trained_method_beats_zero_shot_by_5_points_and_mmap_leads(first_seed):
    summary = summarize(first_seed)
    split = summary.splits[0]
    zeroshot = summary.cell("zeroshot", split, AVERAGE).mean
    gains = {label: summary.cell(label, split, AVERAGE).mean - zeroshot for label in ("coop-mt", "mmap")}
    print(f"seed {first_seed.seeds[0]}: zero-shot {zeroshot:.2f}, gains {gains}")
    assert gains["coop-mt"] >= 5 and gains["mmap"] >= 5, gains
    assert gains["mmap"] >= gains["coop-mt"], gains


def test_the_closing_summary_states_the_recipe_margins_and_groups(first_seed):
    summary = summarize(first_seed)
    text = summary_text(first_seed)
    cfg = first_seed.runs[0].cfg
    assert text.startswith(recipe(first_seed))
    coop_lr = next(run.cfg.optim.lr for run in first_seed.runs if run.label == "coop-mt")
    assert f"{cfg.train.epochs} epochs" in text and f"{cfg.optim.optimizer}, lr CoOp-MT {coop_lr:g}" in text
    assert "| Average |" in text  # the side-by-side table, one column per method
    (line,) = margins(summary)
    pattern = r"each trained method minus zero-shot \(.*\): CoOp-MT [+-]\d+\.\d, MmAP [+-]\d+\.\d"
    assert re.fullmatch(pattern, line), line
    groups = task_groups(summary)
    assert groups[0] == "MmAP's task groups:" and groups[1].startswith(f"  seed {first_seed.seeds[0]}: ")
    assert sorted(groups[1].split(": ")[1].replace(" | ", " + ").split(" + ")) == sorted(
        summary.tasks[:-1]
    )  # every task in exactly one group
