"""Each method's own recipe (`--recipe paper`, benchmarks/recipes/*.yaml), AdamW and iteration-based
runs: the optimiser reaching torch, the lr of every step of an N-step run read back from its CSV log,
the recipe files' precedence, hash and run name, and that no selection reads the test set."""

import csv
import dataclasses
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from petl_bench import recipes
from petl_bench.checkpoints import TRAINER_ONLY, load_plain
from petl_bench.config import OptimConfig
from petl_bench.errors import UserError
from petl_bench.methods.coop import CoOpConfig, CoOpMT
from petl_bench.registry import method_names
from petl_bench.runargs import build_run_config, parse_run_argv, run_argv
from petl_bench.sweep.grid import expand_grid

from cli_calls import call, call_ok

TINY_RUN = ["--dataset", "folder", "--model", "tiny", "--no-progress", "--set", "data.num_workers=0"]


def run_ok(root: Path, out: Path, method: str, *extra: str, split: str = "2shot") -> str:
    return call_ok(["run", "--method", method, "--root", root, "--out", out, "--split", split, *TINY_RUN, *extra])


def fitted_optimizer(optim: OptimConfig, backbone, data) -> torch.optim.Optimizer:
    module = CoOpMT(CoOpConfig(n_ctx=4), backbone, data.tasks, optim)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    return trainer.optimizers[0]


# -- the optimiser and the length of a run ---------------------------------------------------------
def test_adamw_and_its_hyperparameters_reach_torch(tiny_backbone, folder_data):
    optim = OptimConfig(optimizer="adamw", lr=2e-4, eps=1e-4, weight_decay=0.01, schedule="linear-cosine")
    optimizer = fitted_optimizer(optim, tiny_backbone, folder_data)
    assert type(optimizer) is torch.optim.AdamW
    group = optimizer.param_groups[0]
    assert (group["initial_lr"], group["eps"], group["weight_decay"], group["betas"]) == (
        2e-4,
        1e-4,
        0.01,
        (0.9, 0.999),
    )


def test_sgd_stays_the_default_with_its_momentum(tiny_backbone, folder_data):
    optimizer = fitted_optimizer(OptimConfig(momentum=0.8, weight_decay=1e-3), tiny_backbone, folder_data)
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.SGD
    assert (group["initial_lr"], group["momentum"], group["weight_decay"]) == (0.0035, 0.8, 1e-3)


def test_an_iteration_based_run_stops_after_its_steps_with_a_per_step_cosine(folder_root, tmp_path):
    extra = ["--set", "data.batch_size=4", "--set", "method.n_ctx=4", "--set", "optim.schedule=linear-cosine"]
    run_ok(folder_root, tmp_path, "coop-mt", *extra, "--set", "train.iterations=5")
    log = next(tmp_path.glob("runs/folder/*/2shot/*/seed0/logs/metrics.csv"))
    rows = [row for row in csv.DictReader(log.open()) if row["train/lr"]]
    # 8 training images per task in batches of 4: 2 steps an epoch, so 5 steps end within epoch 3.
    assert [int(row["epoch"]) for row in rows] == [0, 0, 1, 1, 2]
    # Linear warm-up over one epoch's 2 steps, then cosine from step 2 to 0 at step 5.
    assert [float(row["train/lr"]) for row in rows] == pytest.approx([0.0035 * f for f in (0.5, 1, 1, 0.75, 0.25)])
    record = json.loads(next(tmp_path.glob("runs/folder/*/2shot/*/seed0.json")).read_text())
    assert record["config"]["train"]["iterations"] == 5 and record["recipe"] == {"name": "shared"}
    # The checkpoint of the cut-short last epoch is the finished one: weights only, nothing to resume.
    checkpoint = load_plain(next(tmp_path.glob("runs/folder/*/2shot/*/seed0/checkpoints/last.ckpt")))
    assert not any(key in checkpoint for key in TRAINER_ONLY)


def test_iterations_refuse_the_per_epoch_schedule_in_one_line():
    with pytest.raises(UserError, match=r"^train.iterations=5: optim.schedule=dassl steps once per epoch; "):
        build_run_config("coop-mt", "folder", "data", overrides=["train.iterations=5"])


