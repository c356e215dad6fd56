"""The site's index (every grid a sweep left, runs outside any grid, record files skipped) and one
page per grid (the paper-style table with each seed's value, its figures, its runs not done)."""

from __future__ import annotations

from pathlib import Path

from .. import plots
from ..errors import UserError
from .markup import Site, esc, facts, file_link, href, html_page, link, row, table
from .markup import accuracy as accuracy_text
from .paper import column_name, datasets_name, split_name
from .state import STATES, GridReport, run_argv_of, run_label, run_off_paper, short_hash
from .summary import AVERAGE, Cell, Summary
from .tables import GapCell, LayoutCell, ParamCell, cell_text, counted_phrase, layout, seeds_phrase

FIGURE_OF_TABLE = {"table1": "fig1", "table2": "fig1", "ablation": "fig4", "kshot": "fig5", "fewshot": "fewshot"}
OUTSIDE_LISTED = 200  # runs outside any grid listed on the index; the rest are counted


# -- the index -------------------------------------------------------------------------------------
def index_page(
    site: Site,
    grids: list[GridReport],
    records: dict[Path, dict],
    member: dict,
    unusable: dict[Path, str] | None = None,
) -> str:
    page = site.index
    body = [
        f"<h1>petl-bench report</h1><p>Results folder <code>{esc(site.out)}</code>: "
        f"{len(grids)} grid(s) swept, {len(records)} run record(s).</p>",
        "<h2>Grids</h2>",
    ]
    if grids:
        rows = [
            row(
                link(page, site.grid_page(g.name), g.name),
                esc(g.sweep.get("table", "")),
                esc(datasets_name(list(map(str, g.sweep.get("datasets") or [g.sweep.get("dataset", "")])))),
                str(len(g.runs)),
                *(_count_cell(g, state) for state in STATES),
                _averages(g),
                esc(g.sweep.get("updated", "")),
                _grid_note(g),
            )
            for g in grids
        ]
        body.append(
            table(
                ["grid", "table", "dataset", "runs", *STATES, "average accuracy %", "last sweep", "note"], rows, "grids"
            )
        )
    else:
        body.append(
            f"<p>No sweep has left its grid under <code>{esc(site.out / 'sweeps')}</code> yet: "
            "<code>petl-bench sweep</code> does, as it starts.</p>"
        )
    outside = [path for path in records if path not in member]
    if outside:
        body.append(f"<h2>Runs outside any grid ({len(outside)})</h2>")
        rows = [
            row(
                _run_link(site, page, path, records[path]),
                esc(records[path].get("dataset", "")),
                esc(records[path].get("split", "")),
                esc(records[path].get("seed", "")),
                accuracy_text(records[path].get("accuracy", {}).get(AVERAGE)),
                esc("; ".join(run_off_paper(records[path]))),
            )
            for path in outside[:OUTSIDE_LISTED]
        ]
        body.append(table(["run", "dataset", "split", "seed", "average %", "not the paper's setting"], rows, "runs"))
        if len(outside) > OUTSIDE_LISTED:
            body.append(f"<p>... and {len(outside) - OUTSIDE_LISTED} more.</p>")
    if unusable:
        body.append(f"<h2>Record files skipped ({len(unusable)})</h2>")
        body.append(
            table(
                ["file", "why it is no usable record"],
                [row(f"<code>{esc(path)}</code>", esc(why)) for path, why in unusable.items()],
                "runs",
            )
        )
    return html_page("petl-bench report", body, site, page)


def _run_link(site: Site, page: Path, path: Path, record: dict) -> str:
    """A run's short label and config hash, linked to its page; its run name (folder) on hover."""
    text = f"{run_label(record, run_argv_of(record))} · {short_hash(record)}"
    return link(page, site.run_page(path), text, title=str(record.get("run_name", path.parent.name)))


def _count_cell(grid: GridReport, state: str) -> str:
    count = grid.count(state)
    return f'<span class="state {state if count else "none"}">{count}</span>' if grid.runs else ""


