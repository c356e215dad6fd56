"""Dataset layouts, seeded k-shot splits, the data module, and zero-shot against raw open_clip."""

import ast
import csv
import graphlib
import hashlib
import io
import random
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from petl_bench import datamodules
from petl_bench.config import DATASETS, DataConfig, root_folder
from petl_bench.datamodules import (
    Manifest,
    MultiDomainDataModule,
    canonical_split,
    draw_split,
    paper_split,
    parse_shots,
    read_manifest,
)
from petl_bench.datamodules.manifest import READERS
from petl_bench.datamodules.records import canonical_classes
from petl_bench.datamodules.splits import split_csv, split_path
from petl_bench.errors import UserError

PER_CLASS, FOLDER_CLASSES = 3, 4  # as written by the fixtures in conftest.py

OFFICEHOME_DOMAINS = ["Art", "Clipart", "Product", "Real World"]
MINI_DOMAINS = ["clipart", "painting", "real", "sketch"]


# -- layouts --------------------------------------------------------------------------------------
def _check_manifest(manifest: Manifest, domains, n_classes, per_class=PER_CLASS):
    assert manifest.domains == domains
    assert len(manifest.classnames) == n_classes
    assert len(manifest.records) == len(domains) * n_classes * per_class
    assert manifest.skipped == []
    cells = Counter((r.domain, r.label) for r in manifest.records)
    assert cells == {(d, label): per_class for d in domains for label in range(n_classes)}
    for record in manifest.records:
        assert (manifest.root / record.path).is_file()
        assert record.classname == manifest.classnames[record.label]
    assert [t.name for t in manifest.tasks] == domains
    assert all(t.classnames == tuple(manifest.classnames) for t in manifest.tasks)


def test_every_dataset_the_cli_offers_has_a_reader():
    assert set(DATASETS) == set(READERS)


def test_officehome_layout(officehome_root):
    manifest = read_manifest("officehome", officehome_root)
    _check_manifest(manifest, OFFICEHOME_DOMAINS, 65)
    canonical = canonical_classes("officehome")
    assert canonical[0] == "Alarm_Clock"
    assert manifest.classnames[0] == "alarm clock"
    assert manifest.classnames == [c.replace("_", " ").lower() for c in canonical]
    # labels index the canonical list: the folder a record lives in is its canonical class
    for record in manifest.records:
        assert record.path.split("/")[1] == canonical[record.label]
    assert {r.path.split("/")[0] for r in manifest.records if r.domain == "Real World"} == {"Real World"}


def test_minidomainnet_layout(minidomainnet_root):
    manifest = read_manifest("minidomainnet", minidomainnet_root)
    _check_manifest(manifest, MINI_DOMAINS, 126)
    canonical = canonical_classes("minidomainnet")
    for record in manifest.records:
        domain, cls, _ = record.path.split("/")
        assert domain == record.domain and cls == canonical[record.label]
    assert "alarm clock" in manifest.classnames
    assert manifest.classnames[canonical.index("alarm_clock")] == "alarm clock"


def test_folder_layout(folder_root):
    manifest = read_manifest("folder", folder_root)
    _check_manifest(manifest, ["art", "clipart", "product", "real world"], FOLDER_CLASSES)
    assert manifest.classnames == ["anchor", "bicycle", "candle", "dolphin"]


def test_officehome_accepts_real_world_underscore_and_lower_case(officehome_root, copy_tree):
    root = copy_tree(officehome_root)
    (root / "Real World").rename(root / "Real_World")
    for name in ("Art", "Clipart", "Product"):
        (root / name).rename(root / name.lower())
    manifest = read_manifest("officehome", root)
    _check_manifest(manifest, OFFICEHOME_DOMAINS, 65)
    assert {r.path.split("/")[0] for r in manifest.records} == {"art", "clipart", "product", "Real_World"}
    assert {r.domain for r in manifest.records if r.path.startswith("Real_World/")} == {"Real World"}


def test_officehome_missing_class_is_named(officehome_root, copy_tree):
    root = copy_tree(officehome_root)
    shutil.rmtree(root / "Clipart" / "Backpack")
    with pytest.raises(UserError, match="Backpack") as info:
        read_manifest("officehome", root)
    assert "Clipart" in str(info.value)


def test_officehome_unexpected_class_is_named(officehome_root, copy_tree):
    root = copy_tree(officehome_root)
    (root / "Art" / "Spaceship").mkdir()
    with pytest.raises(UserError, match="Spaceship"):
        read_manifest("officehome", root)


