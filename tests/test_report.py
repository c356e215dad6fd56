"""`petl-bench table`: the paper's numbers as data, aggregation over seeds, stale and missing runs,
the off-paper banner, and the md / LaTeX / CSV outputs, on hand-written records."""

import csv
import html
import io
import json
import math
import statistics
import textwrap

import pytest

from petl_bench.datamodules.records import MINIDOMAINNET_DOMAINS, OFFICEHOME_DOMAINS
from petl_bench.files import write_json_atomic
from petl_bench.registry import method_names
from petl_bench.report import BEYOND_NAMES, Cell, cell_text, paper_results, render, summarize
from petl_bench.run import record_path
from petl_bench.sweep.grid import expand_grid

from cli_calls import call

TASKS = OFFICEHOME_DOMAINS  # Art, Clipart, Product, Real World


def grid_yaml(tmp_path, name, body):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def write_record(run, art, others=(50.0, 60.0, 70.0), params=1000, **extra):
    """A record as `run.execute` writes it, for the run `run` of a grid, Art accuracy `art`."""
    cfg = run.cfg
    accuracy = dict(zip(TASKS, [art, *others], strict=True))
    accuracy["average"] = sum(accuracy.values()) / len(TASKS)
    record = {
        "method": cfg.method,
        "run_name": cfg.run_name,
        "dataset": cfg.data.dataset,
        "split": record_path(cfg).parent.parent.name,
        "seed": cfg.data.seed,
        "model": cfg.model.arch,
        "pretrained": cfg.model.pretrained,
        "tasks": TASKS,
        "accuracy": accuracy,
        "trainable_params": params,
        "synthetic": False,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        **extra,
    }
    write_json_atomic(record_path(cfg), record)
    return record


def runs_of(grid, label, split, seeds=(0, 1, 2)):
    return [r for r in grid.runs if r.label == label and r.cfg.data.split == split and r.cfg.data.seed in seeds]


MAIN = """\
    name: small
    table: table1
    dataset: officehome
    splits: [10pct, 20pct]
    seeds: [0, 1, 2]
    methods: [zeroshot, coop-mt, mmap]
    """


@pytest.fixture
def main_grid(tmp_path):
    """18 runs: zeroshot all 6 done; coop-mt 10pct seeds 0-2 done; mmap 10pct seed 0 done; mmap 20pct
    seed 0 stale; the other 7 missing. Art accuracies chosen so the statistics are known."""
    path = grid_yaml(tmp_path, "small", MAIN)
    out = tmp_path / "results"
    grid = expand_grid(path, out=str(out))
    for run in runs_of(grid, "zeroshot", "10pct") + runs_of(grid, "zeroshot", "20pct"):
        write_record(run, 82.0, params=0)
    for run, art in zip(runs_of(grid, "coop-mt", "10pct"), [80.0, 82.0, 87.0], strict=True):
        write_record(run, art, params=8192)
    write_record(runs_of(grid, "mmap", "10pct", [0])[0], 85.0, params=129384)
    stale = write_record(runs_of(grid, "mmap", "20pct", [0])[0], 0.0)
    stale_path = record_path(runs_of(grid, "mmap", "20pct", [0])[0].cfg)
    stale_path.write_text(stale_path.read_text().replace(stale["config_sha256"], "0" * 64))
    # a write in progress: never read
    (stale_path.parent / ".seed1.json.999.tmp").write_text("{")
    return path, out, stale_path


# -- the paper's numbers ---------------------------------------------------------------------------
def test_paper_results_hold_tables_1_to_3():
    paper = paper_results()
    assert list(paper.columns) == ["table", "dataset", "split", "method", "task", "mean", "std"]
    cell = paper.set_index(["table", "split", "method", "task"])
    assert cell.loc[("table1", "6shot", "mmap", "Art")][["mean", "std"]].tolist() == [85.7, 0.5]
    assert cell.loc[("table1", "6shot", "zeroshot", "Real World")]["mean"] == 90.1
    assert math.isnan(cell.loc[("table1", "6shot", "zeroshot", "Art")]["std"])  # the paper prints none
    assert cell.loc[("table2", "3shot", "mmap", "sketch")]["mean"] == 79.8
    assert cell.loc[("table3", "12shot", "gradient groups", "average")]["mean"] == 87.77
    # The corrected 20% BitFit average: the mean of its four tasks, not the printed 85.5.
    assert cell.loc[("table1", "12shot", "bitfit", "average")]["mean"] == 81.3

    main_tables = paper[paper.table != "table3"]
    assert set(main_tables.method) == set(method_names()) - {"mmap-joint", "mmap-mlp"} - set(BEYOND_NAMES)
    assert set(paper[paper.dataset == "officehome"].task) == {*OFFICEHOME_DOMAINS, "average"}
    assert set(paper[paper.dataset == "minidomainnet"].task) == {*MINIDOMAINNET_DOMAINS, "average"}
    assert len(main_tables) == 2 * 2 * 5 * 12 and len(paper) == len(main_tables) + 10
    # Every average is its four tasks' mean, as printed to one decimal.
    for (_, _, _), rows in main_tables.groupby(["table", "split", "method"]):
        tasks = rows[rows.task != "average"]["mean"]
        assert rows[rows.task == "average"]["mean"].item() == pytest.approx(tasks.mean(), abs=0.1)


