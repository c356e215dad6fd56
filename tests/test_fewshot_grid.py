"""CoOp's few-shot benchmark: a grid over several datasets (each on its folder under a common root),
its `fewshot` table (methods x datasets and their average, per shot count), its figure, and
benchmarks/fewshot.yaml; end to end on two generated datasets and the tiny CLIP."""

import csv
import io
import json
import statistics
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image

from petl_bench.config import root_folder
from petl_bench.datamodules.catalog import COOP_DATASETS, DATASET_FOLDERS, DATASETS, TITLES
from petl_bench.datamodules.synth import write_synthetic
from petl_bench.files import write_json_atomic
from petl_bench.plots import DPI, FIGSIZE
from petl_bench.report import render, summarize
from petl_bench.report.markup import Site
from petl_bench.report.pages import paper_table
from petl_bench.results import record_path
from petl_bench.sweep.grid import BENCHMARKS, expand_grid, record_of

from cli_calls import call

FEWSHOT_METHODS = [
    "zeroshot",
    "linear-probe",
    "coop",
    "cocoop",
    "kgcoop",
    "maple",
    "ivlp",
    "vpt",
    "lora",
    "clip-adapter",
    "tip-adapter-f",
]
SHOTS = ["1shot", "2shot", "4shot", "8shot", "16shot"]


def write_grid(path: Path, datasets, splits=("1shot", "2shot"), seeds=(0,), methods=("zeroshot", "coop"), **extra):
    spec = {
        "name": path.stem,
        "table": "fewshot",
        "datasets": list(datasets),
        "splits": list(splits),
        "seeds": list(seeds),
        "set": {"model.arch": "tiny", "data.num_workers": 0, "data.batch_size": 4},
        "methods": list(methods),
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def one_line_error(argv) -> str:
    """The one-line error of a command that fails on bad input (a sweep prints its grid's line first)."""
    code, stdout, stderr = call(argv)
    assert code == 2 and stdout.count("\n") <= 1 and stderr.count("\n") == 1, (code, stdout, stderr)
    assert stderr.startswith("petl-bench: error: "), stderr
    return stderr.removeprefix("petl-bench: error: ").rstrip("\n")


# -- the grid ----------------------------------------------------------------------------------------
def test_a_grid_over_several_datasets_runs_each_on_its_folder_under_the_root(tmp_path):
    path = write_grid(tmp_path / "g.yaml", ["pacs", "vlcs"], seeds=[0, 1])
    data, out = tmp_path / "data", tmp_path / "out"
    grid = expand_grid(path, [f"data.root={data}"], str(out))

    assert (grid.datasets, grid.dataset, grid.root, grid.labels) == (
        ["pacs", "vlcs"],
        "pacs, vlcs",
        str(data),
        ["zeroshot", "coop"],
    )
    assert [(r.label, r.cfg.data.dataset, r.cfg.data.split, r.cfg.data.seed) for r in grid.runs] == [
        (method, dataset, split, seed)
        for method in ("zeroshot", "coop")
        for dataset in ("pacs", "vlcs")
        for split in ("1shot", "2shot")
        for seed in (0, 1)
    ]
    assert {(r.cfg.data.dataset, r.cfg.data.root) for r in grid.runs} == {
        ("pacs", str(data / "pacs")),
        ("vlcs", str(data / "vlcs")),
    }
    assert record_of(grid.runs[-1]) == out / f"runs/vlcs/{root_folder(str(data / 'vlcs'))}/2shot/coop@tiny/seed1.json"
    # Each run is the run of a one-dataset grid given that dataset's folder: one record, one hash.
    single = tmp_path / "single.yaml"
    single.write_text(
        path.read_text().replace("datasets:\n- pacs\n- vlcs\n", "dataset: vlcs\n").replace("fewshot", "kshot")
    )
    alone = expand_grid(single, [f"data.root={data / 'vlcs'}"], str(out))
    assert alone.root == str(data / "vlcs") and alone.datasets == ["vlcs"]
    several = [r for r in grid.runs if r.cfg.data.dataset == "vlcs"]
    assert [(record_of(r), r.cfg.sha256()) for r in alone.runs] == [(record_of(r), r.cfg.sha256()) for r in several]


def test_a_coop_dataset_runs_on_coop_s_folder_name():
    from petl_bench.sweep.grid import dataset_folder

    assert dataset_folder("/data", "caltech101") == "/data/caltech-101"
    assert dataset_folder("/data", "imagenet_sketch") == "/data/imagenet-sketch"
    assert dataset_folder("/data", "pacs") == "/data/pacs"  # not in DATASET_FOLDERS: its name
    assert dataset_folder("~/data", "food101") == "~/data/food-101"  # expanded where it is read


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"dataset": "pacs"}, "give one of 'dataset' (a name) or 'datasets' (a list of names)"),
        ({"datasets": "pacs"}, "datasets: expected a list, got 'pacs'"),
        ({"datasets": ["pacs", "cifar"]}, "datasets: unknown dataset 'cifar' (known: "),
        ({"datasets": ["pacs", "vlcs", "pacs"]}, "datasets: each dataset once (got pacs, vlcs, pacs)"),
        (
            {"table": "table1"},
            "table: a grid over several datasets takes table: fewshot, base2novel or lodo (got table1)",
        ),
        ({"splits": ["10pct"]}, "splits: unknown split '10pct' for pacs"),
    ],
)
def test_bad_several_dataset_grids_are_one_line_errors(tmp_path, change, expected):
    path = write_grid(tmp_path / "bad.yaml", ["pacs", "vlcs"])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}, sort_keys=False))
    message = one_line_error(["sweep", path, "--dry-run"])
    assert message.startswith(f"{path}: ") and expected in message, message


