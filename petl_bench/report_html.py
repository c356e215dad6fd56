"""`petl-bench report`: a static HTML site of the sweeps under a results folder, from the records alone.

    {site}/index.html                                  every grid a sweep left under --out, with the
                                                       states of its runs; runs outside any grid
    {site}/grids/{grid}.html (+ grids/{grid}/*.png)    the paper-style table, the figures, runs not done
    {site}/runs/{dataset}/{root}/{Nshot}/{run}/seed{K}.html   one run: accuracy, curves, task groups, config,
    (+ seed{K}.curves.png, seed{K}.grouping.png)       split, timing, device, versions, its files

HTML and PNG files only, with no script and nothing loaded from elsewhere: the site opens from disk
on a machine without network. Images are drawn or copied into the site; a run's record, CSV log,
sweep log, checkpoint and split file are linked where they lie in the results folder, not copied (a
checkpoint may be gigabytes). Grids come from what each sweep left (`petl_bench.sweep.state`); a
run's state comes from its record as it is now: done (the grid's config hash), stale (another
config), failed (no current record and the sweep's last attempt failed) or missing.
"""

from __future__ import annotations

import html
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from . import plots
from .errors import UserError
from .files import atomic_path, write_text_atomic
from .report import AVERAGE, Cell, ParamCell, Summary, cell_text, column_name, dataset_name, layout, \
    off_paper_reasons, split_name, summarize
from .results import read_records
from .sweep.grid import expand_grid, record_of
from .sweep.state import read_states

STATES = ("done", "stale", "failed", "missing")
FIGURE_OF_TABLE = {"table1": "fig1", "table2": "fig1", "ablation": "fig4", "kshot": "fig5"}
OUTSIDE_LISTED = 200  # runs outside any grid listed on the index; the rest are counted


@dataclass
class RunState:
    """One run of a grid and its state now."""

    label: str
    split: str
    seed: int
    record: Path  # absolute
    state: str  # one of STATES
    config: dict  # the grid's config of this run (`RunConfig.to_dict`)
    reason: str = ""  # of the last failure
    log: str = ""  # of the last failure


@dataclass
class GridReport:
    name: str
    sweep: dict  # what the sweep left: its `sweep.state` file
    summary: Summary | None = None
    runs: list[RunState] = field(default_factory=list)
    error: str = ""  # why the grid cannot be expanded now

    def count(self, state: str) -> int:
        return sum(run.state == state for run in self.runs)


class Site:
    """Where each page and image of the site lives."""

    def __init__(self, out: Path, root: Path):
        self.out, self.root = out.resolve(), root.resolve()
        self.index = self.root / "index.html"

    def grid_page(self, name: str) -> Path:
        return self.root / "grids" / f"{name}.html"

    def run_page(self, record: Path) -> Path:
        return (self.root / "runs" / record.relative_to(self.out / "runs")).with_suffix(".html")


# -- the site --------------------------------------------------------------------------------------
def build_site(out: Path, site: Path | None = None) -> Path:
    """Write the site for the results under `out` (default site folder `{out}/report`); the index's path."""
    out = Path(out)
    if not (out / "runs").is_dir() and not (out / "sweeps").is_dir():
        raise UserError(f"no results under {out} (neither runs/ nor sweeps/ there): run `petl-bench sweep` "
                        "or `petl-bench run` first, or give the results folder with --out")
    pages = Site(out, Path(site) if site else out / "report")
    records, unusable = read_records(out)
    grids = [grid_report(sweep, out) for sweep in read_states(out)]
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


def grid_report(sweep: dict, out: Path) -> GridReport:
    """A sweep's grid expanded again with its saved text and overrides, its runs' states from the
    records now; a grid that no longer expands (a method gone, a bad override) carries the error."""
    name = str(sweep.get("grid", "?"))
    try:
        grid = expand_grid(Path(sweep["grid_file"]), sweep.get("overrides", []), str(out), text=sweep["grid_text"])
        summary = summarize(grid)
    except UserError as err:
        return GridReport(name, sweep, error=str(err))
    except KeyError as err:
        return GridReport(name, sweep, error=f"{out}/sweeps/{name}.json lacks {err}")
    last = {run.get("record"): run for run in sweep.get("runs", [])}
    missing, stale = set(summary.missing), set(summary.stale)
    runs = []
    for run in grid.runs:
        path = record_of(run)
        outcome = last.get(path.relative_to(out).as_posix(), {})
        absolute = str(path.resolve())
        if absolute not in missing and absolute not in stale:
            state = "done"
        elif outcome.get("outcome") == "failed":
            state = "failed"
        else:
            state = "stale" if absolute in stale else "missing"
        runs.append(RunState(run.label, run.cfg.data.split, run.cfg.data.seed, Path(absolute), state,
                             run.cfg.to_dict(), outcome.get("reason", ""), outcome.get("log", "")))
    return GridReport(grid.name, sweep, summary, runs)


