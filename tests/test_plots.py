"""`petl-bench plot fig1|fig4|fig5`: PNGs of the expected size with something drawn in them, drawn
from hand-written records of small grids; clear errors when there is nothing to draw."""

import textwrap

import pytest
from PIL import Image, ImageStat

from petl_bench.datamodules.records import OFFICEHOME_DOMAINS
from petl_bench.files import write_json_atomic
from petl_bench.plots import DPI, FIGSIZE
from petl_bench.run import record_path
from petl_bench.sweep.grid import expand_grid

from cli_calls import call

GRIDS = {
    "main": """\
        name: main
        table: table1
        dataset: officehome
        splits: [10pct, 20pct]
        seeds: [0, 1]
        methods: [zeroshot, coop-mt, vpt-mt, mmap, fullft-mt]
        """,
    "abl": """\
        name: abl
        table: ablation
        dataset: officehome
        splits: [10pct]
        seeds: [0, 1]
        methods:
          - {method: coop-mt, label: joint train}
          - {method: vpt-mt, label: MLP prompt}
          - {method: mmap, label: gradient groups}
        """,
    "shots": """\
        name: shots
        table: kshot
        dataset: officehome
        splits: [1shot, 3shot, 6shot, 12shot]
        seeds: [0]
        methods: [zeroshot, coop-mt, mmap]
        """,
}
PARAMS = {"zeroshot": 0, "coop-mt": 8192, "vpt-mt": 165888, "mmap": 129384, "fullft-mt": 149620737}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every run of the three grids recorded, accuracies growing with shots and differing by method;
    a synthetic-data record in the main grid, so its figures carry the off-paper note."""
    tmp = tmp_path_factory.mktemp("plots")
    out = tmp / "results"
    paths = {}
    for name, body in GRIDS.items():
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(textwrap.dedent(body))
        for run in expand_grid(paths[name], out=str(out)).runs:
            cfg = run.cfg
            shots = int(record_path(cfg).parent.parent.name.removesuffix("shot"))
            base = 40 + 2 * shots + 3 * list(PARAMS).index(cfg.method) + cfg.data.seed
            accuracy = {task: base + 5 * i for i, task in enumerate(OFFICEHOME_DOMAINS)}
            accuracy["average"] = sum(accuracy.values()) / 4
            write_json_atomic(
                record_path(cfg),
                {
                    "method": cfg.method,
                    "run_name": cfg.run_name,
                    "dataset": "officehome",
                    "split": record_path(cfg).parent.parent.name,
                    "seed": cfg.data.seed,
                    "model": cfg.model.arch,
                    "pretrained": cfg.model.pretrained,
                    "tasks": OFFICEHOME_DOMAINS,
                    "accuracy": accuracy,
                    "trainable_params": PARAMS[cfg.method],
                    "synthetic": name == "main",
                    "config_sha256": cfg.sha256(),
                },
            )
    return paths, out


def check_png(path, figure, panels=1):
    width, height = FIGSIZE[figure]
    with Image.open(path) as image:
        assert image.size == (round(width * panels * DPI), round(height * DPI))
        extrema = ImageStat.Stat(image.convert("L")).extrema[0]
        assert extrema[0] < 100 < extrema[1]  # dark marks on a light background, not a blank canvas


def test_fig1_default_path_and_split(results):
    paths, out = results
    code, stdout, stderr = call(["plot", "fig1", "--grid", paths["main"], "--out-dir", out])
    assert code == 0, stderr
    path = out / "figures" / "fig1-officehome-10pct.png"
    assert stdout == f"figure: {path}\n"
    check_png(path, "fig1")

    chosen = out / "elsewhere" / "twelve.png"
    code, _, stderr = call(
        ["plot", "fig1", "--grid", paths["main"], "--out-dir", out, "--split", "12shot", "--out", chosen]
    )
    assert code == 0, stderr
    check_png(chosen, "fig1")


def test_fig4_and_fig5(results):
    paths, out = results
    code, _, stderr = call(["plot", "fig4", "--grid", paths["abl"], "--out-dir", out])
    assert code == 0, stderr
    check_png(out / "figures" / "fig4-officehome-10pct.png", "fig4")
    code, _, stderr = call(["plot", "fig5", "--grid", paths["shots"], "--out-dir", out])
    assert code == 0, stderr
    check_png(out / "figures" / "fig5-officehome.png", "fig5", panels=len(OFFICEHOME_DOMAINS) + 1)


def test_plot_errors_are_one_line(results, tmp_path):
    paths, out = results
    code, _, stderr = call(["plot", "fig1", "--grid", paths["main"], "--out-dir", out, "--split", "1shot"])
    assert code == 2
    assert stderr == "petl-bench: error: split '1shot' is not in grid 'main' (it has 10pct (6shot), 20pct (12shot))\n"
    code, _, stderr = call(["plot", "fig1", "--grid", paths["main"], "--out-dir", tmp_path / "empty"])
    assert code == 2
    assert stderr.startswith("petl-bench: error: no finished runs of grid 'main' for 10pct (6shot)")
    assert stderr.count("\n") == 1
    code, _, stderr = call(["plot", "fig4", "--grid", paths["main"], "--out-dir", out])
    assert code == 2 and "has none of the Figure 4 rows" in stderr


def test_a_figure_is_redrawn_only_when_what_it_shows_changes(results, tmp_path, monkeypatch):
    from petl_bench import plots
    from petl_bench.report import summarize

    paths, out = results
    grid = expand_grid(paths["main"], out=str(out))
    drawings = []
    pyplot = plots._pyplot
    monkeypatch.setattr(plots, "_pyplot", lambda: drawings.append(1) or pyplot())
    path = tmp_path / "fig1.png"
    drawn = plots.draw("fig1", summarize(grid), "10pct", path).read_bytes()
    opened = len(drawings)
    assert opened >= 1
    assert plots.draw("fig1", summarize(grid), "10pct", path).read_bytes() == drawn
    assert len(drawings) == opened  # unchanged: the PNG is kept, matplotlib not even asked

    changed = summarize(grid)
    changed.seeds.loc[changed.seeds.index[0], "accuracy"] += 7.0  # one run's accuracy moves
    plots.draw("fig1", changed, "10pct", path)
    assert len(drawings) == 2 * opened
    plots.draw("fig1", summarize(grid), "20pct", path)  # another split
    (tmp_path / "fig1.png.key").write_text("another drawing's key")  # a key that does not match
    assert plots.draw("fig1", summarize(grid), "10pct", path).read_bytes() == drawn
    assert len(drawings) == 4 * opened