def test_a_missing_dataset_folder_is_one_line_naming_it_before_anything_runs(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "pacs").mkdir(parents=True)
    path = write_grid(tmp_path / "g.yaml", ["pacs", "vlcs", "office31"])
    message = one_line_error(["sweep", path, "--out", out, "--set", f"data.root={data}"])
    assert message == (
        f"dataset root {data} lacks the folder of vlcs ({data / 'vlcs'}), office31 ({data / 'office31'}): "
        "a grid over several datasets runs each on its folder under data.root (catalog.DATASET_FOLDERS)"
    )
    assert not out.exists()  # no record, no sweep state: nothing ran
    assert one_line_error(["sweep", path, "--out", out, "--set", f"data.root={data / 'none'}"]) == (
        f"dataset root {data / 'none'} is not a folder (--set data.root=DIR)"
    )


# -- benchmarks/fewshot.yaml -------------------------------------------------------------------------
def fewshot_spec() -> dict:
    return yaml.safe_load((BENCHMARKS / "fewshot.yaml").read_text())


def test_the_fewshot_grid_file_is_coop_s_benchmark():
    spec = fewshot_spec()
    assert (spec["name"], spec["table"], spec["datasets"], spec["splits"], spec["seeds"]) == (
        "fewshot",
        "fewshot",
        list(COOP_DATASETS),
        SHOTS,
        [1, 2, 3],
    )
    assert spec["methods"] == FEWSHOT_METHODS
    assert (spec["set"]["model.arch"], spec["set"]["model.pretrained"]) == ("ViT-B-16", "openai")
    header = (BENCHMARKS / "fewshot.yaml").read_text().split("\nname:")[0]
    runs = len(FEWSHOT_METHODS) * len(COOP_DATASETS) * len(SHOTS) * 3
    assert "make fewshot DATA=" in header and f"= {runs} runs ({runs // len(FEWSHOT_METHODS)} per method)" in header
    assert "\nfewshot:  ## " in (Path(__file__).parents[1] / "Makefile").read_text()


def dry_run_rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.startswith("  ")]


