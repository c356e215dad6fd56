"""A wheel install, as `pip install petl-bench` gives it: the grids (benchmarks/*.yaml) ship inside
the package, so `petl-bench sweep table1` and `petl-bench params` work from any directory.

The wheel goes into a fresh virtual environment with --no-deps; that environment sees the
dependencies already installed through a .pth file naming this environment's site-packages (a .pth
line adds a directory but runs no .pth file inside it, so this checkout's editable install is not
active there), which keeps the test to seconds instead of minutes of installing torch.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(command: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of what the build reads (so no build/ or egg-info lands in the checkout)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    source = tmp_path / "source"
    source.mkdir()
    for name in [
        "pyproject.toml",
        pyproject["project"]["readme"],
        *pyproject["tool"]["setuptools"]["package-dir"].values(),
    ]:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(REPO / name, source / name)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            tmp_path / "dist",
            source,
        ],
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("petl_bench-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_install_sweeps_the_packaged_grids_from_anywhere(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    packaged = [n.removeprefix("petl_bench/benchmarks/") for n in names if n.startswith("petl_bench/benchmarks/")]
    grids = sorted(path.name for path in (REPO / "benchmarks").glob("*.yaml"))
    assert sorted(name for name in packaged if name.endswith(".yaml") and "/" not in name) == grids
    recipes = sorted(f"recipes/{path.name}" for path in (REPO / "benchmarks" / "recipes").glob("*.yaml"))
    assert recipes and sorted(name for name in packaged if name.startswith("recipes/")) == recipes  # --recipe paper
    assert "petl_bench/data/paper_results.csv" in names and "petl_bench/methods/mmap.py" in names
    assert "petl_bench/report/style.css" in names  # the report's pages inline it

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site_packages = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    )
    ours = sysconfig.get_paths()
    (site_packages / "petl_bench_test_deps.pth").write_text(f"{ours['purelib']}\n{ours['platlib']}\n")
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=tmp_path,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    found = json.loads(run([python, "-c", COMMANDS, venv / "bin" / "petl-bench"], cwd=elsewhere, env=env).stdout)
    assert Path(found["package"]).is_relative_to(venv)  # the wheel's petl_bench, not this checkout's
    assert Path(found["grid"]) == Path(found["package"]).parent / "benchmarks" / "table1.yaml"
    lines = found["sweep"].splitlines()
    assert lines[0] == (
        "table1: 72 runs = 12 methods x splits 10pct, 20pct x seeds 0, 1, 2 on officehome; records under results/runs"
    )
    assert lines[-1] == "0 done, 0 stale, 72 to run"
    assert "| mmap (2 groups) | 2,142 | 0.00 | 0.13 | no |  |  |" in found["params"].splitlines()  # the paper's figure
    assert not (elsewhere / "results").exists()  # a dry run writes nothing


# The installed `petl-bench` script (argv[1]) run twice in one process, since importing torch is
# most of each command's time: `sweep table1 --dry-run`, and `params` of the tiny model (the package
# data it reads is the point here, not ViT-B/16's counts, which tests/test_methods.py checks).
COMMANDS = """
import contextlib, io, json, runpy, sys
import petl_bench.sweep.grid
found = {"package": petl_bench.__file__, "grid": str(petl_bench.sweep.grid.grid_file("table1"))}
script = sys.argv[1]
for name, argv in [("sweep", ["sweep", "table1", "--dry-run"]), ("params", ["params", "--model=tiny"])]:
    sys.argv, out = [script, *argv], io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as done:
            assert done.code in (0, None), (name, done.code)
    found[name] = out.getvalue()
print(json.dumps(found))
"""
