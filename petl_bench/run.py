"""One run: build backbone, data and method from a `RunConfig`, train, test, write the record.

The record lands at `{out}/runs/{dataset}/{root}/{split}/{run_name}/seed{K}.json` (`results.py`),
written to a temporary file and renamed, so a killed run never leaves a half-written record. Lightning's CSV logs, the
text log `run.log` (its phases, its size, a line per epoch: `runlog.py`), the epoch checkpoint and the run's lock
live beside it in `seed{K}/`. A run holds its lock while it
executes (a second launch waits for it or skips it), stops on SIGINT or SIGTERM with its last
epoch checkpoint intact, and resumes from that checkpoint exactly (`petl_bench.checkpoints`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins import CheckpointIO, LayerSync, Precision
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment

from .backbone import ClipBackbone
from .checkpoints import PROGRESS, RunProgress, StreamingCheckpointIO, load_plain, resumable_checkpoint
from .config import RunConfig, TrainConfig, resolved_root, validate
from .datamodules import MultiDomainDataModule, canonical_split
from .datamodules.records import Manifest
from .divergence import StopOnDivergence
from .errors import UserError
from .files import write_json_atomic
from .guard import Interrupted, pending_stop, raise_pending_stop, run_lock, stop_on_signals
from .hardware import allow_tf32, run_device, run_precision
from .module import PetlModule
from .phases import phase, say
from .quiet import quiet_third_parties
from .recipes import describe as describe_recipe
from .registry import get_method
from .results import SCHEMA, load_record, record_path
from .runlog import RUN_LOG, EpochLines, RunLog, text_log
from .transfer import Source, find_source, refusal

VERSIONED = ("torch", "torchvision", "open_clip_torch", "lightning", "torchmetrics", "petl-bench")


def finished_record(cfg: RunConfig, force: bool = False) -> dict | None:
    """The run's record when it is done with this config; None when there is none, or with
    `force`, or when the file is no usable record (said in one line: the run replaces it); a
    UserError when the record holds another config (only `force` replaces it)."""
    path = record_path(cfg)
    existing, problem = (None, None) if force else load_record(path)
    if problem:
        print(f"petl-bench: {path} is not a usable record ({problem}): running again", file=sys.stderr)
    if existing and existing.get("config_sha256") != cfg.sha256():
        raise UserError(
            f"{path} holds a run with a different config (config_sha256 "
            f"{str(existing.get('config_sha256'))[:12]} != {cfg.sha256()[:12]}); "
            "--force replaces it"
        )
    return existing


class FirstTestBatch(Callback):
    """When the first test batch reached the model, in seconds since `started` (time.time())."""

    def __init__(self, started: float):
        self.started, self.seconds = started, None

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if self.seconds is None:
            self.seconds = round(time.time() - self.started, 3)


class PendingStop(Callback):
    """A stop whose `Interrupted` Python dropped ends the run at the next batch's end
    (`guard.raise_pending_stop`), before Lightning turns a SIGTERM it saw into exit status 0."""

    def on_train_batch_end(self, *args):
        raise_pending_stop()

    def on_train_epoch_end(self, *args):
        raise_pending_stop()

    def on_test_batch_end(self, *args):
        raise_pending_stop()


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (device lists, tips) out of the run's output: the run says
    what it does itself (`petl_bench.phases`)."""
    quiet_third_parties()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # the worker budget is data.num_workers
    warnings.filterwarnings("ignore", ".*`srun` command is available.*")  # one process per run is meant
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")  # a resume's


