"""`petl-bench report`: the static site of a small finished sweep, as a person sees it in headless
Chromium (the DOM it renders and a screenshot), every link and image resolving inside the site or
the results folder, and the state a sweep leaves for it (`{out}/sweeps/{grid}.json`).

The sweep is real (`petl-bench sweep` in-process, its state file, its statuses); its launcher is
replaced by one that writes the records, CSV logs, checkpoints and MmAP heatmaps directly, since
training adds nothing to what the report shows. One run fails, one record is stale and one is
removed after the sweep, so every state appears.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

from petl_bench.config import root_folder
from petl_bench.datamodules.records import OFFICEHOME_DOMAINS
from petl_bench.files import write_json_atomic, write_text_atomic
from petl_bench.grouping import TaskSimilarity, save_heatmap
from petl_bench.results import record_path
from petl_bench.sweep import driver
from petl_bench.sweep import state as sweep_state
from petl_bench.sweep.grid import expand_grid
from petl_bench.sweep.jobs import Job, JobResult, Outcome

from cli_calls import call

GRID = """\
    name: mini
    table: table1
    dataset: officehome
    splits: [10pct]
    seeds: [0, 1, 2]
    set:
      model.arch: tiny
      train.epochs: 2
    methods: [zeroshot, coop-mt, mmap]
    """
PARAMS = {"zeroshot": 0, "coop-mt": 8192, "mmap": 129384}
STALE = ("zeroshot", 2)  # its record has another learning rate
FAILS = ("mmap", 2)  # its run fails: exit status 1, a log that says why
REMOVED = ("coop-mt", 2)  # its record is deleted after the sweep: missing
GROUPS = [["Art", "Clipart"], ["Product", "Real World"]]


def accuracy_of(method: str, seed: int) -> dict:
    base = {"zeroshot": 80.0, "coop-mt": 83.0, "mmap": 85.0}[method] + 2 * seed
    accuracy = {task: base + i for i, task in enumerate(OFFICEHOME_DOMAINS)}
    accuracy["average"] = sum(accuracy.values()) / len(OFFICEHOME_DOMAINS)
    return accuracy


def write_run(cfg, out: Path) -> None:
    """What `petl-bench run` leaves: the record, a split file, for trained runs a checkpoint, and for
    seed 0 of those (the pages checked; drawing is the costly part) a CSV log, with a learning-rate
    column for coop-mt and without for mmap, and MmAP's heatmap."""
    from lightning.pytorch.loggers import CSVLogger

    path = record_path(cfg)
    work = path.with_suffix("")
    split_file = out / "splits" / "officehome" / root_folder(cfg.data.root) / "6shot" / f"seed{cfg.data.seed}.csv"
    write_text_atomic(split_file, "path,domain,label\nArt/Alarm_Clock/1.jpg,Art,0\n")
    prepared = {}
    drawn = PARAMS[cfg.method] and cfg.data.seed == 0
    if cfg.method == "mmap":
        cosine = torch.tensor(
            [[1.0, 0.8, -0.1, 0.0], [0.8, 1.0, 0.1, -0.2], [-0.1, 0.1, 1.0, 0.7], [0.0, -0.2, 0.7, 1.0]]
        )
        if drawn:
            save_heatmap(TaskSimilarity(OFFICEHOME_DOMAINS, cosine, cosine), GROUPS, work / "grouping.png")
        prepared = {
            "grouping": {
                "method": "gradient",
                "tasks": OFFICEHOME_DOMAINS,
                "gradient_groups": GROUPS,
                "groups": GROUPS,
                "cosine": cosine.tolist(),
                "heatmap": str(work / "grouping.png"),
            }
        }
    if drawn:
        logger = CSVLogger(work, name="logs", version="")
        for step in range(9, 50, 10):
            metrics = {
                "train/loss": 2.0 / (step + 1) ** 0.5,
                **{f"train/loss/{t}": 2.1 / (step + 1) ** 0.5 for t in OFFICEHOME_DOMAINS},
            }
            if cfg.method == "coop-mt":
                metrics["lr-SGD"] = 0.0035 * (1 - step / 50)
            logger.log_metrics(metrics, step=step)
        logger.save()
    if PARAMS[cfg.method]:
        write_text_atomic(work / "checkpoints" / "last.ckpt", "trainable parameters\n")
    write_text_atomic(work / "sweep.log", f"# petl-bench run --method={cfg.method}\n")
    write_json_atomic(
        path,
        {
            "method": cfg.method,
            "run_name": cfg.run_name,
            "dataset": "officehome",
            "split": "6shot",
            "seed": cfg.data.seed,
            "model": cfg.model.arch,
            "pretrained": cfg.model.pretrained,
            "tasks": OFFICEHOME_DOMAINS,
            "accuracy": accuracy_of(cfg.method, cfg.data.seed),
            "trainable_params": PARAMS[cfg.method],
            "total_params": 2_630_991,
            "train_images": 1560,
            "test_images": 14028,
            "split_file": str(split_file),
            "split_sha256": hashlib.sha256(split_file.read_bytes()).hexdigest(),
            "skipped_images": [],
            "synthetic": True,
            "wall_s": 83.4,
            "device": "cpu (x86_64, 2 cores)",
            "train_images_per_s": 41.5,
            "peak_memory_mb": 1170.2,
            "git": "0123abc",
            "versions": {"torch": "2.14.1", "lightning": "2.6.6"},
            "prepared": prepared,
            "resolved_params": dict(cfg.to_dict()["params"]),
            "config": cfg.to_dict(),
            "config_sha256": cfg.sha256(),
            "finished": "2026-01-01T00:00:00+0000",
        },
    )


