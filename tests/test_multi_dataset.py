"""One run over several datasets (`--dataset a+b`, MVLPT's setting): the joined tasks and their own
label spaces, each dataset's split drawn as a run on it alone draws it, a `coop-mt` run end to end,
the one-line errors, and the hash and record paths apart from each dataset's."""

import json
import re
from pathlib import Path

import pytest
import yaml

from petl_bench.config import DataConfig, RunConfig, root_folder
from petl_bench.datamodules.catalog import own_template, parse_shots
from petl_bench.datamodules.manifest import join_manifests, read_manifest
from petl_bench.datamodules.records import Manifest, Record, joined_record
from petl_bench.datamodules.splits import draw_split
from petl_bench.errors import UserError
from petl_bench.registry import method_names
from petl_bench.report.paper import dataset_name
from petl_bench.results import record_path
from petl_bench.runargs import build_run_config

from cli_calls import call, tiny_run_argv


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A common root: PACS (7 classes x 4 domains, 3 images each), VLCS (5 x 4, 3 each) and a
    one-domain folder set (4 classes, 3 each), each in its DATASET_FOLDERS name (here: its own)."""
    from petl_bench.datamodules.synth import write_synthetic

    root = tmp_path_factory.mktemp("data")
    write_synthetic(root / "pacs", "pacs", per_class=3)
    write_synthetic(root / "vlcs", "vlcs", per_class=3)
    write_synthetic(root / "folder", "folder", per_class=3, n_classes=4, domains=["photos"])
    return root


# -- the joined manifest --------------------------------------------------------------------------
def test_the_tasks_are_each_datasets_in_order_with_their_own_classes(data_root):
    joined = read_manifest("pacs+vlcs+folder", data_root)
    alone = {name: read_manifest(name, data_root / name) for name in ("pacs", "vlcs", "folder")}
    assert joined.domains == [
        *(f"pacs/{d}" for d in ("art_painting", "cartoon", "photo", "sketch")),
        *(f"vlcs/{d}" for d in ("Caltech101", "LabelMe", "SUN09", "VOC2007")),
        "folder",  # one task: named by the dataset alone
    ]
    classes = {task.name: task.classnames for task in joined.tasks}
    assert [len(c) for c in classes.values()] == [7] * 4 + [5] * 4 + [4]
    assert classes["vlcs/LabelMe"] == tuple(alone["vlcs"].classnames)
    assert classes["folder"] == tuple(alone["folder"].classnames)
    # Every label indexes its own task's classes, and the record is its dataset's, renamed.
    for record in joined.records:
        assert classes[record.domain][record.label] == record.classname
    assert len(joined.records) == sum(len(m.records) for m in alone.values()) == 3 * (28 + 20 + 4)
    assert {(r.path, r.domain) for r in joined.records if r.path.startswith("vlcs/")} == {
        (f"vlcs/{r.path}", f"vlcs/{r.domain}") for r in alone["vlcs"].records
    }
    assert joined.dataset == "pacs+vlcs+folder" and joined.classnames == [] and joined.synthetic


def test_a_given_template_prompts_every_task_else_each_keeps_its_datasets(data_root):
    joined = read_manifest("pacs+folder", data_root)
    assert {task.template for task in joined.tasks} == {"a photo of a {}."}
    themed = joined.with_template("a sketch of a {}.")
    assert {task.template for task in themed.tasks} == {"a sketch of a {}."}
    assert themed.tasks[0].prompt("dog") == "a sketch of a dog."
    # Joined datasets whose own prompts differ: an empty template stands for no single one.
    assert own_template("dtd+eurosat") is None
    assert own_template("dtd") == "{} texture." and own_template("pacs+vlcs") == "a photo of a {}."


def test_the_image_checks_join_and_save_into_each_datasets_own_verdicts(data_root, tmp_path):
    from petl_bench.datamodules.cache import Cache

    cache = Cache.for_run(str(tmp_path / "cache"), tmp_path, 1.0)
    joined = read_manifest("vlcs+folder", data_root, cache)
    assert joined.checks is not None and set(joined.checks.verdicts) == {r.path for r in joined.records}
    first = joined.records[0].path
    assert joined.checks.verify([first]) == {}
    joined.checks.save()
    # A run on VLCS alone finds the verdict the joined run learnt (the file decoded in full).
    alone = read_manifest("vlcs", data_root / "vlcs", cache)
    assert alone.checks is not None and alone.checks.verdicts[first.removeprefix("vlcs/")] == "ok"


# -- the split ------------------------------------------------------------------------------------
def test_each_dataset_draws_its_split_as_it_would_alone(data_root):
    joined = read_manifest("pacs+vlcs+folder", data_root)
    split = draw_split(joined, 2, seed=5)
    per_task = {task.name: (len(task.classnames), 0, 0) for task in joined.tasks}
    for record in split.train:
        n, train, test = per_task[record.domain]
        per_task[record.domain] = (n, train + 1, test)
    for record in split.test:
        n, train, test = per_task[record.domain]
        per_task[record.domain] = (n, train, test + 1)
    assert per_task == {name: (n, 2 * n, 1 * n) for name, (n, _, _) in per_task.items()}  # 3 images a class
    for name in ("pacs", "vlcs", "folder"):
        part = read_manifest(name, data_root / name)
        alone = draw_split(part, 2, seed=5)
        assert [r for r in split.train if r.path.startswith(f"{name}/")] == [
            joined_record(part, r) for r in alone.train
        ]


def _fixed(root: Path, dataset: str) -> Manifest:
    """A hand-made manifest with a split file's parts (10 train, 5 val, 2 test images a class)."""
    records = [
        Record(f"{c}/{part}{i}.png", label, "d", c, part)
        for label, c in enumerate(["ant", "bee", "cat"])
        for part, n in (("train", 10), ("val", 5), ("test", 2))
        for i in range(n)
    ]
    return Manifest(root / dataset, ["d"], ["ant", "bee", "cat"], records, [], dataset=dataset, split_source="s.json")