# -- the index -------------------------------------------------------------------------------------
def index_page(site: Site, grids: list[GridReport], records: dict[Path, dict], member: dict,
               unusable: dict[Path, str] | None = None) -> str:
    page = site.index
    body = [f"<h1>petl-bench report</h1><p>Results folder <code>{esc(site.out)}</code>: "
            f"{len(grids)} grid(s) swept, {len(records)} run record(s).</p>", "<h2>Grids</h2>"]
    if grids:
        rows = [_row(link(page, site.grid_page(g.name), g.name), esc(g.sweep.get("table", "")),
                     esc(dataset_name(str(g.sweep.get("dataset", "")))), str(len(g.runs)),
                     *(_count_cell(g, state) for state in STATES), _averages(g), esc(g.sweep.get("updated", "")),
                     _grid_note(g))
                for g in grids]
        body.append(_table(["grid", "table", "dataset", "runs", *STATES, "average accuracy %", "last sweep", "note"],
                           rows, "grids"))
    else:
        body.append(f"<p>No sweep has left its grid under <code>{esc(site.out / 'sweeps')}</code> yet: "
                    "<code>petl-bench sweep</code> does, as it starts.</p>")
    outside = [path for path in records if path not in member]
    if outside:
        body.append(f"<h2>Runs outside any grid ({len(outside)})</h2>")
        rows = [_row(link(page, site.run_page(path), records[path].get("run_name", path.parent.name)),
                     esc(records[path].get("dataset", "")), esc(records[path].get("split", "")),
                     esc(records[path].get("seed", "")), _accuracy(records[path].get("accuracy", {}).get(AVERAGE)),
                     esc("; ".join(run_off_paper(records[path]))))
                for path in outside[:OUTSIDE_LISTED]]
        body.append(_table(["run", "dataset", "split", "seed", "average %", "not the paper's setting"], rows, "runs"))
        if len(outside) > OUTSIDE_LISTED:
            body.append(f"<p>... and {len(outside) - OUTSIDE_LISTED} more.</p>")
    if unusable:
        body.append(f"<h2>Record files skipped ({len(unusable)})</h2>")
        body.append(_table(["file", "why it is no usable record"],
                           [_row(f"<code>{esc(path)}</code>", esc(why)) for path, why in unusable.items()], "runs"))
    return html_page("petl-bench report", body, site, page)


def _count_cell(grid: GridReport, state: str) -> str:
    count = grid.count(state)
    return f'<span class="state {state if count else "none"}">{count}</span>' if grid.runs else ""


def _averages(grid: GridReport) -> str:
    """Each row's average accuracy per split, e.g. "10pct (6shot): ZS 28.9, CoOp-MT 32.3"."""
    if grid.summary is None:
        return ""
    s = grid.summary
    lines = []
    for split in s.splits:
        cells = [(column_name(label), s.cell(label, split, AVERAGE)) for label in s.labels]
        found = ", ".join(f"{name} {cell.mean:.{cell.digits}f}" for name, cell in cells if cell is not None)
        lines.append(f"{esc(split_name(s.dataset, split))}: {esc(found or 'none yet')}")
    return "<br>".join(lines)


def _grid_note(grid: GridReport) -> str:
    if grid.error:
        return f'<span class="error">cannot be read: {esc(grid.error)}</span>'
    reasons = grid.summary.off_paper
    return f'<span class="badge">not the paper\'s setting: {esc("; ".join(reasons))}</span>' if reasons else ""


# -- a grid ----------------------------------------------------------------------------------------
def grid_page(site: Site, g: GridReport) -> str:
    page = site.grid_page(g.name)
    sweep = g.sweep
    facts = [("grid file", f"<code>{esc(sweep.get('grid_file', ''))}</code> (as the sweep read it, below)"),
             ("overrides", esc(" ".join(f"--set {o}" for o in sweep.get("overrides", [])) or "none")),
             ("last sweep", esc(sweep.get("updated", "")))]
    body = [f"<h1>Grid {esc(g.name)}</h1>", _facts(facts)]
    if g.error:
        body.append(f'<p class="error">This grid cannot be expanded now: {esc(g.error)}</p>')
    else:
        counts = ", ".join(f"{g.count(state)} {state}" for state in STATES)
        body += [f"<p>{len(g.runs)} runs: {counts}.</p>", paper_table(site, page, g.summary),
                 figures(site, page, g.summary), runs_not_done(site, page, g)]
    body.append(f"<details><summary>the grid file as swept</summary><pre>{esc(sweep.get('grid_text', ''))}</pre>"
                "</details>")
    return html_page(f"grid {g.name}", body, site, page, banner=g.summary.banner() if g.summary else None)


