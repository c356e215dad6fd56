"""End to end through `petl_bench.cli.main`, in-process, on the tiny CLIP and the synthetic folder set:
records, re-runs, config clashes, checkpoints and `eval`."""

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from petl_bench.backbone import ClipBackbone
from petl_bench.cli import main
from petl_bench.config import root_folder
from petl_bench.datamodules import read_manifest

from cli_calls import call, tiny_run_argv

TASKS = ["art", "clipart", "product", "real world"]
ACCURACY_LINE = re.compile(r"^  (\S.*?)\s+(\d+\.\d\d)$")


def accuracy_table(stdout: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in map(ACCURACY_LINE.match, stdout.splitlines()) if m}


# -- zero-shot: the record ------------------------------------------------------------------------
def test_zeroshot_run_record_rerun_and_clash(folder_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    argv = tiny_run_argv("zeroshot", folder_root, out, "--pretrained", tiny_checkpoint)
    code, stdout, stderr = call(argv)
    assert code == 0, stderr
    path = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "zeroshot@tiny-tiny" / "seed0.json"
    assert f"record: {path}" in stdout
    assert "zeroshot@tiny-tiny on folder 2shot seed 0 (0 trainable parameters)" in stdout
    record = json.loads(path.read_text())

    assert (record["method"], record["dataset"], record["split"], record["seed"]) == ("zeroshot", "folder", "2shot", 0)
    assert (record["model"], record["pretrained"]) == ("tiny", str(tiny_checkpoint))
    assert record["tasks"] == TASKS
    assert (record["train_images"], record["test_images"], record["trainable_params"]) == (32, 16, 0)
    assert record["skipped_images"] == []
    split = out / "splits" / "folder" / root_folder(folder_root) / "2shot" / "seed0.csv"
    assert record["split_file"] == str(split)
    assert record["split_sha256"] == hashlib.sha256(split.read_bytes()).hexdigest()
    assert record["config"]["params"] == {} and record["config"]["model"]["arch"] == "tiny"
    assert len(record["config_sha256"]) == 64
    backbone = ClipBackbone.from_pretrained("tiny", str(tiny_checkpoint))
    assert record["total_params"] == sum(p.numel() for p in backbone.parameters())

    # The accuracy per task, recomputed here from the split file with the raw open_clip model.
    rows = list(csv.DictReader(io.StringIO(split.read_text())))
    manifest = read_manifest("folder", folder_root)
    transform, model = backbone.preprocess_val(), backbone.model
    with torch.no_grad():
        tokens = backbone.tokenize([f"a photo of a {c}." for c in manifest.classnames])
        text = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        expected = {}
        for task in TASKS:
            test = [r for r in rows if r["subset"] == "test" and r["domain"] == task]
            images = torch.stack([transform(Image.open(folder_root / r["path"]).convert("RGB")) for r in test])
            predicted = (model.encode_image(images) @ text.T).argmax(-1)
            labels = torch.tensor([int(r["label"]) for r in test])
            expected[task] = 100.0 * (predicted == labels).float().mean().item()
    expected["average"] = sum(expected.values()) / len(TASKS)
    assert record["accuracy"] == pytest.approx(expected, abs=1e-3)
    assert accuracy_table(stdout) == {k: f"{v:.2f}" for k, v in record["accuracy"].items()}

    # Same config again: nothing runs, the record is reported.
    code, stdout, _ = call(argv)
    assert code == 0 and "already done" in stdout
    # Settings outside the config hash do not count as a different config.
    code, stdout, _ = call([*argv, "--set", "data.eval_batch_size=5"])
    assert code == 0 and "already done" in stdout
    # A different config for the same record path is refused...
    code, stdout, stderr = call([*argv, "--set", "optim.lr=0.1"])
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("petl-bench: error: ") and "different config" in stderr and "--force" in stderr
    assert json.loads(path.read_text())["config_sha256"] == record["config_sha256"]
    # ...unless forced.
    code, stdout, _ = call([*argv, "--set", "optim.lr=0.1", "--force"])
    assert code == 0 and f"record: {path}" in stdout
    forced = json.loads(path.read_text())
    assert forced["config"]["optim"]["lr"] == 0.1 and forced["config_sha256"] != record["config_sha256"]
    assert forced["accuracy"] == record["accuracy"]  # zero-shot trains nothing


def test_a_record_says_its_activation_and_is_not_reused_for_another(folder_root, tiny_checkpoint, tmp_path):
    # Regression (fixed): the activation was decided from the weights file's name and was in neither
    # the config nor its hash nor the record nor the image features' cache key: they served any activation.
    out = tmp_path / "results"
    argv = tiny_run_argv("zeroshot", folder_root, out, "--pretrained", tiny_checkpoint)
    path = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "zeroshot@tiny-tiny" / "seed0.json"
    code, _, stderr = call(argv)
    assert code == 0, stderr
    gelu = json.loads(path.read_text())
    assert gelu["activation"] == "gelu" and gelu["config"]["model"]["quick_gelu"] is None
    code, _, stderr = call([*argv, "--set", "model.quick_gelu=true"])
    assert code == 2 and "different config" in stderr
    code, _, stderr = call([*argv, "--set", "model.quick_gelu=true", "--force"])
    assert code == 0, stderr
    quick = json.loads(path.read_text())
    assert quick["activation"] == "quickgelu" and quick["config"]["model"]["quick_gelu"] is True
    assert quick["config_sha256"] != gelu["config_sha256"]
    # The first run's cached image features are another activation's: encoded afresh, not reused.
    assert set(quick["test_sources"].values()) == {"features (cached now)"}


def test_fast_dev_run_writes_no_record(folder_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    code, stdout, stderr = call(
        tiny_run_argv(
            "coop",
            folder_root,
            out,
            "--pretrained",
            tiny_checkpoint,
            "--set",
            "train.fast_dev_run=true",
            "--set",
            "method.n_ctx=4",
        )
    )
    assert code == 0, stderr
    assert "fast_dev_run: no record written" in stdout
    assert "coop-n_ctx4@tiny-tiny" in stdout
    assert not [path for path in out.rglob("*.json") if "cache" not in path.parts]


# -- CoOp-MT: training, checkpoint, eval ----------------------------------------------------------
@pytest.fixture(scope="module")
def coop_run(folder_root, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("coop-run")
    code, stdout, stderr = call(
        tiny_run_argv(
            "coop-mt",
            folder_root,
            out,
            "--pretrained",
            tiny_checkpoint,
            "--set",
            "train.epochs=1",
            "--set",
            "data.batch_size=8",
        )
    )
    assert code == 0, stderr
    work = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "coop-mt@tiny-tiny" / "seed0"
    return {
        "out": out,
        "stdout": stdout,
        "record": json.loads(work.with_suffix(".json").read_text()),
        "ckpt": work / "checkpoints" / "last.ckpt",
    }


def test_coop_mt_run_trains_the_shared_context_only(coop_run):
    record = coop_run["record"]
    assert record["trainable_params"] == 16 * 48  # one shared context of 16 tokens, text width 48
    assert "coop-mt: 768 trainable parameters" in coop_run["stdout"]
    assert record["train_images_per_s"] and record["train_images_per_s"] > 0
    checkpoint = torch.load(coop_run["ckpt"], map_location="cpu", weights_only=True)
    assert list(checkpoint["state_dict"]) == ["ctx"]
    assert checkpoint["state_dict"]["ctx"].shape == (1, 16, 48)
    assert checkpoint["petl_bench"]["method"] == "coop-mt"
    assert checkpoint["petl_bench"]["run_config"] == record["config"]


def test_eval_reproduces_the_run(coop_run, capsys):
    code = main(["eval", "--ckpt", str(coop_run["ckpt"])])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "coop-mt@tiny-tiny on folder 2shot seed 0 (768 trainable parameters)" in stdout
    assert accuracy_table(stdout) == accuracy_table(coop_run["stdout"])
    assert accuracy_table(stdout) == {k: f"{v:.2f}" for k, v in coop_run["record"]["accuracy"].items()}


def test_eval_tests_under_the_run_s_precision(folder_root, tiny_checkpoint, tmp_path, monkeypatch):
    # Regression (fixed): `eval` rebuilt the config without the run's train section and tested with
    # Lightning's default precision: a 64-true (or bf16) run's checkpoint was re-tested in fp32. And
    # with the run's precision, a state loaded before the Trainer converted the module was rounded.
    from petl_bench.module import PetlModule

    logits = []  # (dtype, logits) of every test batch
    classify = PetlModule.classify

    def recorded(self, image, task):
        out = classify(self, image, task)
        if not self.training:
            logits.append((out.dtype, out.detach().clone()))
        return out

    monkeypatch.setattr(PetlModule, "classify", recorded)
    out = tmp_path / "results"
    code, run_out, stderr = call(
        tiny_run_argv(
            "coop-mt",
            folder_root,
            out,
            "--pretrained",
            tiny_checkpoint,
            "--set",
            "train.epochs=1",
            "--set",
            "method.n_ctx=2",
            "--set",
            "train.precision=64-true",
        )
    )
    assert code == 0, stderr
    run_logits, logits[:] = list(logits), []
    assert run_logits and {dtype for dtype, _ in run_logits} == {torch.float64}
    ckpt = (
        out
        / "runs"
        / "folder"
        / root_folder(folder_root)
        / "2shot"
        / "coop-mt-n_ctx2@tiny-tiny"
        / "seed0"
        / "checkpoints"
        / "last.ckpt"
    )
    code, eval_out, stderr = call(["eval", "--ckpt", ckpt])
    assert code == 0, stderr
    assert [dtype for dtype, _ in logits] == [dtype for dtype, _ in run_logits]
    assert all(torch.equal(ours, theirs) for (_, ours), (_, theirs) in zip(logits, run_logits, strict=True))
    assert accuracy_table(eval_out) == accuracy_table(run_out)


def _tampered(coop_run, tmp_path, change):
    checkpoint = torch.load(coop_run["ckpt"], map_location="cpu", weights_only=True)
    change(checkpoint["state_dict"])
    path = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, path)
    return path


def test_eval_rejects_a_checkpoint_without_the_trained_parameters(coop_run, tmp_path):
    # Regression (fixed): cli.cmd_eval loads with load_state_dict(strict=False) and never checks that the
    # trainable parameters are there (PetlModule.on_load_checkpoint does, but eval bypasses it), so
    # it silently evaluates the method's fresh random init and reports it as the run's accuracy.
    path = _tampered(coop_run, tmp_path, lambda state: state.pop("ctx"))
    code, _, stderr = call(["eval", "--ckpt", path])
    assert code == 2
    assert stderr.startswith("petl-bench: error: ") and stderr.count("\n") == 1


def test_eval_rejects_a_checkpoint_with_mismatched_shapes_in_one_line(coop_run, tmp_path):
    # Regression (fixed): a shape mismatch raises RuntimeError from load_state_dict in cli.cmd_eval: a traceback.
    path = _tampered(coop_run, tmp_path, lambda state: state.update(ctx=torch.zeros(1, 5, 48)))
    try:
        code, _, stderr = call(["eval", "--ckpt", path])
    except RuntimeError as err:
        pytest.fail(f"traceback instead of a one-line error: {str(err).splitlines()[0]}")
    assert code == 2
    assert stderr.startswith("petl-bench: error: ") and stderr.count("\n") == 1


def test_eval_of_a_random_init_run_reproduces_it(folder_root, tmp_path):
    # Regression (fixed): with `--model tiny` and no --pretrained the backbone is random init, seeded by
    # L.seed_everything(seed) in run.execute; cli.cmd_eval builds it without seeding, so `eval`
    # scores a different backbone than the run did.
    out = tmp_path / "results"
    code, run_out, stderr = call(
        tiny_run_argv("coop-mt", folder_root, out, "--set", "train.epochs=1", "--set", "method.n_ctx=2")
    )
    assert code == 0, stderr
    ckpt = (
        out
        / "runs"
        / "folder"
        / root_folder(folder_root)
        / "2shot"
        / "coop-mt-n_ctx2@tiny"
        / "seed0"
        / "checkpoints"
        / "last.ckpt"
    )
    torch.manual_seed(1)  # whatever state the global RNG is in when eval starts
    code, eval_out, stderr = call(["eval", "--ckpt", ckpt])
    assert code == 0, stderr
    assert accuracy_table(eval_out) == accuracy_table(run_out)


# -- results keyed by the dataset root ------------------------------------------------------------
def test_two_roots_under_one_out_keep_their_own_records_and_splits(folder_root, tiny_checkpoint, copy_tree, tmp_path):
    """A subset of a root (3 of its 4 domains) beside the full root, under one --out: the second run
    is run, not "already done" with the first root's numbers, and neither run's split file is
    overwritten by the other's."""
    out = tmp_path / "results"
    subset = copy_tree(folder_root, "subset")
    shutil.rmtree(subset / "real world")
    records = {}
    for root, tasks in ((folder_root, TASKS), (subset, TASKS[:3])):
        code, stdout, stderr = call(tiny_run_argv("zeroshot", root, out, "--pretrained", tiny_checkpoint))
        assert code == 0, stderr
        assert "already done" not in stdout and list(accuracy_table(stdout)) == [*tasks, "average"]
        path = Path(re.search(r"^record: (.+)$", stdout, re.M).group(1))
        records[root] = path, json.loads(path.read_text())
        assert records[root][1]["tasks"] == tasks and records[root][1]["root"] == str(root.resolve())
    (full_path, full), (subset_path, part) = records[folder_root], records[subset]
    assert full_path != subset_path and full["config_sha256"] != part["config_sha256"]
    assert full["split_file"] != part["split_file"]
    for record in (full, part):  # each split file is still the one its record names
        assert hashlib.sha256(Path(record["split_file"]).read_bytes()).hexdigest() == record["split_sha256"]
    code, stdout, _ = call(tiny_run_argv("zeroshot", folder_root, out, "--pretrained", tiny_checkpoint))
    assert code == 0 and f"already done: {full_path}" in stdout and list(accuracy_table(stdout)) == [*TASKS, "average"]


def test_a_record_file_that_is_no_record_is_said_and_run_again(folder_root, tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    argv = tiny_run_argv("zeroshot", folder_root, out, "--pretrained", tiny_checkpoint)
    code, stdout, _ = call(argv)
    path = Path(re.search(r"^record: (.+)$", stdout, re.M).group(1))
    path.write_text("null\n")  # as a crashed tool or an older version might leave it
    code, stdout, stderr = call(argv)
    assert code == 0, stderr
    assert stderr == f"petl-bench: {path} is not a usable record (not a run record but a JSON null): running again\n"
    assert f"record: {path}" in stdout and json.loads(path.read_text())["schema"] == 1


# -- what a run says: its size, phases and epochs, on the console and in run.log -----------------------
def test_a_run_states_its_size_and_logs_its_phases_and_epochs(folder_root, tiny_checkpoint, tmp_path):
    import pandas as pd

    out = tmp_path / "results"
    code, stdout, stderr = call(
        tiny_run_argv(
            "coop-mt",
            folder_root,
            out,
            "--pretrained",
            tiny_checkpoint,
            "--set",
            "train.epochs=2",
            "--set",
            "data.batch_size=3",
            "--set",
            "method.n_ctx=4",
        )
    )
    assert code == 0, stderr
    work = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "coop-mt-n_ctx4@tiny-tiny" / "seed0"
    record = json.loads(work.with_suffix(".json").read_text())
    steps = pd.read_csv(work / "logs" / "metrics.csv").dropna(subset=["train/loss"])

    # The size, said before training, is what the run did: 8 shots per task in batches of 3 are 2 steps (Dassl
    # drops the incomplete third).
    size = re.search(
        r"^size: (\d+) tasks x (\d+) classes; (\d+) training images, (\d+) epochs x (\d+) steps \(3 images "
        r"per task a step\) = (\d+) steps; (\d+) test images$",
        stdout,
        re.M,
    )
    per_epoch = steps.groupby("epoch").size()
    assert list(per_epoch) == [2, 2]
    assert tuple(map(int, size.groups())) == (
        len(record["tasks"]),
        len(read_manifest("folder", folder_root).classnames),
        record["train_images"],
        2,
        2,
        len(steps),
        record["test_images"],
    )
    assert stdout.index("size: ") < stdout.index("train: 2 epochs ...")

    # run.log holds what the console said, timestamped: one line per epoch, its mean loss and last lr
    # as the CSV has them.
    lines = (work / "run.log").read_text().splitlines()
    said = [line.split("  ", 1)[1] for line in lines]
    assert all(line in stdout.splitlines() for line in said)
    epochs = [
        re.fullmatch(r"epoch (\d)/2  loss (\S+)  lr (\S+)  elapsed \d:\d\d:\d\d  eta \d:\d\d:\d\d", line)
        for line in said
        if line.startswith("epoch")
    ]
    assert [m.group(1) for m in epochs] == ["1", "2"]
    for m, (_, rows) in zip(epochs, steps.groupby("epoch"), strict=True):
        assert float(m.group(2)) == pytest.approx(rows["train/loss"].mean(), abs=5e-5)
        assert float(m.group(3)) == pytest.approx(rows["train/lr"].iloc[-1], rel=1e-3)
    for name in ("model", "scan", "split", "train", "test"):  # each phase: its start, then its end and duration
        start = next(i for i, line in enumerate(said) if line.startswith(f"{name}: ") and line.endswith(" ..."))
        assert any(re.fullmatch(rf"{name}: .* \(\d+\.\d s\)", line) for line in said[start + 1 :]), name
    accuracies = ", ".join(f"{task} {value:.2f}" for task, value in record["accuracy"].items())
    assert re.fullmatch(rf"test: {accuracies} \(\d+\.\d s\)", said[-1])
    for chatter in ("GPU available", "TPU available", "Tip:", "litlogger", "litmodels", "logging interval"):
        assert chatter not in stdout + stderr
