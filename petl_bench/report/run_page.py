"""One run's page: accuracy, curves from its CSV log, task groups, what makes it this variant (its
`--set` items and the command that rebuilds it), config, split, timing, device, versions, files."""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import plots
from ..files import atomic_path
from ..results import load_record
from .markup import Site, accuracy, esc, facts, file_link, href, html_page, link, row, table
from .paper import dataset_name, split_name
from .state import (
    GridReport,
    RunState,
    command_line,
    read_log,
    run_argv_of,
    run_label,
    run_off_paper,
    set_items,
    short_hash,
)
from .summary import AVERAGE


def run_page(site: Site, path: Path, record: dict, grids: list[tuple[GridReport, RunState]]) -> str:
    page = site.run_page(path)
    work = path.with_suffix("")  # seed{K}/: logs, checkpoints, grouping
    dataset, split = str(record.get("dataset", "")), str(record.get("split", ""))
    argv = run_argv_of(record)
    title = (
        f"{run_label(record, argv)} on {dataset_name(dataset)} {split_name(dataset, split)}, seed {record.get('seed')}"
    )
    if record.get("holdout"):  # leave-one-domain-out: what it was tested on is what it never saw
        title += f", {record['holdout']} held out (trained on the other domains)"
    body = [
        f"<h1>{esc(title)}</h1>",
        *_source(site, page, record),
        _membership(site, page, record, grids),
        "<h2>Accuracy</h2>",
        table(
            ["task", "accuracy %"],
            [
                row(esc("Average" if task == AVERAGE else task), accuracy(value))
                for task, value in record.get("accuracy", {}).items()
            ],
            "accuracy",
        ),
        "<h2>Training curves</h2>",
        _curves(page, work, record, title),
        "<h2>Variant</h2>",
        _variant(record, argv),
    ]
    grouping = (record.get("prepared") or {}).get("grouping")
    if grouping:
        body += ["<h2>Task groups</h2>", _grouping(page, work, grouping)]
    body += [
        "<h2>Run</h2>",
        facts(_run_facts(record)),
        "<h2>Config</h2>",
        _config(record),
        "<h2>Split</h2>",
        facts(
            [
                ("split file", file_link(page, _in_results(site, record, "split_file"), str(record.get("split_file")))),
                ("SHA-256", f"<code>{esc(record.get('split_sha256', ''))}</code>"),
            ]
        ),
        "<h2>Package versions</h2>",
        facts([(name, esc(v)) for name, v in record.get("versions", {}).items()]),
        "<h2>Files</h2>",
        facts(
            [
                ("record", file_link(page, path, path.name)),
                ("CSV log", file_link(page, work / "logs" / "metrics.csv", "logs/metrics.csv")),
                ("sweep log", file_link(page, work / "sweep.log", "sweep.log")),
                ("checkpoint", file_link(page, work / "checkpoints" / "last.ckpt", "checkpoints/last.ckpt")),
            ]
        ),
    ]
    reasons = run_off_paper(record)
    banner = f"NOTE: not the paper's setting ({'; '.join(reasons)})" if reasons else None
    return html_page(title, body, site, page, banner=banner)


def _variant(record: dict, argv: list[str] | None) -> str:
    """The run's name, hash and every `--set` item that makes it differ from its method's defaults,
    with the command that rebuilds it."""
    rows = [
        ("run name", f"<code>{esc(record.get('run_name', ''))}</code> (its folder)"),
        ("config hash", f"<code>{esc(short_hash(record))}</code>"),
    ]
    if argv is None:
        rows.append(("--set", "this petl-bench cannot rebuild the config (see Config below)"))
    else:
        items = set_items(argv)
        rows.append(
            (
                "--set",
                "<br>".join(f"<code>--set {esc(item)}</code>" for item in items)
                or "none: the defaults of the method and of the options below",
            )
        )
        rows.append(("command", f"<code>{esc(command_line(argv))}</code>"))
    return facts(rows, "variant")


def _in_results(site: Site, record: dict, key: str) -> Path:
    """A file the run wrote under its results folder (`record[key]`, spelled as the run spelled it,
    perhaps relative to another working directory), found under the results folder as it is now."""
    path, then = Path(str(record.get(key))), Path(str(record.get("config", {}).get("out")))
    try:
        return site.out / path.relative_to(then)
    except ValueError:
        return path