def fake_launch(grid, todo, *how):
    """The sweep's launcher, writing each run's files instead of training; FAILS fails."""
    results = []
    for number, (run, _) in enumerate(todo, 1):
        key = (run.cfg.method, run.cfg.data.seed)
        job = Job(number, len(todo), run, [])
        if key == FAILS:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            job.log.write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
            results.append(JobResult(job, Outcome.FAILED, "exit status 1", job.log))
        else:
            write_run(run.cfg, grid.out)
            results.append(JobResult(job, Outcome.DONE))
    return results


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_checkpoint):
    """A finished sweep of the `mini` grid and its report: (grid file, results folder, site folder)."""
    tmp = tmp_path_factory.mktemp("report")
    grid_path = tmp / "mini.yaml"
    grid_path.write_text(textwrap.dedent(GRID))
    out, data = tmp / "results", tmp / "data"
    data.mkdir()
    overrides = [f"model.pretrained={tiny_checkpoint}", f"data.root={data}"]
    grid = expand_grid(grid_path, overrides, str(out))
    runs = {(r.cfg.method, r.cfg.data.seed): r for r in grid.runs}
    runs[STALE].cfg.optim.lr = 0.1
    write_run(runs[STALE].cfg, out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(driver, "_launch", fake_launch)
        code, stdout, _ = call(["sweep", grid_path, "--out", out, *(f"--set={o}" for o in overrides)])
    assert code == 1 and "mini: 7 done now, 0 skipped (done before), 1 stale left, 1 failed" in stdout
    record_path(runs[REMOVED].cfg).unlink()  # the report reads the records as they are now
    code, stdout, stderr = call(["report", "--out", out])
    assert code == 0, stderr
    assert stdout == f"report: {(out / 'report' / 'index.html').resolve()}\n"
    return grid_path, out, out / "report"


def test_the_sweep_leaves_its_grid_and_each_runs_last_outcome(swept, tiny_checkpoint):
    grid_path, out, _ = swept
    state = json.loads((out / "sweeps" / "mini.json").read_text())
    assert (state["grid"], state["grid_file"], state["grid_text"]) == (
        "mini",
        str(grid_path.resolve()),
        textwrap.dedent(GRID),
    )
    assert state["overrides"] == [f"model.pretrained={tiny_checkpoint}", f"data.root={out.parent / 'data'}"]
    outcomes = {(r["label"], r["seed"]): r["outcome"] for r in state["runs"]}
    assert outcomes == {**{(m, s): "done" for m in PARAMS for s in (0, 1, 2)}, STALE: "stale", FAILS: "failed"}
    failed = next(r for r in state["runs"] if r["outcome"] == "failed")
    assert failed["reason"] == "exit status 1" and Path(failed["log"]).read_text().endswith("out of memory\n")
    data_root = root_folder(str(out.parent / "data"))
    assert failed["record"] == f"runs/officehome/{data_root}/6shot/mmap@tiny-tiny/seed2.json"
    assert state["roots"] == [str((out.parent / "data").resolve())]  # where `table` looks when given no root


def test_a_failure_stays_the_last_outcome_until_a_sweep_attempts_the_run(swept, tiny_checkpoint):
    grid_path, out, _ = swept
    state = json.loads((out / "sweeps" / "mini.json").read_text())
    grid = expand_grid(grid_path, state["overrides"], str(out))
    outcomes = sweep_state.starting(grid, [sweep_state.run_status(run) for run in grid.runs])
    by_run = {(run.cfg.method, run.cfg.data.seed): outcome for run, outcome in zip(grid.runs, outcomes, strict=True)}
    assert by_run[FAILS]["outcome"] == "failed" and by_run[FAILS]["reason"] == "exit status 1"
    assert by_run[REMOVED] == {"outcome": "todo"} and by_run[STALE] == {"outcome": "stale"}
    attempted = [run for run in grid.runs if (run.cfg.method, run.cfg.data.seed) == FAILS]
    after = sweep_state.finished(grid, outcomes, [JobResult(Job(1, 1, run, []), Outcome.DONE) for run in attempted])
    assert {(r.cfg.method, r.cfg.data.seed): o["outcome"] for r, o in zip(grid.runs, after, strict=True)}[
        FAILS
    ] == "done"


def test_report_errors_and_a_grid_that_no_longer_expands(tmp_path):
    code, stdout, stderr = call(["report", "--out", tmp_path / "nothing"])
    assert code == 2 and stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith(f"petl-bench: error: no results under {tmp_path / 'nothing'}")
    out = tmp_path / "results"
    write_json_atomic(
        out / "sweeps" / "gone.json",
        {
            "grid": "gone",
            "grid_file": str(tmp_path / "gone.yaml"),
            "grid_text": GRID.replace("mmap", "no-such-method"),
            "overrides": [],
            "runs": [],
        },
    )
    code, stdout, _ = call(["report", "--out", out, "--site", tmp_path / "site"])
    assert code == 0 and stdout == f"report: {(tmp_path / 'site' / 'index.html').resolve()}\n"
    assert "cannot be read: " in (tmp_path / "site" / "index.html").read_text()
    assert "unknown method &#x27;no-such-method&#x27;" in (tmp_path / "site" / "grids" / "gone.html").read_text()


def test_every_link_and_image_resolves_to_a_file(swept):
    """Pages and images inside the site; the record, logs, checkpoints and split files inside the
    results folder; nothing fetched from elsewhere."""
    _, out, site = swept
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + 1 + 7  # the index, the grid, one page per record (the stale one too)
    kinds = set()
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        assert parser.links, page
        for tag, url in parser.links:
            assert not re.match(r"^[a-z]+:", url), f"{page}: {url} is not a relative link"
            target = (page.parent / unquote(url)).resolve()
            assert target.is_file(), f"{page}: {url} resolves to no file"
            inside = site.resolve() if tag == "img" or target.suffix == ".html" else out.resolve()
            assert target.is_relative_to(inside), f"{page}: {url} is outside {inside}"
            kinds.add(target.suffix if target.suffix != ".json" else "record")
    assert kinds == {".html", ".png", "record", ".csv", ".log", ".ckpt"}


def test_the_report_in_a_browser(swept, tmp_path):
    _, _, site = swept
    browser = chromium_or_skip()
    index = text_of(dom(browser, site / "index.html", tmp_path))
    assert re.search(
        r"mini table1 Office-Home 9 6 1 1 1 10pct \(6shot\): ZS 82.5, CoOp-MT 85.5, MmAP 87.5 \S+ "
        r"not the paper's setting: model tiny",
        index,
    ), index
    assert "synthetic images" in index

    grid_page = site / "grids" / "mini.html"
    grid_dom = dom(browser, grid_page, tmp_path)
    grid = text_of(grid_dom)
    assert grid.startswith("← all grids and runs NOTE: not the paper's setting (model tiny with weights")
    assert "synthetic images): the paper column is for layout only" in grid
    assert "mini: Office-Home, accuracy (%)" in grid and "10pct (6shot)" in grid
    rows = paper_rows(grid_dom)
    assert rows["header"] == [("task", None), ("ZS", None), ("CoOp-MT", None), ("MmAP", None)]
    # Art: seeds 0 and 1 counted (zeroshot's seed 2 is stale, coop-mt's missing, mmap's failed).
    assert rows["Art"] == [
        ("81.0 ± 1.4 paper 82.9 -1.9 seeds 80.0 82.0", "neg far"),
        ("84.0 ± 1.4 paper 84.3 ± 0.8 -0.3 seeds 83.0 85.0", "neg near"),
        ("86.0 ± 1.4 paper 85.7 ± 0.5 +0.3 seeds 85.0 87.0", "pos near"),
    ]
    assert rows["Clipart"][2] == ("87.0 ± 1.4 paper 76.3 ± 0.6 +10.7 seeds 86.0 88.0", "pos far")
    assert rows["Params (M)"] == [("0 (paper -)", None), ("0.0082 (paper 0.01)", None), ("0.13 (paper 0.13)", None)]
    assert "9 runs: 6 done, 1 stale, 1 failed, 1 missing." in grid
    assert "failed mmap 10pct 2 exit status 1 · log: sweep.log" in grid
    assert "missing coop-mt 10pct 2 no record at" in grid
    assert "stale zeroshot 10pct 2 a record with another config" in grid
    assert re.search(r'<img src="mini/fig1-officehome-10pct.png"', grid_dom)

    mmap = text_of(dom(browser, next(site.glob("runs/officehome/*/6shot/mmap@tiny-tiny/seed0.html")), tmp_path))
    assert "NOTE: not the paper's setting (model tiny with weights" in mmap
    for text in (
        "mini, row mmap: done",
        "group 1: Art, Clipart",
        "group 2: Product, Real World",
        "Art 85.00",
        "Average 86.50",
        "1m23.4s",
        "41.5 training images/s",
        "cpu (x86_64, 2 cores)",
        "torch 2.14.1",
        "method.b 7",
        "The log has no learning-rate column",
        "checkpoint checkpoints/last.ckpt",
    ):
        assert text in mmap, text
    # The pages have no script: their files hold the text Chromium shows (one start-up less per page).
    coop = text_of(next(site.glob("runs/officehome/*/6shot/coop-mt@tiny-tiny/seed0.html")).read_text())
    assert "Learning rate from lr-SGD." in coop
    stale = text_of(next(site.glob("runs/officehome/*/6shot/zeroshot@tiny-tiny/seed2.html")).read_text())
    assert "stale (this record's config differs from the grid's in optim.lr = 0.1, the grid's 0.0035)" in stale
    assert "Nothing trained" in stale and "checkpoint checkpoints/last.ckpt (absent)" in stale

    shot = tmp_path / "grid.png"
    run_chromium(browser, f"--screenshot={shot}", "--window-size=1280,1800", grid_page, tmp_path)
    from PIL import Image, ImageStat

    with Image.open(shot) as image:
        assert image.size == (1280, 1800)
        extrema = ImageStat.Stat(image.convert("L")).extrema[0]
        assert extrema[0] < 60 and extrema[1] > 240  # text on a light page, not a blank or error page
    keep = os.environ.get("PETL_BENCH_SCREENSHOT")  # to look at it: PETL_BENCH_SCREENSHOT=grid.png pytest ...
    if keep:
        shutil.copyfile(shot, keep)


# -- the report as people read it (issue 19, item 4) -------------------------------------------------
EPOCHS, STEPS_PER_EPOCH = 3, 4


def epoch_log(path: Path, accuracy: bool) -> None:
    """A CSV log as the module writes it: per step the loss and `train/lr`, epoch by epoch; with
    `accuracy`, a `val/acc` row at each epoch's end; the test accuracy once, after training."""
    rows = []
    for epoch in range(EPOCHS):
        for i in range(STEPS_PER_EPOCH):
            step = epoch * STEPS_PER_EPOCH + i
            rows.append(f"{epoch},{step},{4.0 - 0.1 * step},{0.0035 * (1 - step / 12)},,")
        if accuracy:
            rows.append(f"{epoch},{step},,,{30.0 + 10 * epoch},")
    rows.append(f"{EPOCHS},{EPOCHS * STEPS_PER_EPOCH},,,,61.5")
    write_text_atomic(path, "epoch,step,train/loss,train/lr,val/acc,test/acc/average\n" + "\n".join(rows) + "\n")


def a_variant(tmp_path, tiny_checkpoint):
    """A coop-mt run with `method.ctx_init` set, on the tiny CLIP: its config and results folder."""
    from petl_bench.runargs import build_run_config

    out = tmp_path / "results"
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = build_run_config(
        "coop-mt",
        "officehome",
        str(tmp_path / "data"),
        "10pct",
        0,
        "tiny",
        str(tiny_checkpoint),
        out=str(out),
        overrides=["method.ctx_init=a photo of a"],
    )
    write_run(cfg, out)
    return cfg, out


def test_the_run_page_draws_train_lr_marks_epochs_and_the_accuracy_per_epoch(tmp_path, tiny_checkpoint):
    import pandas as pd
    from PIL import Image

    from petl_bench import plots
    from petl_bench.report.run_page import curve_notes
    from petl_bench.report.site import build_site

    cfg, out = a_variant(tmp_path, tiny_checkpoint)
    log = record_path(cfg).with_suffix("") / "logs" / "metrics.csv"
    epoch_log(log, accuracy=True)
    build_site(out)
    page = next((out / "report").glob("runs/**/seed0.html"))
    text = text_of(page.read_text())
    assert "Learning rate from train/lr." in text and "no learning-rate column" not in text
    assert "Dotted lines mark where each of epochs 2 to 3 begins." in text
    assert "Accuracy per epoch from val/acc." in text
    width, height = plots.FIGSIZE["curves"]
    with Image.open(page.with_name("seed0.curves.png")) as image:  # loss, learning rate, accuracy
        assert image.size == (round(3 * width * plots.DPI), round(height * plots.DPI))

    frame = pd.read_csv(log)
    assert plots.epoch_starts(plots.training_steps(frame)) == [(1, 4), (2, 8)]
    assert plots.epoch_accuracy(frame)["val/acc"].tolist() == [30.0, 40.0, 50.0]
    epoch_log(log, accuracy=False)
    frame = pd.read_csv(log)
    assert plots.epoch_accuracy(frame).empty and plots.lr_columns(frame) == ["train/lr"]
    assert "The log holds no accuracy per epoch" in " ".join(curve_notes(frame))


def test_epoch_marks_change_the_loss_plot(tmp_path):
    """The same steps and losses in three epochs and in one: the marks are the only difference."""
    import pandas as pd
    from PIL import Image, ImageChops

    from petl_bench import plots

    epoch_log(tmp_path / "three.csv", accuracy=False)
    three = pd.read_csv(tmp_path / "three.csv")
    one = three.assign(epoch=0)
    pictures = [plots.run_curves(log, "run", tmp_path / f"{name}.png") for name, log in (("3", three), ("1", one))]
    with Image.open(pictures[0]) as marked, Image.open(pictures[1]) as plain:
        assert marked.size == plain.size
        assert ImageChops.difference(marked.convert("RGB"), plain.convert("RGB")).getbbox() is not None


def test_a_set_variant_reads_as_a_short_label_and_its_hash(tmp_path, tiny_checkpoint):
    from petl_bench.report.site import build_site
    from petl_bench.report.state import run_argv_of, run_label

    cfg, out = a_variant(tmp_path, tiny_checkpoint)
    index = build_site(out)
    record = json.loads(record_path(cfg).read_text())
    assert record["run_name"] == f"coop-mt-ctx_inita_photo_of_a@tiny-{tiny_checkpoint.stem}"
    label = f"CoOp-MT (ctx_init=a photo of a) [tiny] · {cfg.sha256()[:8]}"
    assert f'title="{record["run_name"]}">{label}</a>' in index.read_text()
    page = text_of(next((out / "report").glob("runs/**/seed0.html")).read_text())
    assert page.startswith("← all grids and runs NOTE: not the paper's setting")
    assert "CoOp-MT (ctx_init=a photo of a) [tiny] on Office-Home 10pct (6shot), seed 0" in page
    assert f"run name {record['run_name']} (its folder)" in page
    assert "--set --set method.ctx_init=a photo of a command petl-bench run --method=coop-mt" in page
    assert f"--model=tiny --pretrained={tiny_checkpoint}" in page and "'--set=method.ctx_init=a photo of a'" in page
    long = {**record, "config": {**record["config"], "params": {"n_ctx": 16, "ctx_init": "a photo of a small"}}}
    assert run_label(long, run_argv_of(long)) == "CoOp-MT (ctx_init=a photo of a sm…) [tiny]"
    plain = {**record, "config": {**record["config"], "params": {"n_ctx": 16, "ctx_init": ""}}}
    assert run_label(plain, run_argv_of(plain)) == "CoOp-MT [tiny]"
    # A config this petl-bench cannot rebuild (a method gone, a dataset it no longer reads) has no
    # --set list, and its page says so rather than the report failing.
    gone = {**record, "config": {**record["config"], "method": "no-such-method"}}
    unread = {**record, "config": {**record["config"], "data": {**record["config"]["data"], "dataset": "gone"}}}
    assert run_argv_of(gone) is None and run_argv_of(unread) is None
    write_json_atomic(record_path(cfg), unread)
    build_site(out)
    page = text_of(next((out / "report").glob("runs/**/seed0.html")).read_text())
    assert "--set this petl-bench cannot rebuild the config" in page and "CoOp-MT [tiny] on" in page


def test_the_deltas_are_muted_where_the_paper_column_is_for_layout_only(swept, tmp_path):
    """The mini grid runs the tiny CLIP on synthetic images: its differences sit in the muted block
    and the legend says why; the same grid in the paper's setting keeps them coloured. There MmAP
    has seed 0 only: its cells say "one seed", and the legend which cells those are."""
    _, out, site = swept
    grid = (site / "grids" / "mini.html").read_text()
    assert '<div class="layout-only"><table class="paper">' in grid
    assert "in grey: not the paper's setting, so the paper column is for layout only" in text_of(grid)
    assert ".layout-only .diff.pos,.layout-only .diff.neg" in grid  # the style sheet inlined

    grid_path = tmp_path / "mini.yaml"
    grid_path.write_text(textwrap.dedent(GRID).replace("model.arch: tiny", "model.arch: ViT-B-16"))
    results = tmp_path / "results"
    paper_grid = expand_grid(grid_path, [f"data.root={out.parent / 'data'}"], str(results))
    for run in [r for r in paper_grid.runs if r.cfg.method != "mmap" or r.cfg.data.seed == 0]:
        write_json_atomic(
            record_path(run.cfg),
            {
                "method": run.cfg.method,
                "run_name": run.cfg.run_name,
                "dataset": "officehome",
                "split": "6shot",
                "seed": run.cfg.data.seed,
                "model": "ViT-B-16",
                "pretrained": "openai",
                "tasks": OFFICEHOME_DOMAINS,
                "accuracy": accuracy_of(run.cfg.method, run.cfg.data.seed),
                "trainable_params": 0,
                "config": run.cfg.to_dict(),
                "config_sha256": run.cfg.sha256(),
            },
        )
    sweep_state.save(paper_grid, [{"outcome": "done"}] * len(paper_grid.runs))
    code, _, stderr = call(["report", "--out", results])
    assert code == 0, stderr
    grid = (results / "report" / "grids" / "mini.html").read_text()
    assert '<div><table class="paper">' in grid and "layout-only" not in grid.split("</style>")[1]
    assert "coloured by sign" in text_of(grid) and "7 of the grid's 9 runs counted, the others" in text_of(grid)
    assert "ours, mean ± sample std over 3 seeds; a cell without ± has one seed;" in text_of(grid)
    assert paper_rows(grid)["Art"][2] == ("85.0 paper 85.7 ± 0.5 -0.7 one seed 85.0", "neg far")


# -- the browser -----------------------------------------------------------------------------------
def chromium_or_skip() -> str:
    """Debian's chromium (`.ci/run` installs it). CI must have it; elsewhere the test skips."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no chromium on PATH: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on PATH (apt-get install chromium; CI installs it)")
    return browser


def run_chromium(browser: str, action: str, *rest) -> str:
    *options, page, profile = rest
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile / 'chromium'}",
            action,
            *options,
            Path(page).resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dom(browser: str, page: Path, profile: Path) -> str:
    """The page's DOM as Chromium rendered it from the file (`--dump-dom`)."""
    dumped = run_chromium(browser, "--dump-dom", page, profile)
    assert re.match(r"\s*(<!DOCTYPE html>\s*)?<html", dumped), dumped[:200]
    return dumped


def text_of(html: str) -> str:
    """The text a reader sees in the page, white space collapsed."""
    html = re.sub(r"<head>.*?</head>", " ", html, flags=re.S)
    html = re.sub(r"</?(a|span|code)\b[^>]*>", "", html)  # inline: no space of their own
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def paper_rows(html: str) -> dict[str, list[tuple[str, str | None]]]:
    """The paper table: row name -> (cell text, the classes of its difference besides "diff") per cell;
    "header" -> the header row."""
    table = re.search(r'<table class="paper">.*?</table>', html, re.S).group(0)
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S):
        cells = []
        for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S):
            diff = re.search(r'class="diff ([^"]+)"', cell)
            cells.append((text_of(cell), diff.group(1) if diff else None))
        if "header" not in rows:
            rows["header"] = cells
        elif len(cells) > 1:
            rows[cells[0][0]] = cells[1:]
    return rows


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src"):
                self.links.append((tag, value))