LEGEND = ("<p class=\"legend\">Each cell: ours, the mean ± sample std over seeds; the paper's value (± its std); "
          "ours − paper, coloured by sign, pale when within one paper std and strong beyond it (or where the "
          "paper gives no std): <span class=\"diff pos near\">+0.3</span> <span class=\"diff pos far\">+2.1</span> "
          "<span class=\"diff neg near\">−0.3</span> <span class=\"diff neg far\">−2.1</span>; then each seed's "
          "accuracy, linked to its run.</p>")


def paper_table(site: Site, page: Path, summary: Summary) -> str:
    """The table of `petl-bench table` (same layout and cells) with the paper's value, the difference
    and the seeds' values in each cell."""
    lay = layout(summary)
    seeds: dict[tuple, list] = {}
    for row in summary.seeds.sort_values("seed").itertuples():
        seeds.setdefault((row.label, row.split, row.task), []).append((row.seed, row.accuracy, Path(row.path)))
    head = "".join(f"<th>{esc(name)}</th>" for name in [lay.corner, *lay.columns])
    rows = []
    for block in lay.blocks:
        if block.title:
            rows.append(f'<tr class="block"><th colspan="{len(lay.columns) + 1}">{esc(block.title)}</th></tr>')
        rows += [f"<tr><th>{esc(name)}</th>{''.join(_cell(site, page, c, seeds) for c in cells)}</tr>"
                 for name, cells in block.rows]
    return (f'<table class="paper"><caption>{esc(lay.title)}</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{LEGEND}')


def _cell(site: Site, page: Path, cell: Cell | ParamCell | None, seeds: dict) -> str:
    if cell is None:
        return '<td class="empty"></td>'
    if isinstance(cell, ParamCell):
        return f'<td class="params">{esc(cell_text(cell))}</td>'
    d = cell.digits
    std = "" if cell.std is None else f" ± {cell.std:.{d}f}"
    parts = [f'<span class="ours">{cell.mean:.{d}f}{std}</span>']
    if cell.paper is not None:
        paper_std = "" if cell.paper_std is None else f" ± {cell.paper_std:.{d}f}"
        parts.append(f'<span class="paper">paper {cell.paper:.{d}f}{paper_std}</span>')
        parts.append(_diff(cell))
    runs = [f'<a href="{href(page, site.run_page(path))}" title="seed {seed}">{accuracy:.{d}f}</a>'
            for seed, accuracy, path in seeds.get(cell.key, [])]
    if runs:
        parts.append(f'<span class="seeds">seeds {" ".join(runs)}</span>')
    return f'<td>{" ".join(parts)}</td>'


def _diff(cell: Cell) -> str:
    diff = cell.mean - cell.paper
    shown = round(diff, cell.digits)
    sign = "pos" if shown > 0 else "neg" if shown < 0 else "zero"
    near = cell.paper_std is not None and abs(diff) <= cell.paper_std
    why = (f"within the paper's std {cell.paper_std}" if near else
           "beyond the paper's std" if cell.paper_std is not None else "the paper gives no std")
    return (f'<span class="diff {sign} {"near" if near else "far"}" title="ours − paper; {why}">'
            f"{diff:+.{cell.digits}f}</span>")


def figures(site: Site, page: Path, summary: Summary) -> str:
    """The grid's figure (Figure 1 or 4 per split, Figure 5 once), drawn into the site."""
    figure = FIGURE_OF_TABLE[summary.table]
    splits = summary.splits if plots.default_figure(figure)[1] else [None]
    parts = ["<h2>Figures</h2>"]
    for split in splits:
        path = page.with_suffix("") / plots.figure_path(summary, figure, split).name
        try:
            plots.draw(figure, summary, split, path)
        except UserError as err:
            which = f"{figure} {split_name(summary.dataset, split)}" if split else figure
            parts.append(f'<p class="note">{esc(which)}: {esc(err)}</p>')
            continue
        parts.append(f'<img src="{href(page, path)}" alt="{esc(figure)} of grid {esc(summary.name)}">')
    return "".join(parts)


