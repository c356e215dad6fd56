"""`petl-bench`: run methods, evaluate checkpoints, list methods, check and make data.

Bad input ends in one line on stderr and exit status 2, never a traceback. Anything else that
reaches `main` (a disk or file fault, text that does not decode, a dependency's error, a bug) is one
line too, exit status 1, with the traceback kept in a log file that the line names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DATASETS, RECIPES, DataConfig
from .errors import UserError, did_you_mean
from .runargs import add_run_options, add_transfer_options
from .runcommand import answered, format_accuracy, run_from_args, transfer_from_args


# -- run / eval ------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    if args.source:
        return transfer_from_args(args)
    import dataclasses

    path = Path(args.ckpt)
    if not path.is_file():  # before the training stack is imported
        raise UserError(f"checkpoint not found: {path}")
    import lightning as L

    from .checkpoints import load_plain
    from .run import build, hand_image_encoder, load_trained, quiet_lightning, trainer_settings
    from .runargs import saved_config

    quiet_lightning()
    checkpoint = load_plain(path)
    try:
        # The run's whole config, and the module's own params as trained: what `prepare` resolved
        # (e.g. MmAP's groups) included.
        saved, params = checkpoint["petl_bench"]["run_config"], checkpoint["petl_bench"]["params"]
        cfg = saved_config(saved, params)
    except (KeyError, TypeError):
        raise UserError(f"{path} is not a petl-bench checkpoint") from None
    except UserError as err:  # e.g. stored params that the method's config no longer takes
        raise UserError(f"{path}: {err}") from None
    try:
        if args.root:
            cfg.data = dataclasses.replace(cfg.data, root=args.root)
        module, data, _ = build(cfg)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    try:
        settings, _ = trainer_settings(cfg)  # the run's precision, device and TF32
        trainer = L.Trainer(**settings, logger=False, enable_model_summary=False)
        load_trained(trainer, module, checkpoint["state_dict"])
        hand_image_encoder(trainer, module, data)
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        module.release()
    print(
        format_accuracy(
            {
                "run_name": cfg.run_name,
                "dataset": cfg.data.dataset,
                "split": cfg.data.split,
                "seed": cfg.data.seed,
                "trainable_params": module.num_trainable,
                "accuracy": module.test_accuracy,
            }
        )
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .registry import get_method, method_names

    sharing = {True: "MT", False: "ST", None: "-"}  # a set shared by all tasks / one per task / none
    for name in method_names():
        entry = get_method(name)
        vocabulary = "" if entry.open_vocabulary else "closed"  # scores only the classes it trained on
        print(f"{name:<18}{sharing[entry.shared]:<4}{vocabulary:<7}{entry.summary}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import SECTION_CLASSES, settable_fields
    from .registry import get_method, method_names

    if args.recipe != "shared":
        return _recipe_config(args)
    every_run = [row for section, cls in SECTION_CLASSES.items() for row in settable_fields(cls, section)]
    blocks = [("every run (its data, model, optim, train and logging sections)", every_run)]
    users: dict[type, list[str]] = {}  # config class -> the methods it configures
    for name in [get_method(args.method).name] if args.method else method_names():
        users.setdefault(get_method(name).config_cls, []).append(name)
    for config_cls, names in users.items():
        rows = settable_fields(config_cls, "method") or [("(none)", "", "", "")]
        blocks.append((f"{', '.join(names)} ({config_cls.__name__})", rows))
    print("`--set KEY=VALUE` keys (petl-bench run, sweep, table and plot take them):")
    _print_blocks(blocks)
    return 0


def _recipe_config(args: argparse.Namespace) -> int:
    """`config --method M --recipe paper`: every key's value for a run of M on `--dataset` and
    `--split` under the method's own recipe, before any --set."""
    from .config import SECTION_CLASSES, settable_fields
    from .runargs import build_run_config
    from .runcommand import recipe_line

    if not args.method:
        raise UserError("config --recipe paper: name the method (--method M): each has its own recipe")
    cfg = build_run_config(args.method, args.dataset, "", args.split, recipe=args.recipe)
    print(recipe_line(cfg))
    print(f"\nthe values of a {cfg.run_name} run on {args.dataset} {args.split} (before any --set):")
    sections = [(section, getattr(cfg, section)) for section in SECTION_CLASSES]
    rows = [row for section, values in sections for row in settable_fields(type(values), section, values)]
    _print_blocks([("every run", rows), (cfg.method, settable_fields(type(cfg.params), "method", cfg.params))])
    return 0


def _print_blocks(blocks: list[tuple[str, list[tuple[str, str, str, str]]]]) -> None:
    width = max(len(row[0]) for _, rows in blocks for row in rows) + 2
    for title, rows in blocks:
        print(f"\n{title}:")
        for key, kind, value, limits in rows:
            print(f"  {key:<{width}}{kind:<12} {value:<15} {limits}".rstrip())


