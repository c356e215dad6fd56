"""PetlModule training mechanics on the tiny random-init CLIP: what changes, the schedule, resuming."""

import errno
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from petl_bench import guard
from petl_bench.cli import main
from petl_bench.config import OptimConfig, root_folder
from petl_bench.datamodules import loading
from petl_bench.guard import holder, run_lock
from petl_bench.methods.coop import CoOp, CoOpConfig, CoOpMT
from petl_bench.module import PetlModule
from petl_bench.phases import say
from petl_bench.runlog import text_log
from petl_bench.schedule import warmup_cosine

from cli_calls import call


@pytest.mark.parametrize("method", [CoOp, CoOpMT])
def test_only_the_context_changes_after_a_few_sgd_steps(method, tiny_backbone, folder_data):
    torch.manual_seed(0)
    module = method(CoOpConfig(n_ctx=4), tiny_backbone, folder_data.tasks)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    params = module.apply_trainable()
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["ctx"]
    optimizer = torch.optim.SGD(params, lr=0.1)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    batch = next(iter(folder_data.train_dataloader()))[0]
    for _ in range(3):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        assert module.ctx.grad is not None and module.ctx.grad.abs().sum() > 0
        optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"ctx"}
    assert module.num_trainable == (1 if method is CoOpMT else 4) * 4 * 48


def test_shared_context_encodes_class_texts_once_per_step(tiny_backbone, folder_data, monkeypatch):
    module = CoOpMT(CoOpConfig(n_ctx=4), tiny_backbone, folder_data.tasks)
    module.log = lambda *args, **kwargs: None
    calls = []
    original = tiny_backbone.encode_text
    monkeypatch.setattr(tiny_backbone, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    batch = next(iter(folder_data.train_dataloader()))[0]
    assert len(batch) == 4
    module.training_step(batch, 0).backward()
    assert len(calls) == 1  # four tasks, same classes, one shared context


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(step, warmup=4, total=12) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[8] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))


def test_reference_recipe_is_the_default():
    """The paper's SGD lr 0.0035; Dassl's momentum, weight decay and schedule as MaPLe configures it."""
    optim = OptimConfig()
    assert (optim.lr, optim.momentum, optim.weight_decay) == (0.0035, 0.9, 5e-4)
    assert (optim.schedule, optim.warmup_epochs, optim.warmup_lr) == ("dassl", 1, 1e-5)