# -- aggregation -----------------------------------------------------------------------------------
def test_cells_are_mean_and_sample_std_over_counted_seeds(main_grid):
    path, out, stale_path = main_grid
    summary = summarize(expand_grid(path, out=str(out)))

    coop = summary.cell("coop-mt", "6shot", "Art")
    assert coop.mean == pytest.approx(83.0)
    assert coop.std == pytest.approx(statistics.stdev([80.0, 82.0, 87.0]))  # ddof=1: sqrt(13)
    assert coop.paper == 84.3
    averages = [(art + 50 + 60 + 70) / 4 for art in (80.0, 82.0, 87.0)]
    assert summary.cell("coop-mt", "6shot", "average").mean == pytest.approx(statistics.mean(averages))

    single = summary.cell("mmap", "6shot", "Art")
    assert (single.mean, single.std, single.paper) == (85.0, None, 85.7)
    assert summary.cell("mmap", "12shot", "Art") is None  # its only record is stale
    assert summary.cell("coop-mt", "12shot", "Art") is None  # missing
    assert summary.params[("mmap", "6shot")] == 129384
    assert summary.tasks == [*TASKS, "average"]

    assert len(summary.missing) == 7 and summary.n_expected == 18
    assert summary.stale == [str(stale_path.resolve())]
    assert summary.footer()[0] == "7 of 18 runs missing"
    assert str(stale_path.resolve()) in "\n".join(summary.footer())
    assert summary.banner() is None  # ViT-B-16, openai weights, Office-Home, not synthetic


def test_cell_text_shows_std_only_with_more_than_one_seed():
    assert cell_text(Cell(83.0, 3.6056, 84.3)) == "83.0 ± 3.6 (paper 84.3, -1.3)"
    assert cell_text(Cell(85.0, None, 85.7)) == "85.0 (paper 85.7, -0.7)"
    assert cell_text(Cell(86.123, 0.2, None, digits=2)) == "86.12 ± 0.20"
    assert cell_text(Cell(83.0, 3.6056, 84.3), latex=True) == r"83.0$\pm$3.6 {\scriptsize (84.3, $-1.3$)}"


@pytest.mark.parametrize(
    "change, reason",
    [
        ("synthetic", "synthetic images"),
        ("model", "model tiny with weights None instead of ViT-B-16 with openai weights"),
    ],
)
def test_banner_when_not_the_papers_setting(tmp_path, change, reason):
    path = grid_yaml(tmp_path, "small", MAIN)
    overrides = ["model.arch=tiny", "model.pretrained=none"] if change == "model" else []
    grid = expand_grid(path, overrides, out=str(tmp_path / "results"))
    write_record(grid.runs[0], 80.0, synthetic=change == "synthetic")
    summary = summarize(grid)
    assert summary.banner() == f"NOTE: not the paper's setting ({reason}): the paper column is for layout only"
    code, stdout, _ = call(["table", path, "--out", tmp_path / "results", *(f"--set={o}" for o in overrides)])
    assert code == 0 and summary.banner() in stdout


def test_banner_for_a_custom_folder(tmp_path):
    path = grid_yaml(tmp_path, "mine", MAIN.replace("officehome", "folder").replace("[10pct, 20pct]", "[2shot]"))
    summary = summarize(expand_grid(path, out=str(tmp_path / "results")))
    assert "a custom image folder" in summary.banner()
    assert summary.footer()[0] == "9 of 9 runs missing"


