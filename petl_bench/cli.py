"""`petl-bench`: run methods, evaluate checkpoints, list methods, check and make data.

Bad input ends in one line on stderr and exit status 2, never a traceback. Anything else that
reaches `main` (a disk or file fault, text that does not decode, a dependency's error, a bug) is one
line too, exit status 1, with the traceback kept in a log file that the line names.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from .config import DATASETS, DataConfig, ModelConfig, RunConfig
from .errors import UserError
from .guard import BUSY_EXIT, Interrupted, RunBusy
from .runargs import add_run_options, config_from_args


# -- run / eval ------------------------------------------------------------------------------------
def format_accuracy(record: dict) -> str:
    lines = [f"{record['run_name']} on {record['dataset']} {record['split']} seed {record['seed']} "
             f"({record['trainable_params']:,} trainable parameters)",
             f"  {'task':<14}{'accuracy %':>11}"]
    for task, value in record["accuracy"].items():
        lines.append(f"  {task:<14}{value:>11.2f}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .datamodules import parse_shots
    from .files import check_writable_folder
    from .run import execute, finished_record, record_path

    cfg = config_from_args(args)
    parse_shots(cfg.data.dataset, cfg.data.split)
    path = record_path(cfg)
    existing = finished_record(cfg, args.force)
    if existing:
        print(format_accuracy(existing))
        print(f"already done: {path} (--force to run again)")
        return 0
    check_writable_folder(cfg.out, "--out")
    record = execute(cfg, progress=not args.no_progress, force=args.force, wait=args.if_locked == "wait")
    print(format_accuracy(record))
    print("fast_dev_run: no record written" if cfg.train.fast_dev_run else f"record: {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    import lightning as L

    from .checkpoints import load_plain
    from .config import OptimConfig, TrainConfig, from_dict
    from .registry import get_method
    from .run import build, load_trained, quiet_lightning, trainer_settings

    quiet_lightning()
    path = Path(args.ckpt)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    checkpoint = load_plain(path)
    kinds = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
    try:
        # The run's whole config, and the module's own params as trained: what `prepare` resolved
        # (e.g. MmAP's groups) included.
        saved, params = checkpoint["petl_bench"]["run_config"], checkpoint["petl_bench"]["params"]
        method, out = saved["method"], saved["out"]
        sections = {name: saved[name] for name in kinds}
    except (KeyError, TypeError):
        raise UserError(f"{path} is not a petl-bench checkpoint") from None
    try:
        cfg = RunConfig(method=method, params=from_dict(get_method(method).config_cls, params),
                        **{name: from_dict(kind, sections[name]) for name, kind in kinds.items()}, out=out)
        if args.root:
            cfg.data = dataclasses.replace(cfg.data, root=args.root)
        module, data, _ = build(cfg)
    except UserError as err:  # e.g. stored params that the method's config no longer takes
        raise UserError(f"{path}: {err}") from None
    try:
        settings, _ = trainer_settings(cfg)  # the run's precision, device and TF32
        trainer = L.Trainer(**settings, logger=False, enable_model_summary=False)
        load_trained(trainer, module, checkpoint["state_dict"])
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        module.release()
    print(format_accuracy({"run_name": cfg.run_name, "dataset": cfg.data.dataset, "split": cfg.data.split,
                           "seed": cfg.data.seed, "trainable_params": module.num_trainable,
                           "accuracy": module.test_accuracy}))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .registry import get_method, method_names

    sharing = {True: "MT", False: "ST", None: "-"}  # a set shared by all tasks / one per task / none
    for name in method_names():
        entry = get_method(name)
        print(f"{name:<18}{sharing[entry.cls.shared]:<4}{entry.summary}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from .params import count_rows, format_rows

    print(format_rows(count_rows(args.model, args.dataset), args.format))
    return 0


# -- sweeps ----------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import expand_grid, grid_file, sweep

    if args.runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu must be >= 1; got {args.runs_per_gpu}")
    overrides = [*args.set, *(["logging.wandb=true"] if args.wandb else [])]
    grid = expand_grid(grid_file(args.file), overrides, args.out)
    if args.dry_run:  # as `table` sees it: on the root its sweeps ran on, if none is given
        from .sweep_state import on_swept_root

        grid = on_swept_root(grid)
    return sweep(grid, launcher=args.launcher, gpus=args.gpus, dry_run=args.dry_run, rerun_stale=args.rerun_stale,
                 runs_per_gpu=args.runs_per_gpu, fresh_process=args.fresh_process)


# -- tables and figures ----------------------------------------------------------------------------
def _summary(name: str, overrides: list[str], out: str | None):
    from .report import summarize
    from .sweep import expand_grid, grid_file
    from .sweep_state import on_swept_root

    return summarize(on_swept_root(expand_grid(grid_file(name), overrides, out)))


def cmd_table(args: argparse.Namespace) -> int:
    from .report import render, save_table

    summary = _summary(args.grid, args.set, args.out)
    text = render(summary, args.format)
    if args.format == "csv":  # stdout stays plain CSV; the banner and the footer go to stderr
        print(text, end="")
        for line in filter(None, [summary.banner(), *summary.footer()]):
            print(line, file=sys.stderr)
    else:
        print(text)
    print(f"saved: {save_table(summary, args.format)}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import default_figure, draw

    summary = _summary(args.grid or default_figure(args.figure)[0], args.set, args.out_dir)
    print(f"figure: {draw(args.figure, summary, args.split, args.out)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.site import build_site

    print(f"report: {build_site(Path(args.out), Path(args.site) if args.site else None)}")
    return 0


# -- data ------------------------------------------------------------------------------------------
def cmd_data_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from .datamodules import read_manifest
    from .datamodules.counts import compare_counts
    from .files import shown

    manifest = read_manifest(args.dataset, args.root)  # no cache: every file is checked afresh
    failed = manifest.checks.verify([r.path for r in manifest.records], progress=not args.no_progress)
    unreadable = [*manifest.skipped, *failed]
    counts = Counter((r.domain, r.label) for r in manifest.records)
    print(f"{'class':<24}" + "".join(f"{d[:12]:>13}" for d in manifest.domains))
    for label, name in enumerate(manifest.classnames):
        print(f"{name[:24]:<24}" + "".join(f"{counts[(d, label)]:>13}" for d in manifest.domains))
    totals = {d: sum(counts[(d, label)] for label in range(len(manifest.classnames))) for d in manifest.domains}
    print(f"{'total':<24}" + "".join(f"{totals[d]:>13}" for d in manifest.domains))
    check = compare_counts(args.dataset, manifest)
    if check:
        print(f"{'expected':<24}" + "".join(f"{check.expected.get(d, 0):>13}" for d in manifest.domains))
    print(f"{len(manifest.records) - len(failed):,} readable images, {len(unreadable)} unreadable")
    for rel in unreadable:
        print(f"  unreadable: {shown(manifest.root / rel)} ({manifest.checks.verdicts.get(rel, 'unreadable')})")
    for line in check.details() if check else []:
        print(line)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .datamodules.cache import KINDS, Cache

    bound = DataConfig().cache_gb
    cache = Cache.for_run(args.dir or "", args.out, bound)
    if cache is None:
        print("caching is off ($PETL_BENCH_CACHE or --dir is 'off')")
        return 0
    if args.action == "clear":
        freed = cache.clear(args.kind or KINDS)
        print(f"removed {freed / 1e9:.2f} GB from {cache.folder}")
        return 0
    entries = cache.entries()
    print(f"cache: {cache.folder} (runs keep it under data.cache_gb, by default {bound:g} GB)")
    for kind in KINDS:
        found = [size for _, size, files in entries if files[0].parent.name == kind]
        print(f"  {kind:<10}{len(found):>6} entries {sum(found) / 1e9:>9.3f} GB")
    print("clear it with `petl-bench cache clear` (or delete the folder)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from .datamodules.synth import write_synthetic

    n = write_synthetic(Path(args.out), args.layout, per_class=args.per_class, n_classes=args.classes,
                        seed=args.seed, related_pairs=args.related_pairs)
    print(f"wrote {n:,} images in the {args.layout} layout to {args.out}")
    return 0


def cmd_data_tiny_clip(args: argparse.Namespace) -> int:
    from . import tinyclip
    from .datamodules import read_manifest

    manifest = read_manifest(args.dataset or _guess_layout(Path(args.data)), args.data)
    backbone = tinyclip.pretrain(manifest, steps=args.steps, seed=args.seed)
    tinyclip.save(backbone, Path(args.out))
    chance = 100.0 / len(manifest.classnames)
    print(f"zero-shot accuracy of the tiny CLIP (chance {chance:.2f}%):")
    for task, value in tinyclip.zero_shot_accuracy(backbone, manifest).items():
        print(f"  {task:<14}{value:>8.2f}")
    print(f"saved: {args.out} (use --model tiny --pretrained {args.out})")
    return 0


def _guess_layout(root: Path) -> str:
    if (root / "splits_mini").is_dir():
        return "minidomainnet"
    names = {p.name.lower().replace("_", " ") for p in root.iterdir()} if root.is_dir() else set()
    return "officehome" if {"art", "clipart", "product", "real world"} <= names else "folder"


# -- parser ----------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petl-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = add_run_options(sub.add_parser("run", help="train and test one method on one dataset split and seed"))
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="re-evaluate a run's checkpoint")
    ev.add_argument("--ckpt", required=True)
    ev.add_argument("--root", default=None, help="dataset folder, if it moved since the run")
    ev.set_defaults(func=cmd_eval)

    sub.add_parser("methods", help="list registered methods: ST (a set per task) or MT (one shared set), "
                                   "and what trains").set_defaults(func=cmd_methods)

    params = sub.add_parser("params", help="trainable parameters of every method beside the paper's")
    params.add_argument("--model", default="ViT-B-16", help="built without weights")
    params.add_argument("--dataset", default="officehome", choices=[d for d in DATASETS if d != "folder"])
    params.add_argument("--format", default="md", choices=["md", "csv"])
    params.set_defaults(func=cmd_params)

    sweep = sub.add_parser("sweep", help="run a grid of methods x splits x seeds (benchmarks/*.yaml), "
                                         "skipping runs already done")
    sweep.add_argument("file", help="table1, table2, ablation, kshot, demo, or a grid YAML file")
    sweep.add_argument("--out", default=None, help="results folder (default: results)")
    sweep.add_argument("--launcher", default="local", choices=["local", "slurm"])
    sweep.add_argument("--gpus", type=int, default=None,
                       help="local runs at once, one GPU each (default: every visible GPU; none: one at a time on CPU)")
    sweep.add_argument("--runs-per-gpu", type=int, default=1, metavar="N",
                       help="local: N worker processes per GPU, to pack small runs on a big GPU (default 1)")
    sweep.add_argument("--fresh-process", action="store_true",
                       help="local: a new process for every run (default: workers that keep imports and backbones)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are done, stale or to do")
    sweep.add_argument("--rerun-stale", action="store_true", help="run again runs whose record has another config")
    sweep.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a field of every run (as `run --set`; data.root=DIR for the dataset), "
                            "or of the Slurm jobs (slurm.partition=..., slurm.time_min=...)")
    sweep.add_argument("--wandb", action="store_true", help="also log every run to W&B")
    sweep.set_defaults(func=cmd_sweep)

    table = sub.add_parser("table", help="a paper-style table from a grid's run records")
    table.add_argument("grid", help="table1, table2, ablation, kshot, demo, or a grid YAML file")
    table.add_argument("--out", default=None, help="results folder (default: the grid's, results/)")
    table.add_argument("--format", default="md", choices=["md", "latex", "csv"])
    table.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="the overrides the sweep ran with (they decide which records count)")
    table.set_defaults(func=cmd_table)

    plot = sub.add_parser("plot", help="the paper's Figure 1, 4 or 5 from a grid's run records")
    plot.add_argument("figure", choices=["fig1", "fig4", "fig5"])
    plot.add_argument("--grid", default=None, help="default: table1 (fig1), ablation (fig4), kshot (fig5)")
    plot.add_argument("--split", default=None, help="fig1, fig4: the split (default: the grid's first)")
    plot.add_argument("--out", default=None, help="PNG file (default: {results}/figures/FIG-DATASET[-SPLIT].png)")
    plot.add_argument("--out-dir", default=None, help="results folder (default: the grid's, results/)")
    plot.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="the overrides the sweep ran with (they decide which records count)")
    plot.set_defaults(func=cmd_plot)

    report = sub.add_parser("report", help="a static HTML site of every sweep's table, figures and runs "
                                           "(opens from disk, no network)")
    report.add_argument("--out", default="results", help="results folder (default: results)")
    report.add_argument("--site", default=None, help="where to write the site (default: {out}/report)")
    report.set_defaults(func=cmd_report)
    cache = sub.add_parser("cache", help="show or clear the cache folder (manifests, test images, features)")
    cache.add_argument("action", nargs="?", default="show", choices=["show", "clear"])
    cache.add_argument("--out", default="results", help="results folder whose cache/ is meant (the default)")
    cache.add_argument("--dir", default=None,
                       help="the cache folder (default: $PETL_BENCH_CACHE, else OUT/cache)")
    cache.add_argument("--kind", action="append", choices=["manifests", "images", "features"],
                       help="clear only these kinds")
    cache.set_defaults(func=cmd_cache)

    data = sub.add_parser("data", help="check or make datasets").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="count images per domain and class; list unreadable files")
    check.add_argument("--dataset", required=True, choices=DATASETS)
    check.add_argument("--root", required=True)
    check.add_argument("--no-progress", action="store_true")
    check.set_defaults(func=cmd_data_check)
    synth = data.add_parser("synth", help="write a small learnable synthetic image set in a real layout")
    synth.add_argument("--out", required=True)
    synth.add_argument("--layout", required=True, choices=DATASETS)
    synth.add_argument("--per-class", type=int, default=10, help="images per class per domain")
    synth.add_argument("--classes", type=int, default=10, help="classes for the folder layout (at most 16)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--related-pairs", action="store_true",
                       help="the second half of the domains draws every class as another class looks "
                            "(a known answer for task grouping)")
    synth.set_defaults(func=cmd_data_synth)
    tiny = data.add_parser("tiny-clip", help="pre-train the tiny CLIP for the demo and tests")
    tiny.add_argument("--data", required=True, help="a synthetic dataset from `data synth`")
    tiny.add_argument("--dataset", default=None, choices=DATASETS, help="its layout (default: guessed)")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--steps", type=int, default=700)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_data_tiny_clip)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}\n"  # for users, not the source line that warned


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunBusy as busy:
        print(f"petl-bench: {busy}", file=sys.stderr)
        return BUSY_EXIT
    except UserError as err:
        print(f"petl-bench: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"petl-bench: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("petl-bench: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the last guard: no user sees a stack trace
        command = sys.argv[1:] if argv is None else argv
        print(f"petl-bench: {unexpected(err)} ({kept_traceback(err, command)})", file=sys.stderr)
        return 1


def unexpected(err: Exception) -> str:
    """What an exception that no command turned into a UserError means, in one line."""
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"error: {where}{err.strerror or message}"
    if isinstance(err, UnicodeError):
        return f"error: cannot read or write text: {message}"
    module = type(err).__module__.split(".")[0]
    if module not in ("builtins", __package__):
        return f"error in {module}: {type(err).__name__}: {message}"
    return f"internal error, this is a bug (please report it with the log): {type(err).__name__}: {message}"


def kept_traceback(err: Exception, command: list[str]) -> str:
    """Writes the command and its traceback to a log file in the temporary folder (a full `--out`
    could not take it); says where, or why not."""
    folder = Path(tempfile.gettempdir()) / "petl-bench-logs"
    path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(exist_ok=True)
        path.write_text(f"petl-bench {' '.join(map(str, command))}\n"
                        + "".join(traceback.format_exception(err)), encoding="utf-8", errors="replace")
    except OSError as log_err:
        return f"traceback not kept: {log_err.strerror or log_err}"
    return f"traceback: {path}"


if __name__ == "__main__":
    sys.exit(main())