def check_dry_run(path: Path, datasets: list[str], tmp_path: Path) -> None:
    """The grid's dry run lists datasets x 5 shot counts x 3 seeds runs per method, in that order."""
    code, stdout, _ = call(["sweep", path, "--dry-run", "--out", tmp_path / "out", "--set", f"data.root={tmp_path}"])
    assert code == 0
    runs = len(FEWSHOT_METHODS) * len(datasets) * 15
    assert stdout.splitlines()[0] == (
        f"fewshot: {runs} runs = {len(FEWSHOT_METHODS)} methods x datasets {', '.join(datasets)} x splits "
        f"{', '.join(SHOTS)} x seeds 1, 2, 3; records under {tmp_path / 'out' / 'runs'}"
    )
    expected = [
        ["todo", method, dataset, split, f"seed{seed}"]
        for method in FEWSHOT_METHODS
        for dataset in datasets
        for split in SHOTS
        for seed in (1, 2, 3)
    ]
    assert [row[:5] for row in dry_run_rows(stdout)] == expected
    assert stdout.splitlines()[-1] == f"0 done, 0 stale, {runs} to run"
    folders = {row[2]: Path(row[5]).parts[-4] for row in dry_run_rows(stdout)}
    assert folders == {d: root_folder(str(tmp_path / DATASET_FOLDERS.get(d, d))) for d in datasets}


def test_the_fewshot_grid_s_dry_run_lists_its_runs(tmp_path):
    check_dry_run(BENCHMARKS / "fewshot.yaml", list(COOP_DATASETS), tmp_path)


# -- the table and the figure, from hand-written records ---------------------------------------------
def accuracy_of(method: str, dataset: str, split: str, seed: int) -> float:
    """A made-up accuracy: grows with shots, differs by method, dataset and seed."""
    shots = int(split.removesuffix("shot"))
    if method == "zeroshot":
        return 40.0 + 2 * DATASETS.index(dataset)  # one test set for every shot count: flat
    return 30.0 + 4 * shots**0.5 + 1.5 * FEWSHOT_METHODS.index(method) + 2 * DATASETS.index(dataset) + seed


def write_records(grid, skip=lambda run: False) -> None:
    for run in grid.runs:
        cfg = run.cfg
        if skip(run):
            continue
        split = record_path(cfg).parent.parent.name
        value = accuracy_of(cfg.method, cfg.data.dataset, split, cfg.data.seed)
        # Two tasks whose mean is the record's average, so only the average may be what counts.
        accuracy = {"a": value - 5, "b": value + 5, "average": value}
        write_json_atomic(
            record_path(cfg),
            {
                "method": cfg.method,
                "run_name": cfg.run_name,
                "dataset": cfg.data.dataset,
                "split": split,
                "seed": cfg.data.seed,
                "model": cfg.model.arch,
                "pretrained": cfg.model.pretrained,
                "tasks": ["a", "b"],
                "accuracy": accuracy,
                "trainable_params": 0 if cfg.method == "zeroshot" else 1000 + 10 * DATASETS.index(cfg.data.dataset),
                "synthetic": True,
                "config": cfg.to_dict(),
                "config_sha256": cfg.sha256(),
            },
        )


