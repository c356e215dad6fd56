"""Shared fixtures: the tiny random-init CLIP and small synthetic datasets in every layout.

Session-scoped fixtures are shared by many tests and must not be modified: a test that needs to
change a dataset copies it first (`copy_tree`).
"""

import os

# No test may touch the network; set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("PETL_BENCH_CACHE", None)  # each test's caches live beside its own results

import shutil
from pathlib import Path

import pytest

PER_CLASS = 3  # images per class per domain in the synthetic sets
FOLDER_CLASSES = 4  # classes of the synthetic `folder` set


@pytest.fixture(scope="session")
def tiny_backbone():
    import torch

    from petl_bench.backbone import TINY_CONFIG, ClipBackbone

    torch.manual_seed(0)
    return ClipBackbone.from_config(TINY_CONFIG).eval()


def _synth(tmp_path_factory, layout: str, **kwargs) -> Path:
    from petl_bench.datamodules.synth import write_synthetic

    root = tmp_path_factory.mktemp(f"synth-{layout}")
    written = write_synthetic(root, layout, **kwargs)
    assert written > 0
    return root


@pytest.fixture(scope="session")
def officehome_root(tmp_path_factory) -> Path:
    return _synth(tmp_path_factory, "officehome", per_class=PER_CLASS)


@pytest.fixture(scope="session")
def minidomainnet_root(tmp_path_factory) -> Path:
    return _synth(tmp_path_factory, "minidomainnet", per_class=PER_CLASS)


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory) -> Path:
    """Domains art, clipart, product, real world; classes anchor, bicycle, candle, dolphin."""
    return _synth(tmp_path_factory, "folder", per_class=PER_CLASS, n_classes=FOLDER_CLASSES)


@pytest.fixture(scope="session")
def pacs_root(tmp_path_factory) -> Path:
    """DomainBed's PACS layout, 7 images per class: enough for a 6-shot split with a test image."""
    return _synth(tmp_path_factory, "pacs", per_class=7)


@pytest.fixture(scope="session")
def vlcs_root(tmp_path_factory) -> Path:
    return _synth(tmp_path_factory, "vlcs", per_class=PER_CLASS)


@pytest.fixture(scope="session")
def office31_root(tmp_path_factory) -> Path:
    return _synth(tmp_path_factory, "office31", per_class=2)


@pytest.fixture(scope="session")
def terraincognita_root(tmp_path_factory) -> Path:
    return _synth(tmp_path_factory, "terraincognita", per_class=2)


@pytest.fixture(scope="session")
def domainnet_root(tmp_path_factory) -> Path:
    """The official layout, lists beside the folders: 345 classes x 6 domains, one image each."""
    return _synth(tmp_path_factory, "domainnet", per_class=1)


@pytest.fixture(scope="session")
def demo_setup(tmp_path_factory) -> dict:
    """The demo's set-up, made as the Makefile's `demo-data` makes it: synthetic Office-Home (16
    images per class and domain), the tiny CLIP pre-trained on it by `data tiny-clip`."""
    from cli_calls import call_ok

    base, per_class = tmp_path_factory.mktemp("learning"), 16
    call_ok(["data", "synth", "--out", base / "data", "--layout", "officehome", "--per-class", per_class])
    stdout = call_ok(["data", "tiny-clip", "--data", base / "data", "--out", base / "tiny-clip.pt"])
    return {
        "root": base / "data",
        "weights": base / "tiny-clip.pt",
        "out": base / "results",
        "tiny_clip_stdout": stdout,
        "per_class": per_class,
    }


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny CLIP saved as an open_clip checkpoint, for `--model tiny --pretrained PATH`."""
    import torch

    from petl_bench import tinyclip
    from petl_bench.backbone import TINY_CONFIG, ClipBackbone

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    tinyclip.save(ClipBackbone.from_config(TINY_CONFIG), path)
    return path


@pytest.fixture
def copy_tree(tmp_path):
    """copy_tree(src) -> a private copy of a (session) dataset folder that the test may change."""

    def copy(src: Path, name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    """No cached weights anywhere (fresh Hugging Face cache and ~/.cache/clip), offline."""
    import huggingface_hub.constants

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))


@pytest.fixture(scope="session")
def vit_b16():
    """The ViT-B/16 architecture with random weights: sizes and equivalences need no download.
    Shared: tests must not train it (copy.deepcopy it first)."""
    from petl_bench.backbone import ClipBackbone

    return ClipBackbone.from_pretrained("ViT-B-16", None).eval()


@pytest.fixture
def folder_data(folder_root, tiny_backbone, tmp_path):
    """The synthetic folder set, 2-shot, batches of 4 per task, split drawn and written."""
    from petl_bench.config import DataConfig
    from petl_bench.datamodules import MultiDomainDataModule

    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", batch_size=4, num_workers=0), tiny_backbone, out=tmp_path
    )
    data.setup()
    return data


@pytest.fixture
def batch(folder_data):
    """One training batch: task name -> (images, labels), all four tasks."""
    return next(iter(folder_data.train_dataloader()))[0]


class RunsCode:
    """Unpickled, it runs `open(marker, "w")`: a stand-in for a crafted file whose loading runs code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def crafted_file(tmp_path):
    """crafted_file(path, **entries) -> marker: writes a torch file of `entries` plus an object whose
    unpickling creates `marker` (which the test then expects absent)."""
    import torch

    marker = tmp_path / "code-ran"

    def make(path: Path, **entries) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**entries, "payload": RunsCode(marker)}, path)
        return marker

    return make


@pytest.fixture
def build_method(tmp_path):
    """build_method(name, backbone, data, **params) -> the method as the runner builds it: its
    `prepare` on the data (a fast_dev_run: MmAP groups on one batch), then the class on the config
    `prepare` resolved, with `log` silenced (no Trainer attached). Seeded."""
    import torch

    from petl_bench.registry import get_method
    from petl_bench.runargs import build_run_config

    def build(name, backbone, data, **params):
        torch.manual_seed(0)
        entry = get_method(name)
        run = build_run_config(
            name,
            data.cfg.dataset,
            str(data.cfg.root),
            data.cfg.split,
            model="tiny",
            out=str(tmp_path),
            overrides=[
                "train.fast_dev_run=true",
                "data.num_workers=0",
                *(f"method.{k}={v}" for k, v in params.items()),
            ],
        )
        resolved, _ = entry.cls.prepare(run, backbone, data, tmp_path / name)
        module = entry.cls(resolved, backbone, data.tasks)
        module.log = lambda *args, **kwargs: None
        return module

    return build
