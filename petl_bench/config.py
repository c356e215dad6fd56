"""Typed run configuration. The CLI and the sweep driver build the same `RunConfig`.

Precedence: dataclass defaults < YAML grid values < `--set section.key=value` on the command line.

Every field's range lives beside it: `lr: float = rule(0.0035, gt=0)` (bounds `ge`/`gt`/`le`/`lt`,
or `choices`, or `template` for a class prompt, or `dataset` for a `--dataset` value), and
`validate` checks every rule of every section, a method's own fields included, whenever a
`RunConfig` is built (`runargs.build_run_config`, `run.build`): a value out of range is a one-line
`UserError` before any work. A new field takes a rule in the same line as its default.
What no single field's rule can say (MmAP's m must divide b) is the method config's `check()`,
which `validate` calls too; a module built directly checks its config the same way
(`validate_params`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datamodules.catalog import (
    CLASS_SUBSETS,
    DATASETS,
    DOMAINS,
    PAPER_BATCH_SIZE,
    PAPER_SPLITS,
    TITLES,
    canonical_dataset,
    canonical_split,
    dataset_problem,
    own_template,
)
from .errors import UserError, did_you_mean, near_names

DEFAULT_ARCH = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
TINY = "tiny"  # the tiny random-init CLIP of tests and the demo: no pretrained tags
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")  # Lightning's names
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass(frozen=True)
class Rule:
    """The values a config field may take: bounds and/or a set of choices."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    template: bool = False  # a class prompt: empty, or text with exactly one `{}` (where the class name goes)
    dataset: bool = False  # a dataset's name, or several joined by + (catalog.dataset_problem)

    def problem(self, value) -> str | None:
        """What is wrong with `value`, or None. None values (optional fields) pass."""
        if value is None:
            return None
        if self.template and value and not (value.count("{}") == value.count("{") == value.count("}") == 1):
            return "must be empty or hold exactly one {} (where the class name goes) and no other brace"
        if self.dataset:
            problem = dataset_problem(value)
            return f"must be a known dataset or several joined by +; {problem}" if problem else None
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        for name, holds, words in (
            ("ge", operator.ge, ">="),
            ("gt", operator.gt, ">"),
            ("le", operator.le, "<="),
            ("lt", operator.lt, "<"),
        ):
            bound = getattr(self, name)
            if bound is not None and not holds(value, bound):
                return f"must be {words} {bound}"
        return None

    def describe(self) -> str:
        """The range in words, e.g. `>= 0, < 1` or `one of sum, mean`."""
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.template:
            return "empty, or text with one {}"
        if self.dataset:
            return f"one of {', '.join(DATASETS)}, or several joined by +"
        return ", ".join(
            f"{words} {getattr(self, name)}"
            for name, words in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if getattr(self, name) is not None
        )


def rule(default, **limits) -> Any:
    """A dataclass field whose value `validate` keeps within `limits` (`Rule`'s ge, gt, le, lt, choices, template)."""
    return field(default=default, metadata={"rule": Rule(**limits)})


def default_pretrained(arch: str) -> str | None:
    """The weights a model gets when none are named: OpenAI's for open_clip models, none for tiny."""
    return None if arch == TINY else DEFAULT_PRETRAINED