def test_an_iteration_based_runs_hash_ignores_epochs_and_counts_its_steps():
    def sha(*items):
        return build_run_config("lora", "folder", "data", overrides=["optim.schedule=linear-cosine", *items]).sha256()

    assert sha("train.iterations=5", "train.epochs=3") == sha("train.iterations=5", "train.epochs=9")
    assert sha("train.iterations=5") != sha("train.iterations=6")
    assert sha("train.epochs=3") != sha("train.epochs=9")
    assert sha("optim.optimizer=adamw") != sha() != sha("optim.eps=1e-4", "optim.optimizer=adamw")


# -- recipe files ------------------------------------------------------------------------------------
def test_every_registered_method_has_one_recipe_and_every_recipe_names_registered_methods():
    found = recipes.all_recipes()
    assert sorted(found) == method_names()
    for method, recipe in found.items():
        recipes.check_keys(recipe, method)
        assert recipe.path.read_text().startswith("# ") and recipe.source


def test_a_datasets_value_wins_over_a_shots_value_and_set_over_both():
    lora = recipes.paper_recipe("lora")
    assert lora.resolved("officehome", 6)["train.iterations"] == 3000  # 500 x 6 shots
    coop = build_run_config("coop", "folder", "data", split="1shot", recipe="paper")
    assert (coop.train.epochs, coop.optim.lr, coop.data.batch_size, coop.params.n_ctx) == (50, 0.002, 32, 16)
    assert build_run_config("coop", "folder", "data", split="8shot", recipe="paper").train.epochs == 200
    # ImageNet: 50 epochs whatever the shots (COOP.md), though 8 shots alone say 200.
    recipe = recipes.paper_recipe("coop")
    assert recipe.shots.get(8) is None and recipe.resolved("imagenet", 8)["train.epochs"] == 50
    assert recipe.resolved("imagenet", 2)["train.epochs"] == 50 and recipe.resolved("folder", 2)["train.epochs"] == 100
    cfg = build_run_config("coop", "folder", "data", split="1shot", recipe="paper", overrides=["train.epochs=3"])
    assert (cfg.train.epochs, cfg.optim.lr) == (3, 0.002)


def test_paper_and_shared_differ_in_hash_and_name_and_the_command_line_rebuilds_them():
    shared = build_run_config("coop", "folder", "data", split="2shot")
    paper = build_run_config("coop", "folder", "data", split="2shot", recipe="paper")
    same_values = dataclasses.replace(
        shared, optim=paper.optim, train=paper.train, data=paper.data, params=paper.params
    )
    assert same_values.sha256() != paper.sha256()  # the recipe's name alone tells them apart
    assert (shared.run_name, paper.run_name) == ("coop", "coop+paper")
    argv = run_argv(paper)
    assert "--recipe=paper" in argv and not any(a.startswith("--set=optim.lr") for a in argv)
    assert dataclasses.asdict(parse_run_argv(argv[1:])) == dataclasses.asdict(paper)


def test_a_grid_entry_takes_the_paper_recipe_under_the_grids_set(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "table: kshot\ndataset: folder\nsplits: [1shot]\nseeds: [0]\nrecipe: paper\nset: {data.batch_size: 8}\n"
        "methods: [coop, {method: coop-mt, recipe: shared}]\n"
    )
    coop, coop_mt = (run.cfg for run in expand_grid(grid).runs)
    assert (coop.recipe, coop.train.epochs, coop.data.batch_size) == ("paper", 50, 8)
    assert (coop_mt.recipe, coop_mt.train.epochs, coop_mt.optim.lr) == ("shared", 5, 0.0035)