def cmd_params(args: argparse.Namespace) -> int:
    from .params import count_rows, format_rows

    print(format_rows(count_rows(args.model, args.dataset), args.format))
    return 0


# -- sweeps ----------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep.driver import sweep
    from .sweep.grid import expand_grid, grid_file
    from .sweep.state import on_swept_root

    if args.runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu must be >= 1; got {args.runs_per_gpu}")
    overrides = [*args.set, *(["logging.wandb=true"] if args.wandb else [])]
    grid = expand_grid(grid_file(args.file), overrides, args.out)
    if args.dry_run:  # as `table` sees it: on the root its sweeps ran on, if none is given
        grid = on_swept_root(grid)
    return sweep(
        grid,
        launcher=args.launcher,
        gpus=args.gpus,
        dry_run=args.dry_run,
        rerun_stale=args.rerun_stale,
        runs_per_gpu=args.runs_per_gpu,
        fresh_process=args.fresh_process,
    )


# -- tables and figures ----------------------------------------------------------------------------
def _summary(name: str, overrides: list[str], out: str | None):
    from .report import summarize
    from .sweep.grid import expand_grid, grid_file
    from .sweep.state import on_swept_root

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

    from .datamodules import coop, read_manifest
    from .datamodules.counts import compare_counts

    if args.dataset in coop.SPECS:
        return _check_coop_root(args)
    if args.quick:
        raise UserError("--quick is for CoOp's benchmark and the ImageNet family; other roots are checked in full")
    manifest = read_manifest(args.dataset, args.root)  # no cache: every file is checked afresh
    failed = manifest.checks.verify([r.path for r in manifest.records], progress=not args.no_progress)
    counts = Counter((r.domain, r.label) for r in manifest.records)
    print(f"{'class':<24}" + "".join(f"{d[:12]:>13}" for d in manifest.domains))
    for label, name in enumerate(manifest.classnames):
        print(f"{name[:24]:<24}" + "".join(f"{counts[(d, label)]:>13}" for d in manifest.domains))
    totals = {d: sum(counts[(d, label)] for label in range(len(manifest.classnames))) for d in manifest.domains}
    print(f"{'total':<24}" + "".join(f"{totals[d]:>13}" for d in manifest.domains))
    check = compare_counts(args.dataset, manifest)
    if check:
        print(f"{'expected':<24}" + "".join(f"{check.expected.get(d, 0):>13}" for d in manifest.domains))
    unreadable = _print_unreadable(manifest, failed)
    for line in check.details() if check else []:
        print(line)
    return 1 if unreadable or (check and check.missing) else 0


def _check_coop_root(args: argparse.Namespace) -> int:
    """Classes and images per part against CoOp's sizes, what is missing (one line each), then, unless
    `--quick`, every present image decoded. 1 if a class or a listed image is missing or an image is
    unreadable (fewer images than the published sizes alone is a subset, not a fault)."""
    from .datamodules import coop
    from .datamodules.scan import check_root

    root = check_root(args.root)
    listed = coop.listing(args.dataset, root)
    check, on_disk = coop.check_listing(args.dataset, root, listed)
    for line in check.lines():
        print(line)
    missing = bool(check.missing_classes or check.missing_images)
    if args.quick:
        print("(--quick: names and counts only; no image was opened)")
        return 1 if missing else 0
    manifest = coop.manifest_of(args.dataset, root, on_disk, None)
    assert manifest.checks is not None  # a scanned root has them
    failed = manifest.checks.verify([r.path for r in manifest.records], progress=not args.no_progress)
    unreadable = _print_unreadable(manifest, failed)
    return 1 if missing or unreadable else 0


