"""One run: build backbone, data and method from a `RunConfig`, train, test, write the record.

The record lands at `{out}/runs/{dataset}/{split}/{run_name}/seed{K}.json`, written to a temporary
file and renamed, so a killed run never leaves a half-written record. Lightning's CSV logs and the
epoch checkpoints live beside it in `seed{K}/`; a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import resource
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from .backbone import ClipBackbone
from .config import RunConfig
from .datamodules import MultiDomainDataModule, canonical_split
from .errors import UserError
from .files import write_json_atomic
from .module import PetlModule
from .registry import get_method

VERSIONED = ("torch", "torchvision", "open_clip_torch", "lightning", "torchmetrics", "petl-bench")


def record_path(cfg: RunConfig) -> Path:
    split = canonical_split(cfg.data.dataset, cfg.data.split)
    return Path(cfg.out) / "runs" / cfg.data.dataset / split / cfg.run_name / f"seed{cfg.data.seed}.json"


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or unreadable: not done


class Throughput(Callback):
    """Training images per second, over the optimisation steps only."""

    def __init__(self):
        self.images, self.seconds, self._start = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start
        self.images += sum(len(labels) for _, labels in batch.values())

    @property
    def per_second(self) -> float | None:
        return round(self.images / self.seconds, 2) if self.seconds else None


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (device lists, tips) out of the run's output."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own deprecation, not ours
    warnings.filterwarnings("ignore", ".*`srun` command is available.*")  # one process per run is meant


def build(cfg: RunConfig) -> tuple[PetlModule, MultiDomainDataModule, dict]:
    """The method module and its data module, as `Trainer.fit(module, datamodule)` takes them, and
    what the method's `prepare` found (e.g. MmAP's task groups) for the run record."""
    entry = get_method(cfg.method)
    if not isinstance(cfg.params, entry.config_cls):
        raise UserError(f"method {cfg.method!r} takes a {entry.config_cls.__name__}")
    L.seed_everything(cfg.data.seed, workers=True, verbose=False)  # random-init weights and prompts
    backbone = ClipBackbone.from_pretrained(cfg.model.arch, cfg.model.pretrained)
    data = MultiDomainDataModule.for_backbone(cfg.data, backbone, out=cfg.out)
    data.setup("fit")
    params, prepared = entry.cls.prepare(cfg, backbone, data, record_path(cfg).with_suffix(""))
    module = entry.cls(params, backbone, data.tasks, cfg.optim)
    module.checkpoint_meta = {"run_config": cfg.to_dict()}
    return module, data, prepared


def execute(cfg: RunConfig, progress: bool = True) -> dict:
    """Train (unless nothing is trainable) and test; write and return the run record."""
    started = time.time()
    quiet_lightning()
    module, data, prepared = build(cfg)
    path = record_path(cfg)
    work_dir = path.with_suffix("")
    throughput = Throughput()
    # No monitor and top-1: each epoch's end replaces checkpoints/last.ckpt.
    checkpoints = ModelCheckpoint(dirpath=work_dir / "checkpoints", filename="last", save_top_k=1,
                                  save_on_train_epoch_end=True, enable_version_counter=False)
    loggers = [CSVLogger(work_dir, name="logs", version="")]
    wandb = cfg.logging.wandb and not cfg.train.fast_dev_run  # a smoke test logs nowhere
    if wandb:
        from .tracking import wandb_logger

        loggers.append(wandb_logger(cfg, work_dir))
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, precision=cfg.train.precision, accelerator=cfg.train.accelerator,
        devices=1, limit_train_batches=cfg.train.limit_train_batches, fast_dev_run=cfg.train.fast_dev_run,
        logger=loggers, callbacks=[throughput, checkpoints],
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, log_every_n_steps=10, default_root_dir=work_dir)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        if module.num_trainable and module.trained_by_sgd:
            trainer.fit(module, datamodule=data, ckpt_path=resumable_checkpoint(work_dir, cfg))
        trainer.test(module, datamodule=data, verbose=False)
    finally:
        module.release()  # the backbone may serve the next run
    record = {
        "method": cfg.method,
        "run_name": cfg.run_name,
        "dataset": cfg.data.dataset,
        "split": canonical_split(cfg.data.dataset, cfg.data.split),
        "seed": cfg.data.seed,
        "model": cfg.model.arch,
        "pretrained": cfg.model.pretrained,
        "tasks": module.task_names,
        "accuracy": {k: round(v, 4) for k, v in module.test_accuracy.items()},
        "trainable_params": module.num_trainable,
        "total_params": sum(p.numel() for p in module.parameters()),
        "train_images": len(data.train_records),
        "test_images": len(data.test_records),
        "split_file": str(data.split_file),
        "split_sha256": data.split_sha256,
        "skipped_images": data.manifest.skipped,
        "synthetic": data.manifest.synthetic,
        "wall_s": round(time.time() - started, 2),
        "device": _device_name(),
        "train_images_per_s": throughput.per_second,
        "peak_memory_mb": _peak_memory_mb(),
        "git": _git_revision(),
        "versions": _versions(),
        "prepared": prepared,
        "resolved_params": dataclasses.asdict(module.cfg),
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cfg.train.fast_dev_run:
        return record  # a smoke test: nothing to keep
    write_json_atomic(path, record)
    if wandb:
        from .tracking import finish_wandb

        hint = finish_wandb(loggers[-1], record)
        if hint:
            print(hint)
    return record


def resumable_checkpoint(work_dir: Path, cfg: RunConfig) -> Path | None:
    """The last epoch checkpoint of an earlier attempt at this very config, if there is one."""
    last = work_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        meta = torch.load(last, map_location="cpu", weights_only=False).get("petl_bench", {})
        same = RunConfig.sha256_of(meta.get("run_config", {})) == cfg.sha256()
    except Exception:  # a checkpoint cut short by a kill, or an unrelated file: start afresh
        same = False
    if not same:
        last.unlink()
        return None
    return last


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # resident set, KiB on Linux


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
