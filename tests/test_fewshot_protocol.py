"""CoOp's few-shot protocol over a dataset's fixed split: N training and min(N, 4) validation shots
per class from the train and val parts, the test part as the test set, validation once per epoch
(never selecting the tested model), and the class prompt's template in the config and the record."""

import csv
import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from petl_bench.config import DataConfig, RunConfig, apply_overrides, validate
from petl_bench.datamodules.records import DEFAULT_TEMPLATE, Manifest, Record
from petl_bench.datamodules.splits import draw_split, split_csv
from petl_bench.errors import UserError
from petl_bench.methods.configs import CoOpConfig

from cli_calls import call, call_ok

CLASSES = ["ant", "bee", "cat"]


def _manifest(parts: dict[str, int], domains=("a", "b"), short: dict[str, int] | None = None) -> Manifest:
    """A hand-made manifest (no images): per domain and class, `parts[part]` records of each part;
    `short` gives some classes fewer training records."""
    records = []
    for domain in domains:
        for label, classname in enumerate(CLASSES):
            for part, n in parts.items():
                n = (short or {}).get(classname, n) if part == "train" else n
                records += [
                    Record(f"{domain}/{classname}/{part}{i}.png", label, domain, classname, part) for i in range(n)
                ]
    return Manifest(Path("/nowhere"), list(domains), CLASSES, records[::-1], [])


# -- the draw -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shots, val_shots", [(1, 1), (4, 4), (6, 4)])
def test_fixed_split_draws_n_train_and_min_n_4_val_shots_and_tests_the_test_part(shots, val_shots):
    manifest = _manifest({"train": 8, "val": 5, "test": 3})
    split = draw_split(manifest, shots, seed=0)
    cells = {(d, label) for d in ("a", "b") for label in range(3)}
    assert Counter((r.domain, r.label) for r in split.train) == dict.fromkeys(cells, shots)
    assert Counter((r.domain, r.label) for r in split.val) == dict.fromkeys(cells, val_shots)
    assert {r.part for r in split.train} == {"train"} and {r.part for r in split.val} == {"val"}
    assert sorted(split.test, key=lambda r: r.path) == sorted(
        (r for r in manifest.records if r.part == "test"), key=lambda r: r.path
    )


def test_a_class_with_fewer_than_n_training_images_takes_all_it_has():
    manifest = _manifest({"train": 8, "val": 2, "test": 1}, short={"bee": 3})
    split = draw_split(manifest, 5, seed=0)
    counts = Counter((r.domain, r.classname) for r in split.train)
    assert counts == {(d, c): 3 if c == "bee" else 5 for d in ("a", "b") for c in CLASSES}
    assert {r.path for r in split.train if r.classname == "bee"} == {
        r.path for r in manifest.records if r.classname == "bee" and r.part == "train"
    }
    assert Counter(r.classname for r in split.val) == dict.fromkeys(CLASSES, 4)  # 2 per domain: all the val part


def test_the_fixed_split_draw_is_seeded_and_ignores_record_order():
    manifest = _manifest({"train": 8, "val": 6, "test": 2})
    a, b, c = (draw_split(manifest, 2, seed) for seed in (3, 3, 4))
    assert a == b and split_csv(a) == split_csv(b)
    assert (a.train, a.val) != (c.train, c.val)
    assert draw_split(replace(manifest, records=list(reversed(manifest.records))), 2, 3) == a


def test_unreadable_validation_draws_are_redrawn_from_their_cell():
    manifest = _manifest({"train": 6, "val": 6, "test": 2})
    plain = draw_split(manifest, 2, seed=0)
    bad = {plain.val[0].path, plain.train[0].path}
    asked: list[str] = []

    def unreadable(records):
        asked.extend(r.path for r in records)
        return {r.path for r in records} & bad

    checked = draw_split(manifest, 2, 0, unreadable)
    assert checked == draw_split(manifest, 2, 0, unreadable)
    assert len(checked.val) == len(plain.val) and len(checked.train) == len(plain.train)
    assert not bad & {r.path for r in checked.train + checked.val}
    assert checked.val[2:] == plain.val[2:] and checked.train[2:] == plain.train[2:]  # other cells as drawn
    assert set(asked) >= {r.path for r in checked.train + checked.val}  # every drawn image was decoded
    assert not {r.path for r in manifest.records if r.part == "test"} & set(asked)  # the test part is not