def test_the_fewshot_table_has_a_column_per_dataset_and_their_average(tmp_path):
    path = write_grid(tmp_path / "t.yaml", ["pacs", "vlcs"], seeds=[0, 1, 2])
    grid = expand_grid(path, [f"data.root={tmp_path / 'data'}"], str(tmp_path / "out"))
    # coop 2shot lacks VLCS altogether, and PACS seed 2
    write_records(
        grid,
        skip=lambda r: (
            (r.label, r.cfg.data.split) == ("coop", "2shot") and (r.cfg.data.dataset == "vlcs" or r.cfg.data.seed == 2)
        ),
    )
    summary = summarize(grid)
    assert summary.tasks == ["pacs", "vlcs", "average"] and summary.lacking("coop", "2shot") == ["vlcs"]

    def mean_std(method, dataset, split, seeds=(0, 1, 2)):
        values = [accuracy_of(method, dataset, split, seed) for seed in seeds]
        return statistics.mean(values), statistics.stdev(values)

    pacs, vlcs = mean_std("coop", "pacs", "1shot"), mean_std("coop", "vlcs", "1shot")
    pacs2 = mean_std("coop", "pacs", "2shot", seeds=(0, 1))
    zs_pacs, zs_vlcs = (accuracy_of("zeroshot", d, "1shot", 0) for d in ("pacs", "vlcs"))
    markdown = render(summary, "md")
    assert markdown.startswith(
        "## t: PACS, VLCS, accuracy (%) by shots per class (Average: the mean of the datasets' means)\n\n"
        "> **NOTE: not the benchmark's setting (model tiny with weights None instead of ViT-B-16 with openai "
        "weights; synthetic images)**\n\n"
        "Cells: ours, mean ± sample std over 2 to 3 seeds; 20 of the grid's 24 runs counted, the others listed below."
    )
    assert (
        textwrap.dedent(f"""\
        ### 1shot

        | method | PACS | VLCS | Average |
        |---|---:|---:|---:|
        | ZS | {zs_pacs:.1f} ± 0.0 | {zs_vlcs:.1f} ± 0.0 | {(zs_pacs + zs_vlcs) / 2:.1f} |
        | CoOp | {pacs[0]:.1f} ± {pacs[1]:.1f} | {vlcs[0]:.1f} ± {vlcs[1]:.1f} | {(pacs[0] + vlcs[0]) / 2:.1f} |
        """)
        in markdown
    )
    assert f"| CoOp | {pacs2[0]:.1f} ± {pacs2[1]:.1f} |  | n/a: no VLCS |\n" in markdown
    assert "4 of 24 runs missing" in markdown  # the footer: coop 2shot's 3 VLCS runs and PACS seed 2

    rows = list(csv.DictReader(io.StringIO(render(summary, "csv"))))
    averages = [(r["label"], r["split"], r["dataset"], float(r["accuracy"])) for r in rows if r["task"] == "average"]
    assert averages == [
        ("zeroshot", "1shot", "", round((zs_pacs + zs_vlcs) / 2, 4)),
        ("coop", "1shot", "", round((pacs[0] + vlcs[0]) / 2, 4)),
        ("zeroshot", "2shot", "", round((zs_pacs + zs_vlcs) / 2, 4)),
    ]
    seed_rows = [r for r in rows if r["stat"] == "seed"]
    assert len(seed_rows) == 20  # one row per counted record: its average, under its dataset
    assert {(r["dataset"], r["task"], r["trainable_params"]) for r in seed_rows if r["method"] == "coop"} == {
        ("pacs", "pacs", "1030"),
        ("vlcs", "vlcs", "1040"),
    }
    latex = render(summary, "latex")
    assert r"CoOp & " in latex and r"& n/a: no VLCS \\" in latex

    # The report's grid page: the same table, each seed linked beside its cell, the gap said.
    site = Site(tmp_path / "out", tmp_path / "out/report")
    page = paper_table(site, site.grid_page("t"), summary)
    assert "<th>method</th><th>PACS</th><th>VLCS</th><th>Average</th>" in page
    assert '<td class="gap">n/a: no VLCS</td>' in page and page.count("n/a: no VLCS") == 1
    assert page.count('title="seed ') == 20  # every counted record, once


def test_the_fewshot_figure_has_the_average_and_a_panel_per_dataset(tmp_path):
    datasets = ["officehome", "minidomainnet", "pacs", "vlcs", "office31", "terraincognita", "domainnet"]
    # 7 and the average: 2 rows of 4 panels
    path = write_grid(tmp_path / "f.yaml", datasets, splits=SHOTS, seeds=[1, 2], methods=["zeroshot", "coop", "lora"])
    write_records(expand_grid(path, [f"data.root={tmp_path}"], str(tmp_path / "out")))
    plot = ["plot", "fewshot", "--grid", path, "--out-dir", tmp_path / "out", "--set", f"data.root={tmp_path}"]
    code, stdout, _ = call(plot)
    assert code == 0
    png = tmp_path / "out/figures/fewshot-f.png"
    assert stdout == f"figure: {png}\n"
    width, height = FIGSIZE["fewshot"]
    assert Image.open(png).size == (round(4 * width * DPI), round(2 * height * DPI))
    key = png.with_name(png.name + ".key").read_text()
    assert call(plot)[0] == 0
    assert png.with_name(png.name + ".key").read_text() == key  # drawn once: the same summary, the same key
    code, _, stderr = call(
        ["plot", "fewshot", "--grid", write_grid(tmp_path / "e.yaml", datasets), "--out-dir", tmp_path]
    )
    assert code == 2 and "no finished runs of grid 'e' for any split" in stderr