def test_officehome_missing_domain(officehome_root, copy_tree):
    root = copy_tree(officehome_root)
    shutil.rmtree(root / "Product")
    with pytest.raises(UserError, match=r"not an Office-Home root.*missing Product"):
        read_manifest("officehome", root)


def test_minidomainnet_needs_its_lists(minidomainnet_root, copy_tree):
    root = copy_tree(minidomainnet_root)
    (root / "splits_mini" / "sketch_test.txt").unlink()
    with pytest.raises(UserError, match=r"sketch_test\.txt"):
        read_manifest("minidomainnet", root)
    shutil.rmtree(root / "splits_mini")
    with pytest.raises(UserError, match="splits_mini"):
        read_manifest("minidomainnet", root)


def test_minidomainnet_listed_image_missing(minidomainnet_root, copy_tree):
    root = copy_tree(minidomainnet_root)
    first = (root / "splits_mini" / "real_train.txt").read_text().split()[0]
    (root / first).unlink()
    with pytest.raises(UserError, match=first.split("/")[-1]):
        read_manifest("minidomainnet", root)


@pytest.mark.parametrize("dataset", ["officehome", "minidomainnet", "folder"])
def test_missing_root(tmp_path, dataset):
    with pytest.raises(UserError, match="not found"):
        read_manifest(dataset, tmp_path / "absent")


def test_empty_root_string_is_not_the_working_directory(folder_root, monkeypatch):
    # Regression (fixed): scan.check_root tests `not str(root)` after Path(""), which is "." - never empty -
    # so an empty root (DataConfig.root's default) silently reads the current directory.
    monkeypatch.chdir(folder_root)
    with pytest.raises(UserError):
        read_manifest("folder", "")


def test_unknown_dataset(folder_root):
    with pytest.raises(UserError, match="unknown dataset"):
        read_manifest("imagenet21k", folder_root)


def test_unreadable_images_are_skipped_and_listed(folder_root, copy_tree):
    root = copy_tree(folder_root)
    (root / "art" / "anchor" / "empty.jpg").write_bytes(b"")
    (root / "clipart" / "candle" / "garbage.jpg").write_bytes(bytes(range(256)) * 4)
    (root / "art" / "anchor" / "notes.txt").write_text("not an image, not listed")
    with pytest.warns(UserWarning, match="skipped 2"):
        manifest = read_manifest("folder", root)
    assert sorted(manifest.skipped) == ["art/anchor/empty.jpg", "clipart/candle/garbage.jpg"]
    paths = {r.path for r in manifest.records}
    assert len(paths) == 4 * FOLDER_CLASSES * PER_CLASS
    assert not paths & set(manifest.skipped)
    assert not any(p.endswith(".txt") for p in paths)


# -- split names ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dataset, split, shots",
    [
        ("officehome", "10pct", 6),
        ("officehome", "20pct", 12),
        ("minidomainnet", "1pct", 3),
        ("minidomainnet", "2pct", 6),
        ("officehome", "3shot", 3),
        ("minidomainnet", "3shot", 3),
        ("folder", "1shot", 1),
        ("folder", "16shot", 16),
    ],
)
def test_parse_shots(dataset, split, shots):
    assert parse_shots(dataset, split) == shots


@pytest.mark.parametrize(
    "dataset, split",
    [
        ("officehome", "7pct"),
        ("officehome", "0shot"),
        ("officehome", "1pct"),
        ("minidomainnet", "10pct"),
        ("folder", "10pct"),
        ("folder", "shot"),
        ("folder", "-1shot"),
        ("folder", "3 shot"),
        ("folder", ""),
    ],
)
def test_parse_shots_rejects(dataset, split):
    with pytest.raises(UserError, match="unknown split"):
        parse_shots(dataset, split)


@pytest.mark.parametrize(
    "dataset, split, canonical, paper",
    [
        ("officehome", "10pct", "6shot", "10pct"),
        ("officehome", "6shot", "6shot", "10pct"),
        ("officehome", "12shot", "12shot", "20pct"),
        ("officehome", "4shot", "4shot", "4shot"),
        ("minidomainnet", "1pct", "3shot", "1pct"),
        ("minidomainnet", "6shot", "6shot", "2pct"),
        ("folder", "6shot", "6shot", "6shot"),
    ],
)
def test_canonical_and_paper_split(dataset, split, canonical, paper):
    assert canonical_split(dataset, split) == canonical
    assert paper_split(dataset, split) == paper


