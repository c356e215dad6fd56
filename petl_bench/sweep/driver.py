"""A sweep: every run of a grid that is not done, through a launcher; those done are skipped.

The driver finds each run's status (`state.run_status`), prints what it will do, leaves the sweep's
state for the report as it starts and as it ends (`state.save`), and hands the runs to do to the
local launcher (`local.py`) or to Slurm (`slurm.py`) as jobs, each the `petl-bench run` command line
that rebuilds its config (`runargs.run_argv`), so a sweep's run and a hand-typed run are one and
the same.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..datamodules.catalog import dataset_folder, dataset_parts
from ..errors import UserError
from ..files import check_writable_folder
from ..runargs import run_argv, transfer_argv
from ..transfer import closed_vocabulary
from . import local, state
from .grid import Grid, GridRun, record_of
from .jobs import Job, JobResult, Outcome
from .slurm import run_slurm


def sweep(
    grid: Grid,
    launcher: str = "local",
    gpus: int | None = None,
    dry_run: bool = False,
    rerun_stale: bool = False,
    runs_per_gpu: int = 1,
    fresh_process: bool = False,
) -> int:
    """Run every run of the grid that is not done; 1 if any failed. Prints a line per run."""
    statuses = [state.run_status(run) for run in grid.runs]
    counts = Counter(statuses)
    with_status = list(zip(grid.runs, statuses, strict=True))
    several = len(grid.datasets) > 1
    print(f"{grid.name}: {_count_line(grid)}; records under {grid.out / 'runs'}")
    unusable = state.unusable_records([run for run, status in with_status if status == "todo"])
    if unusable:
        print(f"{len(unusable)} record file(s) that are not usable records, to run again:")
        for line in unusable:
            print(f"  {line}")
    if dry_run:
        for run, status in with_status:
            cfg = run.cfg
            dataset = f"{cfg.data.dataset:<15} " if several else ""
            print(f"  {status:<7}  {run.label:<20} {dataset}{cfg.data.split:<6} seed{cfg.data.seed}  {record_of(run)}")
        print(
            f"{counts['done']} done, {counts['stale']} stale, {counts['todo']} to run"
            + (f", {counts['running']} running in another process" if counts["running"] else "")
        )
        return 0
    stale = [run for run, status in with_status if status == "stale"]
    if stale and not rerun_stale:
        print(f"{len(stale)} stale: a record with another config (--rerun-stale runs them again):")
        for run in stale:
            print(f"  {record_of(run)}")
    todo = [
        (run, status == "stale")
        for run, status in with_status
        if status == "todo" or (status == "stale" and rerun_stale)
    ]
    if todo:
        _check_root(grid, [run for run, _ in todo])
    print(
        f"{counts['done']} already done, {len(todo)} to run ({launcher})"
        + (f", {counts['running']} running in another process (skipped)" if counts["running"] else ""),
        flush=True,
    )
    outcomes = state.starting(grid, statuses)
    state.save(grid, outcomes)  # the report sees the grid from now on, even if this sweep is killed
    results = _launch(grid, todo, launcher, gpus, runs_per_gpu, fresh_process) if todo else []
    for (run, _), result in zip(todo, results, strict=True):  # one result per run to do, in order
        if result.job.run is not run:
            raise RuntimeError(f"{result.job.title}: the launcher's results are not in its jobs' order")
    state.save(grid, state.finished(grid, outcomes, results))
    ended = Counter(result.outcome for result in results)
    print(
        f"{grid.name}: {ended[Outcome.DONE]} done now, {counts['done']} skipped (done before), "
        f"{0 if rerun_stale else len(stale)} stale left, {ended[Outcome.FAILED]} failed"
        + (
            f", {ended[Outcome.BUSY] + counts['running']} running in another process"
            if ended[Outcome.BUSY] or counts["running"]
            else ""
        )
    )
    for result in results:
        if result.outcome is Outcome.FAILED:
            print(f"  failed: {result.job.title} ({result.reason}); log: {result.log}")
    return 1 if ended[Outcome.FAILED] else 0


def _launch(
    grid: Grid,
    todo: list[tuple[GridRun, bool]],
    launcher: str,
    gpus: int | None,
    runs_per_gpu: int,
    fresh_process: bool,
) -> list[JobResult]:
    # A run that another process (another sweep of this grid) starts first is skipped, not waited for.
    jobs = [
        Job(number, len(todo), run, [*job_argv(run, force), "--if-locked=skip"], len(grid.datasets) > 1)
        for number, (run, force) in enumerate(todo, 1)
    ]
    # Transfer runs test what their sources trained: they start once every source run has ended.
    results: dict[int, JobResult] = {}
    for stage in ([j for j in jobs if j.run.cfg.transfer_from is None], [j for j in jobs if j.run.cfg.transfer_from]):
        if not stage:
            continue
        if launcher == "slurm":
            done = run_slurm(stage, grid.slurm, grid.out / "slurm" / grid.name, name=f"petl-{grid.name}")
        else:
            done = local.run_local(stage, local.gpu_slots(gpus), runs_per_gpu, fresh_process)
        results.update({result.job.number: result for result in done})
    return [results[job.number] for job in jobs]


def job_argv(run: GridRun, force: bool) -> list[str]:
    """The command line of a grid run: `petl-bench run`, or `eval --from` for a transfer run."""
    return transfer_argv(run.cfg, force) if run.cfg.transfer_from is not None else run_argv(run.cfg, force=force)


def _folders(dataset: str, root: str) -> list[tuple[str, str]]:
    """(dataset, folder) of each dataset a run reads: its root, or for datasets joined each one's folder there."""
    names = dataset_parts(dataset)
    return [(dataset, root)] if len(names) == 1 else [(name, dataset_folder(root, name)) for name in names]