def runs_not_done(site: Site, page: Path, g: GridReport) -> str:
    runs = [run for run in g.runs if run.state != "done"]
    if not runs:
        return "<p>Every run of the grid is done.</p>"
    rows = []
    for run in runs:
        if run.state == "failed":
            detail = esc(run.reason) + " · log: " + file_link(page, Path(run.log), Path(run.log).name)
        elif run.state == "stale":
            detail = "a record with another config: " + link(page, site.run_page(run.record), "its run page")
        else:
            detail = f"no record at <code>{esc(run.record)}</code>"
        rows.append(_row(f'<span class="state {run.state}">{run.state}</span>', esc(run.label), esc(run.split),
                         esc(run.seed), detail))
    return (f"<h2>Runs not done ({len(runs)})</h2>" + _table(["state", "row", "split", "seed", "detail"], rows, "runs")
            + "<p><code>petl-bench sweep</code> runs the missing and failed ones again; <code>--rerun-stale</code> "
              "the stale ones too.</p>")


# -- a run -----------------------------------------------------------------------------------------
def run_page(site: Site, path: Path, record: dict, grids: list[tuple[GridReport, RunState]]) -> str:
    page = site.run_page(path)
    work = path.with_suffix("")  # seed{K}/: logs, checkpoints, grouping
    dataset, split = str(record.get("dataset", "")), str(record.get("split", ""))
    title = (f"{record.get('run_name', '?')} on {dataset_name(dataset)} {split_name(dataset, split)}, "
             f"seed {record.get('seed')}")
    body = [f"<h1>{esc(title)}</h1>", _membership(site, page, record, grids), "<h2>Accuracy</h2>",
            _table(["task", "accuracy %"], [_row(esc("Average" if task == AVERAGE else task), _accuracy(value))
                                            for task, value in record.get("accuracy", {}).items()], "accuracy"),
            "<h2>Training curves</h2>", _curves(page, work, record, title)]
    grouping = (record.get("prepared") or {}).get("grouping")
    if grouping:
        body += ["<h2>Task groups</h2>", _grouping(page, work, grouping)]
    body += ["<h2>Run</h2>", _facts(_run_facts(record)), "<h2>Config</h2>", _config(record),
             "<h2>Split</h2>", _facts([("split file", file_link(page, _in_results(site, record, "split_file"),
                                                              str(record.get("split_file")))),
                                      ("SHA-256", f"<code>{esc(record.get('split_sha256', ''))}</code>")]),
             "<h2>Package versions</h2>", _facts([(name, esc(v)) for name, v in record.get("versions", {}).items()]),
             "<h2>Files</h2>", _facts([
                 ("record", file_link(page, path, path.name)),
                 ("CSV log", file_link(page, work / "logs" / "metrics.csv", "logs/metrics.csv")),
                 ("sweep log", file_link(page, work / "sweep.log", "sweep.log")),
                 ("checkpoint", file_link(page, work / "checkpoints" / "last.ckpt", "checkpoints/last.ckpt"))])]
    reasons = run_off_paper(record)
    banner = f"NOTE: not the paper's setting ({'; '.join(reasons)})" if reasons else None
    return html_page(title, body, site, page, banner=banner)


def run_off_paper(record: dict) -> list[str]:
    """Why this run is not in the paper's setting, by the same rule as the tables' banner."""
    return off_paper_reasons(pd.DataFrame([{key: record.get(key) for key in ("model", "pretrained", "dataset")}]),
                     pd.DataFrame([{"synthetic": bool(record.get("synthetic", False))}]))


def _in_results(site: Site, record: dict, key: str) -> Path:
    """A file the run wrote under its results folder (`record[key]`, spelled as the run spelled it,
    perhaps relative to another working directory), found under the results folder as it is now."""
    path, then = Path(str(record.get(key))), Path(str(record.get("config", {}).get("out")))
    try:
        return site.out / path.relative_to(then)
    except ValueError:
        return path


def _membership(site: Site, page: Path, record: dict, grids: list[tuple[GridReport, RunState]]) -> str:
    if not grids:
        return "<p>In no swept grid.</p>"
    items = []
    for grid, run in grids:
        text = (f"{link(page, site.grid_page(grid.name), grid.name)}, row {esc(run.label)}: "
                f'<span class="state {run.state}">{run.state}</span>')
        if run.state == "stale":
            changed = _changed(record.get("config", {}), run.config)
            text += f" (this record's config differs from the grid's in {esc(changed or 'its hash only')})"
        items.append(f"<li>{text}</li>")
    return f"<p>In grid(s):</p><ul>{''.join(items)}</ul>"