def test_a_cell_short_of_readable_images_keeps_what_it_has():
    manifest = _manifest({"train": 2, "val": 1, "test": 1})
    bad = {"a/ant/train0.png", "a/ant/val0.png"}
    split = draw_split(manifest, 2, 0, lambda records: {r.path for r in records} & bad)
    assert Counter((r.domain, r.classname) for r in split.train)[("a", "ant")] == 1
    assert ("a", "ant") not in {(r.domain, r.classname) for r in split.val}
    assert len(split.val) == 5


@pytest.mark.parametrize("part, found", [("", "''"), ("validation", "'validation'")])
def test_a_manifest_mixing_parts_with_none_or_others_is_one_line(part, found):
    manifest = _manifest({"train": 2, "val": 1, "test": 1})
    mixed = replace(manifest, records=[*manifest.records, Record("a/ant/x.png", 0, "a", "ant", part)])
    with pytest.raises(
        UserError,
        match=rf"^/nowhere: where one record has a split part, each must be train, val or test \(found {found}\)$",
    ):
        draw_split(mixed, 1, 0)


def test_the_split_csv_has_val_rows():
    split = draw_split(_manifest({"train": 2, "val": 1, "test": 1}, domains=("a",)), 1, seed=0)
    rows = list(csv.reader(io.StringIO(split_csv(split))))
    assert Counter(row[4] for row in rows[1:]) == {"train": 3, "val": 3, "test": 3}
    assert [row[4] for row in rows[1:]] == ["train"] * 3 + ["val"] * 3 + ["test"] * 3


# The exact CSVs the pool draw wrote before fixed splits existed (drawn at commit 0d90dc7): a pool's
# split files must keep their bytes, redraws of unreadable images included.
POOL_CSV = (
    "path,domain,classname,label,subset\na/ant/1.png,a,ant,0,train\na/ant/2.png,a,ant,0,train\n"
    "a/bee/1.png,a,bee,1,train\na/bee/3.png,a,bee,1,train\na/cat/2.png,a,cat,2,train\na/cat/3.png,a,cat,2,train\n"
    "b/ant/0.png,b,ant,0,train\nb/ant/2.png,b,ant,0,train\nb/bee/0.png,b,bee,1,train\nb/bee/1.png,b,bee,1,train\n"
    "b/cat/2.png,b,cat,2,train\nb/cat/3.png,b,cat,2,train\na/ant/0.png,a,ant,0,test\na/ant/3.png,a,ant,0,test\n"
    "a/bee/0.png,a,bee,1,test\na/bee/2.png,a,bee,1,test\na/cat/0.png,a,cat,2,test\na/cat/1.png,a,cat,2,test\n"
    "b/ant/1.png,b,ant,0,test\nb/ant/3.png,b,ant,0,test\nb/bee/2.png,b,bee,1,test\nb/bee/3.png,b,bee,1,test\n"
    "b/cat/0.png,b,cat,2,test\nb/cat/1.png,b,cat,2,test\n"
)
POOL_CSV_REDRAWN = (
    "path,domain,classname,label,subset\na/ant/1.png,a,ant,0,train\na/ant/2.png,a,ant,0,train\n"
    "a/bee/2.png,a,bee,1,train\na/bee/3.png,a,bee,1,train\na/cat/2.png,a,cat,2,train\na/cat/3.png,a,cat,2,train\n"
    "b/ant/0.png,b,ant,0,train\nb/ant/2.png,b,ant,0,train\nb/bee/0.png,b,bee,1,train\nb/bee/1.png,b,bee,1,train\n"
    "b/cat/1.png,b,cat,2,train\nb/cat/3.png,b,cat,2,train\na/ant/0.png,a,ant,0,test\na/ant/3.png,a,ant,0,test\n"
    "a/bee/0.png,a,bee,1,test\na/cat/0.png,a,cat,2,test\na/cat/1.png,a,cat,2,test\nb/ant/1.png,b,ant,0,test\n"
    "b/ant/3.png,b,ant,0,test\nb/bee/2.png,b,bee,1,test\nb/bee/3.png,b,bee,1,test\nb/cat/0.png,b,cat,2,test\n"
)


def test_a_pool_draws_the_split_it_drew_before_byte_for_byte():
    records = [
        Record(f"{d}/{c}/{i}.png", label, d, c) for d in ("a", "b") for label, c in enumerate(CLASSES) for i in range(4)
    ]
    pool = Manifest(Path("/nowhere"), ["a", "b"], CLASSES, records[::-1], [])
    assert split_csv(draw_split(pool, 2, seed=3)) == POOL_CSV
    bad = {"a/bee/1.png", "b/cat/2.png", "b/cat/0.png"}  # b/cat/0.png is met by the redraw
    assert split_csv(draw_split(pool, 2, 3, lambda rs: {r.path for r in rs} & bad)) == POOL_CSV_REDRAWN