def _averages(grid: GridReport) -> str:
    """Each row's average accuracy per split, e.g. "10pct (6shot): ZS 28.9, CoOp-MT 32.3"."""
    if grid.summary is None:
        return ""
    s = grid.summary
    if s.spans_datasets:
        return _table_averages(s)
    lines = []
    for split in s.splits:
        cells = [(column_name(label), s.cell(label, split, AVERAGE)) for label in s.labels]
        found = ", ".join(f"{name} {cell.mean:.{cell.digits}f}" for name, cell in cells if cell is not None)
        lines.append(f"{esc(split_name(s.dataset, split))}: {esc(found or 'none yet')}")
    return "<br>".join(lines)


def _table_averages(s: Summary) -> str:
    """A base2novel, transfer or lodo grid's averages as its table has them, a line per block:
    each method's Average HM, average over the targets, or average over the held-out domains."""
    lay, hm_only = layout(s), s.table == "base2novel"
    lines = []
    for block in lay.blocks:
        if s.table == "transfer":  # a row per method, its average over the targets last
            title = ", ".join(filter(None, [block.title, "average over the targets"]))
            found = [(name, cells[-1]) for name, cells in block.rows]
        else:  # an Average row below the datasets or held-out domains
            average = dict(block.rows).get("Average", [])
            found = [
                (c, cell) for c, cell in zip(lay.columns, average, strict=True) if c.endswith(" HM") or not hm_only
            ]
            title = block.title or "Average"
        shown = ", ".join(f"{name} {cell.mean:.{cell.digits}f}" for name, cell in found if isinstance(cell, Cell))
        lines.append(f"{esc(title)}: {esc(shown or 'none yet')}")
    return "<br>".join(lines)


def _grid_note(grid: GridReport) -> str:
    if grid.error:
        return f'<span class="error">cannot be read: {esc(grid.error)}</span>'
    assert grid.summary is not None  # a grid without an error was summarized (state.grid_report)
    reasons = grid.summary.off_paper
    return f'<span class="badge">not the paper\'s setting: {esc("; ".join(reasons))}</span>' if reasons else ""


# -- a grid ----------------------------------------------------------------------------------------
def grid_page(site: Site, g: GridReport) -> str:
    page = site.grid_page(g.name)
    sweep = g.sweep
    rows = [
        ("grid file", f"<code>{esc(sweep.get('grid_file', ''))}</code> (as the sweep read it, below)"),
        ("overrides", esc(" ".join(f"--set {o}" for o in sweep.get("overrides", [])) or "none")),
        ("last sweep", esc(sweep.get("updated", ""))),
    ]
    body = [f"<h1>Grid {esc(g.name)}</h1>", facts(rows)]
    if g.error:
        body.append(f'<p class="error">This grid cannot be expanded now: {esc(g.error)}</p>')
    else:
        assert g.summary is not None  # a grid without an error was summarized (state.grid_report)
        counts = ", ".join(f"{g.count(state)} {state}" for state in STATES)
        body += [
            f"<p>{len(g.runs)} runs: {counts}.</p>",
            paper_table(site, page, g.summary),
            figures(page, g.summary),
            runs_not_done(site, page, g),
        ]
    body.append(
        f"<details><summary>the grid file as swept</summary><pre>{esc(sweep.get('grid_text', ''))}</pre></details>"
    )
    return html_page(f"grid {g.name}", body, site, page, banner=g.summary.banner() if g.summary else None)


DIFF_EXAMPLES = (
    '<span class="diff pos near">+0.3</span> <span class="diff pos far">+2.1</span> '
    '<span class="diff neg near">−0.3</span> <span class="diff neg far">−2.1</span>'
)


def legend(summary: Summary) -> str:
    """What the paper table's cells are: the seeds they average, what the paper's value and the
    difference mean here (muted where the paper column is for layout only), the runs counted."""
    parts = [f"Each cell: ours, {esc(seeds_phrase(summary))}"]
    if summary.has_paper_values():
        if summary.off_paper:
            parts.append(
                "the paper's value (± its std) and ours − paper, in grey: not the paper's setting, so the "
                "paper column is for layout only and the difference is no comparison"
            )
        else:
            parts.append(
                "the paper's value (± its std); ours − paper, coloured by sign, pale when within one paper "
                f"std and strong beyond it (or where the paper gives no std): {DIFF_EXAMPLES}"
            )
    parts.append("then each seed's accuracy, linked to its run")
    return f'<p class="legend">{"; ".join(parts)}. {esc(counted_phrase(summary).capitalize())}.</p>'


