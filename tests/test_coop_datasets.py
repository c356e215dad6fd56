"""CoOp's benchmark and the ImageNet family: the package's class lists against their sources, every reader
on the layout `data synth` writes (with and without a split JSON where both exist), the parts, names and
labels they give, their one-line errors, and `data check` (full and `--quick`)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from petl_bench.datamodules import images as images_module
from petl_bench.datamodules.catalog import COOP_DATASETS, DATASETS, IMAGENET_VARIANTS, TEMPLATES, TITLES
from petl_bench.datamodules.coop import (
    EUROSAT_NAMES,
    FOLDER_SPECS,
    PETS_VAL_SEED,
    SPECS,
    SPLIT_SPECS,
    expected_sizes,
    imagenet_classes,
    subset_wnids,
)
from petl_bench.datamodules.coopsynth import part_sizes, write_coop_synthetic
from petl_bench.datamodules.counts import warn_if_short
from petl_bench.datamodules.datasets import canonical_tasks
from petl_bench.datamodules.manifest import READERS, read_manifest
from petl_bench.datamodules.records import DEFAULT_TEMPLATE, SYNTHETIC_MARKER
from petl_bench.errors import UserError

from cli_calls import call, call_ok

CLASSES = 3  # classes per generated root (the real count where a test says so)
PER_CLASS = 4  # images per class: 2 train, 1 val, 1 test (ImageNet: 3 train, 1 test)
TIMM_INFO = Path(pytest.importorskip("timm").__file__).parent / "data" / "_info"


@pytest.fixture(scope="module")
def coop_roots(tmp_path_factory):
    """name -> a generated root of CLASSES classes, PER_CLASS images each; made on first use."""
    made = {}

    def root(name: str, **kwargs) -> Path:
        key = (name, *sorted(kwargs.items()))
        if key not in made:
            made[key] = tmp_path_factory.mktemp(name)
            write_coop_synthetic(made[key], name, PER_CLASS, kwargs.pop("n_classes", CLASSES), **kwargs)
        return made[key]

    return root


# -- the package's data ----------------------------------------------------------------------------
def test_imagenet_classes_are_timms_wnids_with_open_clips_names():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    classes = imagenet_classes()
    assert list(classes) == (TIMM_INFO / "imagenet_synsets.txt").read_text().split()
    assert list(classes.values()) == list(IMAGENET_CLASSNAMES)
    for name in ("imagenet_a", "imagenet_r"):
        assert subset_wnids(name) == (TIMM_INFO / f"{name}_synsets.txt").read_text().split()


def test_every_dataset_is_named_read_and_counted():
    assert set(COOP_DATASETS + IMAGENET_VARIANTS) == set(SPECS) <= set(READERS) == set(DATASETS)
    assert all(name in TITLES for name in SPECS)
    sizes = {name: expected_sizes(name) for name in SPECS}
    assert sizes["caltech101"].parts == {"train": 4128, "val": 1649, "test": 2465}
    assert sizes["imagenet"].parts["val"] == 0 and sizes["imagenet_a"].classes == 200
    assert sum(s.classes for n, s in sizes.items() if n in COOP_DATASETS) == 1000 + 1191  # CoOp's 11 datasets


def test_canonical_tasks_count_the_classes():
    tasks = {name: canonical_tasks(name) for name in ("imagenet", "imagenet_r", "eurosat", "sun397")}
    assert {name: len(t[0].classnames) for name, t in tasks.items()} == {
        "imagenet": 1000,
        "imagenet_r": 200,
        "eurosat": 10,
        "sun397": 397,
    }
    assert tasks["imagenet_r"][0].classnames[0] == "goldfish" and tasks["eurosat"][0].template == TEMPLATES["eurosat"]
    assert tasks["eurosat"][0].classnames == tuple(EUROSAT_NAMES.values())  # the stand-ins only where names are unknown
    assert tasks["sun397"][0].classnames[-1] == "class 397"


# -- readers on generated layouts ------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPLIT_SPECS))
def test_split_readers_give_each_image_its_listed_part(name, coop_roots):
    root = coop_roots(name)
    manifest = read_manifest(name, root)
    spec = SPLIT_SPECS[name]
    assert manifest.domains == [spec.title] and len(manifest.classnames) == CLASSES and manifest.skipped == []
    assert manifest.template == TEMPLATES.get(name, DEFAULT_TEMPLATE)
    sizes = part_sizes(PER_CLASS, ("train", "val", "test"))
    assert Counter((r.label, r.part) for r in manifest.records) == {
        (label, part): n for label in range(CLASSES) for part, n in sizes.items()
    }
    if spec.split_file:  # the JSON is the source: every record where it lists it
        split = json.loads((root / spec.split_file).read_text())
        prefix = f"{spec.image_dir}/" if spec.image_dir else ""
        listed = {prefix + rel: (part, label) for part in split for rel, label, _ in split[part]}
        assert {r.path: (r.part, r.label) for r in manifest.records} == listed
        assert manifest.split_source == spec.split_file
    else:
        assert manifest.split_source.startswith("images_variant_train.txt")


def test_class_names_are_coops_prompt_forms(coop_roots):
    assert read_manifest("eurosat", coop_roots("eurosat", n_classes=10)).classnames == list(EUROSAT_NAMES.values())
    assert read_manifest("dtd", coop_roots("dtd")).classnames[:2] == ["synthetic class 000", "synthetic class 001"]
    assert read_manifest("fgvc_aircraft", coop_roots("fgvc_aircraft")).classnames[0] == "Synthetic 000"


def test_caltech_names_follow_coops_renames(coop_roots, copy_tree):
    root = copy_tree(coop_roots("caltech101"))
    split_file = root / "split_zhou_Caltech101.json"
    split = json.loads(split_file.read_text())
    for part in split.values():
        for entry in part:
            entry[2] = {"synthetic_class_000": "Faces", "synthetic_class_001": "dollar_bill"}.get(entry[2], entry[2])
    split_file.write_text(json.dumps(split))
    assert read_manifest("caltech101", root).classnames[:2] == ["face", "dollar bill"]


def test_pets_without_its_json_reads_the_annotations_and_splits_trainval(tmp_path):
    n = write_coop_synthetic(tmp_path / "own", "oxford_pets", per_class=10, n_classes=CLASSES, own_split=True)
    assert n == 10 * CLASSES and not (tmp_path / "own" / "split_zhou_OxfordPets.json").exists()
    write_coop_synthetic(tmp_path / "json", "oxford_pets", per_class=10, n_classes=CLASSES)
    own, with_json = (read_manifest("oxford_pets", tmp_path / d) for d in ("own", "json"))
    share = f"20% of each class's trainval, seed {PETS_VAL_SEED}"
    assert own.split_source == f"annotations/trainval.txt+test.txt (val: {share})"
    assert with_json.split_source == "split_zhou_OxfordPets.json"
    assert own.classnames == with_json.classnames == [f"synthetic class {i:03d}" for i in range(CLASSES)]
    # trainval is 7 per class (5 train + 2 val in the JSON): round(7 * 0.2) = 1 to val, drawn with the seed
    assert Counter(r.part for r in own.records) == {"train": 6 * CLASSES, "val": CLASSES, "test": 3 * CLASSES}
    assert {r.path for r in own.records if r.part == "test"} == {r.path for r in with_json.records if r.part == "test"}
    assert read_manifest("oxford_pets", tmp_path / "own") == own  # the same val every time


def test_imagenet_reads_train_and_val_folders_as_train_and_test(coop_roots, copy_tree):
    manifest = read_manifest("imagenet", coop_roots("imagenet"))
    wnids = list(imagenet_classes())
    assert manifest.classnames == list(imagenet_classes().values())
    assert manifest.split_source == "images/train/+images/val/"
    assert Counter((r.label, r.part) for r in manifest.records) == {
        (label, part): n for label in range(CLASSES) for part, n in part_sizes(PER_CLASS, ("train", "test")).items()
    }
    assert all(r.path.split("/")[2] == wnids[r.label] for r in manifest.records)
    root = copy_tree(coop_roots("imagenet"))
    (root / "classnames.txt").write_text("".join(f"{w} name of {w}\n" for w in wnids), encoding="utf-8")
    assert read_manifest("imagenet", root).classnames[:2] == [f"name of {w}" for w in wnids[:2]]
    (root / "classnames.txt").write_text("n01440764 tench\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"classnames.txt names no class for 999 wnid\(s\), e.g. n01443537"):
        read_manifest("imagenet", root)


@pytest.mark.parametrize("name", IMAGENET_VARIANTS)
def test_imagenet_variants_are_test_parts_over_their_classes(name, coop_roots):
    manifest = read_manifest(name, coop_roots(name))
    wnids = subset_wnids(name) if name in ("imagenet_a", "imagenet_r") else list(imagenet_classes())
    assert len(manifest.classnames) == len(wnids) == (200 if name in ("imagenet_a", "imagenet_r") else 1000)
    names = imagenet_classes()
    assert manifest.classnames == [names[w] for w in wnids]
    assert {r.part for r in manifest.records} == {"test"} and len(manifest.records) == CLASSES * PER_CLASS
    folder = FOLDER_SPECS[name].folders[0][0]
    for record in manifest.records:  # V2's folders are labels, the others' wnids (A and R: relabelled 0..199)
        class_folder = record.path.removeprefix(folder + "/").split("/")[0]
        assert class_folder == (str(record.label) if name == "imagenetv2" else wnids[record.label])


# -- errors ------------------------------------------------------------------------------------------
def test_a_root_missing_its_parts_is_one_line(tmp_path):
    (tmp_path / "2750").mkdir()
    with pytest.raises(UserError) as err:
        read_manifest("eurosat", tmp_path)
    assert str(err.value) == f"{tmp_path} is not an EuroSAT root: expected 2750/ and split_zhou_EuroSAT.json"
    with pytest.raises(UserError, match=r"not an ImageNet root: expected images/train/ and images/val/ .*missing"):
        read_manifest("imagenet", tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match=r"FGVCAircraft class list missing: .*variants.txt"):
        read_manifest("fgvc_aircraft", tmp_path)


def test_bad_split_files_and_folders_are_one_line(coop_roots, copy_tree):
    root = copy_tree(coop_roots("dtd"))
    split_file = root / "split_zhou_DescribableTextures.json"
    split = json.loads(split_file.read_text())
    split["test"][0][2] = "another name"
    split_file.write_text(json.dumps(split))
    with pytest.raises(UserError, match=r"label 0 has several class names: another name, synthetic_class_000$"):
        read_manifest("dtd", root)
    for part in split.values():  # every image of label 1 named as label 0
        for entry in part:
            entry[2] = "synthetic_class_000" if entry[1] < 2 else entry[2]
    split_file.write_text(json.dumps(split))
    with pytest.raises(UserError, match=r"labels \[0, 1\] share the class name 'synthetic_class_000'$"):
        read_manifest("dtd", root)
    split_file.write_text(json.dumps({"train": []}))
    with pytest.raises(UserError, match=r"is not a CoOp split file .*KeyError: 'val'"):
        read_manifest("dtd", root)
    root = copy_tree(coop_roots("imagenet_sketch"), "sketch")
    (root / "images" / "cats").mkdir()
    with pytest.raises(UserError, match=r"1 folder\(s\) that are not ImageNet-Sketch classes, e.g. cats"):
        read_manifest("imagenet_sketch", root)


def test_a_run_on_a_short_root_warns_in_one_line(coop_roots, copy_tree):
    root = copy_tree(coop_roots("eurosat"))
    (root / SYNTHETIC_MARKER).unlink()  # synthetic roots are short by design and say so themselves
    with pytest.warns(UserWarning) as caught:
        warn_if_short("eurosat", read_manifest("eurosat", root))
    assert [str(w.message) for w in caught] == [
        "EuroSAT: 3 of 10 classes, train 6 of 13,500, val 3 of 5,400, test 3 of 8,100; going on with what is there"
    ]


def test_a_missing_listed_image_fails_a_run_in_one_line(coop_roots, copy_tree):
    root = copy_tree(coop_roots("food101"))
    first = read_manifest("food101", root).records[0].path
    (root / first).unlink()
    with pytest.raises(UserError, match=rf"1 listed image\(s\) missing under .*{first}$"):
        read_manifest("food101", root)


# -- data synth and data check ---------------------------------------------------------------------
def test_synth_writes_the_real_class_count_and_check_compares_it(tmp_path):
    out = call_ok(["data", "synth", "--out", tmp_path / "cars", "--layout", "stanford_cars"])
    assert out.startswith("wrote 588 images")  # 196 classes x 3
    out = call_ok(["data", "check", "--dataset", "stanford_cars", "--root", tmp_path / "cars", "--no-progress"])
    assert out.splitlines() == [
        "StanfordCars: 196 of 196 classes; train 196 of 6,509, val 196 of 1,635, test 196 of 8,041 "
        "(split: split_zhou_StanfordCars.json)",
        "588 readable images, 0 unreadable",
    ]
    code, _, err = call(["data", "synth", "--out", tmp_path / "e", "--layout", "eurosat", "--own-split"])
    assert code == 2 and "--own-split is OxfordPets'" in err
    code, _, err = call(["data", "synth", "--out", tmp_path / "e", "--layout", "imagenet", "--classes", "1001"])
    assert code == 2 and "--classes must be 1..1000 for ImageNet; got 1001" in err


def test_check_names_a_missing_class_and_a_missing_image(coop_roots, copy_tree):
    root = copy_tree(coop_roots("ucf101"))
    shutil.rmtree(root / "UCF-101-midframes" / "synthetic_class_001")
    (root / "UCF-101-midframes" / "synthetic_class_002" / "v_synthetic_class_002_g01_c01.jpg").unlink()
    code, stdout, stderr = call(["data", "check", "--dataset", "ucf101", "--root", root, "--no-progress"])
    assert code == 1, stderr  # something listed is missing: the check fails
    out = stdout.splitlines()
    assert out[0].startswith("UCF101: 2 of 101 classes; train 3 of 7,639, val 2 of 1,898, test 2 of 3,783")
    assert out[1] == "missing classes (1): synthetic_class_001 (synthetic class 001)"
    assert out[2].startswith("missing listed images (5): UCF-101-midframes/synthetic_class_001/")
    assert "UCF-101-midframes/synthetic_class_002/v_synthetic_class_002_g01_c01.jpg" in out[2]
    assert out[3:] == ["7 readable images, 0 unreadable"]


def test_quick_check_opens_no_image(coop_roots, copy_tree, monkeypatch):
    opened = []
    for name in ("header_error", "decode_error"):
        real = getattr(images_module, name)
        monkeypatch.setattr(images_module, name, lambda path, real=real: opened.append(path) or real(path))
    root = copy_tree(coop_roots("imagenet"))
    shutil.rmtree(root / "images" / "val" / "n01443537")
    code, stdout, stderr = call(["data", "check", "--dataset", "imagenet", "--root", root, "--quick"])
    assert code == 1, stderr
    out = stdout.splitlines()
    assert out == [
        "ImageNet: 3 of 1,000 classes; train 9 of 1,281,167, test 2 of 50,000 (split: images/train/+images/val/)",
        "missing classes (997): n01491361 (tiger shark), n01494475 (hammerhead shark), n01496331 (electric ray), "
        "n01498041 (stingray), n01514668 (rooster) ...",
        "(--quick: names and counts only; no image was opened)",
    ]
    assert opened == []
    assert call(["data", "check", "--dataset", "imagenet", "--root", root, "--no-progress"])[0] == 1
    assert len(opened) == 2 * 11  # the full check reads each header, then decodes each image
    code, _, err = call(["data", "check", "--dataset", "pacs", "--root", root, "--quick"])
    assert code == 2 and "--quick is for CoOp's benchmark" in err


# -- a run on CoOp's protocol ------------------------------------------------------------------------
@pytest.mark.slow
def test_coop_on_generated_eurosat_trains_4_and_validates_4_per_class_and_tests_the_split_s_test_part(tmp_path):
    """The issue's own command: `run --method coop --dataset eurosat --split 4shot --model tiny` on a
    generated root: 4 training and 4 validation images per class, the split file's whole test part, the
    dataset's template and the split's source in the record."""
    root = tmp_path / "eurosat"
    write_coop_synthetic(root, "eurosat", 24, 10)
    parts = json.loads((root / "split_zhou_EuroSAT.json").read_text())
    argv = ["run", "--method", "coop", "--dataset", "eurosat", "--root", root, "--split", "4shot", "--model", "tiny"]
    settings = ["--set", "train.epochs=1", "--set", "data.num_workers=0"]
    said = call_ok([*argv, "--out", tmp_path / "out", "--no-progress", *settings])
    # One domain, one task, one epoch: each said in the singular.
    assert "images, 1 domain, 10 classes" in said and "size: 1 task x 10 classes;" in said
    assert "train: 1 epoch ..." in said and "images of 1 task ..." in said
    (record_file,) = (tmp_path / "out" / "runs").rglob("seed0.json")
    record = json.loads(record_file.read_text())
    assert (record["train_images"], record["val_images"]) == (40, 40)
    assert record["test_images"] == len(parts["test"]) and len(parts["val"]) > 40
    assert record["template"] == TEMPLATES["eurosat"] == "a centered satellite photo of {}."
    assert record["split_source"] == "split_zhou_EuroSAT.json"
    assert set(record["val_accuracy"]) == {TITLES["eurosat"], "average"}
    # The linear probe's C is scored on those validation shots, not on held-out training shots.
    probe = [*argv[:2], "linear-probe", *argv[3:], "--out", tmp_path / "probe", "--no-progress", *settings]
    call_ok(probe)
    (record_file,) = (tmp_path / "probe" / "runs").rglob("seed0.json")
    assert json.loads(record_file.read_text())["prepared"]["linear_probe"]["c_scored_on"] == "validation shots"