@dataclass
class MethodConfig:
    """Base of every method's config; a method adds its own fields."""

    def check(self) -> None:
        """Constraints between fields, which `validate` checks after each field's rule: a one-line
        UserError naming the fields as `--set` spells them. None by default."""

    def tag(self) -> str:
        """Run-name suffix for non-default fields, e.g. `-n_ctx8`; empty for the defaults."""
        default = type(self)()
        return "".join(
            f"-{f.name}{_path_safe(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        )


@dataclass
class DataConfig:
    # one of DATASETS, or several joined by + (`pacs+vlcs`: one run over all their tasks, in this order)
    dataset: str = rule("officehome", dataset=True)
    root: str = ""  # dataset folder in the layout of its reader
    split: str = "6shot"  # Nshot, or a paper alias such as 10pct
    seed: int = rule(0, ge=0, le=2**32 - 1)  # seeds the split draw and training (NumPy's seed range)
    batch_size: int = rule(0, ge=0)  # images per task per step; 0 = the dataset's paper value (16 / 4)
    eval_batch_size: int = rule(64, ge=1)
    # loader worker processes in all; -1: one per usable CPU (affinity, Slurm) less one
    num_workers: int = rule(-1, ge=-1)
    crop_scale_min: float = rule(0.08, gt=0, le=1)  # RandomResizedCrop lower scale for training images (CoOp's)
    drop_last: bool = True  # drop a task's incomplete last training batch if it has a full one (Dassl's)
    cache_dir: str = ""  # cache folder; empty: $PETL_BENCH_CACHE, else {out}/cache; "off": no caches
    cache_gb: float = rule(50.0, gt=0)  # size bound of the cache folder; least recently used entries go first
    # the class prompt, `{}` standing for the class name; "": the dataset's own (CoOp's per-dataset one)
    template: str = rule("", template=True)
    # The classes a run trains and tests on: all, or CoOp's base / novel half (datamodules/classes.py)
    classes: str = rule("all", choices=CLASS_SUBSETS)
    # Leave-one-domain-out (DomainBed's protocol): "" trains and tests every domain; a domain of the
    # dataset (catalog.DOMAINS, checked by `check_sections`) is held out: the run trains on the others
    # pooled as one task and tests on every image of this one (datamodules/holdout.py)
    holdout: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.dataset, str):  # `pacs + vlcs` is `pacs+vlcs`: one record path, one hash
            self.dataset = canonical_dataset(self.dataset)


def resolved_root(root: str) -> str:
    """A dataset root's identity: its absolute path, `~` expanded and symlinks resolved, so two
    spellings of one folder are one root; "" where none is given."""
    return str(Path(root).expanduser().resolve()) if str(root).strip() else ""


NO_ROOT = "no-root"  # the path component of configs that name no root (a table's grid before it has one)


def root_folder(root: str) -> str:
    """The path component that keeps results of one dataset root apart from another's under one
    `--out`: the folder's name (readable) and 8 hex digits of its resolved path (unique), e.g.
    `OfficeHome-3fa2b1c0`."""
    identity = resolved_root(root)
    if not identity:
        return NO_ROOT
    name = _path_safe(Path(identity).name)[:40] or "root"
    # A root's name need not be UTF-8: hash the bytes the file system holds (files.py's policy).
    return f"{name}-{hashlib.sha256(identity.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


@dataclass
class ModelConfig:
    arch: str = DEFAULT_ARCH  # open_clip architecture, or `tiny`
    pretrained: str | None = DEFAULT_PRETRAINED  # open_clip tag, local checkpoint file, or None
    # QuickGELU (OpenAI's activation) or GELU; None: from a `-quickgelu` arch, the tag, or a file
    # that is OpenAI's release (weights.trained_with_quick_gelu); another file may need it said
    quick_gelu: bool | None = None


SCHEDULES = ("dassl", "linear-cosine")
OPTIMIZERS = ("sgd", "adamw")
TASK_LOSSES = ("sum", "mean")
RECIPES = ("shared", "paper")  # the suite's one recipe for every method (MmAP's), or each method's own