def _changed(ours: dict, grids: dict) -> str:
    mine, theirs = dict(_flat(ours)), dict(_flat(grids))
    keys = [k for k in dict.fromkeys([*mine, *theirs]) if k != "out" and mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k} = {mine.get(k)!r}, the grid's {theirs.get(k)!r}" for k in keys)


def _curves(page: Path, work: Path, record: dict, title: str) -> str:
    if record.get("trainable_params") == 0:
        return "<p>Nothing trained (0 trainable parameters): no curves.</p>"
    log_path = work / "logs" / "metrics.csv"
    try:
        log = pd.read_csv(log_path)
    except FileNotFoundError:
        return f"<p>No CSV log at <code>{esc(log_path)}</code>.</p>"
    except (OSError, ValueError) as err:
        return f"<p>The CSV log <code>{esc(log_path)}</code> cannot be read: {esc(err)}</p>"
    png = page.with_name(page.stem + ".curves.png")
    if not (png.is_file() and png.stat().st_mtime >= log_path.stat().st_mtime):  # drawn since the log last grew
        png = plots.run_curves(log, title, png) if "step" in log else None
    if png is None:
        return ("<p>The CSV log holds no training loss (Lightning logs it every 10 steps: a run of fewer "
                "steps has none).</p>")
    lrs = [column for column in plots.lr_columns(log) if log[column].notna().any()]
    lr_note = (f"Learning rate from {', '.join(lrs)}." if lrs else
               "The log has no learning-rate column (lr-*, as Lightning's LearningRateMonitor writes): "
               "only the loss is drawn.")
    return f'<img src="{href(page, png)}" alt="training loss and learning rate"><p class="note">{esc(lr_note)}</p>'


def _grouping(page: Path, work: Path, grouping: dict) -> str:
    groups = grouping.get("groups", [])
    items = "".join(f"<li>group {i}: {esc(', '.join(group))}</li>" for i, group in enumerate(groups, 1))
    parts = [f"<p>Grouping <code>{esc(grouping.get('method', ''))}</code>: {len(groups)} group(s)</p><ul>{items}</ul>"]
    if grouping.get("gradient_groups") not in (None, groups):
        gradient = " | ".join(", ".join(group) for group in grouping["gradient_groups"])
        parts.append(f"<p>The gradient grouping would have been {esc(gradient)}.</p>")
    heatmap = work / "grouping.png"  # the record's path may be relative to another working directory
    if heatmap.is_file():
        copy = page.with_name(page.stem + ".grouping.png")
        with atomic_path(copy) as tmp:
            shutil.copyfile(heatmap, tmp)
        parts.append(f'<img class="heatmap" src="{href(page, copy)}" alt="task gradient similarity and the groups">')
    return "".join(parts)


def _run_facts(record: dict) -> list[tuple[str, str]]:
    trainable, total = record.get("trainable_params"), record.get("total_params")
    share = f" of {total:,} ({100 * trainable / total:.3g}%)" if trainable is not None and total else ""
    skipped = record.get("skipped_images") or []
    return [("method", esc(record.get("method", ""))),
             ("model", esc(f"{record.get('model')} with weights {record.get('pretrained')}")),
             ("trainable parameters", esc(f"{trainable:,}{share}" if trainable is not None else "?")),
             ("images", esc(f"{record.get('train_images')} training, {record.get('test_images')} test, "
                            f"{len(skipped)} skipped (unreadable)")),
             ("wall time", esc(_duration(record.get("wall_s")))),
             ("throughput", esc(f"{record.get('train_images_per_s')} training images/s"
                                if record.get("train_images_per_s") else "no training steps")),
             ("device", esc(record.get("device", ""))),
             ("peak memory", esc(f"{record.get('peak_memory_mb')} MB")),
             ("synthetic data", "yes" if record.get("synthetic") else "no"),
             ("finished", esc(record.get("finished", ""))),
             ("git revision", f"<code>{esc(record.get('git') or 'unknown')}</code>")]


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def _config(record: dict) -> str:
    """The resolved config as `section.key = value` (the `--set` spelling), and what a method's
    preparation resolved (e.g. MmAP's groups) where it differs."""
    resolved = {f"method.{k}": v for k, v in (record.get("resolved_params") or {}).items()}
    rows = []
    for key, value in _flat(record.get("config", {})):
        text = esc(repr(value))
        if key in resolved and resolved[key] != value:
            text += f" (resolved: {esc(repr(resolved[key]))})"
        rows.append((key, text))
    return f"<p>config_sha256 <code>{esc(record.get('config_sha256', ''))}</code></p>" + _facts(rows, "config")


