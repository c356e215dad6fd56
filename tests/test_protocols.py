"""The generalisation protocols: CoOp's class subsets (base / novel), transfer evaluation of a
finished run, base-to-novel's harmonic mean and its table, on the tiny CLIP and generated data."""

import json
import re
from pathlib import Path

import pytest

from petl_bench.config import RunConfig, root_folder
from petl_bench.datamodules.classes import class_subset, subsample_classes
from petl_bench.datamodules.records import Manifest, Record
from petl_bench.errors import UserError
from petl_bench.results import record_path
from petl_bench.runargs import build_run_config

from cli_calls import call

FIVE = ["anchor", "bicycle", "candle", "dolphin", "easel"]  # the generated folder set's first 5 classes


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory) -> Path:
    """The folder layout, 4 domains x 5 classes x 3 images: base = 3 classes, novel = 2."""
    from petl_bench.datamodules.synth import write_synthetic

    root = tmp_path_factory.mktemp("five")
    write_synthetic(root, "folder", per_class=3, n_classes=5)
    return root


def tiny_run(method, root, out, *extra, dataset="folder"):
    return [
        "run",
        f"--method={method}",
        f"--dataset={dataset}",
        f"--root={root}",
        "--split=1shot",
        "--model=tiny",
        f"--out={out}",
        "--no-progress",
        "--set=data.num_workers=0",
        "--set=train.epochs=1",
        *extra,
    ]


# -- 1. class subsets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, n_base", [(100, 50), (101, 51)])
def test_halves_are_coops(n, n_base):
    labels = list(range(n))[::-1]  # any order: CoOp sorts
    base, novel = class_subset(labels, "base"), class_subset(labels, "novel")
    assert base == list(range(n_base)) and novel == list(range(n_base, n))
    assert class_subset(labels, "all") == list(range(n))


def test_halves_of_gapped_labels_and_an_unknown_subset():
    assert class_subset([9, 3, 5, 3, 1, 7], "base") == [1, 3, 5]
    assert class_subset([9, 3, 5, 3, 1, 7], "novel") == [7, 9]
    with pytest.raises(UserError, match=r"^unknown class subset 'new' \(known: all, base, novel\)$"):
        class_subset([0, 1], "new")


def _manifest(domains=("a", "b"), labels_of=None) -> Manifest:
    names = ["c0", "c1", "c2", "c3", "c4"]
    records = [
        Record(f"{d}/{names[y]}/{part}{i}.jpg", y, d, names[y], part)
        for d in domains
        for y in (labels_of or {}).get(d, range(5))
        for part in ("train", "val", "test")
        for i in range(2)
    ]
    return Manifest(Path("/nowhere"), list(domains), names, records, [])


def test_subsets_relabel_every_part_and_the_class_names():
    manifest = _manifest()
    base, novel = subsample_classes(manifest, "base"), subsample_classes(manifest, "novel")
    assert base.classnames == ["c0", "c1", "c2"] and novel.classnames == ["c3", "c4"]
    assert {(r.label, r.classname) for r in novel.records} == {(0, "c3"), (1, "c4")}
    assert {(r.label, r.classname) for r in base.records} == {(0, "c0"), (1, "c1"), (2, "c2")}
    for subset, n in ((base, 3), (novel, 2)):
        for part in ("train", "val", "test"):
            assert len([r for r in subset.records if r.part == part]) == 2 * n * 2  # domains x classes x images
        assert [t.classnames for t in subset.tasks] == [tuple(subset.classnames)] * 2
    assert {r.path for r in base.records} | {r.path for r in novel.records} == {r.path for r in manifest.records}
    assert subsample_classes(manifest, "all") is manifest


def test_tasks_whose_halves_differ_are_refused():
    manifest = _manifest(labels_of={"b": range(4)})  # b has no training image of c4: its halves are 0-1 / 2-3
    with pytest.raises(UserError, match=r"^the base classes of task b differ from those of a "):
        subsample_classes(manifest, "base")


def test_the_hash_of_all_classes_is_todays_and_subsets_hash_apart():
    cfg = build_run_config("coop", "folder", "/data", "2shot", model="tiny")
    today = cfg.to_dict()
    del today["data"]["classes"]  # a config written before class subsets
    assert RunConfig.sha256_of(today) == cfg.sha256()
    subsets = ("all", "base", "novel")
    hashes = {build_run_config("coop", "folder", "/data", "2shot", model="tiny", classes=c).sha256() for c in subsets}
    assert len(hashes) == 3


def test_a_base_run_and_its_record(five_classes, tmp_path):
    out = tmp_path / "results"
    code, _, stderr = call(tiny_run("zeroshot", five_classes, out, "--classes=base"))
    assert code == 0, stderr
    folder = out / "runs" / "folder" / root_folder(five_classes) / "1shot-base" / "zeroshot@tiny"
    record = json.loads((folder / "seed0.json").read_text())
    assert record["classes"] == "base" and record["config"]["data"]["classes"] == "base"
    assert (record["train_images"], record["test_images"]) == (4 * 3 * 1, 4 * 3 * 2)
    split = out / "splits" / "folder" / root_folder(five_classes) / "1shot-base" / "seed0.csv"
    assert record["split_file"] == str(split)
    rows = split.read_text().splitlines()[1:]
    assert {tuple(row.split(",")[2:4]) for row in rows} == {("anchor", "0"), ("bicycle", "1"), ("candle", "2")}