def test_a_run_stopped_by_a_signal_resumes_and_force_starts_afresh(
    folder_root, tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "results"
    argv = [
        "run",
        "--method",
        "coop-mt",
        "--dataset",
        "folder",
        "--root",
        str(folder_root),
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--pretrained",
        str(tiny_checkpoint),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.epochs=2",
        "--set",
        "data.batch_size=8",
        "--set",
        "method.n_ctx=4",
    ]
    work = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "coop-mt-n_ctx4@tiny-tiny" / "seed0"
    last, record = work / "checkpoints" / "last.ckpt", work.with_suffix(".json")
    log = work / "run.log"
    started_at, signal_at, log_on_disk = [], {}, []
    epoch_start, test_start = PetlModule.on_train_epoch_start, PetlModule.on_test_epoch_start

    def on_epoch(self):
        started_at.append(self.current_epoch)
        log_on_disk.append(log.read_text())  # as a SIGKILL here would leave it
        if signal_at.pop(("epoch", self.current_epoch), None):
            os.kill(os.getpid(), signal.SIGINT)  # a real signal, to this process
        epoch_start(self)

    def on_test(self):
        if signal_at.pop("test", None):
            os.kill(os.getpid(), signal.SIGTERM)
        test_start(self)

    monkeypatch.setattr(PetlModule, "on_train_epoch_start", on_epoch)
    monkeypatch.setattr(PetlModule, "on_test_epoch_start", on_test)

    def run(*extra):
        started_at.clear()
        code = main([*argv, *extra])
        return code, capsys.readouterr().err.strip().splitlines()

    # SIGINT in the second epoch: one line, exit 130, the first epoch's checkpoint kept for resuming.
    signal_at[("epoch", 1)] = True
    code, err = run()
    assert (code, started_at) == (130, [0, 1]) and not record.exists()
    assert err[-1] == (
        f"petl-bench: stopped by SIGINT: 1 of 2 epochs of coop-mt-n_ctx4@tiny-tiny kept in "
        f"{work / 'checkpoints'}: the same command resumes from there"
    )
    checkpoint = torch.load(last, weights_only=True)  # tensors and plain data only
    assert checkpoint["resume"]["epochs"] == 1 and "optimizer_states" in checkpoint
    # run.log: the phases, the size, a line for the epoch done, why the attempt ended.
    said = logged(log)
    assert said[0].startswith("run: coop-mt-n_ctx4@tiny-tiny on folder 2shot seed 0, started (pid ")
    assert [line.split(" ...")[0] for line in said if line.endswith(" ...")] == [
        "model: loading tiny, weights " + str(tiny_checkpoint),
        f"scan: reading the folder root {folder_root}",
        "split: drawing 2shot, seed 0",
        "train: 2 epochs",
    ]
    assert "size: 4 tasks x 4 classes; 32 training images, 2 epochs x 1 step " in "\n".join(said)
    assert epoch_lines(said) == ["1/2"] and said[-1] == "ended: stopped by SIGINT"
    assert "  epoch 1/2  loss " in log_on_disk[-1]  # on disk while the run went on: a kill keeps it

    # Resumed at epoch 1, then SIGTERM while testing: 143; the last epoch's checkpoint holds weights only.
    signal_at["test"] = True
    code, err = run()
    assert (code, started_at) == (143, [1]) and not record.exists()
    assert err[-1].startswith("petl-bench: stopped by SIGTERM: 2 of 2 epochs")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["resume"]["epochs"] == 2 and "optimizer_states" not in checkpoint
    said = logged(log)  # appended: the first attempt's lines, then this one's
    second = said.index(next(line for line in said if line.startswith("run: ") and "resumed" in line))
    assert "ended: stopped by SIGINT" in said[:second]
    assert ", resumed from epoch 1 of 2 (pid " in said[second] and "train: epochs 2-2 of 2 ..." in said[second:]
    assert epoch_lines(said) == ["1/2", "2/2"] and "test: 16 images of 4 tasks ..." in said[second:]
    assert said[-1] == "ended: stopped by SIGTERM"

    # Resumed again: nothing left to train, only the test.
    assert run()[0] == 0 and started_at == []
    done = json.loads(record.read_text())
    assert (done["attempts"], done["resumed_from_epoch"]) == (3, 2)
    assert done["wall_s"] > checkpoint["resume"]["wall_s"] > 0  # every attempt counts
    said = logged(log)
    assert sum(line.startswith("run: ") for line in said) == 3 and epoch_lines(said) == ["1/2", "2/2"]
    assert ", resumed after all 2 epochs: testing only (pid " in [line for line in said if line.startswith("run: ")][-1]
    assert re.fullmatch(
        r"test: " + ", ".join(f"{task} {value:.2f}" for task, value in done["accuracy"].items()) + r" \(\d+\.\d s\)",
        said[-1],
    )

    # --force trains again from scratch, although a finished checkpoint and record exist.
    assert run("--force")[0] == 0 and started_at == [0, 1]
    forced = json.loads(record.read_text())
    assert (forced["attempts"], forced["resumed_from_epoch"]) == (1, None)
    assert forced["accuracy"] == done["accuracy"]  # the same run, start to end
    said = logged(log)  # afresh, as the run
    attempts = [line for line in said if line.startswith("run: ")]
    assert len(attempts) == 1 and ", started (pid " in attempts[0] and epoch_lines(said) == ["1/2", "2/2"]


class FullDisk:
    """A file whose writes fail as a full disk's do."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass

    def close(self):
        pass


def test_a_text_log_that_cannot_be_written_is_one_warning_and_the_run_goes_on(tmp_path, capsys):
    path = tmp_path / "run.log"
    with (
        pytest.warns(UserWarning, match=r"run\.log: writing the run's text log failed .*No space left") as warned,
        text_log(path),
    ):
        say("first")
        (file,) = [h for h in logging.getLogger("petl_bench").handlers if isinstance(h, logging.FileHandler)]
        file.stream.close()
        file.stream = FullDisk()
        say("second")
        say("third")
    assert [str(w.message).split(": ", 1)[1] for w in warned] == [
        "writing the run's text log failed ([Errno 28] No space left on device); the run goes on without it"
    ]
    assert path.read_text().endswith("  first\n")
    out, err = capsys.readouterr()
    assert out == "first\nsecond\nthird\n" and "Traceback" not in err and "Logging error" not in err


def logged(path: Path) -> list[str]:
    """run.log's lines, each checked for its timestamp and returned without it."""
    lines = path.read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S", line) for line in lines), lines
    return [line.split("  ", 1)[1] for line in lines]


EPOCH_LINE = re.compile(
    r"epoch (\d+/\d+)  loss (\d+\.\d{4})  lr (\d\.\d{3}e[-+]\d\d)  elapsed \d+:\d\d:\d\d  "
    r"eta \d+:\d\d:\d\d"
)


def epoch_lines(said: list[str]) -> list[str]:
    """The epochs of the epoch lines, in order ("1/2"); every line naming an epoch must be one."""
    named = [line for line in said if line.startswith("epoch ")]
    assert all(EPOCH_LINE.fullmatch(line) for line in named), named
    return [EPOCH_LINE.fullmatch(line).group(1) for line in named]


@pytest.mark.slow
def test_a_second_launch_waits_and_the_run_resumed_after_sigterm_ends_as_the_uninterrupted_one(folder_root, tmp_path):
    argv = [
        "run",
        "--method",
        "coop-mt",
        "--dataset",
        "folder",
        "--root",
        str(folder_root),
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--no-progress",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.epochs=4",
        "--set",
        "data.batch_size=2",
        "--set",
        "method.n_ctx=4",
    ]
    run_dir = Path("runs/folder", root_folder(folder_root), "2shot/coop-mt-n_ctx4@tiny/seed0")
    assert main([*argv, "--out", str(tmp_path / "alone")]) == 0  # the uninterrupted run, for comparison
    alone = json.loads((tmp_path / "alone" / run_dir.with_suffix(".json")).read_text())

    # Two identical launches into one --out, as two real processes. Both find the run held (here,
    # until both say they wait), then one runs it and the other waits for that one.
    shared = tmp_path / "shared"
    work = shared / run_dir
    logs = [(tmp_path / f"{i}.out", tmp_path / f"{i}.err") for i in range(2)]
    deadline = time.monotonic() + 240

    def until(condition, launches):
        while not condition():
            assert time.monotonic() < deadline and all(p.poll() is None for p in launches), [
                err.read_text() for _, err in logs
            ]
            time.sleep(0.05)

    with run_lock(work.with_suffix(".json")):
        launches = [
            subprocess.Popen(
                [sys.executable, "-m", "petl_bench.cli", *argv, "--out", str(shared)],
                stdout=out.open("w"),
                stderr=err.open("w"),
            )
            for out, err in logs
        ]
        until(lambda: all("waiting for it to end" in out.read_text() for out, _ in logs), launches)
    try:
        until(lambda: (work / "checkpoints" / "last.ckpt").is_file(), launches)  # one has trained an epoch
        runner = next(
            p for p in launches if holder(work.with_suffix(".json")) == f"pid {p.pid} on {socket.gethostname()}"
        )
        runner.send_signal(signal.SIGTERM)  # a real signal to the process that holds the run
        assert runner.wait(timeout=120) == 143
        last_line = logs[launches.index(runner)][1].read_text().strip().splitlines()[-1]
        assert re.fullmatch(
            r"petl-bench: stopped by SIGTERM: [1-3] of 4 epochs of coop-mt-n_ctx4@tiny kept in "
            rf"{re.escape(str(work / 'checkpoints'))}: the same command resumes from there",
            last_line,
        )
        kept = int(re.search(r"SIGTERM: (\d)", last_line).group(1))
        waiter = launches[1 - launches.index(runner)]
        assert waiter.wait(timeout=240) == 0, logs[launches.index(waiter)][1].read_text()  # took the run over
    finally:
        for process in launches:
            process.kill()
    record = json.loads(work.with_suffix(".json").read_text())
    assert (record["attempts"], record["resumed_from_epoch"]) == (2, kept)
    # Bit for bit the uninterrupted run: the learnt context and the accuracy.
    ctx = [
        torch.load(root / run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["ctx"]
        for root in (tmp_path / "alone", shared)
    ]
    assert torch.equal(*ctx)
    assert record["accuracy"] == alone["accuracy"]


def test_a_resumed_run_with_loader_workers_equals_the_uninterrupted_one(folder_root, copy_tree, tmp_path, monkeypatch):
    root = copy_tree(folder_root)
    for domain in ("clipart", "product", "real world"):  # one task: the whole worker budget is its loader's
        shutil.rmtree(root / domain)
    argv = [
        "run",
        "--method",
        "coop-mt",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--no-progress",
        "--set",
        "data.num_workers=2",
        "--set",
        "train.epochs=2",
        "--set",
        "data.batch_size=2",
        "--set",
        "method.n_ctx=4",
    ]
    ckpt = Path("runs/folder", root_folder(root), "2shot/coop-mt-n_ctx4@tiny/seed0/checkpoints/last.ckpt")
    assert main([*argv, "--out", str(tmp_path / "alone")]) == 0
    epoch_start = PetlModule.on_train_epoch_start

    def sigterm_in_second_epoch(self):
        if self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        epoch_start(self)

    monkeypatch.setattr(PetlModule, "on_train_epoch_start", sigterm_in_second_epoch)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 143
    monkeypatch.setattr(PetlModule, "on_train_epoch_start", epoch_start)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 0
    ctx = [torch.load(tmp_path / out / ckpt, weights_only=True)["state_dict"]["ctx"] for out in ("alone", "resumed")]
    assert torch.equal(*ctx)


def test_a_run_whose_loss_becomes_nan_stops_in_one_line_and_writes_no_record(folder_root, tiny_checkpoint, tmp_path):
    # Regression (issue 18, item 8): a huge but finite lr trained into NaN and wrote a chance-level record, exit 0.
    out = tmp_path / "results"
    code, _, err = call(
        [
            "run",
            "--method",
            "coop-mt",
            "--dataset",
            "folder",
            "--root",
            folder_root,
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
            "data.batch_size=2",
            "--set",
            "train.epochs=2",
            "--set",
            "optim.lr=1e30",
            "--set",
            "optim.warmup_epochs=0",
        ]
    )
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.fullmatch(
        r"petl-bench: error: training diverged at epoch 0, step [1-9]\d*: the loss is (nan|-?inf) "
        r"\(the last finite loss was \d[\d.e+]* at step \d+\); no record written .*",
        err.strip(),
    )
    assert not list(out.glob("runs/**/seed0.json"))


def test_a_resumed_run_keeps_every_attempts_rows_in_its_csv_log(folder_root, tiny_checkpoint, tmp_path, monkeypatch):
    # Regression (issue 18, item 5): on resume Lightning deleted metrics.csv, which then began at the resumed epoch.
    import pandas as pd

    argv = [
        "run",
        "--method",
        "coop-mt",
        "--dataset",
        "folder",
        "--root",
        folder_root,
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--pretrained",
        tiny_checkpoint,
        "--no-progress",
        "--set",
        "data.num_workers=0",
        "--set",
        "train.epochs=2",
        "--set",
        "data.batch_size=2",
        "--set",
        "method.n_ctx=4",
    ]
    log = Path("runs/folder", root_folder(folder_root), "2shot/coop-mt-n_ctx4@tiny-tiny/seed0/logs/metrics.csv")

    def steps(out):  # the training rows, as the report's run page reads the log
        rows = pd.read_csv(out / log).dropna(subset=["train/loss"])
        return rows[["epoch", "step", "train/loss", "train/lr"]].reset_index(drop=True)

    assert call([*argv, "--out", tmp_path / "alone"])[0] == 0
    batch_start = PetlModule.on_train_batch_start

    def sigint_in_the_second_epoch(self, batch, batch_idx):
        if (self.current_epoch, batch_idx) == (1, 2):  # two of its steps logged: they train again
            os.kill(os.getpid(), signal.SIGINT)
        return batch_start(self, batch, batch_idx)

    monkeypatch.setattr(PetlModule, "on_train_batch_start", sigint_in_the_second_epoch)
    assert call([*argv, "--out", tmp_path / "resumed"])[0] == 130
    assert sorted(set(steps(tmp_path / "resumed").epoch)) == [0, 1]  # epoch 1 in part
    monkeypatch.setattr(PetlModule, "on_train_batch_start", batch_start)
    assert call([*argv, "--out", tmp_path / "resumed"])[0] == 0
    resumed, alone = steps(tmp_path / "resumed"), steps(tmp_path / "alone")
    assert sorted(set(resumed.epoch)) == [0, 1] and resumed.step.is_unique
    pd.testing.assert_frame_equal(resumed, alone)  # every step once, as the uninterrupted run logged it


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


class _Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index


def test_a_sigterm_that_reaches_a_loader_worker_before_its_init_function_ends_it_quietly(monkeypatch):
    """The race CI once lost: Slurm's (or a test's) SIGTERM to every process came while a new
    epoch's workers were forking, and torch's handler, set before the init function, killed one:
    the parent's loader took that for a failure and printed its traceback."""
    real = loading.quiet_worker

    def signalled_first(worker_id=None):
        os.kill(os.getpid(), signal.SIGTERM)
        real(worker_id)

    monkeypatch.setattr(loading, "quiet_worker", signalled_first)
    with guard.stop_on_signals():
        batches = iter(loading.make_loader(_Numbers(), 1, 2, torch.utils.data.default_collate))
        workers = batches._workers  # their exit statuses are the point
        for worker in workers:
            worker.join(timeout=30)
        statuses = [worker.exitcode for worker in workers]
        del batches
    assert statuses == [0, 0]  # not -15: killed


@pytest.mark.slow
def test_ctrl_c_and_sigterm_to_a_run_with_loader_workers_stop_it_in_one_line(folder_root, copy_tree, tmp_path):
    # Regression (issue 18, item 4): with loader workers, a signal to the process group (Ctrl-C, Slurm's scancel or
    # pre-emption) gave ~200 lines of worker tracebacks and exit 1 (or, lost in a fork hook, exit 0 as if done).
    root = copy_tree(folder_root)
    for domain in ("clipart", "product", "real world"):  # one task: both workers serve its loader
        shutil.rmtree(root / domain)
    out = tmp_path / "results"
    argv = [
        sys.executable,
        "-m",
        "petl_bench.cli",
        "run",
        "--method",
        "coop-mt",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--split",
        "2shot",
        "--model",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "data.num_workers=2",
        "--set",
        "train.epochs=8",
        "--set",
        "data.batch_size=2",
        "--set",
        "method.n_ctx=4",
    ]
    work = out / "runs/folder" / root_folder(root) / "2shot/coop-mt-n_ctx4@tiny/seed0"
    last = work / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240

    def stopped_by(signum, after_epochs: int) -> tuple[int, str, int]:
        run = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            while not (
                last.is_file()
                and torch.load(last, weights_only=True)["resume"]["epochs"] >= after_epochs
                and _children(run.pid)
            ):  # training, its loader workers up
                assert run.poll() is None and time.monotonic() < deadline, run.communicate()
                time.sleep(0.02)
            workers = _children(run.pid)
            os.killpg(run.pid, signum)  # every process of the group, as a terminal's Ctrl-C and Slurm do
            err = run.communicate(timeout=120)[1]
        finally:
            run.kill()
        while not all(_gone(pid) for pid in workers):  # no worker outlives its run
            assert time.monotonic() < deadline, workers
            time.sleep(0.05)
        return run.returncode, err, torch.load(last, weights_only=True)["resume"]["epochs"]

    line = (
        r"petl-bench: stopped by {}: {} of 8 epochs of coop-mt-n_ctx4@tiny kept in "
        + re.escape(str(work / "checkpoints"))
        + ": the same command resumes from there\n"
    )
    code, err, kept = stopped_by(signal.SIGINT, after_epochs=1)
    assert code == 130 and re.fullmatch(line.format("SIGINT", kept), err), err
    code, err, kept_again = stopped_by(signal.SIGTERM, after_epochs=kept + 1)  # the resumed run
    assert code == 143 and re.fullmatch(line.format("SIGTERM", kept_again), err), err
    assert subprocess.run(argv, capture_output=True, timeout=240).returncode == 0
    record = json.loads(work.with_suffix(".json").read_text())
    assert (record["attempts"], record["resumed_from_epoch"]) == (3, kept_again)
