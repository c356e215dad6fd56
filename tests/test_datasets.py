"""PACS, VLCS, Office-31, TerraIncognita and DomainNet: readers on generated trees in their real layouts
and the other spellings people have, expected counts, `data check`, the run's warning, grids, params."""

import csv
import io
import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest

from petl_bench.config import DataConfig, root_folder
from petl_bench.datamodules import MultiDomainDataModule, read_manifest
from petl_bench.datamodules.counts import compare_counts, expected_counts
from petl_bench.datamodules.datasets import SPECS, canonical_tasks, folder_key
from petl_bench.datamodules.records import SYNTHETIC_MARKER, canonical_classes, prompt_name
from petl_bench.errors import UserError
from petl_bench.params import count_rows
from petl_bench.report import dataset_name
from petl_bench.sweep.grid import expand_grid, grid_file

from cli_calls import call

PER_CELL = {"pacs": 7, "vlcs": 3, "office31": 2, "terraincognita": 2, "domainnet": 1}  # as conftest writes
TOTALS = {"pacs": 9_991, "vlcs": 10_729, "office31": 4_110, "terraincognita": 24_788, "domainnet": 586_575}
SHAPES = {"pacs": (4, 7), "vlcs": (4, 5), "office31": (3, 31), "terraincognita": (4, 10), "domainnet": (6, 345)}


@pytest.fixture
def roots(request):
    return lambda name: request.getfixturevalue(f"{name}_root")


def cells(manifest):
    return Counter((r.domain, r.label) for r in manifest.records)


def check_complete(manifest, name):
    """Every domain and class of the dataset, PER_CELL images each, labelled by the folder they are in."""
    spec = SPECS[name]
    assert manifest.domains == list(spec.domains)
    assert manifest.classnames == [prompt_name(k) for k in spec.class_keys]
    assert cells(manifest) == {(d, label): PER_CELL[name] for d in spec.domains for label in range(len(spec.classes))}
    assert manifest.skipped == []


# -- the data files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_class_lists_and_counts_agree_with_the_sources(name):
    classes = canonical_classes(name)
    assert (len(SPECS[name].domains), len(classes)) == SHAPES[name]
    assert len({folder_key(c) for c in classes}) == len(classes)  # no two folders read alike
    expected = expected_counts(name, Path("/nonexistent"))  # the package's counts alone
    assert list(expected.domains) == list(SPECS[name].domains)
    assert sum(expected.domains.values()) == TOTALS[name]
    for domain, total in expected.domains.items():  # per-class rows, where a source gives them, sum up
        per_class = [n for (d, _), n in expected.cells.items() if d == domain]
        assert not per_class or (len(per_class) == len(classes) and sum(per_class) == total)
    assert {c for _, c in expected.cells} <= set(classes)


def test_domainnet_classes_follow_the_official_label_order():
    classes = canonical_classes("domainnet")
    assert classes.index("t-shirt") == 327  # Dassl's DomainNet notes: class 327 is t-shirt
    assert classes[0] == "aircraft_carrier" and classes.index("The_Eiffel_Tower") == classes.index("tent") + 1
    assert set(canonical_classes("minidomainnet")) <= set(classes)


def test_readable_prompt_names():
    assert canonical_tasks("office31")[0].classnames[0] == "backpack"  # the folder is back_pack
    assert canonical_tasks("vlcs")[0].classnames == ("bird", "car", "chair", "dog", "person")
    assert canonical_tasks("domainnet")[0].classnames[-3:] == ("yoga", "zebra", "zigzag")
    assert [len(canonical_tasks(d)) for d in ("officehome", "office31", "domainnet")] == [4, 3, 6]
    assert [dataset_name(d) for d in ("office31", "terraincognita")] == ["Office-31", "TerraIncognita"]