def paper_table(site: Site, page: Path, summary: Summary) -> str:
    """The table of `petl-bench table` (same layout and cells) with the paper's value, the difference
    and the seeds' values in each cell; its differences muted where the banner says the paper
    column is for layout only."""
    lay = layout(summary)
    seeds: dict[tuple, list] = {}
    for record in summary.seeds.sort_values("seed").itertuples():
        seeds.setdefault((record.label, record.dataset, record.split, record.task), []).append(
            (record.seed, record.accuracy, Path(record.path))
        )
    head = "".join(f"<th>{esc(name)}</th>" for name in [lay.corner, *lay.columns])
    rows = []
    for block in lay.blocks:
        if block.title:
            rows.append(f'<tr class="block"><th colspan="{len(lay.columns) + 1}">{esc(block.title)}</th></tr>')
        rows += [
            f"<tr><th>{esc(name)}</th>{''.join(_cell(site, page, c, seeds) for c in cells)}</tr>"
            for name, cells in block.rows
        ]
    muted = ' class="layout-only"' if summary.off_paper else ""
    notes = "".join(f'<p class="note">{esc(note)}</p>' for note in lay.notes)
    return (
        f'<div{muted}><table class="paper"><caption>{esc(lay.title)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{legend(summary)}{notes}</div>"
    )


def _cell(site: Site, page: Path, cell: LayoutCell, seeds: dict) -> str:
    if cell is None:
        return '<td class="empty"></td>'
    if isinstance(cell, GapCell):
        return f'<td class="gap">{esc(cell.why)}</td>'
    if isinstance(cell, ParamCell):
        return f'<td class="params">{esc(cell_text(cell))}</td>'
    d = cell.digits
    std = "" if cell.std is None else f" ± {cell.std:.{d}f}"
    parts = [f'<span class="ours">{cell.mean:.{d}f}{std}</span>']
    if cell.paper is not None:
        paper_std = "" if cell.paper_std is None else f" ± {cell.paper_std:.{d}f}"
        parts.append(f'<span class="paper">paper {cell.paper:.{d}f}{paper_std}</span>')
        parts.append(_diff(cell))
    runs = [
        f'<a href="{href(page, site.run_page(path))}" title="seed {seed}">{accuracy:.{d}f}</a>'
        for seed, accuracy, path in seeds.get(cell.key, [])
    ]
    if runs:
        parts.append(f'<span class="seeds">{"seeds" if len(runs) > 1 else "one seed"} {" ".join(runs)}</span>')
    return f"<td>{' '.join(parts)}</td>"


def _diff(cell: Cell) -> str:
    assert cell.paper is not None  # called only for a cell with the paper's figure
    diff = cell.mean - cell.paper
    shown = round(diff, cell.digits)
    sign = "pos" if shown > 0 else "neg" if shown < 0 else "zero"
    near = cell.paper_std is not None and abs(diff) <= cell.paper_std
    why = (
        f"within the paper's std {cell.paper_std}"
        if near
        else "beyond the paper's std"
        if cell.paper_std is not None
        else "the paper gives no std"
    )
    return (
        f'<span class="diff {sign} {"near" if near else "far"}" title="ours − paper; {why}">'
        f"{diff:+.{cell.digits}f}</span>"
    )


def figures(page: Path, summary: Summary) -> str:
    """The grid's figure (Figure 1 or 4 per split, Figure 5 once), drawn into the site."""
    figure = FIGURE_OF_TABLE.get(summary.table)
    if figure is None:  # a layout without a figure (base2novel)
        return ""
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
        rows.append(
            row(
                f'<span class="state {run.state}">{run.state}</span>',
                esc(run.label),
                esc(run.split),
                esc(run.seed),
                detail,
            )
        )
    return (
        f"<h2>Runs not done ({len(runs)})</h2>"
        + table(["state", "row", "split", "seed", "detail"], rows, "runs")
        + "<p><code>petl-bench sweep</code> runs the missing and failed ones again; <code>--rerun-stale</code> "
        "the stale ones too.</p>"
    )