# -- outputs ---------------------------------------------------------------------------------------
def test_markdown_table_in_the_papers_layout(main_grid):
    path, out, stale_path = main_grid
    code, stdout, stderr = call(["table", path, "--out", out])
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "## small: Office-Home, accuracy (%)"
    assert "### 10pct (6shot)" in lines and "### 20pct (12shot)" in lines
    assert "| task | ZS | CoOp-MT | MmAP |" in lines
    art = next(line for line in lines if line.startswith("| Art |"))
    assert art == ("| Art | 82.0 ± 0.0 (paper 82.9, -0.9) | 83.0 ± 3.6 (paper 84.3, -1.3) | 85.0 (paper 85.7, -0.7) |")
    params = next(line for line in lines if line.startswith("| Params (M) |"))
    assert params == "| Params (M) | 0 (paper -) | 0.0082 (paper 0.01) | 0.13 (paper 0.13) |"
    twenty = lines[lines.index("### 20pct (12shot)") :]
    art = next(line for line in twenty if line.startswith("| Art |"))
    assert art == "| Art | 82.0 ± 0.0 (paper 84.6, -2.6) |  |  |"
    assert lines[-3:] == [
        "7 of 18 runs missing",
        "1 stale record(s) not averaged (config differs from the grid's; re-run them with "
        "`petl-bench sweep --rerun-stale`):",
        f"  {stale_path.resolve()}",
    ]
    assert (out / "tables" / "small.md").read_text() == stdout
    assert stderr.strip() == f"saved: {out / 'tables' / 'small.md'}"


def test_latex_table(main_grid):
    path, out, _ = main_grid
    code, stdout, _ = call(["table", path, "--out", out, "--format", "latex"])
    assert code == 0
    assert r"\begin{tabular}{lccc}" in stdout and r"\bottomrule" in stdout
    assert r"task & ZS & CoOp-MT & MmAP \\" in stdout
    assert r"\multicolumn{4}{l}{\textit{10pct (6shot)}} \\" in stdout
    assert r"Art & 82.0$\pm$0.0 {\scriptsize (82.9, $-0.9$)} & 83.0$\pm$3.6 {\scriptsize (84.3, $-1.3$)}" in stdout
    assert r"Accuracy (\%)" in stdout or r"accuracy (\%)" in stdout
    assert "% 7 of 18 runs missing" in stdout