# -- the template -----------------------------------------------------------------------------------
def _coop(*overrides: str) -> RunConfig:
    return apply_overrides(RunConfig(method="coop", params=CoOpConfig()), ["data.dataset=folder", *overrides])


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "a {0} photo", "a {x}.", "{}}"])
def test_a_template_without_exactly_one_slot_is_one_line(template):
    with pytest.raises(UserError, match=r"^data\.template=.*: must be empty or hold exactly one \{\}") as info:
        validate(_coop(f"data.template={template}"))
    assert "\n" not in str(info.value)


def test_the_datasets_own_template_hashes_as_the_default_and_as_before_the_field():
    default = _coop()
    assert _coop(f"data.template={DEFAULT_TEMPLATE}").sha256() == default.sha256()
    assert _coop("data.template=a sketch of a {}.").sha256() != default.sha256()
    old = default.to_dict()
    del old["data"]["template"]  # a record written before the field existed
    assert RunConfig.sha256_of(old) == default.sha256()
    # A dataset with a template of its own: "" and that template spelt out are one run, not the generic one.
    eurosat = {**old, "data": {**old["data"], "dataset": "eurosat"}}
    spelt = {**eurosat, "data": {**eurosat["data"], "template": "a centered satellite photo of {}."}}
    generic = {**eurosat, "data": {**eurosat["data"], "template": DEFAULT_TEMPLATE}}
    assert RunConfig.sha256_of({**eurosat, "data": {**eurosat["data"], "template": ""}}) == RunConfig.sha256_of(spelt)
    assert RunConfig.sha256_of(generic) != RunConfig.sha256_of(spelt)


def test_the_template_reaches_every_task(folder_root, tiny_backbone, tmp_path):
    from petl_bench.datamodules import MultiDomainDataModule

    cfg = DataConfig("folder", str(folder_root), "1shot", num_workers=0, template="a sketch of a {}.")
    data = MultiDomainDataModule.for_backbone(cfg, tiny_backbone, out=tmp_path)
    assert {task.template for task in data.tasks} == {"a sketch of a {}."}
    assert data.tasks[0].prompt("anchor") == "a sketch of a anchor."


# -- runs on a fixed split ---------------------------------------------------------------------------
PER_CLASS = 8  # images per domain and class: 4 in the train part, 2 in val, 2 in test
TEMPLATE = "data.template=a sketch of a {}."


@pytest.fixture(scope="module")
def split_root(tmp_path_factory) -> Path:
    from petl_bench.datamodules.synth import write_synthetic

    root = tmp_path_factory.mktemp("fixed-split")
    write_synthetic(root, "folder", per_class=PER_CLASS, n_classes=3, domains=["a", "b"])
    return root


def _with_parts(read):
    """`read` (a reader), each record's part by its rank in its cell as a split file would say:
    4 train, 2 val, the rest test; the split file named."""

    def read_with_parts(dataset, root, cache=None):
        manifest = read(dataset, root, cache)
        ranks: Counter = Counter()
        records = []
        for record in sorted(manifest.records, key=lambda r: r.path):
            rank = ranks[(record.domain, record.label)]
            ranks[(record.domain, record.label)] += 1
            records.append(replace(record, part="train" if rank < 4 else "val" if rank < 6 else "test"))
        return replace(manifest, records=records, split_source="split_test.json")

    return read_with_parts


@pytest.fixture(scope="module")
def fixed_split():
    """The folder dataset read as a fixed split, for every run of this module's tests that asks."""
    from petl_bench.datamodules import multidomain

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multidomain, "read_manifest", _with_parts(multidomain.read_manifest))
        yield


@pytest.fixture(scope="module")
def validated(split_root, fixed_split, tmp_path_factory) -> tuple[Path, dict]:
    """A 2-epoch run on the fixed split with a template of its own; (its --out, its record). Its
    validation and test batches are cached image features, the first validation filling the cache."""
    out = tmp_path_factory.mktemp("validated")
    return out, _run(split_root, out, TEMPLATE)


def _argv(root: Path, out: Path, *sets: str) -> list:
    argv = ["run", "--method", "coop-mt", "--dataset", "folder", "--root", root, "--split", "2shot"]
    argv += ["--model", "tiny", "--out", out, "--no-progress"]
    for item in ("data.num_workers=0", "train.epochs=2", "method.n_ctx=2", "data.batch_size=2", *sets):
        argv += ["--set", item]
    return argv


def _run(root: Path, out: Path, *sets: str) -> dict:
    call_ok(_argv(root, out, *sets))
    return json.loads(next((out / "runs").rglob("seed0.json")).read_text())