# -- 2, 3. transfer runs ------------------------------------------------------------------------------
def _record(out: Path, root: Path, split: str, run_name: str) -> Path:
    return out / "runs" / "folder" / root_folder(root) / split / run_name / "seed0.json"


def _transferred(source: Path) -> Path:
    """The record of the novel-class transfer of a base run's record `source`."""
    sha = json.loads(source.read_text())["config_sha256"]
    return source.parents[2] / "1shot-novel" / f"{source.parent.name}-from-{sha[:10]}" / "seed0.json"


def test_a_zeroshot_transfer_to_novel_is_a_novel_zeroshot_run(five_classes, tmp_path):
    out = tmp_path / "results"
    assert call(tiny_run("zeroshot", five_classes, out, "--classes=base"))[0] == 0
    source = _record(out, five_classes, "1shot-base", "zeroshot@tiny")
    code, stdout, stderr = call(["eval", "--from", source.with_suffix(""), "--classes", "novel", "--no-progress"])
    assert code == 0, stderr
    sha = json.loads(source.read_text())["config_sha256"]
    path = _record(out, five_classes, "1shot-novel", f"zeroshot@tiny-from-{sha[:10]}")
    assert f"record: {path}" in stdout
    record = json.loads(path.read_text())
    assert record["transfer_from"] == {"run": str(source.relative_to(out)), "config_sha256": sha}
    assert record["config"]["transfer_from"] == record["transfer_from"] and record["classes"] == "novel"
    assert record["test_images"] == 4 * 2 * 2  # domains x novel classes x (3 - 1 shot)
    assert call(tiny_run("zeroshot", five_classes, out, "--classes=novel"))[0] == 0
    novel = json.loads(_record(out, five_classes, "1shot-novel", "zeroshot@tiny").read_text())
    assert record["accuracy"] == novel["accuracy"]  # the same model on the novel class names and images
    code, stdout, _ = call(["eval", "--from", source, "--classes", "novel"])
    assert code == 0 and f"already done: {path} (--force to run again)" in stdout
    code, _, stderr = call(["eval", "--from", path, "--classes", "base"])  # a transfer run is no source
    tested = source.relative_to(out)
    assert (code, stderr.strip()) == (
        2,
        f"petl-bench: error: --from {path}: a transfer run; transfer from the run it tested ({tested})",
    )


def test_a_coop_transfer_tests_the_source_context(five_classes, tmp_path, tiny_backbone):
    import lightning as L

    from petl_bench.checkpoints import load_plain
    from petl_bench.config import DataConfig
    from petl_bench.datamodules import MultiDomainDataModule
    from petl_bench.methods.configs import CoOpConfig
    from petl_bench.methods.coop import CoOp

    out = tmp_path / "results"
    assert call(tiny_run("coop", five_classes, out, "--classes=base"))[0] == 0
    source = _record(out, five_classes, "1shot-base", "coop@tiny")
    code, stdout, stderr = call(["eval", "--from", source, "--classes", "novel", "--no-progress"])
    assert code == 0, stderr
    record = json.loads(_transferred(source).read_text())
    # The same context, loaded by hand into a CoOp on the novel classes, scores the same.
    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(five_classes), "1shot", classes="novel", num_workers=0, cache_dir="off"),
        tiny_backbone,
        out=tmp_path / "by-hand",
    )
    data.setup()
    module = CoOp(CoOpConfig(), tiny_backbone, data.tasks)
    module.load_trainable_state(load_plain(source.with_suffix("") / "checkpoints" / "last.ckpt")["state_dict"])
    L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(module, data, verbose=False)
    assert record["accuracy"] == pytest.approx({k: round(v, 4) for k, v in module.test_accuracy.items()}, abs=1e-4)
    code, stdout, _ = call(["eval", "--from", source, "--classes", "novel", "--force", "--no-progress"])
    assert code == 0 and f"record: {_transferred(source)}" in stdout  # tested again, not skipped


def test_transfers_refused_in_one_line(five_classes, pacs_root, tmp_path):
    out = tmp_path / "results"
    assert (
        call(tiny_run("coop", five_classes, out, "--set=train.fast_dev_run=false", "--set=data.batch_size=4"))[0] == 0
    )
    source = _record(out, five_classes, "1shot", "coop@tiny")
    refused = {
        ("--classes", "all"): "the target is the source's own data (folder, all classes): name another --dataset, "
        "--root or --classes (`eval --ckpt` re-evaluates a run)",
        ("--dataset", "pacs"): "--root: the pacs folder is needed (the source ran on folder)",
        ("--dataset", "pacs", "--root", str(pacs_root)): "coop holds a parameter set per task (art, clipart, "
        "product, real world): it transfers to the same tasks, or from one task to one, not to art_painting, "
        "cartoon, photo, sketch",
    }
    for extra, message in refused.items():
        code, _, stderr = call(["eval", "--from", source, *extra, "--no-progress"])
        assert (code, stderr.strip().splitlines()[-1]) == (2, f"petl-bench: error: {message}")
    code, _, stderr = call(["eval", "--from", tmp_path / "nothing.json"])
    assert (code, stderr.strip()) == (
        2,
        f"petl-bench: error: --from {tmp_path / 'nothing.json'}: no record {tmp_path / 'nothing.json'}",
    )


