"""`petl-bench sweep`: grids from YAML, run statuses, skipping, stale records, failures, and a sweep
killed with SIGKILL that a re-run completes. Runs use the tiny CLIP on the synthetic folder set."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from petl_bench.config import root_folder
from petl_bench.errors import UserError
from petl_bench.guard import holder
from petl_bench.runargs import parse_run_argv, run_argv
from petl_bench.sweep import local
from petl_bench.sweep.grid import BENCHMARKS, expand_grid, grid_file, record_of
from petl_bench.sweep.jobs import Job, Outcome
from petl_bench.sweep.state import run_status

from cli_calls import call

TABLE1_METHODS = [
    "zeroshot",
    "fullft",
    "coop",
    "vpt",
    "maple",
    "fullft-mt",
    "clip-adapter",
    "bitfit",
    "coop-mt",
    "vpt-mt",
    "maple-mt",
    "mmap",
]
BEYOND_METHODS = [
    *TABLE1_METHODS,
    "linear-probe",
    "tip-adapter-f",
    "kgcoop",
    "cocoop",
    "ivlp",
    "lora",
    "adaptformer",
    "promptsrc",
    "mma",
    "coprompt",
    "prograd",
    "tcp",
    "dept",
    "taskres",
    "clap",
    "lpp",
    "tip-adapter-f-mt",
    "kgcoop-mt",
    "cocoop-mt",
    "ivlp-mt",
    "lora-mt",
    "adaptformer-mt",
    "promptsrc-mt",
    "mma-mt",
    "coprompt-mt",
    "prograd-mt",
    "tcp-mt",
    "dept-mt",
    "taskres-mt",
    "clap-mt",
    "lpp-mt",
]


def write_grid(path: Path, tiny_checkpoint, methods, seeds=(0, 1), splits=("2shot",), **extra) -> Path:
    spec = {
        "name": path.stem,
        "table": "table1",
        "dataset": "folder",
        "splits": list(splits),
        "seeds": list(seeds),
        "set": {
            "model.arch": "tiny",
            "model.pretrained": str(tiny_checkpoint),
            "data.num_workers": 0,
            "data.batch_size": 8,
        },
        "methods": methods,
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def child_processes(pid: int) -> list[int]:
    """Processes whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def records(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / "runs").rglob("seed*.json")}


# -- grids -----------------------------------------------------------------------------------------
def test_grid_expansion_labels_and_set_precedence(tmp_path, tiny_checkpoint, folder_root):
    path = write_grid(
        tmp_path / "g.yaml",
        tiny_checkpoint,
        seeds=[0, 1, 2],
        splits=["2shot", "1shot"],
        methods=[
            "zeroshot",
            {
                "method": "coop-mt",
                "label": "CoOp-MT short",
                "set": {"train.epochs": 1, "optim.lr": 0.01, "method.ctx_init": "a photo of a"},
            },
        ],
        slurm={"time_min": 10, "partition": "gpu"},
    )
    spec = yaml.safe_load(path.read_text())
    spec["set"]["train.epochs"] = 3
    path.write_text(yaml.safe_dump(spec))
    grid = expand_grid(path, [f"data.root={folder_root}", "optim.lr=0.5", "slurm.time_min=20"], out=str(tmp_path / "o"))

    assert (grid.name, grid.table, grid.dataset, grid.labels) == (
        "g",
        "table1",
        "folder",
        ["zeroshot", "CoOp-MT short"],
    )
    assert len(grid.runs) == 2 * 2 * 3
    assert [(r.label, r.cfg.data.split, r.cfg.data.seed) for r in grid.runs[:4]] == [
        ("zeroshot", "2shot", 0),
        ("zeroshot", "2shot", 1),
        ("zeroshot", "2shot", 2),
        ("zeroshot", "1shot", 0),
    ]
    zeroshot, coop = grid.runs[0].cfg, grid.runs[-1].cfg
    assert zeroshot.train.epochs == 3 and coop.train.epochs == 1  # an entry's set beats the grid's
    assert zeroshot.optim.lr == coop.optim.lr == 0.5  # the command line beats both
    assert coop.params.ctx_init == "a photo of a" and coop.data.batch_size == 8
    assert {r.cfg.data.root for r in grid.runs} == {str(folder_root)}
    assert (grid.slurm.time_min, grid.slurm.partition, grid.slurm.gpus_per_job) == (20, "gpu", 1)
    assert record_of(grid.runs[-1]) == (
        tmp_path
        / f"o/runs/folder/{root_folder(str(folder_root))}/1shot"
        / "coop-mt-ctx_inita_photo_of_a@tiny-tiny"
        / "seed2.json"
    )

    # The same config as `petl-bench run` builds from the options a user would type.
    typed = parse_run_argv(
        [
            "--method",
            "coop-mt",
            "--dataset",
            "folder",
            "--root",
            str(folder_root),
            "--split",
            "1shot",
            "--seed",
            "2",
            "--model",
            "tiny",
            "--pretrained",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "data.num_workers=0",
            "--set",
            "data.batch_size=8",
            "--set",
            "train.epochs=1",
            "--set",
            "optim.lr=0.5",
            "--set",
            "method.ctx_init=a photo of a",
        ]
    )
    assert typed.to_dict() == coop.to_dict() and typed.sha256() == coop.sha256()