def test_a_fixed_split_run_validates_each_epoch_and_records_it(validated):
    out, record = validated
    assert (record["train_images"], record["val_images"], record["test_images"]) == (2 * 3 * 2, 2 * 3 * 2, 2 * 3 * 2)
    assert record["template"] == "a sketch of a {}." and record["config"]["data"]["template"] == "a sketch of a {}."
    assert record["split_source"] == "split_test.json"
    per_epoch = record["val_accuracy_per_epoch"]
    assert len(per_epoch) == 2 and record["val_accuracy"] == per_epoch[-1]
    assert all(set(scores) == {"a", "b", "average"} for scores in per_epoch)
    assert all(scores["average"] == pytest.approx((scores["a"] + scores["b"]) / 2, abs=1e-3) for scores in per_epoch)

    log = next(out.rglob("metrics.csv"))
    rows = list(csv.DictReader(log.open()))
    val_rows = [row for row in rows if row.get("val/acc")]
    assert [int(row["epoch"]) for row in val_rows] == [0, 1]  # once per epoch
    for row, scores in zip(val_rows, per_epoch, strict=True):
        assert float(row["val/acc"]) == pytest.approx(scores["average"], abs=1e-3)
        assert float(row["val/acc/b"]) == pytest.approx(scores["b"], abs=1e-3)
    epoch_lines = [line for line in (log.parents[1] / "run.log").read_text().splitlines() if "  epoch " in line]
    assert len(epoch_lines) == 2
    assert all(f"val/acc {scores['average']:.2f}" in line for line, scores in zip(epoch_lines, per_epoch, strict=True))

    split_rows = list(csv.reader(io.StringIO(Path(record["split_file"]).read_text())))
    assert Counter(row[4] for row in split_rows[1:]) == {"train": 12, "val": 12, "test": 12}


def _losses(out: Path) -> list[str]:
    rows = csv.DictReader(next(out.rglob("metrics.csv")).open())
    return [row["train/loss"] for row in rows if row.get("train/loss")]


def test_the_tested_model_is_the_same_whether_validation_ran_or_not(split_root, validated, tmp_path, monkeypatch):
    import petl_bench.run

    validated_out, validated_record = validated
    build_trainer = petl_bench.run.build_trainer

    def without_validation(*args):
        training = build_trainer(*args)
        training.trainer.limit_val_batches = 0
        return training

    monkeypatch.setattr(petl_bench.run, "build_trainer", without_validation)
    plain = _run(split_root, tmp_path, TEMPLATE)
    assert len(validated_record["val_accuracy_per_epoch"]) == 2 and plain["val_accuracy_per_epoch"] == []
    assert validated_record["accuracy"] == plain["accuracy"]
    assert len(_losses(validated_out)) == 2 * 3  # 2 epochs of 3 steps (6 images per task, batches of 2)
    assert _losses(validated_out) == _losses(tmp_path)  # every step trained alike


def test_a_resumed_run_keeps_the_validation_of_its_earlier_epochs(split_root, validated, tmp_path, monkeypatch):
    import os
    import signal

    from petl_bench.module import PetlModule

    batch_start = PetlModule.on_train_batch_start

    def sigint_in_the_second_epoch(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 1):
            os.kill(os.getpid(), signal.SIGINT)
        return batch_start(self, batch, batch_idx)

    monkeypatch.setattr(PetlModule, "on_train_batch_start", sigint_in_the_second_epoch)
    assert call(_argv(split_root, tmp_path, TEMPLATE))[0] == 130  # stopped, epoch 1 kept
    monkeypatch.setattr(PetlModule, "on_train_batch_start", batch_start)
    resumed = _run(split_root, tmp_path, TEMPLATE)
    _, alone = validated
    assert resumed["resumed_from_epoch"] == 1
    assert resumed["val_accuracy_per_epoch"] == alone["val_accuracy_per_epoch"]
    assert resumed["accuracy"] == alone["accuracy"]


def test_a_smoke_run_on_a_fixed_split_validates_one_batch_per_task(split_root, fixed_split, tmp_path, monkeypatch):
    from petl_bench.module import PetlModule

    batches = []
    step = PetlModule.validation_step
    monkeypatch.setattr(
        PetlModule, "validation_step", lambda self, *args: batches.append(args[-1]) or step(self, *args)
    )
    assert "fast_dev_run: no record written" in call_ok(_argv(split_root, tmp_path, "train.fast_dev_run=true"))
    assert batches == [0, 1]  # one batch of each task's validation loader (dataloader_idx)
