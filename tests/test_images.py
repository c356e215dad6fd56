"""Images that cannot be decoded (truncated, over the decompression-bomb limit) are skipped and named
at every stage; 16-bit PNGs convert correctly; the GPU training path's crop and flip equal the CPU
transform's (run here on CPU tensors); the text tower runs on the context the prompts need."""

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petl_bench.backbone import ClipBackbone
from petl_bench.config import DataConfig, root_folder
from petl_bench.datamodules import MultiDomainDataModule, draw_split, read_manifest
from petl_bench.datamodules.device_images import RandomResizedCropFlip, decode_on, read_encoded
from petl_bench.datamodules.images import open_rgb
from petl_bench.datamodules.multidomain import train_transform
from petl_bench.registry import get_method

from cli_calls import call


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixels: PIL reads its size, no more."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def truncate(path, keep: float = 0.5) -> None:
    """Cut a JPEG's body short: its header still reads."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# -- formats ---------------------------------------------------------------------------------------
def test_16_bit_greyscale_png_scales_to_8_bits(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    rgb = np.array(open_rgb(path))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert rgb[32, 0, 0] == 128 and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255  # not pure white
    # the GPU path's reader (non-JPEG files are decoded on the CPU) agrees
    assert torch.equal(read_encoded(path), torch.from_numpy(rgb).permute(2, 0, 1))


# -- unreadable images at every stage ----------------------------------------------------------------
@pytest.fixture
def broken_root(folder_root, copy_tree):
    """The folder set with one truncated JPEG among the 2-shot draw's training picks of seed 0,
    one among its test images, and one 20000 x 20000 image."""
    root = copy_tree(folder_root)
    split = draw_split(read_manifest("folder", root), 2, seed=0)
    train, test = split.train, split.test
    picked = train[0]  # art/anchor: the draw must land elsewhere in its cell
    truncate(root / picked.path)
    truncate(root / test[-1].path)
    (root / "clipart" / "candle" / "huge.png").write_bytes(png_header_only(20000, 20000))
    return root, picked, test[-1]


def test_broken_images_are_skipped_and_named_in_run_and_data_check(broken_root, tiny_checkpoint, tmp_path):
    root, picked, tested = broken_root
    for cache in ("on", "off"):
        out = tmp_path / cache
        code, _, stderr = call(
            [
                "run",
                "--method",
                "coop-mt",
                "--dataset",
                "folder",
                "--root",
                root,
                "--split",
                "2shot",
                "--model",
                "tiny",
                "--pretrained",
                tiny_checkpoint,
                "--out",
                out,
                "--no-progress",
                "--set",
                "data.num_workers=0",
                "--set",
                "train.epochs=1",
                "--set",
                "method.n_ctx=2",
                *(["--set", "data.cache_dir=off"] if cache == "off" else []),
            ]
        )
        assert code == 0, stderr
        record = json.loads(next((out / "runs").rglob("seed0.json")).read_text())
        assert record["skipped_images"] == sorted([picked.path, tested.path, "clipart/candle/huge.png"])
        # exactly 2 shots per cell, the truncated pick replaced by another image of its cell
        assert record["train_images"] == 32
        assert record["test_images"] == 48 - 32 - 2  # the two truncated images are in neither set
        rows = (out / "splits" / "folder" / root_folder(root) / "2shot" / "seed0.csv").read_text().splitlines()
        assert sum(row.startswith("art/anchor/") and row.endswith(",train") for row in rows) == 2
        assert not any(row.startswith(picked.path + ",") for row in rows)

    code, stdout, stderr = call(["data", "check", "--dataset", "folder", "--root", root, "--no-progress"])
    assert code == 1, stderr  # a check that found unreadable images fails, for scripts that chain on it
    assert "46 readable images, 3 unreadable" in stdout
    for rel in (picked.path, tested.path, "clipart/candle/huge.png"):
        assert f"unreadable: {root / rel}" in stdout
    assert "DecompressionBombError" in stdout and "truncated" in stdout


def test_redraw_is_deterministic_and_fails_clearly_when_a_cell_runs_out(folder_root):
    manifest = read_manifest("folder", folder_root)
    train = draw_split(manifest, 2, seed=0).train
    bad = {train[0].path}

    def unreadable(records):
        return {r.path for r in records} & bad

    first, again = draw_split(manifest, 2, 0, unreadable), draw_split(manifest, 2, 0, unreadable)
    assert first == again
    assert first.train[2:] == train[2:]  # other cells draw what they drew before
    assert train[0] not in first.train and train[0] not in first.test

    cell = {r.path for r in manifest.records if (r.domain, r.label) == (train[0].domain, train[0].label)}
    bad = set(sorted(cell)[:2])
    with pytest.raises(Exception, match="needs 2 readable training images per class, but art/anchor has 1"):
        draw_split(manifest, 2, 0, unreadable)


# -- the GPU training path, on CPU tensors -------------------------------------------------------------
def test_gpu_crop_and_flip_match_the_cpu_transform(folder_root):
    path = next(folder_root.glob("art/anchor/*.jpg"))
    size, mean, std = 32, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    cpu = train_transform(size, mean, std, scale_min=0.08)
    gpu = RandomResizedCropFlip(size, (0.08, 1.0), mean, std)
    decoded = decode_on([read_encoded(path)], torch.device("cpu"))[0]
    pil = open_rgb(path)
    assert torch.equal(decoded, torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))  # same decoder
    for seed in range(12):
        torch.manual_seed(seed)
        expected = cpu(pil)
        torch.manual_seed(seed)
        got = gpu([decoded])[0]
        # Tolerance: PIL and torch resample bicubic with antialiasing by different arithmetic:
        # at most 6 of 255 levels apart, 0.5 on average (in normalised units: / std).
        levels = ((got - expected) * torch.tensor(std).view(-1, 1, 1) * 255).abs()
        assert levels.max() <= 6 and levels.mean() <= 0.5, (seed, levels.max(), levels.mean())
    torch.manual_seed(0)  # both consume the same draws: the RNG stays in step
    cpu(pil)
    after_cpu = torch.rand(1)
    torch.manual_seed(0)
    gpu([decoded])
    assert torch.equal(torch.rand(1), after_cpu)


def test_training_through_the_gpu_path_on_cpu(folder_root, tiny_backbone, tmp_path):
    import copy

    import lightning as L

    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", batch_size=4, num_workers=0), tiny_backbone, out=tmp_path
    )
    data.setup()
    data.decode_device = torch.device("cpu")  # the code a GPU runs, on the CPU
    raw = next(iter(data.train_dataloader()))[0]
    assert all(type(b).__name__ == "EncodedBatch" for b in raw.values())
    for task, (images, labels) in data.on_before_batch_transfer(raw, 0).items():
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
        assert labels.tolist() == raw[task].labels.tolist()
    entry = get_method("coop-mt")
    module = entry.cls(entry.config_cls(n_ctx=2), copy.deepcopy(tiny_backbone), data.tasks)
    before = module.ctx.detach().clone()
    L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, data)
    assert not torch.equal(module.ctx.detach(), before)
    assert data.skipped_images == []


# -- the text tower's context ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, params", [("zeroshot", {}), ("coop", {"n_ctx": 4}), ("maple", {"n_ctx": 3}), ("mmap", {"groups": "a|b"})]
)
def test_text_features_on_the_needed_context_equal_the_full_context(tiny_backbone, monkeypatch, method, params):
    from petl_bench.datamodules import Task

    tasks = [Task(name, ("alarm clock", "dog", "sea turtle")) for name in ("a", "b")]
    entry = get_method(method)
    torch.manual_seed(0)
    module = entry.cls(entry.config_cls(**params), tiny_backbone, tasks).eval()
    tokens = module.tokens("b")
    needed = tiny_backbone.text_context(tokens)
    assert needed < tokens.shape[1]
    with torch.no_grad():
        trimmed = tiny_backbone.encode_text(tokens, module, "b")
        monkeypatch.setattr(ClipBackbone, "text_context", lambda self, tokens: tokens.shape[1])
        full = tiny_backbone.encode_text(tokens, module, "b")
    assert torch.allclose(trimmed, full, atol=1e-5, rtol=0)  # float rounding of other matmul shapes


# -- file names that are not UTF-8 ------------------------------------------------------------------
def _rename_to_bytes(path, name: bytes) -> None:
    os.rename(os.fsencode(path), os.fsencode(path.parent) + b"/" + name)


def test_an_image_name_that_is_not_utf8_is_checked_drawn_and_kept_as_its_bytes(folder_root, copy_tree, tmp_path):
    """A Latin-1 file name (bytes no UTF-8 decoder takes): `data check` counts it, a run draws it
    and its split file holds the name's own bytes, whose SHA-256 the record keeps."""
    root = copy_tree(folder_root)
    _rename_to_bytes(next((root / "art" / "anchor").iterdir()), b"caf\xe9.png")
    code, stdout, stderr = call(["data", "check", "--dataset", "folder", "--root", root, "--no-progress"])
    assert code == 0, stderr
    assert "48 readable images, 0 unreadable" in stdout
    out = tmp_path / "results"
    code, stdout, stderr = call(
        [
            "run",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            root,
            "--split",
            "2shot",
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
    record = json.loads(next((out / "runs").rglob("seed0.json")).read_text())
    split = Path(record["split_file"]).read_bytes()
    assert hashlib.sha256(split).hexdigest() == record["split_sha256"]
    assert b"\nart/anchor/caf\xe9.png,art,anchor,0," in split  # the bytes on disk, not a replacement
    assert (record["train_images"], record["test_images"]) == (32, 16)


def test_a_class_folder_that_is_not_utf8_is_one_line_in_check_and_run(folder_root, copy_tree, tmp_path):
    """A class folder's name becomes a prompt, which must be text: `data check` and a run refuse
    the root alike, in one line naming the folder."""
    root = copy_tree(folder_root)
    _rename_to_bytes(root / "clipart" / "candle", b"caf\xe9")
    expected = (
        f"petl-bench: error: the folder {root}/clipart/caf\\xe9 has a name that is not UTF-8 text; "
        "it names a task or a class prompt: rename it\n"
    )
    code, _, stderr = call(["data", "check", "--dataset", "folder", "--root", root, "--no-progress"])
    assert (code, stderr) == (2, expected)
    code, _, stderr = call(
        [
            "run",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            root,
            "--split",
            "2shot",
            "--model",
            "tiny",
            "--out",
            tmp_path / "results",
            "--no-progress",
            "--set",
            "data.num_workers=0",
        ]
    )
    assert (code, stderr) == (2, expected)
