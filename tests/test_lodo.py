"""Leave-one-domain-out (`data.holdout`, DomainBed's protocol): the pooled source's split, the held-out
test set, the config's checks and hash, the lodo grid and its table, on generated data and the tiny CLIP."""

import csv
import json
from pathlib import Path

import pytest

from petl_bench.config import RunConfig, root_folder
from petl_bench.datamodules.catalog import DOMAINS
from petl_bench.datamodules.holdout import as_read, draw_held_out_split, held_out
from petl_bench.datamodules.records import Manifest, Record
from petl_bench.runargs import build_run_config

from cli_calls import call


def tiny_lodo_run(method, dataset, root, out, holdout, *extra):
    return [
        "run",
        f"--method={method}",
        f"--dataset={dataset}",
        f"--root={root}",
        "--split=2shot",
        "--model=tiny",
        f"--out={out}",
        "--no-progress",
        "--set=data.num_workers=0",
        "--set=train.epochs=1",
        f"--set=data.holdout={holdout}",
        *extra,
    ]


def test_the_domains_are_the_readers():
    from petl_bench.datamodules.datasets import canonical_tasks

    for dataset, domains in DOMAINS.items():
        assert [task.name for task in canonical_tasks(dataset)] == list(domains), dataset


def _fixed_split_manifest() -> Manifest:
    """3 domains x 2 classes x (3 train, 2 val, 2 test) images, parts as a dataset's split file gives."""
    names = ["c0", "c1"]
    records = [
        Record(f"{d}/{names[y]}/{part}{i}.jpg", y, d, names[y], part)
        for d in ("a", "b", "c")
        for y in range(2)
        for part, n in (("train", 3), ("val", 2), ("test", 2))
        for i in range(n)
    ]
    return Manifest(Path("/nowhere"), ["a", "b", "c"], names, records, [])


def test_a_held_out_split_draws_from_the_pooled_source_and_tests_the_whole_held_out_domain():
    manifest = _fixed_split_manifest()
    one_task, sources = held_out(manifest, "c")
    assert one_task.domains == ["c"] and {r.domain for r in one_task.records} == {"c"}
    assert sources == {r.path: r.domain for r in manifest.records if r.domain != "c"}
    split = draw_held_out_split(one_task, sources, shots=4, seed=0)
    # 4 shots per class from the pooled train parts of a and b (3 + 3 each), min(4, 4) val shots from 2 + 2
    assert (len(split.train), len(split.val)) == (2 * 4, 2 * 4)
    assert all(r.path in sources and r.part == "train" for r in split.train)
    assert all(r.path in sources and r.part == "val" for r in split.val)
    assert {r.path for r in split.train} != {r.path for r in split.train if r.path.startswith("a/")}  # both pooled
    held = {r.path for r in manifest.records if r.domain == "c"}
    assert [r.path for r in split.test] == sorted(held, key=lambda p: (p.split("/")[1], p))  # every part of c
    assert len(held) == 2 * 7
    assert split == draw_held_out_split(one_task, sources, shots=4, seed=0)  # seeded
    assert split != draw_held_out_split(one_task, sources, shots=4, seed=1)
    written = as_read(split, sources, "c")
    assert {r.domain for r in written.train} == {"a", "b"} and {r.domain for r in written.test} == {"c"}


def test_a_held_out_run_trains_on_the_others_and_tests_every_held_out_image(pacs_root, tmp_path):
    from petl_bench.datamodules import read_manifest

    out = tmp_path / "results"
    code, _, stderr = call(tiny_lodo_run("coop", "pacs", pacs_root, out, "sketch"))
    assert code == 0, stderr
    folder = out / "runs" / "pacs" / root_folder(pacs_root) / "2shot-holdout-sketch"
    record = json.loads((folder / "coop@tiny" / "seed0.json").read_text())
    manifest = read_manifest("pacs", pacs_root)
    sketch = {r.path for r in manifest.records if r.domain == "sketch"}
    n_classes = len(manifest.classnames)
    assert (record["holdout"], record["tasks"]) == ("sketch", ["sketch"])
    assert list(record["accuracy"]) == ["sketch", "average"]
    assert (record["train_images"], record["val_images"], record["test_images"]) == (2 * n_classes, 0, len(sketch))
    assert len(sketch) == 7 * n_classes  # the fixture's 7 images per class
    with open(record["split_file"], newline="") as f:
        rows = list(csv.DictReader(f))
    train = [row for row in rows if row["subset"] == "train"]
    assert {row["domain"] for row in train} <= {"art_painting", "cartoon", "photo"}
    assert not {row["path"] for row in train} & sketch  # no held-out image in training
    assert {row["path"] for row in rows if row["subset"] == "test"} == sketch  # every held-out image in test
    assert {row["domain"] for row in rows if row["subset"] == "test"} == {"sketch"}