def test_a_linear_probe_is_refused_another_class_subset(five_classes, tmp_path):
    out = tmp_path / "results"
    assert call(tiny_run("linear-probe", five_classes, out, "--classes=base", "--set=method.c=1.0"))[0] == 0
    source = _record(out, five_classes, "1shot-base", "linear-probe-c1.0@tiny")
    code, _, stderr = call(["eval", "--from", source, "--classes", "novel"])
    assert (code, stderr) == (
        2,
        "petl-bench: error: linear-probe cannot score classes it was not trained on (it holds a weight per trained "
        "class): no transfer from folder base classes to folder novel classes\n",
    )
    assert not (out / "runs" / "folder" / root_folder(five_classes) / "1shot-novel").exists()


def test_a_closed_vocabulary_method_transfers_nowhere_else(five_classes, tmp_path):
    from petl_bench.transfer import Source, refusal

    cfg = build_run_config("linear-probe", "folder", str(five_classes), "1shot", model="tiny", classes="base")
    source = Source(cfg, cfg.params, {"tasks": ["art"]}, tmp_path / "seed0.json")
    novel = build_run_config("linear-probe", "folder", str(five_classes), "1shot", model="tiny", classes="novel")
    assert refusal(source, novel, open_vocabulary=False, shared=False) == (
        "linear-probe cannot score classes it was not trained on (it holds a weight per trained class): "
        "no transfer from folder base classes to folder novel classes"
    )
    assert refusal(source, novel, open_vocabulary=True, shared=False) is None
    other_root = build_run_config("linear-probe", "folder", str(tmp_path), "1shot", model="tiny", classes="base")
    assert refusal(source, other_root, open_vocabulary=False, shared=False, tasks=["art"]) is None
    assert refusal(source, other_root, open_vocabulary=True, shared=False, tasks=["photo"]) is None  # one to one


# -- 4. the harmonic mean, published numbers, the base2novel table --------------------------------------
def test_published_averages_reproduce_their_hm():
    from petl_bench.report.paper import harmonic_mean

    assert round(harmonic_mean(82.28, 75.14), 2) == 78.55  # MaPLe, 11-dataset average
    assert round(harmonic_mean(80.47, 71.69), 2) == 75.83  # CoCoOp


def test_every_published_row_is_cited_and_consistent():
    from petl_bench.datamodules.catalog import COOP_DATASETS
    from petl_bench.report.paper import harmonic_mean, published_base2novel

    table = published_base2novel()
    assert {"coop", "cocoop", "kgcoop", "maple", "promptsrc"} <= set(table.method)
    assert table.source.str.contains(r"Table 1").all()
    for method, rows in table.groupby("method"):
        assert sorted(rows.dataset) == sorted([*COOP_DATASETS, "average"]), method
        for r in rows.itertuples():
            assert abs(harmonic_mean(r.base, r.novel) - r.hm) <= 0.01, (method, r.dataset)
        per_dataset, average = rows[rows.dataset != "average"], rows[rows.dataset == "average"].iloc[0]
        assert (
            abs(per_dataset.base.mean() - average.base) <= 0.01
            and abs(per_dataset.novel.mean() - average.novel) <= 0.01
        )


def _b2n_grid(path: Path, datasets: str, methods: str = "zeroshot, coop") -> Path:
    path.write_text(
        f"name: b2n\ntable: base2novel\ndatasets: [{datasets}]\nprotocol: base2novel\nsplits: [1shot]\n"
        f"seeds: [0]\nset: {{model.arch: tiny, train.epochs: 1, data.num_workers: 0}}\nmethods: [{methods}]\n"
    )
    return path


