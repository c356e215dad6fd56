"""CoOp's few-shot protocol over a dataset's fixed split: N training and min(N, 4) validation shots
per class from the train and val parts, the test part as the test set; the class prompt's template
in the config, its hash and the tasks."""

import csv
import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from petl_bench.config import DataConfig, RunConfig, apply_overrides, validate
from petl_bench.datamodules.records import DEFAULT_TEMPLATE, Manifest, Record
from petl_bench.datamodules.splits import draw_split, split_csv
from petl_bench.errors import UserError
from petl_bench.methods.configs import CoOpConfig

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


def test_a_manifest_mixing_parts_and_pool_records_is_one_line():
    manifest = _manifest({"train": 2, "val": 1, "test": 1})
    mixed = replace(manifest, records=[*manifest.records, Record("a/ant/x.png", 0, "a", "ant")])
    with pytest.raises(UserError, match=r"^/nowhere: some records have a split part .* and some have none$"):
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
