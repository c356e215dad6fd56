"""`petl-bench sweep --launcher slurm` against a real Slurm (`.ci/slurm-up` starts one on localhost):
a 2-run sweep submitted through submitit, then a re-run that submits nothing."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from petl_bench.cli import main
from petl_bench.config import root_folder

pytestmark = pytest.mark.slow  # Slurm jobs, each a process of its own
UNIQUE = os.getpid()  # job names (petl-{grid}) apart from another test session's on the same Slurm


def slurm_unreachable() -> str | None:
    """Why no Slurm can take jobs here, or None."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "no Slurm client here (sinfo/sbatch not on PATH); .ci/slurm-up starts a local one"
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s"
    if probe.returncode != 0:
        return f"sinfo failed: {probe.stderr.strip() or probe.stdout.strip()}"
    if not any(state in probe.stdout for state in ("idle", "mix", "alloc")):
        return f"no Slurm node can take jobs: {probe.stdout.strip() or 'no partitions'}"
    return None


def slurm_or_skip() -> None:
    """A Slurm that takes jobs (`.ci/run` starts one with `.ci/slurm-up`). CI must have one: under
    CI=true the test fails, saying why; elsewhere it skips."""
    reason = slurm_unreachable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no Slurm takes jobs: {reason}")
    if reason:
        pytest.skip(reason)


def test_without_a_slurm_ci_fails_and_elsewhere_the_tests_skip(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no sinfo, no sbatch
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true and no Slurm takes jobs: no Slurm client here"):
        slurm_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"^no Slurm client here"):
        slurm_or_skip()


def sweep_command(grid, out, root) -> list[str]:
    return [
        sys.executable,
        "-m",
        "petl_bench.cli",
        "sweep",
        str(grid),
        "--launcher",
        "slurm",
        "--out",
        str(out),
        "--set",
        f"data.root={root}",
        "--set",
        "slurm.gpus_per_job=0",
        "--set",
        "slurm.cpus_per_task=1",
        "--set",
        "slurm.mem_gb=0",
        "--set",
        "slurm.time_min=15",
    ]


def sweep(grid, out, root, timeout=420):
    """The sweep in a process of its own, as a user runs it; Slurm jobs left over are cancelled."""
    try:
        return subprocess.run(
            sweep_command(grid, out, root), capture_output=True, text=True, timeout=timeout, cwd=out.parent, check=False
        )
    except subprocess.TimeoutExpired as err:
        subprocess.run(["scancel", "--name", f"petl-{grid.stem}"], check=False)
        pytest.fail(f"the Slurm sweep did not end in {timeout} s: {err.stdout}")


def test_slurm_sweep_runs_each_run_as_a_job_and_a_rerun_submits_nothing(tmp_path, folder_root, tiny_checkpoint):
    slurm_or_skip()
    grid = tmp_path / f"slurmgrid{UNIQUE}.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "table": "table1",
                "dataset": "folder",
                "splits": ["2shot"],
                "seeds": [0, 1],
                "methods": ["zeroshot"],
                "set": {"model.arch": "tiny", "model.pretrained": str(tiny_checkpoint), "data.num_workers": 0},
            }
        )
    )
    out = tmp_path / "results"

    first = sweep(grid, out, folder_root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count(": submitted as Slurm job ") == 2
    assert first.stdout.count(": done in ") == 2
    assert first.stdout.splitlines()[-1] == f"{grid.stem}: 2 done now, 0 skipped (done before), 0 stale left, 0 failed"
    runs = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "zeroshot@tiny-tiny"
    assert sorted(p.name for p in runs.glob("*.json")) == ["seed0.json", "seed1.json"]
    job_folders = sorted((out / "slurm" / grid.stem).iterdir())
    assert job_folders  # submitit's scripts and logs

    second = sweep(grid, out, folder_root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "submitted" not in second.stdout and "2 already done, 0 to run" in second.stdout
    assert sorted((out / "slurm" / grid.stem).iterdir()) == job_folders


def test_a_failing_slurm_job_is_reported_with_its_log(tmp_path, folder_root, tiny_checkpoint):
    slurm_or_skip()
    grid = tmp_path / f"broken{UNIQUE}.yaml"
    grid.write_text(
        yaml.safe_dump(
            {  # 9 training images per class, and the set has 3
                "table": "table1",
                "dataset": "folder",
                "splits": ["9shot"],
                "seeds": [0],
                "methods": ["zeroshot"],
                "set": {"model.arch": "tiny", "model.pretrained": str(tiny_checkpoint), "data.num_workers": 0},
            }
        )
    )
    result = sweep(grid, tmp_path / "results", folder_root)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 1 and "Slurm job" in failed[0]
    log = failed[0].rpartition("log: ")[2]
    assert log.endswith("_log.err")
    assert "9-shot split needs 9 training images per class" in Path(log).read_text()


def test_a_cancelled_slurm_job_is_reported_not_waited_for(tmp_path, folder_root, tiny_checkpoint):
    """A job that dies without a result (scancel here; a time or memory limit on a cluster) is a
    failure even where sacct has no accounting to tell submitit so."""
    slurm_or_skip()
    grid = tmp_path / f"long{UNIQUE}.yaml"
    job_name = f"petl-{grid.stem}"
    grid.write_text(
        yaml.safe_dump(
            {
                "table": "table1",
                "dataset": "folder",
                "splits": ["2shot"],
                "seeds": [0],
                "methods": ["coop-mt"],
                "set": {
                    "model.arch": "tiny",
                    "model.pretrained": str(tiny_checkpoint),
                    "data.num_workers": 0,
                    "train.epochs": 100000,
                },
            }
        )
    )
    out = tmp_path / "results"
    out.mkdir()
    command = sweep_command(grid, out, folder_root)
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while (
            "RUNNING"
            not in subprocess.run(
                ["squeue", "--name", job_name, "-h", "-o", "%T"], capture_output=True, text=True, check=False
            ).stdout
        ):
            assert time.monotonic() < deadline and running.poll() is None, "the job never ran"
            time.sleep(0.5)
        # Sweeping the grid again meanwhile would run the job's run twice: refused.
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            assert main(command[3:]) == 2
        assert "from an earlier sweep are still queued or running" in stderr.getvalue()
        subprocess.run(["scancel", "--name", job_name], check=True)
        stdout = running.communicate(timeout=120)[0]
    finally:
        running.kill()
        subprocess.run(["scancel", "--name", job_name], check=False)
    assert running.returncode == 1, stdout
    assert "FAILED (Slurm job " in stdout and "left the Slurm queue without a result" in stdout
    assert stdout.splitlines()[-2] == f"{grid.stem}: 0 done now, 0 skipped (done before), 0 stale left, 1 failed"