@pytest.mark.slow
def test_a_base2novel_sweep_through_table_and_report(five_classes, pacs_root, tmp_path):
    from petl_bench.report import render, summarize
    from petl_bench.report.paper import harmonic_mean
    from petl_bench.sweep.grid import expand_grid

    data, out = tmp_path / "data", tmp_path / "results"  # both datasets in their folders under one root
    data.mkdir()
    (data / "folder").symlink_to(five_classes)
    (data / "pacs").symlink_to(pacs_root)
    path = _b2n_grid(tmp_path / "b2n.yaml", "folder, pacs", "zeroshot, coop, tip-adapter-f")
    sweep = ["sweep", path, "--out", out, "--set", f"data.root={data}"]
    code, stdout, _ = call([*sweep, "--dry-run"])
    listed = [line.split() for line in stdout.splitlines() if line.startswith("  ")]
    # each open-vocabulary run twice (its base run, then its novel transfer); tip-adapter-f's once
    trained = [(method, dataset) for method in ("zeroshot", "coop") for dataset in ("folder", "pacs") for _ in "bn"]
    trained += [("tip-adapter-f", "folder"), ("tip-adapter-f", "pacs")]
    assert [(r[0], r[1], r[2], r[3]) for r in listed] == [("todo", m, d, "1shot") for m, d in trained]
    assert [Path(r[-1]).parts[-3] for r in listed] == ["1shot-base", "1shot-novel"] * 4 + ["1shot-base"] * 2
    code, stdout, stderr = call(sweep)
    assert code == 0, stdout + stderr
    assert "b2n: 10 done now" in stdout and " 0 failed" in stdout
    # A row per dataset, Base / Novel / HM per method, the Average row.
    summary = summarize(expand_grid(path, [f"data.root={data}"], str(out)))
    assert summary.n_counted == 10 and not summary.missing
    accuracy = {
        (r.dataset, r.label, r.split): r.accuracy for r in summary.seeds[summary.seeds.task == "average"].itertuples()
    }
    text = render(summary, "md")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["dataset"][:3] == ["ZS Base", "ZS Novel", "ZS HM"]
    for dataset, title in (("folder", "folder"), ("pacs", "PACS")):
        base, novel = accuracy[(dataset, "coop", "1shot-base")], accuracy[(dataset, "coop", "1shot-novel")]
        assert rows[title][3:6] == [f"{base:.2f}", f"{novel:.2f}", f"{harmonic_mean(base, novel):.2f}"]
    base = sum(accuracy[(d, "coop", "1shot-base")] for d in ("folder", "pacs")) / 2
    novel = sum(accuracy[(d, "coop", "1shot-novel")] for d in ("folder", "pacs")) / 2
    hm = harmonic_mean(base, novel)
    assert rows["Average"][3:6] == [f"{base:.2f}", f"{novel:.2f}", f"{hm:.2f}"]
    assert "the Average row is the mean of B and of N over the datasets and the HM of those means" in text
    # Tip-Adapter-F holds a cache value per trained class: its Base is measured, its Novel and HM say why not.
    tip_base = sum(accuracy[(d, "tip-adapter-f", "1shot-base")] for d in ("folder", "pacs")) / 2
    assert rows["PACS"][6:] == [
        f"{accuracy[('pacs', 'tip-adapter-f', '1shot-base')]:.2f}",
        *["n/a: closed vocabulary"] * 2,
    ]
    assert rows["Average"][6:] == [f"{tip_base:.2f}", *["n/a: closed vocabulary"] * 2]
    assert (
        "n/a: closed vocabulary: Tip-Adapter-F cannot score classes it was not trained on (it holds a weight per "
        "trained class); its runs are tested on the base classes only." in text
    )
    code, stdout, stderr = call(["table", path, "--out", out])  # the root: the sweep's
    assert code == 0 and "| PACS |" in stdout, stderr
    code, stdout, stderr = call(["table", path, "--out", out, "--format", "csv"])
    assert code == 0, stderr
    means = [line.split(",") for line in stdout.splitlines() if ",coop,average,mean," in line]
    assert [(r[1], r[2], float(r[8])) for r in means] == [
        (d, f"1shot-{c}", round(accuracy[(d, "coop", f"1shot-{c}")], 4))
        for c in ("base", "novel")
        for d in ("folder", "pacs")
    ]  # a row per dataset: a label's runs of one split are on both
    hms = [line.split(",") for line in stdout.splitlines() if ",coop,average,hm," in line]
    assert [(r[1], float(r[8])) for r in hms] == [
        (d, round(harmonic_mean(accuracy[(d, "coop", "1shot-base")], accuracy[(d, "coop", "1shot-novel")]), 4))
        for d in ("folder", "pacs")
    ]
    code, _, stderr = call(["plot", "fig1", "--grid", path, "--out-dir", out])
    assert (code, stderr.strip()) == (
        2,
        "petl-bench: error: grid 'b2n' (base2novel table) has no figure: its numbers are in `petl-bench table` "
        "and its page in `petl-bench report`",
    )
    code, stdout, stderr = call(["report", "--out", out])
    assert code == 0, stderr
    index = (out / "report" / "index.html").read_text()
    assert f"Average: ZS HM {rows['Average'][2]}, CoOp HM {hm:.2f}</td>" in index
    page = (out / "report" / "grids" / "b2n.html").read_text()
    assert "base-to-novel generalisation" in page and "CoOp HM" in page and "the HM of those means" in page
    assert page.count('<td class="gap">n/a: closed vocabulary</td>') == 6  # Tip-Adapter-F's Novel, HM; 3 rows
    seeds = re.findall(r'<span class="seeds">(.*?)</span>', page)
    assert len(seeds) == 10 and all(s.count("<a ") == 1 for s in seeds)  # each cell its dataset's one seed
    # A transfer run's page links to the run whose parameters it tested, and says when that one ran again.
    from petl_bench.report.markup import Site, href
    from petl_bench.report.run_page import _source

    site = Site(out, out / "report")
    novel = next((out / "runs" / "pacs").glob("*/1shot-novel/coop@tiny-from-*/seed0.json"))
    base = next((out / "runs" / "pacs").glob("*/1shot-base/coop@tiny/seed0.json"))
    run_html = site.run_page(novel).read_text()
    assert f'href="{href(site.run_page(novel), site.run_page(base))}"' in run_html
    assert "A transfer run: nothing trains here." in run_html and "its source run's page has the curves" in run_html
    record = json.loads(novel.read_text())
    assert "ran again since" not in _source(site, site.run_page(novel), record)[0]
    base.write_text(json.dumps({**json.loads(base.read_text()), "config_sha256": "f" * 64}))
    assert (
        "That record now holds another config (hash <code>ffffffff</code>)"
        in _source(site, site.run_page(novel), record)[0]
    )