def test_titles_name_coop_s_datasets_where_the_catalog_has_them():
    # The tables' columns and the panels are the catalog's titles, else the dataset's name.
    from petl_bench.report.paper import dataset_name, datasets_name

    assert dataset_name("pacs") == TITLES["pacs"] and dataset_name("no-title") == "no-title"
    assert datasets_name(["pacs", "vlcs"]) == "PACS, VLCS"
    assert datasets_name(list(COOP_DATASETS)) == "11 datasets"


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_of_two_generated_datasets_through_table_plot_and_report(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for layout in ("pacs", "vlcs"):
        write_synthetic(data / layout, layout, per_class=3)
    path = write_grid(
        tmp_path / "e2e.yaml",
        ["pacs", "vlcs"],
        methods=["zeroshot", {"method": "coop", "set": {"train.epochs": 1, "optim.warmup_epochs": 0}}],
    )
    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={data}"])
    assert code == 0, stdout
    assert "[8/8] coop vlcs 2shot seed0: done in " in stdout
    assert stdout.splitlines()[-1] == "e2e: 8 done now, 0 skipped (done before), 0 stale left, 0 failed"

    state = json.loads((out / "sweeps/e2e.json").read_text())
    assert (state["datasets"], state["roots"]) == (["pacs", "vlcs"], [str(data.resolve())])  # the common root
    # No root given: table, dry run and plot take the one the sweep ran on.
    code, stdout, _ = call(["sweep", path, "--out", out, "--dry-run"])
    assert code == 0 and stdout.splitlines()[-1] == "8 done, 0 stale, 0 to run"
    grid = expand_grid(path, [f"data.root={data}"], str(out))
    records = {}
    for run in grid.runs:
        record = json.loads(record_of(run).read_text())
        records[(run.label, run.cfg.data.dataset, run.cfg.data.split)] = record["accuracy"]["average"]
    code, stdout, _ = call(["table", path, "--out", out])
    assert code == 0
    for split in ("1shot", "2shot"):
        for label, name in (("zeroshot", "ZS"), ("coop", "CoOp")):
            pacs, vlcs = records[(label, "pacs", split)], records[(label, "vlcs", split)]
            row = f"| {name} | {pacs:.1f} | {vlcs:.1f} | {(pacs + vlcs) / 2:.1f} |"
            assert row in stdout.split(f"### {split}\n")[1], (row, stdout)

    code, stdout, _ = call(["plot", "fewshot", "--grid", path, "--out-dir", out])
    assert code == 0 and Image.open(out / "figures/fewshot-e2e.png").size == (960, round(FIGSIZE["fewshot"][1] * DPI))

    code, stdout, _ = call(["report", "--out", out])
    assert code == 0
    index = (out / "report/index.html").read_text()
    assert "<td>PACS, VLCS</td>" in index
    page = (out / "report/grids/e2e.html").read_text()
    caption = "e2e: PACS, VLCS, accuracy (%) by shots per class (Average: the mean of the datasets&#x27; means)"
    assert f"<caption>{caption}</caption>" in page
    assert "<th>method</th><th>PACS</th><th>VLCS</th><th>Average</th>" in page
    pacs, vlcs = records[("coop", "pacs", "2shot")], records[("coop", "vlcs", "2shot")]
    assert f'<td><span class="ours">{(pacs + vlcs) / 2:.1f}</span></td>' in page
    assert '<img src="e2e/fewshot-e2e.png"' in page and (out / "report/grids/e2e/fewshot-e2e.png").is_file()