def test_holdout_refusals_in_one_line(pacs_root, tmp_path):
    refused = {
        ("coop", "pacs", "skech"): "data.holdout='skech': not a domain of PACS (did you mean sketch?)",
        ("coop", "pacs", "x"): "data.holdout='x': not a domain of PACS "
        "(its domains: art_painting, cartoon, photo, sketch)",
        ("coop", "dtd", "sketch"): "data.holdout='sketch': dtd has no domains to hold out (multi-domain: Office-Home, "
        "MiniDomainNet, PACS, VLCS, Office-31, TerraIncognita, DomainNet)",
        ("coop-mt", "pacs", "sketch"): "coop-mt on data.holdout=sketch: a leave-one-domain-out run trains one task "
        "(the pooled source domains), where a shared set is coop's; run coop",
    }
    for (method, dataset, holdout), message in refused.items():
        code, _, stderr = call(tiny_lodo_run(method, dataset, pacs_root, tmp_path, holdout))
        assert (code, stderr) == (2, f"petl-bench: error: {message}\n")


def test_no_holdout_hashes_as_before_and_each_holdout_apart():
    from petl_bench.results import record_path

    cfg = build_run_config("coop", "officehome", "/data", "6shot", model="tiny")
    before = cfg.to_dict()
    del before["data"]["holdout"]  # a config written before leave-one-domain-out
    assert RunConfig.sha256_of(before) == cfg.sha256()
    held = [
        build_run_config("coop", "officehome", "/data", "6shot", model="tiny", overrides=[f"data.holdout={d}"])
        for d in DOMAINS["officehome"]
    ]
    assert len({c.sha256() for c in [cfg, *held]}) == 5
    assert record_path(held[-1]).parts[-3] == "6shot-holdout-Real_World"


def _lodo_grid(path: Path, body: str) -> Path:
    path.write_text(
        "name: lodo-test\ntable: lodo\nprotocol: lodo\nsplits: [2shot]\nseeds: [0]\n"
        "set: {model.arch: tiny, train.epochs: 1, data.num_workers: 0}\n" + body
    )
    return path


def test_the_lodo_grids_dry_run_lists_a_run_per_held_out_domain():
    code, stdout, stderr = call(["sweep", "lodo", "--dry-run", "--set", "data.root=/data"])
    assert code == 0, stderr
    listed = [line.split() for line in stdout.splitlines() if line.startswith("  todo")]
    # 9 methods x (PACS 4 + VLCS 4 + Office-Home 4 + TerraIncognita 4 + DomainNet 6 held-out domains) x 3 seeds
    assert len(listed) == 9 * 22 * 3 and stdout.splitlines()[-1] == "0 done, 0 stale, 594 to run"
    grid = "9 methods x datasets pacs, vlcs, officehome, terraincognita, domainnet x splits 16shot x seeds 0, 1, 2"
    assert f"594 runs = {grid} x each domain held out;" in stdout
    folders = {Path(row[-1]).parts[-3] for row in listed if row[2] == "domainnet"}
    assert folders == {f"16shot-holdout-{d}" for d in DOMAINS["domainnet"]}


def test_lodo_grid_refusals_in_one_line(tmp_path):
    grid = tmp_path / "g.yaml"
    for body, message in (
        ("dataset: dtd\nmethods: [coop]\n", "datasets: dtd has no domains to hold out (the lodo protocol takes "
         "officehome, minidomainnet, pacs, vlcs, office31, terraincognita, domainnet)"),
        ("dataset: pacs\nmethods: [{method: coop, set: {data.holdout: photo}}]\n",
         "set: the lodo protocol holds out each domain itself (no data.holdout)"),
        ("dataset: pacs\nmethods: [coop-mt]\n", "methods[0]: coop-mt on data.holdout=art_painting: a leave-one-domain-"
         "out run trains one task (the pooled source domains), where a shared set is coop's; run coop"),
    ):  # fmt: skip
        code, _, stderr = call(["sweep", _lodo_grid(grid, body), "--dry-run"])
        assert (code, stderr.strip()) == (2, f"petl-bench: error: {grid}: {message}")