# -- readers: the layouts `data synth` writes, then the other spellings --------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_reader_on_its_layout(name, roots):
    root = roots(name)
    manifest = read_manifest(name, root)
    check_complete(manifest, name)
    keys = [folder_key(c) for c in SPECS[name].classes]
    for record in manifest.records[:: max(1, len(manifest.records) // 50)]:
        assert folder_key(Path(record.path).parent.name) == keys[record.label]


@pytest.mark.parametrize("wrapper", ["kfold", "images", "images/kfold"])
def test_pacs_original_archive_and_dassl_folders(pacs_root, copy_tree, tmp_path, wrapper):
    root = tmp_path / "pacs"
    shutil.copytree(pacs_root, root / wrapper)
    (root / wrapper / "art_painting").rename(root / wrapper / "Art Painting")
    manifest = read_manifest("pacs", root)
    check_complete(manifest, "pacs")
    assert all(r.path.startswith(f"{wrapper}/") for r in manifest.records)


@pytest.mark.parametrize("parts", [("full", "test"), ("train", "crossval", "test")])
def test_vlcs_original_release(vlcs_root, tmp_path, parts):
    """{CALTECH,LABELME,SUN,PASCAL}/{full,test}/{0..4}/ (Dassl's copy: train, crossval, test)."""
    root = tmp_path / "vlcs"
    originals = {"Caltech101": "CALTECH", "LabelMe": "LABELME", "SUN09": "SUN", "VOC2007": "PASCAL"}
    for domain, original in originals.items():
        for number, cls in enumerate(canonical_classes("vlcs")):
            for i, image in enumerate(sorted((vlcs_root / domain / cls).iterdir())):
                target = root / original / parts[i % len(parts)] / str(number)
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(image, target / image.name)
    manifest = read_manifest("vlcs", root)
    check_complete(manifest, "vlcs")
    dog = [r for r in manifest.records if r.classname == "dog"]
    assert dog and all(Path(r.path).parent.name == "3" for r in dog)


def test_office31_without_images_folder_and_jigen_spellings(office31_root, copy_tree):
    root = copy_tree(office31_root)
    for domain in ("amazon", "dslr", "webcam"):  # Dassl's copy: no images/ level
        (root / domain / "images").rename(root / f"{domain}-classes")
        shutil.rmtree(root / domain)
        (root / f"{domain}-classes").rename(root / domain.capitalize())
    (root / "Dslr" / "back_pack").rename(root / "Dslr" / "backpack")  # JiGen's copy
    (root / "Dslr" / "laptop_computer").rename(root / "Dslr" / "laptop")
    manifest = read_manifest("office31", root)
    check_complete(manifest, "office31")
    assert {r.path for r in manifest.records if r.domain == "dslr" and r.classname == "backpack"} == {
        f"Dslr/backpack/back_pack_{k:03d}.jpg" for k in range(2)
    }


def test_terraincognita_short_location_names(terraincognita_root, copy_tree):
    root = copy_tree(terraincognita_root)
    (root / "location_38").rename(root / "L38")
    (root / "location_100").rename(root / "100")
    check_complete(read_manifest("terraincognita", root), "terraincognita")


def test_domainnet_lists_place_and_pool(domainnet_root, copy_tree):
    root = copy_tree(domainnet_root)
    (root / "clipart" / "zebra" / "stray.jpg").write_bytes((root / "clipart" / "zebra" / "zebra_000.jpg").read_bytes())
    check_complete(read_manifest("domainnet", root), "domainnet")  # the lists name the pool: no stray.jpg
    lists = sorted(root.glob("*_t*.txt"))
    (root / "splits").mkdir()
    for listing in lists:  # Dassl keeps them in splits/
        listing.rename(root / "splits" / listing.name)
    check_complete(read_manifest("domainnet", root), "domainnet")
    (root / "splits" / "real_test.txt").unlink()
    with pytest.raises(UserError, match=r"real_test\.txt"):
        read_manifest("domainnet", root)
    shutil.rmtree(root / "splits")  # DomainBed's copy: no lists, every image in the class folders
    manifest = read_manifest("domainnet", root)
    assert len(manifest.records) == 6 * 345 + 1 and "clipart/zebra/stray.jpg" in {r.path for r in manifest.records}


@pytest.mark.parametrize("name", list(SPECS))
def test_missing_domain_is_named(name, roots, copy_tree):
    root = copy_tree(roots(name))
    shutil.rmtree(root / next(iter(SPECS[name].domains)))
    with pytest.raises(UserError, match=f"not a {SPECS[name].title} root.*missing {next(iter(SPECS[name].domains))}"):
        read_manifest(name, root)


def test_unexpected_class_folder_is_an_error(vlcs_root, copy_tree):
    root = copy_tree(vlcs_root)
    (root / "SUN09" / "horse").mkdir()
    with pytest.raises(UserError, match="unexpected 1: horse"):
        read_manifest("vlcs", root)


@pytest.mark.parametrize("name", list(SPECS))
def test_missing_root(name, tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_manifest(name, tmp_path / "absent")


# -- data check ---------------------------------------------------------------------------------------
def test_data_check_names_a_deleted_class(pacs_root, domainnet_root, copy_tree):
    root = copy_tree(pacs_root)
    shutil.rmtree(root / "cartoon" / "giraffe")
    code, _, err = call(["data", "check", "--no-progress", "--dataset", "pacs", "--root", root])
    assert code == 2 and "cartoon" in err and "missing 1: giraffe" in err and len(err.splitlines()) == 1
    root = copy_tree(domainnet_root, "domainnet")
    shutil.rmtree(root / "sketch" / "The_Mona_Lisa")
    code, _, err = call(["data", "check", "--no-progress", "--dataset", "domainnet", "--root", root])
    assert code == 2 and "sketch/The_Mona_Lisa (1 images)" in err


def test_data_check_names_a_missing_image(domainnet_root, pacs_root, copy_tree):
    root = copy_tree(domainnet_root)
    (root / "painting" / "owl" / "owl_000.jpg").unlink()
    code, out, _ = call(["data", "check", "--no-progress", "--dataset", "domainnet", "--root", root])
    assert code == 1  # an image its split lists is missing: the check fails
    assert "1 listed images missing, e.g. painting/owl/owl_000.jpg" in out
    assert "  missing: painting/owl/owl_000.jpg" in out and "  painting/owl: 0 of 1" in out
    root = copy_tree(pacs_root, "pacs")  # per-class counts from the sources: the cell is named
    (root / "photo" / "dog" / "dog_000.jpg").unlink()
    code, out, _ = call(["data", "check", "--no-progress", "--dataset", "pacs", "--root", root])
    assert code == 0 and "  photo/dog: 6 of 189" in out and "PACS: 195 of 9,991 expected images" in out


def test_data_check_compares_per_domain_where_no_source_counts_classes(terraincognita_root):
    code, out, _ = call(
        ["data", "check", "--no-progress", "--dataset", "terraincognita", "--root", terraincognita_root]
    )
    assert code == 0
    assert "TerraIncognita: 80 of 24,788 expected images" in out and "compared per domain" in out
    expected_row = next(line for line in out.splitlines() if line.startswith("expected"))
    assert expected_row.split()[1:] == ["9767", "4020", "6122", "4879"]


def test_counts_of_a_complete_listed_root_agree(domainnet_root):
    check = compare_counts("domainnet", read_manifest("domainnet", domainnet_root))
    assert check.short_cells == [] and check.missing == [] and check.per_class


# -- runs -----------------------------------------------------------------------------------------------
def test_run_warns_in_one_line_when_images_are_fewer_than_expected(pacs_root, copy_tree, tiny_backbone, tmp_path):
    def manifest(root):
        cfg = DataConfig(dataset="pacs", root=str(root), split="6shot", num_workers=0)
        return MultiDomainDataModule.for_backbone(cfg, tiny_backbone, out=tmp_path).manifest

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest(pacs_root)  # synthetic: small on purpose, no warning
    root = copy_tree(pacs_root)
    (root / SYNTHETIC_MARKER).unlink()
    with pytest.warns(UserWarning) as caught:
        manifest(root)
    message = str(caught[0].message)
    assert message.startswith(
        "PACS: 196 of 9,991 expected images (9,795 fewer; 28 domain/class cells differ, e.g. art_painting/dog 7 of 379)"
    )
    call(["methods"])  # the CLI prints each warning as one line, without the source line that warned
    assert warnings.formatwarning(message, UserWarning, "multidomain.py", 1) == f"UserWarning: {message}\n"


def test_zeroshot_run_on_pacs_layout(pacs_root, tmp_path):
    out = tmp_path / "results"
    code, _, stderr = call(
        [
            "run",
            "--method",
            "zeroshot",
            "--dataset",
            "pacs",
            "--root",
            pacs_root,
            "--split",
            "6shot",
            "--model",
            "tiny",
            "--out",
            out,
            "--no-progress",
            "--set",
            "data.num_workers=0",
        ]
    )
    assert code == 0, stderr
    record_file = out / "runs" / "pacs" / root_folder(pacs_root) / "6shot" / "zeroshot@tiny" / "seed0.json"
    record = json.loads(record_file.read_text())
    assert record["tasks"] == ["art_painting", "cartoon", "photo", "sketch"]
    assert (record["train_images"], record["test_images"]) == (4 * 7 * 6, 4 * 7)
    rows = list(csv.reader(io.StringIO(Path(record["split_file"]).read_text())))
    assert {row[2] for row in rows[1:]} == {"dog", "elephant", "giraffe", "guitar", "horse", "house", "person"}


def test_too_few_images_for_the_shots_names_the_cell(pacs_root, tmp_path):
    code, _, err = call(
        [
            "run",
            "--method",
            "zeroshot",
            "--dataset",
            "pacs",
            "--root",
            pacs_root,
            "--split",
            "8shot",
            "--model",
            "tiny",
            "--out",
            tmp_path,
            "--no-progress",
            "--set",
            "data.num_workers=0",
        ]
    )
    assert code == 2 and "8-shot split needs 8 training images per class, but art_painting/dog has 7" in err


# -- grids and parameter counts -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_grid_runs_the_mt_methods_on_drawable_splits(name):
    grid = expand_grid(grid_file(name))
    assert grid.dataset == name
    assert grid.labels == ["zeroshot", "clip-adapter", "bitfit", "coop-mt", "vpt-mt", "maple-mt", "mmap"]
    smallest = min(expected_counts(name, Path("/nonexistent")).cells.values(), default=None)
    shots = [int(split.removesuffix("shot")) for split in grid.splits]
    assert shots[0] == 4 and (smallest is None or max(shots) <= smallest)


def test_params_count_the_dataset_tasks():
    rows = {r["method"]: r for r in count_rows("tiny", "office31")}  # three tasks (DomainNet's six: above)
    assert rows["coop"]["trainable"] == 3 * rows["coop-mt"]["trainable"]  # one prompt per task
    assert "mmap (3 groups)" in rows and "mmap (4 groups)" not in rows
    assert rows["coop"]["paper_m"] == "" and rows["coop"]["agrees"] == ""  # the paper counts its own datasets