def test_the_fixed_split_protocol_applies_per_dataset(data_root):
    pool = read_manifest("vlcs", data_root / "vlcs")
    joined = join_manifests(data_root, [_fixed(data_root, "dtd"), pool])
    split = draw_split(joined, 2, seed=0)
    # dtd: 2 train and min(2, 4) val shots a class from its parts, its test part whole.
    counts = [len([r for r in records if r.domain == "dtd"]) for records in (split.train, split.val, split.test)]
    assert counts == [2 * 3, 2 * 3, 2 * 3]
    # VLCS, a pool: 2 shots a class and domain, the rest (1 a class) its test; no val shots.
    counts = [
        len([r for r in records if r.domain.startswith("vlcs/")]) for records in (split.train, split.val, split.test)
    ]
    assert counts == [2 * 5 * 4, 0, 1 * 5 * 4]
    assert joined.split_source == "dtd: s.json"


# -- a run ----------------------------------------------------------------------------------------
def _run_argv(dataset: str, root: Path, out: Path, *extra) -> list:
    return tiny_run_argv("coop-mt", root, out, *extra, dataset=dataset)


def test_a_coop_mt_run_over_two_datasets_records_each_tasks_test_accuracy(data_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    argv = _run_argv(" vlcs + folder", data_root, out, "--pretrained", tiny_checkpoint, "--set", "train.epochs=1")
    code, stdout, stderr = call(argv)
    assert code == 0, stderr
    path = out / "runs" / "vlcs+folder" / root_folder(str(data_root)) / "2shot" / "coop-mt@tiny-tiny" / "seed0.json"
    record = json.loads(path.read_text())
    tasks = ["vlcs/Caltech101", "vlcs/LabelMe", "vlcs/SUN09", "vlcs/VOC2007", "folder"]
    assert record["dataset"] == "vlcs+folder" and record["tasks"] == tasks
    assert set(record["accuracy"]) >= set(tasks)
    assert all(0 <= record["accuracy"][task] <= 100 for task in tasks)
    assert record["train_images"] == 2 * (4 * 5 + 4) and record["test_images"] == 4 * 5 + 4
    assert [(d["dataset"], d["root"], d["tasks"]) for d in record["datasets"]] == [
        ("vlcs", str((data_root / "vlcs").resolve()), tasks[:4]),
        ("folder", str((data_root / "folder").resolve()), ["folder"]),
    ]
    vlcs, folder = record["datasets"]
    assert vlcs["average"] == pytest.approx(sum(record["accuracy"][t] for t in tasks[:4]) / 4, abs=1e-4)
    assert folder["average"] == record["accuracy"]["folder"]
    assert "5 tasks x 4-5 classes" in stdout
    assert "coop-mt: 768 trainable parameters" in stdout  # one context shared by every task


# -- names, errors, hash and paths ----------------------------------------------------------------
@pytest.mark.parametrize(
    "dataset, message",
    [
        (
            "pacs+pcas",
            "data.dataset='pacs+pcas': must be a known dataset or several joined by +; "
            "unknown dataset 'pcas' (did you mean pacs?)",
        ),
        ("pacs+vlcs+pacs", "each dataset once in 'pacs+vlcs+pacs' (pacs twice)"),
        ("pacs+", "unknown dataset ''"),
    ],
)
def test_a_bad_name_is_one_line_naming_the_part(dataset, message, data_root, tmp_path):
    code, _, stderr = call(_run_argv(dataset, data_root, tmp_path))
    assert code != 0 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_missing_dataset_folder_is_one_line_naming_it(data_root, tmp_path):
    code, _, stderr = call(_run_argv("pacs+office31+domainnet", data_root, tmp_path, "--set", "train.epochs=1"))
    assert code != 0 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"lacks the folder of office31 ({data_root / 'office31'}), domainnet ({data_root / 'domainnet'})" in stderr


def test_the_hash_and_record_path_differ_from_each_datasets_and_keep_the_order():
    def config(dataset: str, root: str = "/data") -> RunConfig:
        return build_run_config("coop-mt", dataset, root, "2shot", model="tiny")

    joined = config("pacs+vlcs")
    assert config(" pacs + vlcs").sha256() == joined.sha256()  # one spelling
    assert config("vlcs+pacs").sha256() != joined.sha256()  # another task order: another run
    assert len({config(d).sha256() for d in ("pacs+vlcs", "pacs", "vlcs")}) == 3
    assert len({config(d, "/data/pacs").sha256() for d in ("pacs", "pacs+vlcs")}) == 2
    assert record_path(joined).parts[-6:-3] == ("runs", "pacs+vlcs", root_folder("/data"))
    assert record_path(joined) != record_path(config("pacs")) != record_path(config("vlcs"))
    assert DataConfig(dataset="pacs + vlcs").dataset == "pacs+vlcs"
    assert dataset_name("pacs+vlcs") == "PACS + VLCS"  # in tables' headings
    with pytest.raises(UserError, match=r"unknown split '10pct' for pacs\+vlcs \(use Nshot"):
        parse_shots("pacs+vlcs", "10pct")  # a paper alias is one dataset's: a joined run takes Nshot


# -- grids ----------------------------------------------------------------------------------------
def _grid(path: Path, key: str, value) -> Path:
    spec = {
        "table": "fewshot" if key == "datasets" else "kshot",
        key: value,
        "splits": ["2shot"],
        "seeds": [0],
        "set": {"model.arch": "tiny"},
        "methods": ["coop-mt"],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_grid_names_joined_datasets_and_runs_them_on_the_common_root(data_root, tmp_path):
    from petl_bench.sweep.grid import expand_grid

    root = f"data.root={data_root}"
    one = expand_grid(_grid(tmp_path / "one.yaml", "dataset", "vlcs + folder"), [root], str(tmp_path))
    assert one.datasets == ["vlcs+folder"]
    assert [(r.cfg.data.dataset, r.cfg.data.root) for r in one.runs] == [("vlcs+folder", str(data_root))]
    several = expand_grid(_grid(tmp_path / "two.yaml", "datasets", ["vlcs+folder", "pacs"]), [root], str(tmp_path))
    assert [(r.cfg.data.dataset, r.cfg.data.root) for r in several.runs] == [
        ("vlcs+folder", str(data_root)),  # the joined run reads each folder there itself
        ("pacs", str(data_root / "pacs")),
    ]
    assert one.runs[0].cfg.sha256() == several.runs[0].cfg.sha256()


def test_a_grid_with_a_bad_joined_name_is_one_line(tmp_path):
    code, _, stderr = call(["sweep", _grid(tmp_path / "bad.yaml", "datasets", ["pacs+vlsc", "pacs"]), "--dry-run"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "datasets: unknown dataset 'vlsc' (did you mean vlcs?)" in stderr


def test_a_sweep_names_a_joined_runs_missing_folder_before_anything_runs(data_root, tmp_path):
    path = _grid(tmp_path / "g.yaml", "dataset", "pacs+office31")
    code, _, stderr = call(["sweep", path, "--out", tmp_path / "out", "--set", f"data.root={data_root}"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"lacks the folder of office31 ({data_root / 'office31'})" in stderr


def test_a_single_task_method_keeps_a_set_per_joined_task(data_root, tiny_checkpoint, tmp_path):
    argv = _run_argv("vlcs+folder", data_root, tmp_path, "--pretrained", tiny_checkpoint)
    argv[argv.index("coop-mt")] = "coop"
    code, stdout, stderr = call([*argv, "--set", "train.fast_dev_run=true"])
    assert code == 0, stderr
    assert "coop: 3,840 trainable parameters" in stdout  # 16 context tokens x width 48, for each of 5 tasks


def test_zero_shot_on_joined_datasets_scores_each_task_as_a_run_on_its_dataset_alone(
    data_root, tiny_checkpoint, tmp_path
):
    """The same test images (each dataset's own draw), labels and prompts over the task's own classes:
    the same accuracy, from test features cached under the joined run's own keys."""
    out = tmp_path / "results"

    def accuracy(dataset: str, root: Path) -> dict:
        argv = _run_argv(dataset, root, out, "--pretrained", tiny_checkpoint)
        argv[argv.index("coop-mt")] = "zeroshot"
        code, _, stderr = call(argv)
        assert code == 0, stderr
        (path,) = (out / "runs" / dataset).rglob("seed0.json")
        record = json.loads(path.read_text())
        assert set(record["test_sources"].values()) == {"features (cached now)"}
        return record["accuracy"]

    joined = accuracy("vlcs+folder", data_root)
    vlcs, folder = accuracy("vlcs", data_root / "vlcs"), accuracy("folder", data_root / "folder")
    assert {f"vlcs/{task}": score for task, score in vlcs.items() if task != "average"} | {
        "folder": folder["photos"]
    } == {task: score for task, score in joined.items() if task != "average"}


# -- class subsets --------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", ["base", "novel"])
def test_a_joined_class_subset_is_each_datasets_own_half(classes, data_root, tmp_path):
    """PACS's 7 classes halve as 4 + 3, VLCS's 5 as 3 + 2: each task keeps exactly its dataset's half,
    relabelled from 0 as a run on that dataset alone relabels it, and the split draws only those."""
    from petl_bench.datamodules.classes import subsample_classes
    from petl_bench.datamodules.multidomain import MultiDomainDataModule

    cfg = DataConfig(dataset="pacs+vlcs", root=str(data_root), split="2shot", classes=classes, num_workers=0)
    data = MultiDomainDataModule(cfg, None, None, out=tmp_path)
    alone = {name: subsample_classes(read_manifest(name, data_root / name), classes) for name in ("pacs", "vlcs")}
    assert {task.name.split("/")[0]: task.classnames for task in data.tasks} == {
        name: tuple(manifest.classnames) for name, manifest in alone.items()
    }
    assert [len(task.classnames) for task in data.tasks] == [4 if classes == "base" else 3] * 4 + [
        3 if classes == "base" else 2
    ] * 4
    data.setup("fit")
    names = {task.name: task.classnames for task in data.tasks}
    for record in [*data.train_records, *data.test_records]:
        assert names[record.domain][record.label] == record.classname
    for name, manifest in alone.items():
        drawn = draw_split(manifest, 2, seed=0)
        assert [r for r in data.train_records if r.path.startswith(f"{name}/")] == [
            joined_record(manifest, r) for r in drawn.train
        ]


# -- every method on joined datasets of unequal class counts --------------------------------------
# The multi-task methods whose one set holds a row per class (what holds it): refused before any work.
REFUSED = {
    "clap-mt": "probe",
    "dept-mt": "head",
    "lpp-mt": "probe",
    "taskres-mt": "residual",
    "tip-adapter-f-mt": "cache",
}
# The single-task ones: a set per task of its own classes, 4 x 5 + 4 = 24 rows of width 64 in all.
PER_TASK_ROWS = {
    "clap": 24 * 64,
    "linear-probe": 24 * (64 + 1),
    "lpp": 24 * (64 + 2),
    "taskres": 24 * 64,
    "tip-adapter-f": 24 * 2 * 64,  # 2 shots a class
}


@pytest.mark.parametrize("method", method_names())
def test_every_method_runs_on_joined_datasets_of_other_class_counts_or_refuses_in_one_line(method, data_root, tmp_path):
    argv = _run_argv("vlcs+folder", data_root, tmp_path)  # VLCS's 5 classes in 4 tasks, the folder's 4 in one
    argv[argv.index("coop-mt")] = method
    code, stdout, stderr = call([*argv, "--set", "train.fast_dev_run=true"])
    if method in REFUSED:
        assert code == 2 and stderr == (
            f"petl-bench: error: {method}: its one {REFUSED[method]}, shared by every task, holds a row per class, "
            "so every task needs the same classes (those of folder differ from those of vlcs/Caltech101); "
            "its single-task variant keeps one per task\n"
        )
        assert "size: 5 tasks x 4-5 classes" in stdout and "features:" not in stdout and "train:" not in stdout
        return
    assert code == 0, stderr
    tested = re.search(r"^test: (.+) \(", stdout, re.M)
    assert tested is not None, stdout
    scores = dict(entry.rsplit(" ", 1) for entry in tested.group(1).split(", "))
    assert list(scores) == ["vlcs/Caltech101", "vlcs/LabelMe", "vlcs/SUN09", "vlcs/VOC2007", "folder", "average"]
    if method in PER_TASK_ROWS:
        assert f"({PER_TASK_ROWS[method]:,} trainable parameters)" in stdout


def test_a_state_saved_stacked_over_the_sets_loads_into_each_sets_rows(tiny_backbone):
    """States and checkpoints written before each set had rows of its own count held one tensor
    [sets, classes, ...]: they load as they did, buffers too (CLAP's anchors)."""
    import torch

    from petl_bench.datamodules import Task
    from petl_bench.registry import get_method

    tasks = [Task("a", ("cat", "dog", "pug")), Task("b", ("cat", "dog", "pug"))]
    probe, clap = (get_method(name) for name in ("linear-probe", "clap"))
    module = probe.cls(probe.config_cls(), tiny_backbone, tasks)
    weight, bias = torch.randn(2, 3, 64), torch.randn(2, 3)
    module.load_trainable_state({"probe_weight": weight, "probe_bias": bias})
    assert all(
        torch.equal(module.probe_weight[s], weight[s]) and torch.equal(module.probe_bias[s], bias[s]) for s in (0, 1)
    )
    module = clap.cls(clap.config_cls(), tiny_backbone, tasks)
    anchors = torch.randn(2, 3, 64)
    module.load_trainable_state({"prototypes": anchors + 1, "anchors": anchors})
    assert torch.equal(module.anchors[1], anchors[1]) and torch.equal(module.prototypes[0], anchors[0] + 1)
    with pytest.raises(UserError, match=r"^checkpoint does not fit clap: it lacks \['prototypes.0', 'prototypes.1'\]$"):
        module.load_trainable_state({"anchors": anchors})