def build(cfg: RunConfig) -> tuple[PetlModule, MultiDomainDataModule, dict]:
    """The method module and its data module, as `Trainer.fit(module, datamodule)` takes them, and
    what the method's `prepare` found (e.g. MmAP's task groups) for the run record."""
    entry = get_method(cfg.method)
    if not isinstance(cfg.params, entry.config_cls):
        raise UserError(f"method {cfg.method!r} takes a {entry.config_cls.__name__}")
    validate(cfg)
    L.seed_everything(cfg.data.seed, workers=True, verbose=False)  # random-init weights
    with phase("model", f"loading {cfg.model.arch}, weights {cfg.model.pretrained or 'none (random init)'}"):
        backbone = load_backbone(cfg.model.arch, cfg.model.pretrained, cfg.model.quick_gelu)
    # Again: what follows (prompts, groups) must not depend on whether building the backbone drew
    # random numbers (open_clip initialises before loading weights) or a sweep worker had it kept.
    L.seed_everything(cfg.data.seed, workers=True, verbose=False)
    data = MultiDomainDataModule.for_backbone(cfg.data, backbone, out=cfg.out)
    _scan_and_split(data)
    method = entry.cls
    assert issubclass(method, PetlModule)  # a method's class is one; the torch-free registry types it `type`
    say(size_line(cfg, data, method))
    method.check_tasks(data.tasks)  # before `prepare`: a refusal costs no feature pass
    params, prepared = method.prepare(cfg, backbone, data, record_path(cfg).with_suffix(""))
    module = method(params, backbone, data.tasks, cfg.optim)
    module.task_loss = cfg.train.task_loss
    module.checkpoint_meta = {"run_config": cfg.to_dict()}
    return module, data, prepared


def _scan_and_split(data: MultiDomainDataModule) -> None:
    with phase("scan", f"reading the {data.cfg.dataset} root {data.cfg.root}") as scan:
        manifest = data.manifest
        scan.result = (
            f"{len(manifest.records):,} images, {_count(len(manifest.domains), 'domain')}, "
            f"{sum(len(part.classnames) for part in manifest.parts or (manifest,))} classes"
        )
    subset = f" of the {data.cfg.classes} classes" if data.cfg.classes != "all" else ""
    if data.cfg.holdout:
        subset += f" from every domain but {data.cfg.holdout}, pooled as one task (tested on {data.cfg.holdout})"
    with phase("split", f"drawing {data.cfg.split}{subset}, seed {data.cfg.seed}") as split:
        data.setup("fit")
        val = f", {len(data.val_records):,} validation" if data.val_records else ""
        split.result = f"{len(data.train_records):,} training{val} and {len(data.test_records):,} test images"