def test_a_method_without_a_recipe_names_those_with_one(monkeypatch, tmp_path):
    (tmp_path / "coop.yaml").write_text("methods: [coop]\nset: {optim.lr: 0.002}\n")
    monkeypatch.setattr(recipes, "RECIPE_DIR", tmp_path)
    code, _, err = call(["run", "--method", "vpt", "--root", tmp_path, "--recipe", "paper", *TINY_RUN])
    assert code == 2
    assert err.strip().splitlines() == [
        f"petl-bench: error: --recipe paper: method 'vpt' has no recipe in {tmp_path} (methods with one: coop)"
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("methods: [coop]\nsteps: 3\n", "unknown key 'steps' (known: methods, source, set, shots, datasets)"),
        ("methods: [coop]\nset: {optim.lrr: 0.1}\n", "--set 'optim.lrr=0.1': unknown key 'lrr'"),
        ("methods: [coop]\ndatasets: {imagenet: {method.rank: 2}}\n", "--set 'method.rank=2': unknown key 'rank'"),
        ("methods: [coop]\nshots: {one: {}}\n", "shots: expected shot counts"),
        ("methods: [coop]\ndatasets: {imagenett: {}}\n", "datasets: unknown dataset 'imagenett'"),
    ],
)
def test_a_bad_recipe_file_is_one_line_naming_it(monkeypatch, tmp_path, text, message):
    path = tmp_path / "coop.yaml"
    path.write_text(text)
    monkeypatch.setattr(recipes, "RECIPE_DIR", tmp_path)
    with pytest.raises(UserError) as err:
        build_run_config("coop", "folder", "data", split="1shot", recipe="paper")
    assert str(err.value).startswith(f"recipe {path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_shows_the_resolved_recipe():
    out = call_ok(["config", "--method", "lora", "--recipe", "paper", "--dataset", "officehome", "--split", "10pct"])
    assert out.startswith("recipe: paper (recipes/lora.yaml, from MaxZanella/CLIP-LoRA")
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[3:] if line.startswith("  ")}
    assert (rows["train.iterations"], rows["optim.optimizer"], rows["method.dropout"]) == ("3000", "'adamw'", "0.25")


def test_a_paper_run_records_and_prints_its_recipe_under_the_set(folder_root, tmp_path):
    out = run_ok(folder_root, tmp_path, "lora", "--recipe", "paper", "--set", "train.iterations=2", split="1shot")
    assert "recipe: paper (recipes/lora.yaml, from MaxZanella/CLIP-LoRA " in out and "train.iterations=500" in out
    record = json.loads(next(tmp_path.glob("runs/folder/*/1shot/lora+paper@tiny/seed0.json")).read_text())
    assert record["recipe"]["set"]["train.iterations"] == 500 and record["recipe"]["file"] == "recipes/lora.yaml"
    assert record["config"]["train"]["iterations"] == 2 and record["config"]["optim"]["optimizer"] == "adamw"
    assert record["config"]["recipe"] == "paper" and record["run_name"] == "lora+paper@tiny"


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())
def test_every_method_runs_its_paper_recipe_through_the_cli(name, folder_root, tmp_path):
    out = run_ok(folder_root, tmp_path, name, "--recipe", "paper", "--set", "train.fast_dev_run=true", split="1shot")
    assert f"recipe: paper (recipes/{recipes.paper_recipe(name).path.name}, from " in out
    assert re.search(rf"^{name}(-\S+)?\+paper@tiny on folder 1shot seed 0 ", out, re.MULTILINE), out


# -- selection reads no test label ---------------------------------------------------------------------
def scrambled(records: list, seed: int = 0) -> list:
    """The records with their labels (and class names) shuffled among them: a test set no selection may read."""
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    return [
        dataclasses.replace(record, label=records[j].label, classname=records[j].classname)
        for record, j in zip(records, order, strict=True)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear-probe", "tip-adapter-f"])
def test_what_prepare_selects_is_the_same_when_the_test_labels_are_scrambled(
    name, tiny_backbone, folder_data, tmp_path
):
    """The linear probe chooses C on held-out training shots and Tip-Adapter-F's alpha and beta are the
    recipe's, never searched: scrambling the test set's labels changes neither, nor the fitted state."""
    from petl_bench.registry import get_method

    entry = get_method(name)
    run = build_run_config(name, "folder", folder_data.cfg.root, split="2shot", recipe="paper")
    chosen, states = [], []
    for attempt in ("as drawn", "scrambled"):
        if attempt == "scrambled":
            before = [record.label for record in folder_data.test_records]
            folder_data.test_records = scrambled(folder_data.test_records)
            assert [record.label for record in folder_data.test_records] != before
        L.seed_everything(0, verbose=False)  # Tip-Adapter-F's cache averages random augmentations
        params, prepared = entry.cls.prepare(run, tiny_backbone, folder_data, tmp_path / attempt)
        chosen.append((dataclasses.replace(params, state=""), prepared))
        states.append(torch.load(params.state, weights_only=True))
    assert chosen[0] == chosen[1]
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    if name == "linear-probe":
        assert set(chosen[0][1]["linear_probe"]["c"]) == {task.name for task in folder_data.tasks}  # one C per task