def test_the_lodo_layout_averages_the_held_out_domains(tmp_path):
    import pandas as pd

    from petl_bench.report.summary import Summary
    from petl_bench.report.tables import layout

    accuracies = {"Caltech101": (70.0, 74.0), "LabelMe": (60.0, 62.0), "SUN09": (50.0, 50.0), "VOC2007": (40.0, 44.0)}
    seeds = pd.DataFrame(
        [
            {"label": "coop", "method": "coop", "dataset": "vlcs", "split": f"2shot-holdout-{domain}", "seed": seed,
             "holdout": domain, "task": "average", "task_index": 1, "accuracy": accuracy, "trainable_params": 8}
            for domain, values in accuracies.items()
            for seed, accuracy in zip((0, 1), values, strict=True)
        ]
    )  # fmt: skip
    splits = [f"2shot-holdout-{d}" for d in accuracies]
    summary = Summary(
        "lodo", "lodo", ["vlcs"], ["coop"], {"coop": "coop"}, splits, ["average"], seeds, pd.DataFrame(), {},
        tmp_path, 8, [], [],
    )  # fmt: skip
    (block,) = layout(summary).blocks
    assert block.title == "VLCS, 2shot"
    assert [name for name, _ in block.rows] == [*DOMAINS["vlcs"], "Average"]
    cells = {name: cells[0] for name, cells in block.rows}
    assert (cells["Caltech101"].mean, cells["Caltech101"].std) == (72.0, pytest.approx(2 * 2**0.5))
    assert cells["SUN09"].std == 0.0 and cells["Average"].mean == (72 + 61 + 50 + 42) / 4
    partial = Summary(
        "lodo", "lodo", ["vlcs"], ["coop"], {"coop": "coop"}, splits, ["average"], seeds[seeds.holdout != "SUN09"],
        pd.DataFrame(), {}, tmp_path, 8, [], [],
    )  # fmt: skip
    rows = dict(layout(partial).blocks[0].rows)
    assert rows["SUN09"] == [None] and rows["Average"] == [None]  # no average without every domain


@pytest.mark.slow
def test_a_lodo_sweep_through_table_and_report(office31_root, tmp_path):
    out = tmp_path / "results"
    grid = _lodo_grid(tmp_path / "lodo.yaml", "dataset: office31\nmethods: [zeroshot, coop]\n")
    sweep = ["sweep", grid, "--out", out, "--set", f"data.root={office31_root}"]
    code, stdout, stderr = call(sweep)
    assert code == 0 and "lodo-test: 6 done now" in stdout, stdout + stderr
    folder = out / "runs" / "office31" / root_folder(office31_root)
    accuracy = {
        (path.parent.name, path.parents[1].name.removeprefix("2shot-holdout-")): json.loads(path.read_text())
        for path in folder.glob("2shot-holdout-*/*/seed0.json")
    }
    assert sorted(accuracy) == sorted((m, d) for m in ("zeroshot@tiny", "coop@tiny") for d in DOMAINS["office31"])
    code, stdout, stderr = call(["table", grid, "--out", out])
    assert code == 0, stderr
    table = [[c.strip() for c in line.strip("|").split("|")] for line in stdout.splitlines() if line.startswith("| ")]
    rows = {cells[0]: cells[1:] for cells in table}
    for domain in DOMAINS["office31"]:
        record = accuracy[("coop@tiny", domain)]
        assert record["tasks"] == [domain] and rows[domain][1] == f"{record['accuracy']['average']:.1f}"
    mean = sum(accuracy[("coop@tiny", d)]["accuracy"]["average"] for d in DOMAINS["office31"]) / 3
    assert rows["Average"][1] == f"{mean:.1f}" and rows["held out"] == ["ZS", "CoOp"]
    code, stdout, stderr = call(["report", "--out", out])
    assert code == 0, stderr
    page = (out / "report" / "grids" / "lodo-test.html").read_text()
    assert "leave-one-domain-out" in page and "Office-31, 2shot" in page
    assert "every image of the held-out domain" in page
    pages = [path.read_text() for path in (out / "report").rglob("*.html")]
    for domain in DOMAINS["office31"]:  # each run's page says which domain it held out
        assert sum(f"{domain} held out (trained on the other domains)" in text for text in pages) == 2  # ZS, CoOp


def test_a_held_out_jobs_title_names_the_held_out_domain(tmp_path):
    from petl_bench.sweep.grid import expand_grid
    from petl_bench.sweep.jobs import Job

    grid = expand_grid(_lodo_grid(tmp_path / "g.yaml", "dataset: vlcs\nmethods: [coop]\n"), [], str(tmp_path))
    titles = [Job(i + 1, len(grid.runs), run, []).title for i, run in enumerate(grid.runs)]
    assert titles == [f"[{i}/4] coop 2shot seed0, {d} held out" for i, d in enumerate(DOMAINS["vlcs"], 1)]


def test_a_held_out_sources_transfer_keeps_its_domain_held_out_on_its_own_dataset_only():
    from petl_bench.transfer import transfer_config

    source = build_run_config("coop", "pacs", "/data/pacs", "2shot", model="tiny", overrides=["data.holdout=sketch"])
    novel = transfer_config(source, None, None, "novel")
    assert (novel.data.holdout, novel.data.classes) == ("sketch", "novel")
    assert transfer_config(source, "vlcs", "/data/vlcs", "all").data.holdout == ""  # VLCS tested whole