def _flat(config: dict) -> list[tuple[str, object]]:
    items = []
    for section, values in config.items():
        prefix = "method" if section == "params" else section
        if isinstance(values, dict):
            items += [(f"{prefix}.{key}", value) for key, value in values.items()]
        else:
            items.append((section, values))
    return items


# -- HTML ------------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;margin:0 auto;max-width:1400px;
  padding:0 1.5em 3em}
nav{padding:.8em 0;border-bottom:1px solid #ddd;margin-bottom:.5em}
h1{font-size:1.45em;margin:.6em 0 .3em} h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid #eee}
a{color:#0b57d0} code{font-size:.92em;background:#f4f4f6;padding:0 .25em;border-radius:3px;word-break:break-all}
.banner{background:#fff4ce;border:1px solid #e0b400;padding:.6em .9em;margin:.8em 0;border-radius:4px;font-weight:600}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #d9d9de;padding:.3em .55em;vertical-align:top;text-align:left}
thead th{background:#f0f1f4} caption{text-align:left;font-weight:600;padding:.3em 0}
table.paper td{text-align:right;min-width:7.5em} table.paper td span{display:block}
tr.block th{background:#e8eaf0;text-align:left;font-style:italic}
.ours{font-weight:600;font-size:1.05em} .paper{color:#555;font-size:.88em}
.diff{display:inline-block!important;padding:0 .35em;border-radius:3px;font-size:.88em;margin:.1em 0}
.diff.pos.near{background:#d7f0d8} .diff.pos.far{background:#2e7d32;color:#fff}
.diff.neg.near{background:#fadcdc} .diff.neg.far{background:#c62828;color:#fff} .diff.zero{background:#e6e6e6}
.seeds{color:#666;font-size:.8em} .seeds a{margin-left:.3em}
.legend,.note{color:#555;font-size:.9em}
.state{padding:0 .4em;border-radius:3px} .state.done{background:#d7f0d8} .state.stale{background:#ffe3b3}
.state.failed{background:#c62828;color:#fff} .state.missing{background:#e6e6e6} .state.none{color:#999}
.badge{background:#fff4ce;border:1px solid #e0b400;border-radius:3px;padding:0 .35em;font-size:.88em}
.error{color:#c62828} .absent{color:#888}
img{max-width:100%;border:1px solid #eee;margin:.4em 0;display:block} img.heatmap{max-width:520px}
table.grids td{white-space:nowrap} table.grids td:last-child{white-space:normal}
table.facts th{background:#f7f7f9;font-weight:500;white-space:nowrap}
footer{margin-top:3em;color:#888;font-size:.85em}
"""


def html_page(title: str, body: list[str], site: Site, page: Path, banner: str | None = None) -> str:
    nav = "" if page == site.index else f'<nav>{link(page, site.index, "← all grids and runs")}</nav>'
    notice = f'<div class="banner">{esc(banner)}</div>' if banner else ""
    footer = (f"<footer>petl-bench report of <code>{esc(site.out)}</code>, written "
              f"{esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}</footer>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{nav}{notice}{''.join(body)}{footer}</body></html>\n")


def esc(value) -> str:
    return html.escape(str(value))


def href(page: Path, target: Path) -> str:
    """A relative URL from `page` to `target`."""
    return quote(Path(os.path.relpath(target, page.parent)).as_posix())


def link(page: Path, target: Path, text: str) -> str:
    return f'<a href="{href(page, target)}">{esc(text)}</a>'


def file_link(page: Path, target: Path, text: str) -> str:
    """A link to a file of the results folder, or its name marked absent: no link leads nowhere."""
    if target.is_file():
        return link(page, target.resolve(), text)
    return f'<span class="absent">{esc(text)} (absent)</span>'


def _facts(rows: list[tuple[str, str]], kind: str = "facts") -> str:
    rows_html = "".join(f"<tr><th>{esc(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="facts {kind}">{rows_html}</table>'


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _table(head: list[str], rows: list[str], kind: str) -> str:
    return (f'<table class="{kind}"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _accuracy(value) -> str:
    return "" if value is None else f"{float(value):.2f}"
