"""The `petl-bench run` command line and the `RunConfig` it means: the one mapping between them.

`petl-bench run`, a sweep's grid entries and the sweep's runs all build their config here, so a run
from a grid and the same run typed by hand are one config; `run_argv` spells a config as the
command line that rebuilds it (what a sweep logs and what a Slurm job runs).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .config import (
    CLASS_SUBSETS,
    DATASETS,
    DEFAULT_ARCH,
    RECIPES,
    SETTABLE,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    default_pretrained,
    from_dict,
    validate,
)
from .recipes import recipe_items


def add_run_options(run: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `petl-bench run` (the subcommand's parser, filled in place)."""
    run.add_argument("--method", required=True, help="a registered method (`petl-bench methods` lists them)")
    run.add_argument(
        "--dataset",
        required=True,
        metavar="DATASET",
        help=f"the dataset's layout: {', '.join(DATASETS)}; or several joined by + (a+b: one run over all "
        "their tasks, in this order)",
    )
    run.add_argument(
        "--root", required=True, help="dataset folder; for a+b, the folder holding each one's (catalog.DATASET_FOLDERS)"
    )
    run.add_argument("--split", default="6shot", help="Nshot or a paper alias (10pct, 20pct, 1pct, 2pct)")
    run.add_argument("--seed", type=int, default=0, help="seeds the split draw and training")
    run.add_argument(
        "--classes",
        default="all",
        choices=CLASS_SUBSETS,
        help="every class, or CoOp's base (first half of the sorted labels) or novel half",
    )
    run.add_argument("--model", default=DEFAULT_ARCH, help="open_clip architecture, or 'tiny'")
    run.add_argument(
        "--pretrained", default=None, help="open_clip tag or checkpoint file (default: openai; none for 'tiny')"
    )
    run.add_argument(
        "--precision", default=None, help="Lightning precision, e.g. bf16-mixed (default: train.precision, auto)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config field (sections: method, data, model, optim, train, logging; "
        "`petl-bench config [--method M]` lists every key with its default and range)",
    )
    run.add_argument(
        "--recipe",
        default="shared",
        choices=RECIPES,
        help="shared: the MmAP paper's recipe for every method (default); paper: the method's own paper's "
        "(benchmarks/recipes/), under any --set",
    )
    run.add_argument("--out", default="results", help="results folder")
    run.add_argument(
        "--force",
        action="store_true",
        help="run again from scratch even if a record or a checkpoint exists, replacing them",
    )
    run.add_argument(
        "--if-locked",
        default="wait",
        choices=["wait", "skip"],
        help="when another process is running this run: wait for it (default), or skip it (exit status 75)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--wandb", action="store_true", help="also log to W&B (offline without an API key)")
    return run


