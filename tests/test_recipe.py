"""The reference training recipe (issue 8, docs/faithfulness.md): Dassl's per-epoch schedule read
back from a run's CSV log, the task-loss reduction and the schedule reaching the run and its hash,
Dassl's drop-last rule, MaPLe's "a photo of a" init, and every method's defaults on two open_clip
ViT widths."""

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import open_clip
import pytest
import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.cli import main
from petl_bench.config import DataConfig, OptimConfig
from petl_bench.datamodules import MultiDomainDataModule, Task
from petl_bench.errors import UserError
from petl_bench.methods.maple import MaPLe, MaPLeConfig, MaPLeMT
from petl_bench.methods.mmap import MmAP, MmAPConfig
from petl_bench.methods.zeroshot import ZeroShot, ZeroShotConfig
from petl_bench.registry import get_method, method_names
from petl_bench.runargs import build_run_config
from petl_bench.schedule import dassl_lr

# The five learning rates: lr 0.0035, 5 epochs, one constant warm-up epoch at 1e-5.
DASSL_5_EPOCHS = ["1e-05", "0.0035", "0.00317", "0.00229", "0.00121"]
RUN = [
    "--dataset",
    "folder",
    "--split",
    "2shot",
    "--model",
    "tiny",
    "--no-progress",
    "--set",
    "data.num_workers=0",
    "--set",
    "data.batch_size=4",
    "--set",
    "method.n_ctx=4",
]


def sig3(value: float) -> str:
    return f"{float(f'{value:.3g}'):g}"


def run_cli(root: Path, out: Path, *extra: str, method: str = "coop-mt") -> dict:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["run", "--method", method, "--root", str(root), "--out", str(out), *RUN, *extra])
    assert code == 0, err.getvalue()
    return json.loads(next(out.glob("runs/folder/*/2shot/*/seed0.json")).read_text())


def train_rows(out: Path) -> list[dict]:
    path = next(out.glob("runs/folder/*/2shot/*/seed0/logs/metrics.csv"))
    return [row for row in csv.DictReader(path.open()) if row["train/lr"]]


# -- the schedule ----------------------------------------------------------------------------------
def test_dassl_lr_is_torchs_cosine_after_a_constant_warmup_epoch():
    optim = OptimConfig()
    ours = [dassl_lr(epoch, optim, 5) for epoch in range(5)]
    assert [sig3(lr) for lr in ours] == DASSL_5_EPOCHS
    # Dassl's successor: CosineAnnealingLR(T_max=max_epoch), first stepped after the warm-up epoch.
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([torch.zeros(1)], lr=optim.lr), 5)
    reference = [optim.warmup_lr]
    for _ in range(4):
        reference.append(cosine.get_last_lr()[0])
        cosine.step()
    assert ours == pytest.approx(reference, rel=1e-12)


def test_a_five_epoch_run_logs_dassls_rate_at_every_step(folder_root, tmp_path):
    record = run_cli(folder_root, tmp_path)
    rows = train_rows(tmp_path)
    assert len(rows) == 10  # 8 training images per task in batches of 4: 2 steps x 5 epochs
    by_epoch = {}
    for row in rows:
        by_epoch.setdefault(int(row["epoch"]), set()).add(sig3(float(row["train/lr"])))
    print("per-epoch learning rates in the CSV log:", {epoch: sorted(lrs) for epoch, lrs in by_epoch.items()})
    assert [sorted(by_epoch[epoch]) for epoch in range(5)] == [[lr] for lr in DASSL_5_EPOCHS]
    # The default sums the tasks' losses.
    tasks = [f"train/loss/{task}" for task in record["tasks"]]
    assert all(math.isclose(float(r["train/loss"]), sum(float(r[t]) for t in tasks), rel_tol=1e-5) for r in rows)
    assert record["config"]["optim"]["schedule"] == "dassl" and record["config"]["train"]["task_loss"] == "sum"


def test_schedule_and_task_loss_reach_the_run_and_its_hash(folder_root, tmp_path):
    record = run_cli(
        folder_root,
        tmp_path,
        "--set",
        "train.epochs=2",
        "--set",
        "optim.schedule=linear-cosine",
        "--set",
        "train.task_loss=mean",
    )
    rows = train_rows(tmp_path)
    lrs = [float(row["train/lr"]) for row in rows]
    # Per step: a linear warm-up over epoch 0's two steps, then cosine down to 0.
    assert lrs == pytest.approx([0.0035 / 2, 0.0035, 0.0035, 0.0035 / 2], rel=1e-6)
    tasks = [f"train/loss/{task}" for task in record["tasks"]]
    assert all(math.isclose(float(r["train/loss"]), sum(float(r[t]) for t in tasks) / 4, rel_tol=1e-5) for r in rows)
    assert (record["config"]["optim"]["schedule"], record["config"]["train"]["task_loss"]) == ("linear-cosine", "mean")
    default = build_run_config("coop-mt", "folder", str(folder_root), overrides=["train.epochs=2"])
    for item in (
        "optim.schedule=linear-cosine",
        "train.task_loss=mean",
        "optim.warmup_lr=1e-4",
        "data.drop_last=false",
    ):
        assert (
            build_run_config("coop-mt", "folder", str(folder_root), overrides=["train.epochs=2", item]).sha256()
            != default.sha256()
        ), item