@dataclass
class OptimConfig:
    """The paper gives SGD and lr 0.0035 (with 5 epochs and batch 16 / 4: `TrainConfig`,
    `DataConfig`); momentum, weight decay, the warm-up and the schedule are the reference code's,
    Dassl's as MaPLe's `vit_b16_c2_ep5_batch4_2ctx.yaml` configures it (docs/faithfulness.md)."""

    # sgd: torch's SGD with `momentum`; adamw: torch's AdamW, its default betas, `eps` (`momentum` unused)
    optimizer: str = rule("sgd", choices=OPTIMIZERS)
    lr: float = rule(0.0035, gt=0)  # the paper's
    eps: float = rule(1e-8, gt=0)  # AdamW's epsilon (torch's default; Tip-Adapter-F's 1e-4); unused by sgd
    momentum: float = rule(0.9, ge=0, lt=1)  # Dassl's default OPTIM.MOMENTUM
    weight_decay: float = rule(5e-4, ge=0)  # Dassl's default OPTIM.WEIGHT_DECAY
    # dassl: stepped per epoch, `warmup_lr` for `warmup_epochs`, then cosine over `train.epochs`
    # counted from the warm-up's end (Dassl's ConstantWarmupScheduler + CosineAnnealingLR);
    # linear-cosine: stepped per batch, linear warm-up from 0 over `warmup_epochs`, cosine to 0
    # at the last step (of `train.epochs`, or of `train.iterations`).
    schedule: str = rule("dassl", choices=SCHEDULES)
    warmup_epochs: int = rule(1, ge=0)  # MaPLe's WARMUP_EPOCH
    warmup_lr: float = rule(1e-5, ge=0)  # the dassl warm-up's constant lr, MaPLe's WARMUP_CONS_LR


@dataclass
class TrainConfig:
    epochs: int = rule(5, ge=1)  # the paper's; unused when `iterations` is set
    # 0: train `epochs` epochs; N: train N optimiser steps (as CLIP-LoRA counts), epochs as many as they take
    iterations: int = rule(0, ge=0)
    # Lightning's, e.g. 32-true; auto: bf16-mixed on a GPU with bf16, else 32-true
    precision: str = rule("auto", choices=PRECISIONS)
    accelerator: str = rule("auto", choices=ACCELERATORS)
    limit_train_batches: float = rule(1.0, gt=0, le=1)  # fraction of each epoch's batches
    fast_dev_run: bool = False
    # How a step combines the tasks' mean cross-entropies: sum (MmAP's eq. 11 for a group's
    # shared prompts; the default for every method) or mean.
    task_loss: str = rule("sum", choices=TASK_LOSSES)


@dataclass
class LoggingConfig:
    """Where a run is also reported. It never changes a result, so it is left out of `to_dict`,
    the config hash and the run name: turning W&B on does not make finished runs stale."""

    wandb: bool = False  # add a W&B run beside the CSV log
    project: str = "petl-bench"  # W&B project