def add_transfer_options(parser: argparse.ArgumentParser, source=None) -> argparse.ArgumentParser:
    """The options of a transfer run (`petl-bench eval --from RUN`); `--from` goes in `source` (a
    group of the eval command, beside `--ckpt`), else it is required."""
    (source or parser).add_argument(
        "--from",
        dest="source",
        metavar="RUN",
        required=source is None,
        help="a finished run's record (seed{K}.json) or folder: its parameters tested on --dataset/--root/--classes, "
        "recorded as a run of its own",
    )
    parser.add_argument(
        "--root", default=None, help="dataset folder: if it moved since the run (--ckpt), or the target's (--from)"
    )
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, metavar="DATASET", help="--from: the target dataset"
    )
    parser.add_argument(
        "--classes", default="all", choices=CLASS_SUBSETS, help="--from: the target's classes: all, base or novel"
    )
    parser.add_argument("--force", action="store_true", help="--from: test again even if the transfer's record exists")
    parser.add_argument(
        "--if-locked",
        default="wait",
        choices=["wait", "skip"],
        help="--from: when another process runs this transfer: wait for it (default), or skip it (exit status 75)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def transfer_argv(cfg: RunConfig, force: bool = False) -> list[str]:
    """The `petl-bench eval --from` command line of a transfer run's config (`transfer.transfer_config`)."""
    assert cfg.transfer_from is not None  # a transfer run's config
    return [
        "eval",
        f"--from={Path(cfg.out) / cfg.transfer_from['run']}",
        f"--dataset={cfg.data.dataset}",
        f"--root={cfg.data.root}",
        f"--classes={cfg.data.classes}",
        "--no-progress",
        *(["--force"] if force else []),
    ]


def build_run_config(
    method: str,
    dataset: str,
    root: str,
    split: str = "6shot",
    seed: int = 0,
    model: str = DEFAULT_ARCH,
    pretrained: str | None = None,
    out: str = "results",
    precision: str | None = None,
    wandb: bool = False,
    overrides=(),
    recipe: str = "shared",
    classes: str = "all",
) -> RunConfig:
    """A run's config from `petl-bench run`'s options: the sections' defaults, the `recipe`'s values
    for the dataset and shot count (`petl_bench.recipes`), then `overrides` (`--set` items).
    Weights named by neither `pretrained` nor `model.pretrained=` are the model's default ones
    (`config.default_pretrained`: none for `tiny`), however the model was named. Every value is
    checked (`config.validate`)."""
    from .registry import get_method

    entry = get_method(method)
    cfg = RunConfig(
        method=method,
        params=entry.config_cls(),
        data=DataConfig(dataset=dataset, root=root, split=split, seed=seed, classes=classes),
        model=ModelConfig(arch=model, pretrained=None if pretrained == "none" else pretrained),
        out=out,
        recipe=recipe,
    )
    cfg = apply_overrides(cfg, recipe_items(recipe, method, dataset, split))
    if precision:
        cfg.train.precision = precision
    cfg.logging.wandb = wandb
    cfg = apply_overrides(cfg, list(overrides))
    if pretrained is None and not any(item.partition("=")[0].strip() == "model.pretrained" for item in overrides):
        cfg.model.pretrained = default_pretrained(cfg.model.arch)
    return validate(cfg)


def saved_config(saved: dict, params: dict) -> RunConfig:
    """The config a run saved (`RunConfig.to_dict`, in its checkpoint and record) with the method's
    `params` as the run resolved them (e.g. MmAP's groups); a field a section no longer has is a
    one-line UserError. KeyError or TypeError where `saved` is no run config."""
    from .registry import get_method

    sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
    return RunConfig(
        method=saved["method"],
        params=from_dict(get_method(saved["method"]).config_cls, params),
        **{name: from_dict(kind, saved[name]) for name, kind in sections.items()},
        out=saved["out"],
        recipe=saved.get("recipe", "shared"),
        transfer_from=saved.get("transfer_from"),
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return build_run_config(
        args.method,
        args.dataset,
        args.root,
        args.split,
        args.seed,
        args.model,
        args.pretrained,
        args.out,
        args.precision,
        args.wandb,
        args.set,
        args.recipe,
        args.classes,
    )


def parse_run_argv(argv: list[str]) -> RunConfig:
    """The config `petl-bench run ARGV...` builds (argv without the leading `run`)."""
    return config_from_args(add_run_options(argparse.ArgumentParser(prog="petl-bench run")).parse_args(argv))


def run_argv(cfg: RunConfig, force: bool = False) -> list[str]:
    """`petl-bench run` arguments that build exactly `cfg`: the base options, then `--set` for every
    field that differs from what they alone give."""
    base = [
        f"--method={cfg.method}",
        f"--dataset={cfg.data.dataset}",
        f"--root={cfg.data.root}",
        f"--split={cfg.data.split}",
        f"--seed={cfg.data.seed}",
        f"--model={cfg.model.arch}",
        f"--pretrained={cfg.model.pretrained or 'none'}",
        f"--out={cfg.out}",
        *([f"--recipe={cfg.recipe}"] if cfg.recipe != "shared" else []),
        "--no-progress",
        *(["--force"] if force else []),
    ]
    plain = parse_run_argv(base)
    argv = list(base)
    for section in SETTABLE:
        ours, theirs = getattr(cfg, section), getattr(plain, section)
        for f in dataclasses.fields(ours):
            value = getattr(ours, f.name)
            if value != getattr(theirs, f.name):
                prefix = "method" if section == "params" else section
                argv.append(f"--set={prefix}.{f.name}={'none' if value is None else value}")
    if dataclasses.asdict(parse_run_argv(argv)) != dataclasses.asdict(cfg):
        raise RuntimeError(f"run_argv cannot express this config: {cfg}")  # a field type it cannot spell
    return ["run", *argv]