@pytest.mark.parametrize(
    "name, runs, labels",
    [
        ("table1", 72, TABLE1_METHODS),
        ("table2", 72, TABLE1_METHODS),
        ("kshot", 60, ["zeroshot", "coop-mt", "vpt-mt", "maple-mt", "mmap"]),
        (
            "ablation",
            42,
            [
                "task-specific only",
                "group-shared only",
                "random groups",
                "gradient groups",
                "one group",
                "joint train",
                "MLP prompt",
            ],
        ),
        ("demo", 6, ["zeroshot", "coop-mt", "mmap"]),
        ("beyond", 258, BEYOND_METHODS),
        ("beyond-demo", 43, BEYOND_METHODS),
    ],
)
def test_shipped_grids(name, runs, labels):
    path = grid_file(name)
    assert path == BENCHMARKS / f"{name}.yaml"
    grid = expand_grid(path)
    assert (grid.name, len(grid.runs), grid.labels) == (name, runs, labels)
    # Each run goes to the child process as `petl-bench run` arguments that rebuild it exactly.
    for run in grid.runs[:: max(1, len(grid.runs) // 12)]:
        rebuilt = parse_run_argv(run_argv(run.cfg)[1:])
        assert rebuilt.to_dict() == run.cfg.to_dict()
    if "demo" not in name:
        cfg = grid.runs[-1].cfg
        paper_batch = 4 if grid.dataset == "minidomainnet" else 16
        assert (cfg.model.arch, cfg.model.pretrained, cfg.train.epochs, cfg.optim.lr, cfg.data.batch_size) == (
            "ViT-B-16",
            "openai",
            5,
            0.0035,
            paper_batch,
        )


def test_ablation_rows_set_what_they_name():
    by_label = {}
    for run in expand_grid(grid_file("ablation")).runs:
        by_label.setdefault(run.label, run.cfg)
    assert (by_label["task-specific only"].params.group_shared, by_label["task-specific only"].params.grouping) == (
        False,
        "all",
    )
    assert by_label["group-shared only"].params.task_specific is False
    assert by_label["random groups"].params.grouping == "random"
    assert by_label["one group"].params.grouping == "all"
    assert by_label["gradient groups"].run_name == "mmap"
    assert (by_label["joint train"].method, by_label["MLP prompt"].method) == ("mmap-joint", "mmap-mlp")


def test_a_kshot_sweep_finds_the_pct_runs_done(tmp_path):
    """Office-Home 6shot is 10pct: one record, one config hash."""
    table1 = {
        (r.label, r.cfg.data.seed): r
        for r in expand_grid(grid_file("table1"), out=str(tmp_path)).runs
        if r.cfg.data.split == "10pct"
    }
    kshot = {
        (r.label, r.cfg.data.seed): r
        for r in expand_grid(grid_file("kshot"), out=str(tmp_path)).runs
        if r.cfg.data.split == "6shot"
    }
    for key, run in kshot.items():
        assert record_of(run) == record_of(table1[key])
        assert run.cfg.sha256() == table1[key].cfg.sha256()


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no grid"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
        ("table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot]\nmethod: x\n", "unknown key 'method'"),
        ("table: table1\ndataset: folder\nsplits: [2shot]\n", "missing key 'methods'"),
        ("table: table9\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot]\n", "table: unknown layout 'table9'"),
        ("table: table1\ndataset: cifar\nsplits: [2shot]\nmethods: [zeroshot]\n", "dataset: unknown dataset 'cifar'"),
        ("table: table1\ndataset: folder\nsplits: [2pct]\nmethods: [zeroshot]\n", "splits: unknown split '2pct'"),
        ("table: table1\ndataset: folder\nsplits: [2shot]\nseeds: [a]\nmethods: [zeroshot]\n", "seeds:"),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot, coopp]\n",
            "methods[1]: unknown method 'coopp'",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [{method: coop, sets: {}}]\n",
            "methods[0]: unknown key 'sets'",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [{method: coop, set: {method.n_ctxx: 2}}]\n",
            "unknown key 'n_ctxx'",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nset: {train.epochs: five}\nmethods: [zeroshot]\n",
            "'five' is not a valid int",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot, {method: coop, label: zeroshot}]\n",
            "labels must differ",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [coop, {method: coop, label: again}]\n",
            "makes the same runs as 'coop'",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot]\nslurm: {gpus: 2}\n",
            "slurm: unknown key slurm.gpus",
        ),
        (
            "name: ../../escape\ntable: table1\ndataset: folder\nsplits: [2shot]\nmethods: [zeroshot]\n",
            "name: grid name '../../escape' cannot name a folder",
        ),
        (
            "table: table1\ndataset: folder\nsplits: [2shot]\nset: {optim.lr: -1}\nmethods: [zeroshot]\n",
            "optim.lr=-1.0: must be > 0",
        ),
        (b"name: caf\xe9\ntable: table1\n", "is not UTF-8 text (invalid continuation byte at byte 9)"),  # Latin-1
    ],
)
def test_bad_grids_are_one_line_errors_naming_file_and_key(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, stdout, stderr = call(["sweep", path, "--dry-run"])
    assert code == 2 and stdout == ""
    assert stderr.startswith("petl-bench: error: ") and stderr.count("\n") == 1, stderr
    assert str(path) in stderr and expected in stderr, stderr


def test_user_given_names_stay_inside_out(tmp_path, tiny_checkpoint):
    # A label is text in tables, a method value becomes a run-name tag, a weights file its stem.
    path = write_grid(
        tmp_path / "g.yaml",
        tiny_checkpoint,
        methods=[
            {"method": "coop", "label": "../../label", "set": {"method.ctx_init": "../../../../ctx"}},
            {"method": "zeroshot", "label": "weights", "set": {"model.pretrained": "../../../../../../w.pt"}},
        ],
    )
    out = tmp_path / "o"
    for run in expand_grid(path, out=str(out)).runs:
        assert record_of(run).resolve().is_relative_to(out.resolve()), record_of(run)


def test_bad_command_line_set_items(tmp_path, tiny_checkpoint):
    path = write_grid(tmp_path / "g.yaml", tiny_checkpoint, methods=["zeroshot"])
    for item, expected in [
        ("slurm.gpu=1", "unknown key slurm.gpu"),
        ("optim.lrr=1", "unknown key 'lrr'"),
        ("slurm.time_min=soon", "'soon' is not a valid int"),
    ]:
        code, _, stderr = call(["sweep", path, "--dry-run", "--set", item])
        assert code == 2 and stderr.count("\n") == 1 and expected in stderr, stderr


def test_gpu_slots(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert local.gpu_slots(None) == [] and local.gpu_slots(2) == []
    assert "no GPU here; running one at a time on CPU" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert local.gpu_slots(None) == ["3", "5"] and local.gpu_slots(1) == ["3"]
    assert local.gpu_slots(0) == []
    with pytest.raises(UserError, match="only 2 GPU"):
        local.gpu_slots(3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local.gpu_slots(None) == ["0", "1"]


# -- running ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_statuses_skip_stale_rerun_and_a_failing_run(tmp_path, tiny_checkpoint, folder_root, monkeypatch):
    out = tmp_path / "results"
    # Two runs made by hand first: seed 0 as the grid has it (done), seed 1 with another lr (stale).
    hand = [
        "run",
        "--method",
        "zeroshot",
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
        "data.batch_size=8",
    ]
    assert call(hand)[0] == 0
    assert call([*hand, "--seed", "1", "--set", "optim.lr=0.1"])[0] == 0
    done_record = (out / f"runs/folder/{root_folder(str(folder_root))}/2shot/zeroshot@tiny-tiny/seed0.json").read_text()
    # A row whose runs fail: 9 training images per class, and the set has 3.
    path = write_grid(
        tmp_path / "g.yaml",
        tiny_checkpoint,
        methods=["zeroshot", {"method": "zeroshot", "label": "broken", "set": {"data.split": "9shot"}}],
    )
    sweep = ["sweep", path, "--out", out, "--set", f"data.root={folder_root}"]

    code, stdout, _ = call([*sweep, "--dry-run"])
    assert code == 0
    rows = [line.split() for line in stdout.splitlines() if line.startswith("  ")]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("done", "zeroshot", "seed0"),
        ("stale", "zeroshot", "seed1"),
        ("todo", "broken", "seed0"),
        ("todo", "broken", "seed1"),
    ]
    assert stdout.splitlines()[-1] == "1 done, 1 stale, 2 to run"

    # Only the zeroshot row: nothing to run; the stale record is listed and left alone.
    only_zeroshot = write_grid(tmp_path / "z.yaml", tiny_checkpoint, methods=["zeroshot"])
    code, stdout, _ = call(["sweep", only_zeroshot, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 0
    assert "1 stale: a record with another config (--rerun-stale runs them again):" in stdout
    assert stdout.splitlines()[-1] == "z: 0 done now, 1 skipped (done before), 1 stale left, 0 failed"

    # Everything left, two at a time (GPU slots "0" and "1"; there is no GPU, so they run on CPU).
    monkeypatch.setattr(local, "gpu_slots", lambda requested: ["0", "1"])
    code, stdout, _ = call([*sweep, "--rerun-stale"])
    assert code == 1
    lines = stdout.splitlines()
    started = [i for i, line in enumerate(lines) if ": started on GPU" in line]
    ended = [i for i, line in enumerate(lines) if ": done in " in line or ": FAILED (" in line]
    assert len(started) == len(ended) == 3 and started[1] < ended[0]  # two ran at once
    assert lines[-3] == "g: 1 done now, 1 skipped (done before), 0 stale left, 2 failed"
    folder_runs = out / "runs" / "folder" / root_folder(str(folder_root))
    broken_logs = [folder_runs / f"9shot/zeroshot@tiny-tiny/seed{k}/sweep.log" for k in (0, 1)]
    for log in broken_logs:
        assert any(line.startswith("  failed: ") and line.endswith(f"log: {log}") for line in lines[-2:])
        text = log.read_text()
        assert "CUDA_VISIBLE_DEVICES=" in text.splitlines()[0]
        assert "9-shot split needs 9 training images per class" in text
    assert (folder_runs / "2shot/zeroshot@tiny-tiny/seed0.json").read_text() == done_record  # skipped
    grid = expand_grid(path, [f"data.root={folder_root}"], str(out))
    assert [run_status(r) for r in grid.runs] == ["done", "done", "todo", "todo"]  # the stale one re-ran


@pytest.mark.slow
def test_a_sweep_killed_mid_run_resumes_to_the_same_records(tmp_path, tiny_checkpoint, folder_root):
    out = tmp_path / "results"
    path = write_grid(
        tmp_path / "k.yaml",
        tiny_checkpoint,
        seeds=[0],
        methods=["zeroshot", {"method": "coop-mt", "set": {"train.epochs": 10, "data.batch_size": 2}}],
    )
    command = [
        sys.executable,
        "-m",
        "petl_bench.cli",
        "sweep",
        str(path),
        "--out",
        str(out),
        "--set",
        f"data.root={folder_root}",
    ]
    grid = expand_grid(path, [f"data.root={folder_root}"], str(out))
    expected = {str(record_of(run).relative_to(out)) for run in grid.runs}
    coop_work = record_of(grid.runs[1]).with_suffix("")

    sweep = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while not (coop_work / "checkpoints" / "last.ckpt").is_file():  # coop-mt has finished an epoch
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.1)
    runs = child_processes(sweep.pid)
    assert len(runs) == 1
    os.kill(sweep.pid, signal.SIGKILL)  # the sweep alone: its run must not live on as an orphan
    sweep.wait()
    # Its lock goes with its last thread, a moment after the main thread shows as a zombie.
    while (alive(runs[0]) or holder(record_of(grid.runs[1]))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(runs[0]) and not holder(record_of(grid.runs[1]))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sweep.pid, signal.SIGKILL)  # the rest of its process group, if any
    assert records(out) == {str(record_of(grid.runs[0]).relative_to(out))}  # zeroshot only; coop-mt cut short

    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 0, stdout
    assert "[1/1] coop-mt 2shot seed0: done in " in stdout
    assert stdout.splitlines()[-1] == "k: 1 done now, 1 skipped (done before), 0 stale left, 0 failed"
    assert records(out) == expected
    assert all(
        json.loads((out / r).read_text())["config_sha256"] == run.cfg.sha256()
        for r, run in zip(sorted(expected), sorted(grid.runs, key=lambda run: str(record_of(run))), strict=True)
    )
    log = (coop_work / "sweep.log").read_text()
    assert log.count("\n# ") + log.startswith("# ") == 2  # the killed attempt and the resumed one
    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 0 and "2 already done, 0 to run" in stdout


def test_a_run_held_by_another_process_is_shown_skipped_and_freed_by_sigkill(
    tmp_path, tiny_checkpoint, folder_root, capsys
):
    out = tmp_path / "results"
    path = write_grid(tmp_path / "l.yaml", tiny_checkpoint, seeds=[0], methods=["zeroshot"])
    sweep = ["sweep", path, "--out", out, "--set", f"data.root={folder_root}"]
    run = expand_grid(path, [f"data.root={folder_root}"], str(out)).runs[0]
    # Another process holds the run's lock (a sweep of the same grid, or a hand-typed run).
    hold = (
        f"import time; from pathlib import Path; from petl_bench.guard import run_lock\n"
        f"with run_lock(Path({str(record_of(run))!r})):\n    print('held', flush=True); time.sleep(300)"
    )
    other = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "held\n"
        assert holder(record_of(run)) == f"pid {other.pid} on {socket.gethostname()}"
        code, stdout, _ = call([*sweep, "--dry-run"])
        assert code == 0 and stdout.split("\n")[1].split()[0] == "running"
        assert stdout.splitlines()[-1] == "0 done, 0 stale, 0 to run, 1 running in another process"
        code, stdout, _ = call(sweep)
        assert code == 0 and "0 to run (local), 1 running in another process (skipped)" in stdout
        # A run that became busy after the sweep looked: skipped at launch, no process started.
        job = Job(1, 1, run, ["run"])
        assert [r.outcome for r in local.run_local([job], [])] == [Outcome.BUSY]
        assert (
            capsys.readouterr().out == f"[1/1] zeroshot 2shot seed0: running in another process (pid {other.pid} "
            f"on {socket.gethostname()}): skipped\n"
        )
        # By hand, told not to wait: exit status 75 and one line.
        code, _, stderr = call([*run_argv(run.cfg), "--if-locked", "skip"])
        assert code == 75 and stderr.count("\n") == 1
        assert stderr.startswith(f"petl-bench: zeroshot@tiny-tiny/seed0 is running in another process (pid {other.pid}")
        assert stderr.endswith(": skipped\n")
    finally:
        other.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        other.wait()
    assert holder(record_of(run)) is None
    assert call([*sweep, "--dry-run"])[1].split("\n")[1].split()[0] == "todo"
    assert not list((out / "runs").rglob("*.json"))


# -- worker processes ------------------------------------------------------------------------------
def worker_pids(log: Path) -> list[str]:
    """The worker of each attempt, from the headers the sweep writes to a run's log."""
    return [line.split("worker ")[1].split(":")[0] for line in log.read_text().splitlines() if line.startswith("# ")]


def test_one_worker_runs_the_grid_and_a_run_equals_the_hand_typed_one(tmp_path, tiny_checkpoint, folder_root):
    """Full fine-tuning trains the backbone, then CoOp-MT runs in the same worker: it must get the
    backbone as loaded and the random numbers a fresh process gets."""
    out = tmp_path / "results"
    path = write_grid(
        tmp_path / "w.yaml",
        tiny_checkpoint,
        seeds=[0],
        methods=[
            {"method": "fullft-mt", "set": {"train.epochs": 2, "optim.warmup_epochs": 0}},
            {"method": "coop-mt", "set": {"train.epochs": 1}},
        ],
    )
    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 0, stdout
    grid = expand_grid(path, [f"data.root={folder_root}"], str(out))
    fullft, coop = (record_of(run) for run in grid.runs)
    assert worker_pids(fullft.with_suffix("") / "sweep.log") == worker_pids(coop.with_suffix("") / "sweep.log")

    by_hand = run_argv(grid.runs[1].cfg)[1:]
    code, _, err = call(
        [
            "run",
            *by_hand[: by_hand.index(f"--out={out}")],
            f"--out={tmp_path / 'by-hand'}",
            *by_hand[by_hand.index(f"--out={out}") + 1 :],
        ]
    )
    assert code == 0, err
    hand = json.loads(next((tmp_path / "by-hand" / "runs").rglob("seed0.json")).read_text())
    swept = json.loads(coop.read_text())
    assert (swept["accuracy"], swept["config_sha256"]) == (hand["accuracy"], hand["config_sha256"])


def test_a_killed_worker_fails_its_run_only_and_the_rerun_resumes_it(tmp_path, tiny_checkpoint, folder_root):
    out = tmp_path / "results"
    path = write_grid(
        tmp_path / "x.yaml",
        tiny_checkpoint,
        seeds=[0],
        methods=[{"method": "coop-mt", "set": {"train.epochs": 4, "data.batch_size": 2}}, "zeroshot"],
    )
    grid = expand_grid(path, [f"data.root={folder_root}"], str(out))
    coop_work = record_of(grid.runs[0]).with_suffix("")
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "petl_bench.cli",
            "sweep",
            str(path),
            "--out",
            str(out),
            "--set",
            f"data.root={folder_root}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not (coop_work / "checkpoints" / "last.ckpt").is_file():  # coop-mt has finished an epoch
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0]
        time.sleep(0.1)
    (worker,) = child_processes(sweep.pid)
    os.kill(worker, signal.SIGKILL)
    stdout = sweep.communicate(timeout=240)[0]
    assert sweep.returncode == 1, stdout
    assert "[1/2] coop-mt 2shot seed0: FAILED (killed by SIGKILL)" in stdout
    assert "[2/2] zeroshot 2shot seed0: done in " in stdout  # in a worker started afresh
    assert records(out) == {str(record_of(grid.runs[1]).relative_to(out))}

    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 0 and "[1/1] coop-mt 2shot seed0: done in " in stdout, stdout
    assert json.loads(record_of(grid.runs[0]).read_text())["resumed_from_epoch"] >= 1


def test_fresh_process_and_runs_per_gpu_are_checked(tmp_path, tiny_checkpoint, folder_root):
    path = write_grid(tmp_path / "f.yaml", tiny_checkpoint, seeds=[0], methods=["zeroshot"])
    code, _, err = call(["sweep", path, "--runs-per-gpu", "0", "--set", f"data.root={folder_root}"])
    assert code == 2 and err.strip() == "petl-bench: error: --runs-per-gpu must be >= 1; got 0"
    out = tmp_path / "results"
    code, stdout, _ = call(["sweep", path, "--out", out, "--fresh-process", "--set", f"data.root={folder_root}"])
    assert code == 0 and "[1/1] zeroshot 2shot seed0: done in " in stdout, stdout


def test_a_run_that_diverges_fails_in_its_sweep_with_the_line_in_its_log(tmp_path, tiny_checkpoint, folder_root):
    # Regression (issue 18, item 8): a run trained into NaN counted as done, with a chance-level record.
    out = tmp_path / "results"
    path = write_grid(
        tmp_path / "d.yaml",
        tiny_checkpoint,
        seeds=[0],
        methods=[
            {
                "method": "coop-mt",
                "label": "diverges",
                "set": {"train.epochs": 1, "data.batch_size": 2, "optim.lr": 1e30, "optim.warmup_epochs": 0},
            }
        ],
    )
    code, stdout, _ = call(["sweep", path, "--out", out, "--set", f"data.root={folder_root}"])
    assert code == 1, stdout
    assert "[1/1] diverges 2shot seed0: FAILED (exit status 2)" in stdout
    (run,) = expand_grid(path, [f"data.root={folder_root}"], str(out)).runs
    log = (record_of(run).with_suffix("") / "sweep.log").read_text()
    assert "petl-bench: error: training diverged at epoch 0, step " in log and "Traceback" not in log
    assert records(out) == set() and run_status(run) == "todo"