@pytest.mark.parametrize(
    "item, match",
    [
        ("optim.schedule=step", "optim.schedule='step': must be one of dassl, "),
        ("train.task_loss=max", "train.task_loss='max': must be one of sum, mean"),
        ("optim.warmup_epochs=0.5", "not a valid int"),
        ("optim.warmup_lr=-1", "optim.warmup_lr=-1.0: must be >= 0"),
    ],
)
def test_bad_recipe_values_are_user_errors(item, match):
    with pytest.raises(UserError, match=match):
        build_run_config("coop-mt", "folder", "data", overrides=[item])


# -- batches ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, drop_last, steps", [(3, True, 2), (3, False, 3), (16, True, 1)])
def test_incomplete_last_batch_is_dropped_only_where_a_task_fills_one(
    folder_root, tiny_backbone, tmp_path, batch_size, drop_last, steps
):
    data = MultiDomainDataModule.for_backbone(
        DataConfig("folder", str(folder_root), "2shot", batch_size=batch_size, num_workers=0, drop_last=drop_last),
        tiny_backbone,
        out=tmp_path,
    )
    data.setup()
    loaders = data.train_dataloader().iterables  # 8 training images per task
    assert [len(loader) for loader in loaders.values()] == [steps] * 4


# -- MaPLe's init ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MaPLe, MaPLeMT])
@pytest.mark.parametrize("n_ctx", [4, 2])  # the default, and MaPLe's own N_CTX
def test_untrained_maple_text_tokens_at_layer_0_are_zero_shots(cls, n_ctx, tiny_backbone, folder_data):
    maple = cls(MaPLeConfig(n_ctx=n_ctx), tiny_backbone, folder_data.tasks)
    zeroshot = ZeroShot(ZeroShotConfig(), tiny_backbone, folder_data.tasks)
    embedding = tiny_backbone.model.token_embedding
    with torch.no_grad():
        for task in maple.task_names:
            tokens = maple.tokens(task)
            assert torch.equal(tokens, zeroshot.tokens(task))  # "a photo of a {class}."
            assert torch.equal(maple.text_embed(embedding(tokens), tokens, task), embedding(tokens))


def test_maple_refuses_a_phrase_shorter_than_its_context(tiny_backbone, folder_data):
    with pytest.raises(UserError, match="'a photo of a' has 4 tokens, fewer than n_ctx 5"):
        MaPLeMT(MaPLeConfig(n_ctx=5), tiny_backbone, folder_data.tasks)
    assert MaPLeMT(MaPLeConfig(n_ctx=5, ctx_init=""), tiny_backbone, folder_data.tasks).n_ctx == 5


def test_maple_records_show_the_phrase_init(folder_root, tmp_path):
    record = run_cli(folder_root, tmp_path, "--set", "train.epochs=1", method="maple-mt")
    assert record["resolved_params"]["ctx_init"] == "a photo of a"
    assert get_method("maple").config_cls is get_method("maple-mt").config_cls  # one default for both


# -- defaults that fit any model -------------------------------------------------------------------
def shallow(arch: str) -> ClipBackbone:
    """`arch`'s widths and heads, two layers per tower and images of 2 x 2 patches: cheap to run."""
    config = copy.deepcopy(open_clip.get_model_config(arch))
    config["vision_cfg"]["layers"] = config["text_cfg"]["layers"] = 2
    config["vision_cfg"]["image_size"] = 2 * config["vision_cfg"]["patch_size"]
    torch.manual_seed(0)
    return ClipBackbone.from_config(config, name=arch).eval()


@pytest.fixture(scope="module", params=["ViT-B-16", "ViT-S-32"])
def two_widths(request):
    return shallow(request.param)


@pytest.mark.parametrize("name", method_names())
def test_every_methods_defaults_fit_two_vit_widths(name, two_widths):
    backbone = two_widths
    tasks = [Task(task, ("dog", "alarm clock", "sea turtle")) for task in ("art", "sketch")]
    entry = get_method(name)
    params = entry.config_cls()
    if "shots" in {f.name for f in dataclasses.fields(params)}:  # what `prepare` sets from the split
        params = dataclasses.replace(params, shots=1)
    module = entry.cls(params, backbone, tasks).eval()
    with torch.no_grad():
        logits = module(torch.randn(1, 3, backbone.image_size, backbone.image_size), "sketch")
    assert logits.shape == (1, 3) and bool(logits.isfinite().all())


def test_mmap_n_is_the_largest_that_divides_both_widths(two_widths, tiny_backbone, folder_data):
    tasks = [Task(task, ("dog", "cat")) for task in ("art", "sketch")]
    widths = (two_widths.text_width, two_widths.vision_width)
    module = MmAP(MmAPConfig(), two_widths, tasks)
    assert module.n == {(512, 768): 256, (384, 384): 192}[widths] and module.cfg.n == module.n
    # The tiny model's widths 48 and 64: 256 -> 16, 12 -> 8.
    assert MmAP(MmAPConfig(n=12), tiny_backbone, folder_data.tasks).n == 8