def test_split_path_uses_the_canonical_name(tmp_path):
    expected = tmp_path / "splits" / "officehome" / root_folder("/data/oh") / "6shot" / "seed3.csv"
    assert split_path(tmp_path, "officehome", "/data/oh", "10pct", 3) == expected
    assert split_path(tmp_path, "officehome", "/data/oh", "6shot", 3) == expected


# -- drawing splits -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def officehome_manifest(officehome_root):
    return read_manifest("officehome", officehome_root)


@pytest.mark.parametrize("shots", [1, 2, PER_CLASS])
def test_draw_split_takes_n_per_domain_and_class(officehome_manifest, shots):
    split = draw_split(officehome_manifest, shots, seed=0)
    train, test = split.train, split.test
    assert split.val == []  # a pool has no validation part
    assert Counter((r.domain, r.label) for r in train) == {
        (d, label): shots for d in OFFICEHOME_DOMAINS for label in range(65)
    }
    assert len(train) + len(test) == len(officehome_manifest.records)
    assert {r.path for r in train}.isdisjoint(r.path for r in test)
    assert set(train) | set(test) == set(officehome_manifest.records)


def test_draw_split_is_seeded(officehome_manifest):
    a, b, c = (draw_split(officehome_manifest, 1, seed) for seed in (0, 0, 1))
    assert a == b
    assert split_csv(a).encode() == split_csv(b).encode()
    assert a.train != c.train
    assert hashlib.sha256(split_csv(a).encode()).digest() != hashlib.sha256(split_csv(c).encode()).digest()


def test_draw_split_ignores_record_order(officehome_manifest):
    shuffled = list(officehome_manifest.records)
    random.Random(7).shuffle(shuffled)
    assert draw_split(replace(officehome_manifest, records=shuffled), 2, 5) == draw_split(officehome_manifest, 2, 5)


def test_draw_split_too_many_shots_names_the_class(officehome_manifest):
    with pytest.raises(UserError, match=f"Art/alarm clock has {PER_CLASS}"):
        draw_split(officehome_manifest, PER_CLASS + 1, seed=0)


# -- data module ----------------------------------------------------------------------------------
def _datamodule(root, backbone, out, seed=0, split="2shot", **kwargs):
    cfg = DataConfig(dataset="folder", root=str(root), split=split, seed=seed, num_workers=0, **kwargs)
    return MultiDomainDataModule.for_backbone(cfg, backbone, out=out)


def test_datamodule_writes_the_split_csv(folder_root, tiny_backbone, tmp_path):
    dm = _datamodule(folder_root, tiny_backbone, tmp_path)
    dm.setup("fit")
    assert dm.split_file == tmp_path / "splits" / "folder" / root_folder(folder_root) / "2shot" / "seed0.csv"
    data = dm.split_file.read_bytes()
    assert dm.split_sha256 == hashlib.sha256(data).hexdigest()
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["path", "domain", "classname", "label", "subset"]
    body = rows[1:]
    assert len(body) == len(dm.manifest.records) == 4 * FOLDER_CLASSES * PER_CLASS
    assert Counter(row[4] for row in body) == {"train": 4 * FOLDER_CLASSES * 2, "test": 4 * FOLDER_CLASSES}
    assert {row[0] for row in body} == {r.path for r in dm.manifest.records}
    for path, domain, classname, label, _ in body:
        assert path.split("/")[:2] == [domain, classname]
        assert dm.manifest.classnames[int(label)] == classname
    assert [row[0] for row in body if row[4] == "train"] == [r.path for r in dm.train_records]

    again = _datamodule(folder_root, tiny_backbone, tmp_path / "again")
    again.setup("fit")
    assert again.split_file.read_bytes() == data and again.split_sha256 == dm.split_sha256
    other = _datamodule(folder_root, tiny_backbone, tmp_path, seed=1)
    other.setup("fit")
    assert other.split_file.name == "seed1.csv"
    assert other.split_sha256 != dm.split_sha256


def test_datamodule_loaders(folder_root, tiny_backbone, tmp_path):
    dm = _datamodule(folder_root, tiny_backbone, tmp_path, batch_size=3, eval_batch_size=2)
    dm.setup("fit")
    tasks = ["art", "clipart", "product", "real world"]
    assert [t.name for t in dm.tasks] == tasks
    combined = dm.train_dataloader()
    iterator = iter(combined)
    batch, _, _ = next(iterator)
    assert list(batch) == tasks
    for images, labels in batch.values():
        assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.shape == (3,)
        assert all(0 <= int(label) < FOLDER_CLASSES for label in labels)
    assert len(combined) == 2  # 8 train images per task in batches of 3: the incomplete third is dropped

    loaders = dm.test_dataloader()
    assert len(loaders) == len(tasks)
    for task, loader in zip(tasks, loaders, strict=True):
        records = [r for r in dm.test_records if r.domain == task]
        assert len(records) == FOLDER_CLASSES * (PER_CLASS - 2)
        batches = list(loader)
        assert batches[0][0].shape == (2, 3, 32, 32)
        assert torch.cat([labels for _, labels in batches]).tolist() == [r.label for r in records]