@dataclass
class RunConfig:
    method: str
    params: MethodConfig
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "results"
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # whose recipe the sections start from (`petl_bench.recipes`): the suite's shared one, or the method's paper's
    recipe: str = rule("shared", choices=RECIPES)
    # An evaluation-only transfer run: the finished run whose trained parameters it tests on this
    # config's data, {"run": its record's path relative to `out`, "config_sha256": its config's}
    transfer_from: dict | None = None

    @property
    def run_name(self) -> str:
        """The method plus a tag for any non-default variant, e.g. `coop-mt+paper@ViT-S-32`; a
        transfer run's ends in its source's config hash, `coop-from-3fa2b1c0d4`."""
        name = self.method + self.params.tag()
        if self.recipe != "shared":
            name += f"+{self.recipe}"
        if (self.model.arch, self.model.pretrained) != (DEFAULT_ARCH, DEFAULT_PRETRAINED):
            name += f"@{self.model.arch}"
            if self.model.pretrained not in (None, DEFAULT_PRETRAINED):
                name += f"-{_short_weights(self.model.pretrained)}"
        if self.transfer_from is not None:
            name += f"-from-{self.transfer_from['config_sha256'][:10]}"
        return name

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "params": dataclasses.asdict(self.params),
            **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS if name != "params"},
            "out": self.out,
            "recipe": self.recipe,
            **({"transfer_from": self.transfer_from} if self.transfer_from is not None else {}),
        }

    def sha256(self) -> str:
        return self.sha256_of(self.to_dict())

    @staticmethod
    def sha256_of(config: dict) -> str:
        """Hash of what decides the result: the dataset root (as `resolved_root`), not where results
        go, nor loader settings. Two spellings of one run hash alike (`10pct` and `6shot`; batch size
        0 and the dataset's paper value; `~/data` and its absolute path; template "" and the
        dataset's own; `pacs + vlcs` and `pacs+vlcs`, but not `vlcs+pacs`: task order is the given
        order), so a k-shot sweep finds the runs a 10pct/20pct sweep already made; `data.classes`
        counts only when it is a subset, so records written before subsets existed keep their hash."""
        d = json.loads(json.dumps(config))
        d.pop("out", None)
        if isinstance(d.get("transfer_from"), dict):  # the source's config decides, not where its record lies
            d["transfer_from"].pop("run", None)
        data = d.get("data", {})
        data["root"] = resolved_root(data.get("root", ""))  # a subset and the full set are other inputs
        for key in ("num_workers", "eval_batch_size", "cache_dir", "cache_gb"):
            data.pop(key, None)
        dataset = data.get("dataset")
        if isinstance(dataset, str):  # joined datasets: task order counts, spaces around + do not
            data["dataset"] = dataset = canonical_dataset(dataset)
        if data.get("split") in PAPER_SPLITS.get(dataset, {}):
            data["split"] = canonical_split(dataset, data["split"])
        if data.get("batch_size") == 0 and dataset in PAPER_BATCH_SIZE:
            data["batch_size"] = PAPER_BATCH_SIZE[dataset]
        train = d.get("train", {})
        if train.get("iterations"):  # a run of N steps trains as long whatever `epochs` says
            train.pop("epochs", None)
        own = own_template(dataset) if isinstance(dataset, str) else None  # None: joined datasets' differ
        if data.get("template") == "" or (own is not None and data.get("template") == own):
            del data["template"]  # the dataset's own, however spelt, hashes as configs did before the field
        if data.get("classes") == "all":  # the default is what every run before class subsets ran: its hash stays
            data.pop("classes")
        if data.get("holdout") == "":  # likewise for every run before leave-one-domain-out
            data.pop("holdout")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


SECTIONS = ("params", "data", "model", "optim", "train")
SETTABLE = (*SECTIONS, "logging")  # `--set` sections: the result-deciding ones plus logging
SECTION_CLASSES = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "logging": LoggingConfig,
}  # the sections every run has; `params` is the method's