def _print_unreadable(manifest, failed: dict[str, str]) -> int:
    """How many images can be read, and each that cannot (skipped by the scan, or failing to decode);
    returns how many cannot."""
    from .files import shown

    unreadable = [*manifest.skipped, *failed]
    print(f"{len(manifest.records) - len(failed):,} readable images, {len(unreadable)} unreadable")
    for rel in unreadable:
        print(f"  unreadable: {shown(manifest.root / rel)} ({manifest.checks.verdicts.get(rel, 'unreadable')})")
    return len(unreadable)


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
    from .datamodules.coop import SPECS

    if args.layout in SPECS:
        from .datamodules.coopsynth import write_coop_synthetic

        if args.related_pairs:
            raise UserError(f"--related-pairs needs several domains; {args.layout} has one")
        per_class = 3 if args.per_class is None else args.per_class
        n = write_coop_synthetic(Path(args.out), args.layout, per_class, args.classes, args.seed, args.own_split)
    else:
        from .datamodules.synth import write_synthetic

        if args.own_split:
            raise UserError("--own-split is OxfordPets' (its annotations instead of its split JSON)")
        n = write_synthetic(
            Path(args.out),
            args.layout,
            per_class=10 if args.per_class is None else args.per_class,
            n_classes=10 if args.classes is None else args.classes,
            seed=args.seed,
            related_pairs=args.related_pairs,
        )
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
class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is
    none to say (a switch, a repeatable option, a required one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required or no_default(action.default):
            return text
        return f"{text} (default: {action.default})"


def no_default(value) -> bool:
    """Nothing to show: no value, a switch's False, an empty list (`is`: 0 is a default to show)."""
    return value is None or value is False or value == [] or value is argparse.SUPPRESS


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and a "did you mean" for a mistyped choice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=HelpWithDefaults, **kwargs)

    def _check_value(self, action, value):  # argparse's own check of `choices`, with the near names
        if action.choices is not None and value not in action.choices:
            known = list(action.choices)
            hint = did_you_mean(str(value), known) or f"choose from {', '.join(map(str, known))}"
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint})")

    def error(self, message):  # the message alone, not the usage block above it
        self.exit(2, f"petl-bench: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="petl-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = add_run_options(sub.add_parser("run", help="train and test one method on one dataset split and seed"))
    run.set_defaults(func=run_from_args)

    ev = sub.add_parser(
        "eval", help="re-evaluate a run's checkpoint, or test a finished run on other data (a transfer run)"
    )
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a run's checkpoint (seed{K}/checkpoints/last.ckpt): re-evaluated")
    add_transfer_options(ev, source)
    ev.set_defaults(func=cmd_eval)

    sub.add_parser(
        "methods",
        help="list registered methods: ST (a set per task) or MT (one shared set), closed (scores only the classes "
        "it trained on: no novel or cross-dataset transfer), and what trains",
    ).set_defaults(func=cmd_methods)

    config = sub.add_parser("config", help="every `--set` key of a run, with its type, default and range")
    config.add_argument("--method", default=None, help="list this method's keys (default: every method's)")
    config.add_argument(
        "--recipe",
        default="shared",
        choices=RECIPES,
        help="paper: with --method, the values of the method's own recipe for --dataset and --split",
    )
    config.add_argument(
        "--dataset",
        default=DataConfig.dataset,
        choices=DATASETS,
        metavar="DATASET",
        help="with --recipe paper: whose values the recipe gives",
    )
    config.add_argument(
        "--split", default=DataConfig.split, help="with --recipe paper: whose shot count picks the recipe's values"
    )
    config.set_defaults(func=cmd_config)

    params = sub.add_parser("params", help="trainable parameters of every method beside the paper's")
    params.add_argument("--model", default="ViT-B-16", help="built without weights")
    params.add_argument(
        "--dataset",
        default="officehome",
        choices=[d for d in DATASETS if d != "folder"],
        help="whose classes and domains size the parameters",
    )
    params.add_argument("--format", default="md", choices=["md", "csv"], help="Markdown table or CSV")
    params.set_defaults(func=cmd_params)

    sweep = sub.add_parser(
        "sweep", help="run a grid of methods x splits x seeds (benchmarks/*.yaml), skipping runs already done"
    )
    sweep.add_argument("file", help="table1, table2, ablation, kshot, fewshot, demo, or a grid YAML file")
    sweep.add_argument("--out", default=None, help="results folder (default: results)")
    sweep.add_argument(
        "--launcher", default="local", choices=["local", "slurm"], help="run here, or submit one Slurm job per run"
    )
    sweep.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="local runs at once, one GPU each (default: every visible GPU; none: one at a time on CPU)",
    )
    sweep.add_argument(
        "--runs-per-gpu",
        type=int,
        default=1,
        metavar="N",
        help="local: N worker processes per GPU, to pack small runs on a big GPU (default 1)",
    )
    sweep.add_argument(
        "--fresh-process",
        action="store_true",
        help="local: a new process for every run (default: workers that keep imports and backbones)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are done, stale or to do")
    sweep.add_argument("--rerun-stale", action="store_true", help="run again runs whose record has another config")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a field of every run (as `run --set`; data.root=DIR for the dataset), "
        "or of the Slurm jobs (slurm.partition=..., slurm.time_min=...)",
    )
    sweep.add_argument("--wandb", action="store_true", help="also log every run to W&B")
    sweep.set_defaults(func=cmd_sweep)

    table = sub.add_parser("table", help="a paper-style table from a grid's run records")
    table.add_argument("grid", help="table1, table2, ablation, kshot, fewshot, demo, or a grid YAML file")
    table.add_argument("--out", default=None, help="results folder (default: the grid's, results/)")
    table.add_argument("--format", default="md", choices=["md", "latex", "csv"], help="Markdown, LaTeX or CSV")
    table.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="the overrides the sweep ran with (they decide which records count)",
    )
    table.set_defaults(func=cmd_table)

    plot = sub.add_parser("plot", help="the paper's Figure 1, 4 or 5, or CoOp's few-shot figure, from a grid's records")
    plot.add_argument(
        "figure",
        choices=["fig1", "fig4", "fig5", "fewshot"],
        help="fig1: accuracy vs trainable parameters; fig4: per task; fig5: accuracy vs shots; "
        "fewshot: accuracy vs shots per dataset and their average",
    )
    plot.add_argument(
        "--grid", default=None, help="default: table1 (fig1), ablation (fig4), kshot (fig5), fewshot (fewshot)"
    )
    plot.add_argument("--split", default=None, help="fig1, fig4: the split (default: the grid's first)")
    plot.add_argument(
        "--out", default=None, help="PNG file (default: {results}/figures/FIG-DATASET[-SPLIT].png; FIG-GRID of several)"
    )
    plot.add_argument("--out-dir", default=None, help="results folder (default: the grid's, results/)")
    plot.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="the overrides the sweep ran with (they decide which records count)",
    )
    plot.set_defaults(func=cmd_plot)

    report = sub.add_parser(
        "report", help="a static HTML site of every sweep's table, figures and runs (opens from disk, no network)"
    )
    report.add_argument("--out", default="results", help="results folder (default: results)")
    report.add_argument("--site", default=None, help="where to write the site (default: {out}/report)")
    report.set_defaults(func=cmd_report)
    cache = sub.add_parser("cache", help="show or clear the cache folder (manifests, test images, features)")
    cache.add_argument(
        "action", nargs="?", default="show", choices=["show", "clear"], help="show the entries per kind, or delete them"
    )
    cache.add_argument("--out", default="results", help="results folder whose cache/ is meant (the default)")
    cache.add_argument("--dir", default=None, help="the cache folder (default: $PETL_BENCH_CACHE, else OUT/cache)")
    cache.add_argument(
        "--kind", action="append", choices=["manifests", "images", "features"], help="clear only these kinds"
    )
    cache.set_defaults(func=cmd_cache)

    data = sub.add_parser("data", help="check or make datasets").add_subparsers(dest="data_command", required=True)
    check = data.add_parser(
        "check",
        help="count images per domain and class; list unreadable files (exit status 1 if an image is unreadable "
        "or a class or an image its split lists is missing)",
    )
    check.add_argument("--dataset", required=True, choices=DATASETS, help="the layout to read the root as")
    check.add_argument("--root", required=True, help="dataset folder")
    check.add_argument("--no-progress", action="store_true", help="no progress bar while the images are checked")
    check.add_argument(
        "--quick",
        action="store_true",
        help="CoOp's datasets: compare class names and image counts only, opening no image (ImageNet-sized roots)",
    )
    check.set_defaults(func=cmd_data_check)
    synth = data.add_parser("synth", help="write a small learnable synthetic image set in a real layout")
    synth.add_argument("--out", required=True, help="folder to write the dataset to")
    synth.add_argument("--layout", required=True, choices=DATASETS, help="whose folder layout and domains to write")
    synth.add_argument(
        "--per-class", type=int, default=None, help="images per class per domain (default: 10; CoOp's datasets: 3)"
    )
    synth.add_argument(
        "--classes",
        type=int,
        default=None,
        help="classes (default: the folder layout 10, at most 16; CoOp's datasets: their real count, or fewer)",
    )
    synth.add_argument("--seed", type=int, default=0, help="seeds the drawing")
    synth.add_argument(
        "--related-pairs",
        action="store_true",
        help="the second half of the domains draws every class as another class looks "
        "(a known answer for task grouping)",
    )
    synth.add_argument(
        "--own-split", action="store_true", help="OxfordPets: no split JSON, its annotations' trainval/test instead"
    )
    synth.set_defaults(func=cmd_data_synth)
    tiny = data.add_parser("tiny-clip", help="pre-train the tiny CLIP for the demo and tests")
    tiny.add_argument("--data", required=True, help="a synthetic dataset from `data synth`")
    tiny.add_argument("--dataset", default=None, choices=DATASETS, help="its layout (default: guessed)")
    tiny.add_argument("--out", required=True, help="checkpoint file to write")
    tiny.add_argument("--steps", type=int, default=2000, help="contrastive pre-training steps")
    tiny.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the batches")
    tiny.set_defaults(func=cmd_data_tiny_clip)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return answered(lambda: args.func(args), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