def test_datamodule_rejects_bad_split_before_io(tiny_backbone, tmp_path):
    with pytest.raises(UserError, match="unknown split"):
        _datamodule(tmp_path / "absent", tiny_backbone, tmp_path, split="10pct")


def test_datamodule_paper_batch_sizes(folder_root, tiny_backbone, tmp_path):
    cfg = DataConfig(dataset="officehome", root="x", num_workers=0)
    assert MultiDomainDataModule.for_backbone(cfg, tiny_backbone, out=tmp_path).batch_size == 16
    cfg = DataConfig(dataset="minidomainnet", root="x", split="1pct", num_workers=0)
    assert MultiDomainDataModule.for_backbone(cfg, tiny_backbone, out=tmp_path).batch_size == 4
    cfg = replace(cfg, batch_size=7)
    assert MultiDomainDataModule.for_backbone(cfg, tiny_backbone, out=tmp_path).batch_size == 7


# -- zero-shot == raw open_clip -------------------------------------------------------------------
def test_zeroshot_equals_raw_open_clip(folder_root, tiny_backbone):
    from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig

    manifest = read_manifest("folder", folder_root)
    records = [r for r in manifest.records if r.domain == "clipart"][::5][:2]
    pil = [Image.open(folder_root / r.path).convert("RGB") for r in records]
    images = torch.stack([tiny_backbone.preprocess_val()(im) for im in pil])

    model = tiny_backbone.model
    raw_transform = open_clip.image_transform(model.visual.image_size, is_train=False)
    raw_tokens = open_clip.SimpleTokenizer(context_length=32)([f"a photo of a {c}." for c in manifest.classnames])
    with torch.no_grad():
        raw_images = torch.stack([raw_transform(im) for im in pil])
        assert torch.allclose(images, raw_images)
        image = F.normalize(model.encode_image(raw_images), dim=-1)
        text = F.normalize(model.encode_text(raw_tokens), dim=-1)
        expected = model.logit_scale.exp() * image @ text.T

        zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, manifest.tasks).eval()
        logits = zeroshot(images, "clipart")
        again = zeroshot(images, "clipart")  # second call: cached text features
    assert logits.shape == (2, FOLDER_CLASSES)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.equal(logits, again)
    assert zeroshot.num_trainable == 0
    assert zeroshot.prompts("clipart") == [f"a photo of a {c}." for c in manifest.classnames]


# -- layers ---------------------------------------------------------------------------------------
LIGHT_MODULES = ["records", "scan", "images", "cache", "readers", "datasets", "manifest", "splits", "counts"]


def test_reading_roots_and_splits_imports_no_training_stack(tmp_path):
    code = (
        "import sys; import petl_bench.datamodules; "
        + "; ".join(f"import petl_bench.datamodules.{name}" for name in LIGHT_MODULES)
        + "; print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))"
        + "; from petl_bench.datamodules import MultiDomainDataModule"
        + "; print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.splitlines() == ["[]", "['lightning', 'torch', 'torchvision']"]


def _package_imports(path: Path) -> tuple[set[str], list[str]]:
    """(the datamodules modules `path` imports at module level, those it imports inside a function);
    imports for type checking only are none."""
    top, inner = set(), []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                names = [child.module] if child.module else [alias.name for alias in child.names]
                (inner.extend if in_function else top.update)(names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return top, inner


def test_datamodules_import_downwards_only():
    folder = Path(datamodules.__file__).parent
    graph, inner = {}, {}
    for path in sorted(folder.glob("*.py")):
        graph[path.stem], inner[path.stem] = _package_imports(path)
    # Nothing imports inside a function to dodge a circle; the package's own names load on first use
    # (importlib, in its __getattr__), so that `import petl_bench.datamodules` imports no module of it.
    assert {name: found for name, found in inner.items() if found} == {}
    assert graph["__init__"] == set()
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a circle
    assert order.index("records") < order.index("scan") < order.index("readers") < order.index("manifest")
    assert order.index("testsets") < order.index("multidomain")
    assert not graph["testsets"] & {"multidomain"} and not graph["records"]
