"""Typed run configuration. The CLI and the sweep driver build the same `RunConfig`.

Precedence: dataclass defaults < YAML grid values < `--set section.key=value` on the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field

from .errors import UserError

DEFAULT_ARCH = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
DATASETS = ("officehome", "minidomainnet", "folder")  # the readers of petl_bench.datamodules.records


@dataclass
class MethodConfig:
    """Base of every method's config; a method adds its own fields."""

    def tag(self) -> str:
        """Run-name suffix for non-default fields, e.g. `-n_ctx8`; empty for the defaults."""
        default = type(self)()
        return "".join(f"-{f.name}{_path_safe(getattr(self, f.name))}" for f in dataclasses.fields(self)
                       if getattr(self, f.name) != getattr(default, f.name))


@dataclass
class DataConfig:
    dataset: str = "officehome"  # officehome | minidomainnet | folder
    root: str = ""  # dataset folder in the layout of its reader
    split: str = "6shot"  # Nshot, or a paper alias such as 10pct
    seed: int = 0  # seeds the split draw and training
    batch_size: int = 0  # images per task per step; 0 = the dataset's paper value (16 / 4)
    eval_batch_size: int = 64
    num_workers: int = -1  # loader worker processes in all; -1: one per usable CPU (affinity, Slurm) less one
    crop_scale_min: float = 0.08  # RandomResizedCrop lower scale for training images (CoOp's)
    cache_dir: str = ""  # cache folder; empty: $PETL_BENCH_CACHE, else {out}/cache; "off": no caches
    cache_gb: float = 50.0  # size bound of the cache folder; least recently used entries go first


@dataclass
class ModelConfig:
    arch: str = DEFAULT_ARCH  # open_clip architecture, or `tiny`
    pretrained: str | None = DEFAULT_PRETRAINED  # open_clip tag, local checkpoint file, or None


@dataclass
class OptimConfig:
    """The paper's recipe: SGD, lr 0.0035, cosine schedule after one warm-up epoch."""

    lr: float = 0.0035
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up from 0, then cosine decay to 0


@dataclass
class TrainConfig:
    epochs: int = 5
    precision: str = "auto"  # Lightning's, e.g. 32-true; auto: bf16-mixed on a GPU with bf16, else 32-true
    accelerator: str = "auto"
    limit_train_batches: float = 1.0  # fraction (<=1.0) or number of batches per epoch
    fast_dev_run: bool = False


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

    @property
    def run_name(self) -> str:
        """The method plus a tag for any non-default variant, e.g. `coop-mt@ViT-S-32`."""
        name = self.method + self.params.tag()
        if (self.model.arch, self.model.pretrained) != (DEFAULT_ARCH, DEFAULT_PRETRAINED):
            name += f"@{self.model.arch}"
            if self.model.pretrained not in (None, DEFAULT_PRETRAINED):
                name += f"-{_short_weights(self.model.pretrained)}"
        return name

    def to_dict(self) -> dict:
        return {"method": self.method, "params": dataclasses.asdict(self.params),
                **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS if name != "params"},
                "out": self.out}

    def sha256(self) -> str:
        return self.sha256_of(self.to_dict())

    @staticmethod
    def sha256_of(config: dict) -> str:
        """Hash of what decides the result: not where files live, nor loader settings. Two spellings
        of one run hash alike (`10pct` and `6shot`; batch size 0 and the dataset's paper value), so
        a k-shot sweep finds the runs a 10pct/20pct sweep already made."""
        from .datamodules.multidomain import PAPER_BATCH_SIZE  # datamodules import this module
        from .datamodules.splits import PAPER_SPLITS, canonical_split

        d = json.loads(json.dumps(config))
        d.pop("out", None)
        data = d.get("data", {})
        for key in ("root", "num_workers", "eval_batch_size", "cache_dir", "cache_gb"):
            data.pop(key, None)
        dataset = data.get("dataset")
        if data.get("split") in PAPER_SPLITS.get(dataset, {}):
            data["split"] = canonical_split(dataset, data["split"])
        if data.get("batch_size") == 0 and dataset in PAPER_BATCH_SIZE:
            data["batch_size"] = PAPER_BATCH_SIZE[dataset]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


SECTIONS = ("params", "data", "model", "optim", "train")
SETTABLE = (*SECTIONS, "logging")  # `--set` sections: the result-deciding ones plus logging


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
            raise UserError(f"--set {item!r}: expected section.key=value with section one of "
                            "method, data, model, optim, train, logging")
        target = getattr(cfg, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            valid = ", ".join(f"{key.partition('.')[0]}.{f}" for f in fields) or "none"
            raise UserError(f"--set {item!r}: unknown key {name!r} (valid: {valid})")
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