def _source(site: Site, page: Path, record: dict) -> list[str]:
    """A transfer run's source: the finished run whose trained parameters it tests, linked to its
    page, and whether that record still holds the config this run tested."""
    origin = record.get("transfer_from")
    if not isinstance(origin, dict):
        return []
    path = (site.out / str(origin.get("run"))).resolve()
    source, problem = (
        load_record(path) if path.is_relative_to(site.out / "runs") else (None, "not a run of this folder")
    )
    wanted = str(origin.get("config_sha256", ""))[:8]
    if source is None:
        named = f'<span class="absent">{esc(origin.get("run"))} ({esc(problem or "absent")})</span>'
    else:
        named = link(page, site.run_page(path), f"{run_label(source, run_argv_of(source))}, seed {source.get('seed')}")
    text = (
        f"A transfer run: nothing trains here. It tests the trained parameters of {named} (config hash "
        f"<code>{esc(wanted)}</code>) on {esc(dataset_name(str(record.get('dataset', ''))))}, "
        f"{esc(record.get('classes', 'all'))} classes."
    )
    if source is not None and short_hash(source) != wanted:
        text += (
            f" That record now holds another config (hash <code>{esc(short_hash(source))}</code>): it ran again since."
        )
    return [f'<p class="transfer">{text}</p>']


def _membership(site: Site, page: Path, record: dict, grids: list[tuple[GridReport, RunState]]) -> str:
    if not grids:
        return "<p>In no swept grid.</p>"
    items = []
    for grid, run in grids:
        text = (
            f"{link(page, site.grid_page(grid.name), grid.name)}, row {esc(run.label)}: "
            f'<span class="state {run.state}">{run.state}</span>'
        )
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
    if record.get("transfer_from"):
        return "<p>A transfer run trains nothing: its source run's page has the curves.</p>"
    if record.get("trainable_params") == 0:
        return "<p>Nothing trained (0 trainable parameters): no curves.</p>"
    log_path = work / "logs" / "metrics.csv"
    log, problem = read_log(log_path)
    if log is None:
        return (
            f"<p>No CSV log at <code>{esc(log_path)}</code>.</p>"
            if problem == "absent"
            else f"<p>The CSV log <code>{esc(log_path)}</code> {esc(problem)}</p>"
        )
    png = page.with_name(page.stem + ".curves.png")
    drawn: Path | None = png
    if not (png.is_file() and png.stat().st_mtime >= log_path.stat().st_mtime):  # drawn since the log last grew
        drawn = plots.run_curves(log, title, png) if "step" in log else None
    if drawn is None:
        return (
            "<p>The CSV log holds no training loss (Lightning logs it every 10 steps: a run of fewer "
            "steps has none).</p>"
        )
    return (
        f'<img src="{href(page, drawn)}" alt="training loss, learning rate and accuracy per epoch">'
        f'<p class="note">{esc(" ".join(curve_notes(log)))}</p>'
    )


def curve_notes(log) -> list[str]:
    """What the curves are drawn from, and what the log lacks, one sentence each."""
    lrs = plots.lr_columns(log)
    notes = [
        f"Learning rate from {', '.join(lrs)}."
        if lrs
        else "The log has no learning-rate column (train/lr, or lr-* as Lightning's LearningRateMonitor "
        "writes): no learning-rate curve."
    ]
    starts = plots.epoch_starts(plots.training_steps(log))
    if starts:
        notes.append(f"Dotted lines mark where each of epochs 2 to {starts[-1][0] + 1} begins.")
    accuracy_columns = list(plots.epoch_accuracy(log).columns)
    notes.append(
        f"Accuracy per epoch from {', '.join(accuracy_columns)}."
        if accuracy_columns
        else "The log holds no accuracy per epoch (train/acc or val/acc): the test accuracy above is "
        "measured once, after training."
    )
    return notes


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
    return [
        ("method", esc(record.get("method", ""))),
        ("model", esc(f"{record.get('model')} with weights {record.get('pretrained')}")),
        ("trainable parameters", esc(f"{trainable:,}{share}" if trainable is not None else "?")),
        (
            "images",
            esc(
                f"{record.get('train_images')} training, {record.get('test_images')} test, "
                f"{len(skipped)} skipped (unreadable)"
            ),
        ),
        ("wall time", esc(_duration(record.get("wall_s")))),
        (
            "throughput",
            esc(
                f"{record.get('train_images_per_s')} training images/s"
                if record.get("train_images_per_s")
                else "no training steps"
            ),
        ),
        ("device", esc(record.get("device", ""))),
        ("peak memory", esc(f"{record.get('peak_memory_mb')} MB")),
        ("synthetic data", "yes" if record.get("synthetic") else "no"),
        ("finished", esc(record.get("finished", ""))),
        ("git revision", f"<code>{esc(record.get('git') or 'unknown')}</code>"),
    ]


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
    return f"<p>config_sha256 <code>{esc(record.get('config_sha256', ''))}</code></p>" + facts(rows, "config")


def _flat(config: dict) -> list[tuple[str, object]]:
    items = []
    for section, values in config.items():
        prefix = "method" if section == "params" else section
        if isinstance(values, dict):
            items += [(f"{prefix}.{key}", value) for key, value in values.items()]
        else:
            items.append((section, values))
    return items