def size_line(cfg: RunConfig, data: MultiDomainDataModule, method: type[PetlModule]) -> str:
    """What the run will do, before it does it: tasks and classes, training images, SGD steps, test images."""
    classes = sorted({len(task.classnames) for task in data.tasks})
    if not method.trained_by_sgd:
        training = f"no SGD ({cfg.method} is fitted in closed form)"
    elif method.shared is None:
        training = f"no SGD ({cfg.method} trains nothing)"
    else:
        epochs, steps = (1, 1) if cfg.train.fast_dev_run else (cfg.train.epochs, steps_per_epoch(data, cfg.train))
        if cfg.train.iterations and not cfg.train.fast_dev_run:
            training = (
                f"{_count(cfg.train.iterations, 'step')} ({data.batch_size} images per task a step, "
                f"{_count(steps, 'step')} an epoch)"
            )
        else:
            training = (
                f"{_count(epochs, 'epoch')} x {_count(steps, 'step')} ({data.batch_size} images per task a step) "
                f"= {_count(epochs * steps, 'step')}"
            )
    per_task = str(classes[0]) if len(classes) == 1 else f"{classes[0]}-{classes[-1]}"
    return (
        f"size: {_count(len(data.tasks), 'task')} x {per_task} classes; {len(data.train_records):,} training images, "
        f"{training}; {len(data.test_records):,} test images"
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def steps_per_epoch(data: MultiDomainDataModule, train: TrainConfig) -> int:
    """Training steps in an epoch, as the Trainer counts them: the longest task's batches (the
    other tasks' loaders cycle), cut to `train.limit_train_batches` of them."""
    longest = max(len(loader) for loader in data.train_dataloader().flattened)
    return int(longest * train.limit_train_batches)


# In a sweep worker: (arch, weights file or tag, its mtime, stated activation) -> the backbone as
# loaded, never run.
_kept_backbones: dict[tuple, ClipBackbone] | None = None


def keep_backbones() -> None:
    """From now on (in this process) keep each pre-trained backbone once loaded, for later runs."""
    global _kept_backbones
    _kept_backbones = {}


def load_backbone(arch: str, pretrained: str | None, quick_gelu: bool | None = None) -> ClipBackbone:
    """The backbone, loaded; in a sweep worker, a copy of the one kept from an earlier run (a run may
    change its copy: BitFit and full fine-tuning train its weights). Random-init backbones depend on
    the seed and are cheap: always built."""
    if _kept_backbones is None or pretrained is None:
        return ClipBackbone.from_pretrained(arch, pretrained, quick_gelu)
    path = Path(pretrained).expanduser()
    key = (arch, pretrained, path.stat().st_mtime_ns if path.is_file() else None, quick_gelu)
    if key not in _kept_backbones:
        _kept_backbones[key] = ClipBackbone.from_pretrained(arch, pretrained, quick_gelu)
    return copy.deepcopy(_kept_backbones[key])


def execute(cfg: RunConfig, progress: bool = True, force: bool = False, wait: bool = True) -> dict:
    """Train (unless nothing is trainable) and test; write and return the run record.

    Under the run's lock: when another process holds it, wait for it (and return its record if it
    finished this very run) or, with `wait=False`, raise `guard.RunBusy`. SIGINT and SIGTERM raise
    `guard.Interrupted`, saying what the last epoch checkpoint kept. An earlier attempt's checkpoint
    is resumed exactly; `force` trains again from scratch instead."""
    path = record_path(cfg)
    with stop_on_signals(), run_lock(path, wait, say=lambda line: print(f"petl-bench: {line}", flush=True)) as waited:
        done = finished_record(cfg, force) if waited else None
        if done:
            print(f"petl-bench: {path} was finished meanwhile by the other process")
            return done
        try:
            return _execute(cfg, progress, force)
        except BaseException as err:
            # After a stop signal whatever ends the run is the stop: a worker it ended, Lightning's
            # SIGTERMException (exit status 0), or the Interrupted itself.
            stop = err if isinstance(err, Interrupted) else pending_stop()
            if stop is None:
                raise
            stop.detail = _kept(cfg, path.with_suffix(""))
            raise stop from None


def _epochs_done(work_dir: Path) -> int:
    """Epochs the run's last checkpoint holds; 0 without one."""
    try:
        return load_plain(work_dir / "checkpoints" / "last.ckpt")[PROGRESS]["epochs"]
    except (UserError, KeyError, TypeError):
        return 0


def _kept(cfg: RunConfig, work_dir: Path) -> str:
    """What an interrupted run leaves to resume from, for its last line."""
    epochs = _epochs_done(work_dir)
    if not epochs:
        return f"no epoch finished yet: the same command starts {cfg.run_name} again"
    steps = cfg.train.iterations
    done = f"{epochs} epochs of {steps:,} steps" if steps else f"{epochs} of {cfg.train.epochs} epochs"
    return f"{done} of {cfg.run_name} kept in {work_dir / 'checkpoints'}: the same command resumes from there"


def _execute(cfg: RunConfig, progress: bool, fresh: bool) -> dict:
    started = time.time()
    quiet_lightning()
    settings = trainer_settings(cfg)  # before building: it switches TF32 on where the device has it
    path = record_path(cfg)
    work_dir = path.with_suffix("")
    smoke = cfg.train.fast_dev_run  # a smoke test shares the run's folder but none of its files
    if fresh and not smoke:  # train again from scratch: no earlier checkpoint or log
        for name in ("checkpoints", "logs"):
            shutil.rmtree(work_dir / name, ignore_errors=True)
        (work_dir / RUN_LOG).unlink(missing_ok=True)
    last, trained = (None, None) if smoke else resumable_checkpoint(work_dir, cfg)
    epochs_kept = _epochs_done(work_dir) if last else 0
    text_path = None if smoke else work_dir / RUN_LOG
    attempt = _attempt(cfg, epochs_kept, trained is not None, text_path)
    with text_log(text_path):
        say(attempt)
        source = transfer_source(cfg)
        module, data, prepared = build(cfg if source is None else dataclasses.replace(cfg, params=source.resolved))
        built = time.time()
        training = build_trainer(cfg, settings, work_dir, started, progress, epochs_kept)
        hand_image_encoder(training.trainer, module, data)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            if source is not None:
                load_source(training.trainer, module, cfg, source)
            elif module.num_trainable and module.trained_by_sgd:
                if trained:  # stopped while testing: the trained weights are all it needs
                    say(f"train: the {epochs_kept} epochs are done: testing their weights")
                    load_trained(training.trainer, module, trained["state_dict"])
                    module.restore_history(trained)
                    training.progress.restore(trained[PROGRESS])
                else:
                    with phase("train", _epochs_to_train(cfg, epochs_kept)):
                        training.trainer.fit(module, datamodule=data, ckpt_path=last, weights_only=True)
            fitted = time.time()
            with phase("test", f"{len(data.test_records):,} images of {_count(len(data.tasks), 'task')}") as testing:
                training.trainer.test(module, datamodule=data, verbose=False)
                testing.result = ", ".join(f"{task} {value:.2f}" for task, value in module.test_accuracy.items())
            tested = time.time()
        finally:
            module.release()  # the backbone may serve the next run
        # This attempt's seconds per phase; first_test_batch counts from its start.
        phases_s = {
            **data.timings,
            "build_s": round(built - started, 3),
            "train_s": round(fitted - built, 3),
            "test_s": round(tested - fitted, 3),
            "first_test_batch_s": training.first_test_batch.seconds,
        }
        record = run_record(cfg, module, data, prepared, training, phases_s)
        if smoke:
            return record  # nothing to keep
        write_json_atomic(path, record)
        if training.wandb is not None:
            from .tracking import finish_wandb

            hint = finish_wandb(training.wandb, record)
            if hint:
                say(hint)
    return record


def transfer_source(cfg: RunConfig) -> Source | None:
    """The finished run a transfer run tests (`petl_bench.transfer`); None for a run that trains."""
    return None if cfg.transfer_from is None else find_source(Path(cfg.out) / cfg.transfer_from["run"])


def load_source(trainer: L.Trainer, module: PetlModule, cfg: RunConfig, source: Source) -> None:
    """A transfer run's parameters: its source run's trained ones. A method that trains nothing by
    SGD has them in its resolved config already (none, or a state file)."""
    problem = refusal(source, cfg, module.open_vocabulary, module.shared, module.task_names)
    if problem:
        raise UserError(problem)
    if not (module.num_trainable and module.trained_by_sgd):
        return
    if not source.checkpoint.is_file():
        raise UserError(f"{source.path}: its run kept no checkpoint ({source.checkpoint}) to transfer")
    with phase("load", f"the trained parameters of {source.path}"):
        load_trained(trainer, module, load_plain(source.checkpoint)["state_dict"])


def _attempt(cfg: RunConfig, epochs_kept: int, trained: bool, text_path: Path | None) -> str:
    """The attempt's first line: the run, and how this attempt starts (in run.log, where each
    attempt's lines begin)."""
    if trained:
        how = f"resumed after all {epochs_kept} epochs: testing only"
    elif epochs_kept:
        how = f"resumed from epoch {epochs_kept}" + ("" if cfg.train.iterations else f" of {cfg.train.epochs}")
    elif text_path is not None and text_path.is_file():
        how = "started again: no epoch of the earlier attempt was kept"
    else:
        how = "started"
    where = f"; log: {text_path}" if text_path is not None else ""
    return (
        f"run: {cfg.run_name} on {cfg.data.dataset} {cfg.data.split} seed {cfg.data.seed}, {how} "
        f"(pid {os.getpid()} on {platform.node()}){where}"
    )


def _epochs_to_train(cfg: RunConfig, epochs_kept: int) -> str:
    if cfg.train.fast_dev_run:
        return "one step (fast_dev_run)"
    if cfg.train.iterations:
        return f"{_count(cfg.train.iterations, 'step')}" + (f", after {epochs_kept} epochs kept" if epochs_kept else "")
    if epochs_kept:
        return f"epochs {epochs_kept + 1}-{cfg.train.epochs} of {cfg.train.epochs}"
    return _count(cfg.train.epochs, "epoch")


@dataclasses.dataclass
class Training:
    """A run's Trainer and the callbacks and logger whose findings go in its record."""

    trainer: L.Trainer
    progress: RunProgress
    first_test_batch: FirstTestBatch
    wandb: Any | None  # Lightning's WandbLogger, when W&B logs the run
    precision: str
    tf32: bool


def build_trainer(
    cfg: RunConfig, settings: tuple[dict, bool], work_dir: Path, started: float, progress_bar: bool, epochs_kept: int
) -> Training:
    """The run's Trainer on its `trainer_settings`: each epoch's checkpoint, the run's progress
    over attempts, the CSV log keeping the `epochs_kept` epochs of earlier attempts, a line per
    epoch, and W&B when asked. Validation runs at each epoch's end where the data has validation
    shots (the data module turns it off where it has none)."""
    arguments, tf32 = settings
    progress, first_test_batch = RunProgress(started), FirstTestBatch(started)
    # No monitor and top-1: each epoch's end replaces checkpoints/last.ckpt.
    checkpoints = ModelCheckpoint(
        dirpath=work_dir / "checkpoints",
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    wandb = None
    if cfg.logging.wandb and not cfg.train.fast_dev_run:  # a smoke test logs nowhere
        from .tracking import wandb_logger

        wandb = wandb_logger(cfg, work_dir)  # None: W&B failed, the run goes on without it
    loggers = [RunLog(work_dir, epochs_kept), *([wandb] if wandb is not None else [])]
    trainer = L.Trainer(
        **arguments,
        logger=loggers,
        plugins=_plugins(),
        callbacks=[
            progress,
            PendingStop(),
            StopOnDivergence(),
            checkpoints,
            first_test_batch,
            EpochLines(lambda: progress.wall_s),
        ],
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=work_dir,
    )
    return Training(trainer, progress, first_test_batch, wandb, arguments["precision"], tf32)


def run_record(
    cfg: RunConfig, module: PetlModule, data: MultiDomainDataModule, prepared: dict, training: Training, phases_s: dict
) -> dict:
    """The run record (`results.SCHEMA`): what ran, on what, its accuracy, and what it cost."""
    progress = training.progress
    return {
        "schema": SCHEMA,
        "method": cfg.method,
        "run_name": cfg.run_name,
        "dataset": cfg.data.dataset,
        "root": resolved_root(cfg.data.root),
        "split": canonical_split(cfg.data.dataset, cfg.data.split),
        "classes": cfg.data.classes,  # all, or CoOp's base / novel half
        "holdout": cfg.data.holdout,  # "", or the domain left out of training and tested (leave-one-domain-out)
        "seed": cfg.data.seed,
        "model": cfg.model.arch,
        "pretrained": cfg.model.pretrained,
        "activation": "quickgelu" if module.backbone.quick_gelu else "gelu",  # as decided for these weights
        "tasks": module.task_names,
        "accuracy": _rounded(module.test_accuracy),
        "trainable_params": module.num_trainable,
        "total_params": sum(p.numel() for p in module.parameters()),
        # Each epoch's validation accuracy (a fixed split's val shots); the test is the last epoch's model.
        "val_accuracy": _rounded(module.val_accuracy[-1]) if module.val_accuracy else {},
        "val_accuracy_per_epoch": [_rounded(scores) for scores in module.val_accuracy],
        "train_images": len(data.train_records),
        "val_images": len(data.val_records),
        "test_images": len(data.tested_records),
        "template": data.manifest.template,
        "split_file": str(data.split_file),
        "split_source": data.manifest.split_source,
        "datasets": _joined_datasets(data.manifest, module.test_accuracy),
        "split_sha256": data.split_sha256,
        "skipped_images": data.skipped_images,
        "synthetic": data.manifest.synthetic,
        "wall_s": round(progress.wall_s, 2),  # every attempt, up to the checkpoint the next resumed
        "attempts": progress.attempts,
        "resumed_from_epoch": progress.resumed_from_epoch,  # epochs done before the last attempt
        "phases_s": phases_s,
        "test_sources": data.test_sources,
        "device": _device_name(),
        "precision": training.precision,
        "tf32": training.tf32,
        "train_images_per_s": progress.images_per_s,
        "peak_memory_mb": _peak_memory_mb(),
        "git": _git_revision(),
        "versions": _versions(),
        "prepared": prepared,
        "recipe": describe_recipe(cfg),  # the values the method's own recipe set, before any --set
        "resolved_params": dataclasses.asdict(module.cfg),
        **({"transfer_from": cfg.transfer_from} if cfg.transfer_from is not None else {}),
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _joined_datasets(manifest: Manifest, accuracy: dict[str, float]) -> list[dict]:
    """Datasets joined (`a+b`): each one's folder, tasks, class prompt, split file and the mean of
    its tasks' accuracies (the run's `average` weighs every task alike); [] for one dataset."""
    parts = []
    for part in manifest.parts:
        tasks = [task.name for task in part.joined_tasks()]
        parts.append(
            {
                "dataset": part.dataset,
                "root": resolved_root(str(part.root)),
                "tasks": tasks,
                "template": part.template,
                "split_source": part.split_source,
                "average": round(sum(accuracy[task] for task in tasks) / len(tasks), 4),
            }
        )
    return parts


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {task: round(value, 4) for task, value in scores.items()}


def trainer_settings(cfg: RunConfig) -> tuple[dict, bool]:
    """(the Trainer arguments that the run's numbers depend on: epochs, batches, precision, device;
    whether TF32 is on, which this switches on where the device allows it). One place for the run
    and `petl-bench eval`, so that an evaluation tests under exactly the run's settings."""
    device = run_device(cfg.train.accelerator)
    tf32 = allow_tf32(device)
    # An iteration-based run stops after its steps, however many epochs they take.
    steps = cfg.train.iterations
    length = {"max_epochs": -1, "max_steps": steps} if steps else {"max_epochs": cfg.train.epochs}
    return {
        **length,
        "precision": run_precision(cfg.train.precision, device),
        "accelerator": cfg.train.accelerator,
        "devices": 1,
        "limit_train_batches": cfg.train.limit_train_batches,
        "fast_dev_run": cfg.train.fast_dev_run,
    }, tf32


def hand_image_encoder(trainer: L.Trainer, module: PetlModule, data: MultiDomainDataModule) -> None:
    """Give the data module the module's frozen image tower as `trainer` runs it (device, precision
    and the precision's forward context), for the test features it caches; None where it trains."""
    data.image_encoder = module.frozen_image_encoder(
        trainer.strategy.root_device, trainer.precision, trainer.precision_plugin.forward_context
    )


def load_trained(trainer: L.Trainer, module: PetlModule, state: dict) -> None:
    """The trained state into `module`, once it is in the Trainer's precision, as the run tested it:
    a 64-true state loaded into fp32 parameters would be rounded."""
    trainer.precision_plugin.convert_module(module)
    module.load_trainable_state(state)


def _plugins() -> list[Precision | ClusterEnvironment | CheckpointIO | LayerSync]:  # as Trainer's `plugins` is typed
    plugins: list[Precision | ClusterEnvironment | CheckpointIO | LayerSync] = [StreamingCheckpointIO()]
    if SLURMEnvironment.detect():
        # Lightning's own Slurm requeue (on SIGUSR1: a mid-epoch checkpoint, `scontrol requeue`)
        # would compete with submitit's, which the sweep's jobs use; our epoch checkpoints resume.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
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
