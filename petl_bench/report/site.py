"""`petl-bench report`: a static HTML site of the sweeps under a results folder, from the records alone.

    {site}/index.html                                  every grid a sweep left under --out, with the
                                                       states of its runs; runs outside any grid
    {site}/grids/{grid}.html (+ grids/{grid}/*.png)    the paper-style table, the figures, runs not done
    {site}/runs/{dataset}/{root}/{Nshot}/{run}/seed{K}.html   one run: accuracy, curves, task groups, config,
    (+ seed{K}.curves.png, seed{K}.grouping.png)       split, timing, device, versions, its files

HTML and PNG files only, with no script and nothing loaded from elsewhere: the site opens from disk
on a machine without network. Images are drawn or copied into the site; a run's record, CSV log,
sweep log, checkpoint and split file are linked where they lie in the results folder, not copied (a
checkpoint may be gigabytes).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..files import write_text_atomic
from ..results import read_records
from .markup import Site
from .pages import grid_page, index_page
from .run_page import run_page
from .state import GridReport, RunState, swept_grids


def build_site(out: Path, site: Path | None = None) -> Path:
    """Write the site for the results under `out` (default site folder `{out}/report`); the index's path."""
    out = Path(out)
    if not (out / "runs").is_dir() and not (out / "sweeps").is_dir():
        raise UserError(
            f"no results under {out} (neither runs/ nor sweeps/ there): run `petl-bench sweep` "
            "or `petl-bench run` first, or give the results folder with --out"
        )
    pages = Site(out, Path(site) if site else out / "report")
    records, unusable = read_records(out)
    grids = swept_grids(out)
    member: dict[Path, list[tuple[GridReport, RunState]]] = {}
    for grid in grids:
        for run in grid.runs:
            member.setdefault(run.record, []).append((grid, run))
    for path, record in records.items():
        write_text_atomic(pages.run_page(path), run_page(pages, path, record, member.get(path, [])))
    for grid in grids:
        write_text_atomic(pages.grid_page(grid.name), grid_page(pages, grid))
    write_text_atomic(pages.index, index_page(pages, grids, records, member, unusable))
    return pages.index