def test_csv_has_per_seed_and_mean_rows(main_grid):
    path, out, _ = main_grid
    code, stdout, stderr = call(["table", path, "--out", out, "--format", "csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(stdout)))
    seeds = [r for r in rows if r["stat"] == "seed"]
    means = [r for r in rows if r["stat"] == "mean"]
    assert len(seeds) == (6 + 3 + 1) * 5  # counted records x (4 tasks + average)
    coop_art = [
        float(r["accuracy"]) for r in seeds if (r["label"], r["split"], r["task"]) == ("coop-mt", "6shot", "Art")
    ]
    assert coop_art == [80.0, 82.0, 87.0]
    mean = next(r for r in means if (r["label"], r["split"], r["task"]) == ("coop-mt", "6shot", "Art"))
    assert float(mean["accuracy"]) == 83.0 and float(mean["std"]) == pytest.approx(3.6056, abs=1e-4)
    assert (mean["n_seeds"], mean["paper"], mean["diff"], mean["trainable_params"]) == ("3", "84.3", "-1.3", "8192")
    single = next(r for r in means if (r["label"], r["split"], r["task"]) == ("mmap", "6shot", "Art"))
    assert single["std"] == "" and single["n_seeds"] == "1"
    assert "7 of 18 runs missing" in stderr  # the footer stays out of the CSV


def test_the_heading_says_what_the_cells_are_and_how_many_runs_they_count(main_grid):
    """Three seeds in most cells, one in MmAP's: the heading says both; 10 of the 18 runs counted,
    as the footer's 7 missing and 1 stale leave."""
    path, out, _ = main_grid
    summary = summarize(expand_grid(path, out=str(out)))
    lines = render(summary, "md").splitlines()
    assert lines[2] == (
        "Cells: ours, mean ± sample std over 3 seeds; a cell without ± has one seed (paper's value, "
        "ours − paper); 10 of the grid's 18 runs counted, the others listed below."
    )
    assert summary.n_counted == 10 == summary.n_expected - 7 - 1
    latex = render(summary, "latex")
    assert (
        r"Ours: mean $\pm$ sample std over 3 seeds; a cell without $\pm$ has one seed. The paper's value "
        r"and our difference in brackets. 10 of the grid's 18 runs counted, the others listed below.}"
    ) in latex


def test_single_seed_cells_have_no_std_heading_and_the_footer_agrees(tmp_path):
    """`make demo-sweep` after `make demo`: one seed of each run counted, the other seed's records
    stale. No "±" anywhere; the heading counts the 2 runs the footer leaves."""
    path = grid_yaml(
        tmp_path,
        "demo",
        MAIN.replace("[10pct, 20pct]", "[10pct]")
        .replace("[0, 1, 2]", "[0, 1]")
        .replace("[zeroshot, coop-mt, mmap]", "[zeroshot, coop-mt]"),
    )
    grid = expand_grid(path, ["model.arch=tiny", "model.pretrained=none"], out=str(tmp_path / "results"))
    for run in grid.runs:
        record = write_record(run, 80.0, synthetic=True)
        if run.cfg.data.seed == 0:  # the demo's own recipe: another config
            record_path(run.cfg).write_text(json.dumps({**record, "config_sha256": "0" * 64}))
    summary = summarize(grid)
    text = render(summary, "md")
    assert "±" not in text
    lines = text.splitlines()
    assert lines[4] == (
        "Cells: ours, one seed each, no std (paper's value, ours − paper: for layout only); "
        "2 of the grid's 4 runs counted, the others listed below."
    )
    assert summary.footer()[:2] == [
        "0 of 4 runs missing",
        "2 stale record(s) not averaged (config differs from "
        "the grid's; re-run them with `petl-bench sweep --rerun-stale`):",
    ]
    assert r"\pm" not in render(summary, "latex").split(r"\begin{tabular}")[0]


ABLATION = """\
    name: abl
    table: ablation
    dataset: officehome
    splits: [10pct, 20pct]
    seeds: [0, 1]
    methods:
      - {method: coop-mt, label: gradient groups}
      - {method: vpt-mt, label: joint train}
    """


def test_ablation_layout_rows_are_labels_columns_are_splits(tmp_path):
    path = grid_yaml(tmp_path, "abl", ABLATION)
    out = tmp_path / "results"
    grid = expand_grid(path, out=str(out))
    for run in runs_of(grid, "gradient groups", "10pct"):
        write_record(run, 80.0 + run.cfg.data.seed * 2, params=129384)
    text = render(summarize(grid), "md")
    lines = text.splitlines()
    assert "| variant | 10pct (6shot) | 20pct (12shot) | Params (M) |" in lines
    # averages: (80 + 180) / 4 = 65.0 and (82 + 180) / 4 = 65.5 -> 65.25 ± 0.35; paper 86.48 (2 decimals)
    assert "| gradient groups | 65.25 ± 0.35 (paper 86.48, -21.23) |  | 0.13 |" in lines
    assert "| joint train |  |  |  |" in lines
    assert "6 of 8 runs missing" in lines


KSHOT = """\
    name: shots
    table: kshot
    dataset: officehome
    splits: [1shot, 6shot]
    seeds: [0]
    methods: [zeroshot, coop-mt]
    """


def test_kshot_layout_per_task_methods_by_shots(tmp_path):
    path = grid_yaml(tmp_path, "shots", KSHOT)
    out = tmp_path / "results"
    grid = expand_grid(path, out=str(out))
    for run in grid.runs:
        write_record(run, 70.0 if run.cfg.data.split == "1shot" else 84.0)
    lines = render(summarize(grid), "md").splitlines()
    art = lines[lines.index("### Art") :]
    assert art[2] == "| method | 1shot | 10pct (6shot) |"
    assert art[4] == "| ZS | 70.0 | 84.0 (paper 82.9, +1.1) |"
    assert art[5] == "| CoOp-MT | 70.0 | 84.0 (paper 84.3, -0.3) |"  # Table 1's 10% is 6-shot
    assert "### Average" in lines


def test_table_errors_are_one_line(tmp_path):
    code, stdout, stderr = call(["table", "no-such-grid"])
    assert code == 2 and stdout == ""
    assert stderr.startswith("petl-bench: error: no grid 'no-such-grid'") and stderr.count("\n") == 1


# -- records of two dataset roots ------------------------------------------------------------------
def test_a_table_never_averages_two_roots_and_takes_the_swept_one(tmp_path):
    """`table` given no root takes the one its sweeps ran on; of two, it says so in one line and
    counts only the root that --set names."""
    from petl_bench.sweep import state

    path = grid_yaml(tmp_path, "small", MAIN)
    out = tmp_path / "results"
    arts = {"full": 80.0, "subset": 40.0}
    for name, art in arts.items():
        (tmp_path / name).mkdir()
        grid = expand_grid(path, [f"data.root={tmp_path / name}"], out=str(out))
        for run in runs_of(grid, "zeroshot", "10pct"):
            write_record(run, art, params=0)
        if name == "full":
            state.save(grid, [{"outcome": "done"}] * len(grid.runs))
            code, stdout, stderr = call(["table", path, "--out", out])
            assert code == 0, stderr
            assert next(line for line in stdout.splitlines() if line.startswith("| Art |")).startswith(
                "| Art | 80.0 ± 0.0 "
            )
            code, stdout, _ = call(["sweep", path, "--out", out, "--dry-run"])
            assert code == 0 and stdout.splitlines()[-1] == "3 done, 0 stale, 15 to run"
    state.save(grid, [{"outcome": "done"}] * len(grid.runs))  # a sweep of the subset too
    code, stdout, stderr = call(["table", path, "--out", out])
    assert code == 2 and stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith(f"petl-bench: error: grid small was swept on 2 dataset roots under {out} (")
    assert str(tmp_path / "full") in stderr and str(tmp_path / "subset") in stderr
    for name, art in arts.items():
        code, stdout, stderr = call(["table", path, "--out", out, f"--set=data.root={tmp_path / name}"])
        assert code == 0, stderr
        art_line = next(line for line in stdout.splitlines() if line.startswith("| Art |"))
        assert art_line.startswith(f"| Art | {art:.1f} ± 0.0 ")
        assert "15 of 18 runs missing" in stdout


# -- record files that are no usable record ---------------------------------------------------------
ODD = {  # file text -> why the readers skip it
    "[]": "not a run record but a JSON array",
    "null": "not a run record but a JSON null",
    "{": "not JSON",
}


def test_odd_record_files_are_listed_and_skipped_never_fatal(main_grid):
    """A record that is `[]`, `null` or cut short, one whose accuracy is null or NaN, one without
    trainable_params (an older version's) or from a newer schema: `table`, `sweep --dry-run` and
    `report` list each with its reason and count the rest, and a record without `schema` reads."""
    path, out, _ = main_grid
    grid = expand_grid(path, out=str(out))
    zeroshot = runs_of(grid, "zeroshot", "10pct") + runs_of(grid, "zeroshot", "20pct")
    odd = dict(zip([record_path(run.cfg) for run in zeroshot[:3]], ODD, strict=True))
    for record, text in odd.items():
        record.write_text(text)
    changed = [
        (zeroshot[3], {"accuracy": None}, "accuracy is None"),
        (zeroshot[4], {"accuracy": {"Art": float("nan"), "average": 70.0}}, "accuracy of Art is nan, not a percentage"),
        (zeroshot[5], {"trainable_params": None}, "no trainable_params"),
        (runs_of(grid, "coop-mt", "10pct", [2])[0], {"schema": 99}, "schema 99 is newer than this petl-bench reads"),
    ]
    for run, change, _ in changed:
        record = {**write_record(run, 82.0), **change}
        if record["trainable_params"] is None:  # as a version before it was recorded wrote
            del record["trainable_params"]
        record_path(run.cfg).write_text(json.dumps(record))  # NaN as JSON's NaN, which Python reads
    reasons = {str(record_path(run.cfg).resolve()): why for run, _, why in changed}
    reasons.update({str(p.resolve()): ODD[text] for p, text in odd.items()})

    code, stdout, stderr = call(["table", path, "--out", out])
    assert code == 0, stderr
    listed = stdout.splitlines()[
        stdout.splitlines().index("7 record file(s) skipped, not usable records (counted missing):") + 1 :
    ][:7]
    assert {line.strip().split(" (")[0] for line in listed} == set(reasons)
    for line in listed:
        assert reasons[line.strip().split(" (")[0]] in line
    assert "14 of 18 runs missing" in stdout  # the 7 missing, plus the 7 odd ones
    art = next(line for line in stdout.splitlines() if line.startswith("| Art |"))
    assert art.startswith("| Art |  | 81.0 ± 1.4 ")  # no zeroshot left; coop-mt of seeds 0 and 1 only
    assert "schema" not in json.loads(record_path(runs_of(grid, "coop-mt", "10pct", [0])[0].cfg).read_text())

    code, stdout, stderr = call(["sweep", path, "--out", out, "--dry-run"])
    assert code == 0, stderr
    assert "7 record file(s) that are not usable records, to run again:" in stdout
    assert all(reason in stdout for reason in reasons.values())

    code, stdout, stderr = call(["report", "--out", out])
    assert code == 0, stderr
    index = (out / "report" / "index.html").read_text()
    assert "Record files skipped (7)" in index and all(html.escape(why) in index for why in reasons.values())