# -- 5. protocol grids -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_cross_dataset_sweep_transfers_beside_the_source_root(tmp_path):
    from petl_bench.datamodules import read_manifest
    from petl_bench.datamodules.synth import write_synthetic

    data = tmp_path / "data"
    write_synthetic(data / "pacs", "pacs", per_class=2)
    write_synthetic(data / "vlcs", "vlcs", per_class=2)
    grid = tmp_path / "xd.yaml"
    grid.write_text(
        "name: xd-pacs\ntable: transfer\ndataset: pacs\nprotocol: xd\ntargets: [vlcs]\nsplits: [1shot]\nseeds: [0]\n"
        "set: {model.arch: tiny, train.epochs: 1, data.num_workers: 0}\nmethods: [zeroshot, coop-mt]\n"
    )
    out = tmp_path / "results"
    code, stdout, stderr = call(["sweep", grid, "--out", out, "--set", f"data.root={data / 'pacs'}"])
    assert code == 0 and "xd-pacs: 4 done now" in stdout, stdout + stderr
    transfer = next(
        (out / "runs" / "vlcs" / root_folder(data / "vlcs") / "1shot").glob("coop-mt@tiny-from-*/seed0.json")
    )
    record = json.loads(transfer.read_text())
    assert record["tasks"] == read_manifest("vlcs", data / "vlcs").domains and record["root"] == str(data / "vlcs")
    # Both methods' image towers are frozen: the first transfer encodes the target's test images, the next reads them.
    zeroshot = json.loads(next(transfer.parent.parent.glob("zeroshot@tiny-from-*/seed0.json")).read_text())
    assert set(zeroshot["test_sources"].values()) == {"features (cached now)"}
    assert set(record["test_sources"].values()) == {"features (cached)"}
    assert record["transfer_from"]["run"].startswith(f"runs/pacs/{root_folder(data / 'pacs')}/1shot/coop-mt@tiny/")
    code, stdout, stderr = call(["table", grid, "--out", out])
    assert code == 0, stderr
    row = next(line for line in stdout.splitlines() if line.startswith("| CoOp-MT |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells[1] == f"{record['accuracy']['average']:.2f}" and cells[2] == cells[1]  # one target: its average
    zeroshot = next(line for line in stdout.splitlines() if line.startswith("| ZS |")).strip("|").split("|")
    code, _, stderr = call(["report", "--out", out])
    assert code == 0, stderr
    index = (out / "report" / "index.html").read_text()
    assert f"average over the targets: ZS {zeroshot[3].strip()}, CoOp-MT {cells[2]}</td>" in index
    page = (out / "report" / "grids" / "xd-pacs.html").read_text()
    seeds = re.findall(r'<span class="seeds">(.*?)</span>', page)
    assert len(seeds) == 4 and all(s.count("<a ") == 1 for s in seeds)  # the source's seed, the target's apart


def test_protocol_grid_keys_refused_in_one_line(tmp_path):
    grid = tmp_path / "g.yaml"
    base = "table: transfer\ndataset: pacs\nsplits: [1shot]\nmethods: [zeroshot]\n"
    for extra, message in (
        ("protocol: xd\n", "targets: the xd and dg protocols name their target datasets, and only they"),
        ("targets: [vlcs]\n", "targets: the xd and dg protocols name their target datasets, and only they"),
        ("protocol: fewshot\n", "protocol: unknown 'fewshot' (known: base2novel, xd, dg, lodo)"),
        (
            "protocol: base2novel\nclasses: novel\n",
            "classes: the base2novel protocol trains on the base classes itself",
        ),
        ("", "protocol: the transfer table shows the runs of protocol xd or dg: name it"),
        ("protocol: base2novel\n", "table: the base2novel protocol's table is base2novel, not transfer"),
        ("protocol: xd\ntargets: [pacs]\n", "targets: pacs is the source dataset (its own test is the source column)"),
        ("protocol: xd\ntargets: [vlcs, vlcs]\n", "targets: each target once (got vlcs, vlcs)"),
    ):
        grid.write_text(base + extra)
        code, _, stderr = call(["sweep", grid, "--dry-run"])
        assert (code, stderr.strip()) == (2, f"petl-bench: error: {grid}: {message}")


def test_a_protocol_makes_no_transfer_of_a_closed_vocabulary_method(tmp_path):
    from petl_bench.sweep.driver import _count_line
    from petl_bench.sweep.grid import expand_grid

    b2n = expand_grid(_b2n_grid(tmp_path / "b2n.yaml", "folder", "coop, tip-adapter-f"), ["data.root=/d"])
    assert [(run.label, run.cfg.data.classes) for run in b2n.runs] == [
        ("coop", "base"),
        ("coop", "novel"),
        ("tip-adapter-f", "base"),
    ]
    assert b2n.closed_vocabulary == ["tip-adapter-f"]
    assert _count_line(b2n) == (
        "3 runs: 2 trainings = 2 methods x splits 1shot x seeds 0 on folder, each then tested on its novel classes "
        "(1 transfer run), but those of tip-adapter-f, which cannot score classes it was not trained on (it holds "
        "a weight per trained class)"
    )
    xd = tmp_path / "xd.yaml"
    xd.write_text(
        "table: transfer\ndataset: pacs\nprotocol: xd\ntargets: [vlcs, officehome]\nsplits: [1shot]\n"
        "seeds: [0, 1]\nmethods: [linear-probe, lpp]\n"
    )
    grid = expand_grid(xd, ["data.root=/d/pacs"])
    assert [run.cfg.data.dataset for run in grid.runs] == ["pacs"] * 4 and grid.closed_vocabulary == [
        "linear-probe",
        "lpp",
    ]
    assert _count_line(grid) == (
        "4 runs = 2 methods x splits 1shot x seeds 0, 1 on pacs; no transfer runs: linear-probe, lpp cannot score "
        "classes they were not trained on (each holds a weight per trained class)"
    )
    lodo = tmp_path / "lodo.yaml"
    lodo.write_text("table: lodo\ndataset: pacs\nprotocol: lodo\nsplits: [1shot]\nseeds: [0]\nmethods: [lpp]\n")
    assert expand_grid(lodo, ["data.root=/d/pacs"]).closed_vocabulary == []  # held-out domains: the same classes


def test_a_joined_sources_targets_lie_under_its_common_root_and_none_is_one_of_its_parts(tmp_path):
    from petl_bench.sweep.grid import expand_grid

    grid = tmp_path / "xd.yaml"
    spec = "table: transfer\ndataset: pacs+vlcs\nprotocol: xd\nsplits: [1shot]\nseeds: [0]\nmethods: [coop-mt]\n"
    grid.write_text(spec + "targets: [officehome]\n")
    source, transfer = expand_grid(grid, ["data.root=/data"]).runs
    assert (source.cfg.data.root, transfer.cfg.data.root) == ("/data", "/data/officehome")  # not /officehome
    grid.write_text(spec + "targets: [vlcs]\n")
    code, _, stderr = call(["sweep", grid, "--dry-run"])
    assert (code, stderr.strip()) == (
        2,
        f"petl-bench: error: {grid}: targets: vlcs is the source dataset (its own test is the source column)",
    )


@pytest.mark.parametrize("protocol", ["base2novel", "xd", "lodo"])
def test_a_protocol_table_before_any_record(tmp_path, protocol):
    from petl_bench.report import render, summarize
    from petl_bench.report.pages import _table_averages
    from petl_bench.sweep.grid import expand_grid

    table, extra, row = {
        "base2novel": ("base2novel", "", "| PACS |"),
        "xd": ("transfer", "targets: [vlcs]\n", "| CoOp |"),
        "lodo": ("lodo", "", "| art_painting |"),
    }[protocol]
    grid = tmp_path / "g.yaml"
    grid.write_text(
        f"table: {table}\ndataset: pacs\nprotocol: {protocol}\n{extra}splits: [1shot]\nseeds: [0]\nmethods: [coop]\n"
    )
    summary = summarize(expand_grid(grid, ["data.root=/data/pacs"], str(tmp_path / "results")))
    assert summary.n_counted == 0 and summary.missing
    text = render(summary, "md")
    assert f"\n{summary.n_expected} of {summary.n_expected} runs missing" in text and row in text  # blank cells
    assert render(summary, "csv").startswith("table,dataset,split")
    assert _table_averages(summary).endswith(": none yet")


def _has(*names) -> bool:
    from petl_bench.datamodules.catalog import DATASETS

    return set(names) <= set(DATASETS)


COOP_11 = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)  # fmt: skip
VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


@pytest.mark.skipif(not _has(*COOP_11, *VARIANTS), reason="CoOp's datasets are not readable in this checkout yet")
@pytest.mark.parametrize(
    "grid, trainings_per_method, runs_per_training, tested_on",
    [
        ("base2novel", 11 * 3, 2, "its novel classes"),
        ("xd", 3, 11, "10 other datasets"),
        ("dg", 3, 5, "4 other datasets"),
    ],
)
def test_the_protocol_grids_dry_runs(grid, trainings_per_method, runs_per_training, tested_on):
    code, stdout, stderr = call(["sweep", grid, "--dry-run", "--set", "data.root=/data/imagenet"])
    assert code == 0, stderr
    runs_per_method = trainings_per_method * runs_per_training
    listed = [line for line in stdout.splitlines() if line.startswith("  todo")]
    assert len(listed) == 9 * runs_per_method and stdout.splitlines()[-1] == f"0 done, 0 stale, {len(listed)} to run"
    # the count line adds up: trainings from the product, then each one's transfers
    trainings, transfers = 9 * trainings_per_method, 9 * (runs_per_method - trainings_per_method)
    count = stdout.splitlines()[0]
    assert count.startswith(f"{grid}: {len(listed)} runs: {trainings} trainings = 9 methods x ")
    assert f"each then tested on {tested_on} ({transfers} transfer runs);" in count


def test_the_base2novel_layout_sets_the_published_numbers_beside_ours(tmp_path):
    import pandas as pd

    from petl_bench.report.paper import dataset_name
    from petl_bench.report.summary import Summary
    from petl_bench.report.tables import layout, render

    seeds = pd.DataFrame(
        [
            {"label": "CoOp", "method": "coop", "dataset": "caltech101", "split": f"16shot-{subset}", "seed": seed,
             "task": "average", "task_index": 0, "accuracy": accuracy, "trainable_params": 8192}
            for subset, values in (("base", (97.0, 99.0)), ("novel", (90.0, 92.0)))
            for seed, accuracy in zip((1, 2), values, strict=True)
        ]
    )  # fmt: skip
    summary = Summary(
        "b2n", "base2novel", ["caltech101"], ["CoOp"], {"CoOp": "coop"}, ["16shot-base", "16shot-novel"],
        ["average"], seeds, pd.DataFrame(), {}, tmp_path, 4, [], [],
    )  # fmt: skip
    (name, cells), (average, means) = layout(summary).blocks[0].rows
    assert name == dataset_name("caltech101") and average == "Average"
    base, novel, hm = cells
    assert (base.mean, novel.mean, base.std) == (98.0, 91.0, pytest.approx(2**0.5))
    assert hm.mean == pytest.approx(2 * 98 * 91 / (98 + 91))
    assert (base.paper, novel.paper, hm.paper) == (98.00, 89.81, 93.73)  # CoCoOp's Table 1, CoOp on Caltech101
    assert [c.mean for c in means] == [98.0, 91.0, hm.mean] and means[0].paper is None  # one dataset: no published mean
    hm_rows = [row for row in render(summary, "csv").splitlines() if ",hm," in row]
    assert hm_rows == [f"b2n,caltech101,16shot,CoOp,coop,average,hm,,{round(hm.mean, 4)},,,,,,"]


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_a_sweep_starts_the_transfers_once_their_sources_ended(tmp_path, monkeypatch, launcher):
    from petl_bench.sweep import driver
    from petl_bench.sweep.grid import expand_grid
    from petl_bench.sweep.jobs import JobResult, Outcome

    stages = []

    def launch(jobs, *args, **kwargs):
        stages.append([job.argv[0] for job in jobs])
        return [JobResult(job, Outcome.DONE) for job in reversed(jobs)]  # in any order

    monkeypatch.setattr(driver.local, "run_local", launch)
    monkeypatch.setattr(driver, "run_slurm", launch)
    grid = expand_grid(_b2n_grid(tmp_path / "g.yaml", "folder"), ["data.root=/data"], str(tmp_path))
    todo = [(run, False) for run in grid.runs]
    results = driver._launch(grid, todo, launcher, None, 1, False)
    assert stages == [["run", "run"], ["eval", "eval"]]
    assert [result.job.run for result in results] == grid.runs
    transfer = results[1].job.argv
    assert transfer[:2] == ["eval", f"--from={record_path(grid.runs[0].cfg)}"]  # the base run's record
    assert transfer[2:] == ["--dataset=folder", "--root=/data", "--classes=novel", "--no-progress", "--if-locked=skip"]


# -- 6. published cross-dataset and domain-generalisation numbers ------------------------------------------
@pytest.mark.parametrize("protocol, targets", [("xd", COOP_11[1:]), ("dg", VARIANTS)])
def test_every_published_transfer_row_is_cited_and_averages_its_targets(protocol, targets):
    from petl_bench.report.paper import published_transfer

    table = published_transfer(protocol)
    assert {"coop", "cocoop", "kgcoop", "maple", "promptsrc"} <= set(table.method)
    assert table.source.str.len().gt(20).all() and table.accuracy.between(0, 100).all()
    for method, rows in table.groupby("method"):
        assert sorted(rows.dataset) == sorted(["imagenet", *targets, "average"]), method
        values = rows.set_index("dataset").accuracy
        assert abs(values[list(targets)].mean() - values["average"]) <= 0.005 + 1e-9, method  # to the printed rounding


def _transfer_summary(tmp_path, source: str, accuracy: dict[str, float]):
    import pandas as pd

    from petl_bench.report.summary import Summary

    seeds = pd.DataFrame(
        [
            {"label": "coop", "method": "coop", "dataset": dataset, "split": "16shot", "seed": 1, "task": "average",
             "task_index": 0, "accuracy": value, "trainable_params": 8192}
            for dataset, value in accuracy.items()
        ]
    )  # fmt: skip
    return Summary(
        "t", "transfer", [source], ["coop"], {"coop": "coop"}, ["16shot"], ["average"], seeds, pd.DataFrame(), {},
        tmp_path, len(accuracy), [], [], targets=[d for d in accuracy if d != source],
    )  # fmt: skip


def test_the_transfer_layout_sets_the_published_numbers_beside_ours(tmp_path):
    from petl_bench.report.tables import layout

    dg = {"imagenet": 70.0, "imagenetv2": 60.0, "imagenet_sketch": 50.0, "imagenet_a": 40.0, "imagenet_r": 30.0}
    ((_, cells),) = layout(_transfer_summary(tmp_path, "imagenet", dg)).blocks[0].rows
    assert [(c.mean, c.paper) for c in cells] == [
        (70.0, 71.51),
        (60.0, 64.20),
        (50.0, 47.99),
        (40.0, 49.71),
        (30.0, 75.21),
        (45.0, 59.28),
    ]  # fmt: skip  (CoOp in CoCoOp's Table 3; the average of its four targets)
    one = layout(_transfer_summary(tmp_path, "imagenet", {"imagenet": 70.0, "caltech101": 90.0}))
    ((_, cells),) = one.blocks[0].rows
    assert [(c.mean, c.paper) for c in cells] == [(70.0, 71.51), (90.0, 93.70), (90.0, None)]  # not the paper's targets
    assert "published_xd.csv" in one.notes[-1]
    elsewhere = layout(_transfer_summary(tmp_path, "pacs", {"pacs": 70.0, "caltech101": 90.0}))
    ((_, cells),) = elsewhere.blocks[0].rows
    assert [c.paper for c in cells] == [None, None, None] and len(elsewhere.notes) == 1  # not from ImageNet


def test_a_closed_vocabulary_methods_transfer_cells_say_why(tmp_path):
    import dataclasses

    import pandas as pd

    from petl_bench.report.tables import GapCell, layout

    summary = _transfer_summary(tmp_path, "pacs", {"pacs": 70.0, "caltech101": 90.0})
    probe = summary.seeds.assign(label="linear-probe", method="linear-probe")
    probe = probe[probe.dataset == "pacs"]  # its source run only: the grid made no transfer of it
    both = dataclasses.replace(
        summary,
        labels=["coop", "linear-probe"],
        methods={"coop": "coop", "linear-probe": "linear-probe"},
        seeds=pd.concat([summary.seeds, probe]),
    )
    table = layout(both)
    (_, coop), (_, lp) = table.blocks[0].rows
    assert [c.mean for c in coop] == [70.0, 90.0, 90.0]
    assert lp[0].mean == 70.0 and lp[1:] == [GapCell("n/a: closed vocabulary")] * 2
    assert table.notes[-1] == (
        "n/a: closed vocabulary: Linear probe cannot score classes it was not trained on (it holds a weight per "
        "trained class); its runs are tested on the source only."
    )


def test_protocol_layouts_take_the_grids_datasets_and_targets_and_a_block_per_shot_count(tmp_path):
    import pandas as pd

    from petl_bench.report.summary import Summary
    from petl_bench.report.tables import GapCell, layout

    def summary(table, datasets, labels, splits, runs, targets=()):
        seeds = pd.DataFrame(
            [
                {"label": label, "method": label, "dataset": dataset, "split": split, "seed": 1, "task": "average",
                 "task_index": 0, "accuracy": value, "trainable_params": 0}
                for (label, dataset, split), value in runs.items()
            ]
        )  # fmt: skip
        return Summary(
            "g", table, datasets, labels, {label: label for label in labels}, splits, ["average"], seeds,
            pd.DataFrame(), {}, tmp_path, len(runs), [], [], targets=list(targets),
        )  # fmt: skip

    # base2novel over two shot counts, DTD without runs yet: a block per shot count, DTD blank, no Average.
    runs = {
        ("coop", "caltech101", f"{n}shot-{c}"): 10.0 * n + (c == "novel") for n in (1, 2) for c in ("base", "novel")
    }
    b2n = layout(
        summary("base2novel", ["caltech101", "dtd"], ["coop"], list(dict.fromkeys(s for _, _, s in runs)), runs)
    )
    assert [block.title for block in b2n.blocks] == ["1shot", "2shot"] and "each shot count" in b2n.title
    for block, n in zip(b2n.blocks, (1, 2), strict=True):
        (_, caltech), (_, dtd), (_, average) = block.rows
        assert [c.mean for c in caltech[:2]] == [10.0 * n, 10.0 * n + 1] and dtd == [None] * 3
        assert [c.paper for c in caltech] == [None] * 3  # the published values are 16-shot ones
        assert average == [None] * 3  # not the average of Caltech101 alone
    # xd: the grid's targets are the columns, with or without runs; a closed-vocabulary row says why.
    runs = {("coop", "pacs", "1shot"): 70.0, ("coop", "vlcs", "1shot"): 40.0, ("linear-probe", "pacs", "1shot"): 80.0}
    xd = layout(summary("transfer", ["pacs"], ["coop", "linear-probe"], ["1shot"], runs, ["vlcs", "officehome"]))
    assert xd.columns == ["PACS (source)", "VLCS", "Office-Home", "Average"]
    (_, coop), (_, probe) = xd.blocks[0].rows
    assert [c and c.mean for c in coop] == [70.0, 40.0, None, None]  # no Office-Home runs yet: no Average
    assert probe[0].mean == 80.0 and probe[1:] == [GapCell("n/a: closed vocabulary")] * 3


def test_a_transfer_jobs_title_names_its_source_and_target(tmp_path):
    from petl_bench.sweep.grid import expand_grid
    from petl_bench.sweep.jobs import Job

    grid = expand_grid(_b2n_grid(tmp_path / "g.yaml", "folder"), ["data.root=/data"], str(tmp_path))
    titles = [Job(i + 1, len(grid.runs), run, []).title for i, run in enumerate(grid.runs)]
    assert titles == [
        "[1/4] zeroshot 1shot seed0",
        "[2/4] zeroshot 1shot seed0, from folder 1shot-base to folder novel classes",
        "[3/4] coop 1shot seed0",
        "[4/4] coop 1shot seed0, from folder 1shot-base to folder novel classes",
    ]
    xd = tmp_path / "xd.yaml"
    xd.write_text(
        "table: transfer\ndataset: pacs\nprotocol: xd\ntargets: [vlcs]\nsplits: [2shot]\nseeds: [3]\n"
        "set: {model.arch: tiny}\nmethods: [coop-mt]\n"
    )
    runs = expand_grid(xd, ["data.root=/data/pacs"], str(tmp_path)).runs
    assert Job(2, 2, runs[1], []).title == "[2/2] coop-mt 2shot seed3, from pacs 2shot to vlcs"