def _count_line(grid: Grid) -> str:
    """How many runs the grid has and what they multiply out of; a protocol's transfer runs (each
    training then tested elsewhere) counted apart, so that the product adds up."""
    several = len(grid.datasets) > 1
    datasets = f"datasets {grid.dataset} x " if several else ""
    held_out = " x each domain held out" if any(run.cfg.data.holdout for run in grid.runs) else ""
    product = (
        f"{len(grid.labels)} methods x {datasets}splits {', '.join(grid.splits)} "
        f"x seeds {', '.join(map(str, grid.seeds))}{held_out}{'' if several else f' on {grid.dataset}'}"
    )
    transfers = [run.cfg.data for run in grid.runs if run.cfg.transfer_from]
    closed = ", ".join(grid.closed_vocabulary)  # the methods whose runs the protocol does not transfer
    why = closed_vocabulary(len(grid.closed_vocabulary))
    if not transfers:
        return f"{len(grid.runs)} runs = {product}" + (f"; no transfer runs: {closed} {why}" if closed else "")
    targets = {data.dataset for data in transfers} - set(grid.datasets)
    where = (
        f"{len(targets)} other dataset{'s' * (len(targets) > 1)}" if targets else f"its {transfers[0].classes} classes"
    )
    trainings = len(grid.runs) - len(transfers)
    return (
        f"{len(grid.runs)} runs: {trainings} trainings = {product}, "
        f"each then tested on {where} ({len(transfers)} transfer run{'s' * (len(transfers) > 1)})"
        + (f", but those of {closed}, which {why}" if closed else "")
    )


def _check_root(grid: Grid, todo: list[GridRun]) -> None:
    """The root, and for a grid over several datasets (or a run of joined ones) the folder of each
    dataset with runs to do."""
    root = grid.root
    if not root:
        raise UserError(f"{grid.path}: no dataset root: give it with --set data.root=DIR")
    if not Path(root).expanduser().is_dir():
        raise UserError(f"dataset root {root} is not a folder (--set data.root=DIR)")
    folders = dict.fromkeys(
        (name, folder) for run in todo for name, folder in _folders(run.cfg.data.dataset, run.cfg.data.root)
    )
    missing = [f"{dataset} ({folder})" for dataset, folder in folders if not Path(folder).expanduser().is_dir()]
    if missing:
        raise UserError(
            f"dataset root {root} lacks the folder of {', '.join(missing)}: a grid over several datasets "
            "runs each on its folder under data.root (catalog.DATASET_FOLDERS)"
        )
    check_writable_folder(grid.out, "--out")