def settable_fields(cls, prefix: str, values=None) -> list[tuple[str, str, str, str]]:
    """(`--set` key, type, default, range) of every field of config class `cls`, from its
    annotations and rules: what `petl-bench config` lists. `values`, an instance of `cls`: its
    values instead of the defaults (a recipe's)."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        kind = getattr(hints[f.name], "__name__", None) or str(hints[f.name])
        limits = f.metadata["rule"].describe() if "rule" in f.metadata else ("true or false" if kind == "bool" else "")
        value = f.default if values is None else getattr(values, f.name)
        rows.append((f"{prefix}.{f.name}", kind, repr(value) if isinstance(value, str) else str(value), limits))
    return rows


def validate(cfg: RunConfig) -> RunConfig:
    """`cfg`, if every field of every section keeps its `rule`, every number is finite
    (`inf`, `nan` and `1e309` parse as floats) and the method's fields agree (`MethodConfig.check`);
    else a one-line UserError that names the field as `--set` spells it."""
    validate_params(cfg.params)
    for section in SETTABLE:
        if section != "params":
            _keep_rules(getattr(cfg, section), section)
    problem = _rule(RunConfig, "recipe").problem(cfg.recipe)
    if problem:
        raise UserError(f"--recipe {cfg.recipe!r}: {problem}")
    check_sections(cfg)
    return cfg


def check_sections(cfg: RunConfig) -> None:
    """Constraints between the sections' fields, as `MethodConfig.check` is between a method's."""
    if cfg.train.iterations and cfg.optim.schedule == "dassl":
        raise UserError(
            f"train.iterations={cfg.train.iterations}: optim.schedule=dassl steps once per epoch; "
            "an iteration-based run takes optim.schedule=linear-cosine"
        )
    if cfg.data.holdout:
        check_holdout(cfg.method, cfg.data.dataset, cfg.data.holdout)


def check_holdout(method: str, dataset: str, holdout: str) -> None:
    """A held-out domain is one of the dataset's, and the method is no `-mt` variant: the run's one
    task (the pooled source) gives a multi-task method's shared set exactly its single-task sibling's."""
    domains = DOMAINS.get(dataset)
    if domains is None:
        multi = ", ".join(TITLES[d] for d in DOMAINS)
        raise UserError(f"data.holdout={holdout!r}: {dataset} has no domains to hold out (multi-domain: {multi})")
    if holdout not in domains:
        hint = did_you_mean(holdout, domains) or f"its domains: {', '.join(domains)}"
        raise UserError(f"data.holdout={holdout!r}: not a domain of {TITLES[dataset]} ({hint})")
    if method.endswith("-mt"):
        raise UserError(
            f"{method} on data.holdout={holdout}: a leave-one-domain-out run trains one task (the pooled source "
            f"domains), where a shared set is {method.removesuffix('-mt')}'s; run {method.removesuffix('-mt')}"
        )


def _rule(cls, name: str) -> Rule:
    return next(f.metadata["rule"] for f in dataclasses.fields(cls) if f.name == name)


def validate_params(params: MethodConfig) -> MethodConfig:
    """A method's own config, checked as `validate` checks it (its fields' rules, then `check`)."""
    _keep_rules(params, "method")
    params.check()
    return params


def _keep_rules(values, prefix: str) -> None:
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        problem = f.metadata["rule"].problem(value) if "rule" in f.metadata else None
        if isinstance(value, float) and not math.isfinite(value):
            problem = "must be a finite number"
        if problem:
            raise UserError(f"{prefix}.{f.name}={value!r}: {problem}")


def from_dict(cls, values: dict):
    """`cls(**values)` for a section stored as a dict (a checkpoint's); a field it no longer has is
    a one-line UserError, one it lacks takes its default, and `validate` checks the values."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(
            f"{cls.__name__} has no field {', '.join(unknown)} any more (it has {', '.join(names) or 'none'})"
        )
    return cls(**values)


def _path_safe(value) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_")


def _short_weights(pretrained: str) -> str:
    from pathlib import Path

    return Path(pretrained).stem if ("/" in pretrained or "." in pretrained) else pretrained


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (section: params|method, data, model, optim, train,
    logging)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        section = "params" if section == "method" else section
        if not sep or not dot or section not in SETTABLE:
            raise UserError(
                f"--set {item!r}: expected section.key=value with section one of "
                "method, data, model, optim, train, logging"
            )
        target = getattr(cfg, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            spelt = key.strip().partition(".")[0]
            near = near_names(name, fields)
            hint = f"did you mean {', '.join(f'{spelt}.{n}' for n in near)}? " if near else ""
            valid = ", ".join(f"{spelt}.{f}" for f in fields) or "none"  # a section's keys are few: all of them
            raise UserError(f"--set {item!r}: unknown key {name!r} ({hint}valid: {valid})")
        value = parse_value(raw.strip(), _field_type(type(target), name), item)
        setattr(cfg, section, dataclasses.replace(target, **{name: value}))
    return cfg


def _field_type(cls, name):
    return typing.get_type_hints(cls)[name]


def parse_value(raw: str, annotation, context: str):
    """Parse a command-line string into the field's declared type."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in options and raw.lower() in ("none", "null", ""):
        return None
    for kind in (t for t in options if t is not type(None)):
        try:
            if kind is bool:
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            return kind(raw)
        except ValueError:
            continue
    names = "/".join(getattr(t, "__name__", str(t)) for t in options)
    raise UserError(f"--set {context!r}: {raw!r} is not a valid {names}")
