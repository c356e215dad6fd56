"""`PetlModule`: the LightningModule every tuning method subclasses.

It owns the frozen backbone and all training and evaluation logic: logits, the per-task loss, SGD
or AdamW (`optim.optimizer`) with Dassl's warm-up + cosine schedule (`petl_bench.schedule`),
per-task accuracy, and checkpoints that hold only trainable parameters. A method builds its
parameters in `__init__` and overrides the `Hooks` it needs:

    @register_method("coop-mt", CoOpConfig)
    class CoOpMT(PetlModule):
        def __init__(self, cfg, backbone, tasks, optim=None): ...
        def text_embed(self, emb, tokens, task): ...

    Trainer(max_epochs=5).fit(CoOpMT(cfg, backbone, tasks), datamodule)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .backbone import IDENTITY, ClipBackbone, Hooks, Site
from .config import MethodConfig, OptimConfig, RunConfig, validate_params
from .datamodules.records import Task
from .errors import UserError
from .frozen_features import FrozenImageEncoder
from .schedule import lr_factor


class SetRows(nn.Module):
    """A tensor per parameter set, [its tasks' classes, *shape], zeros at first: parameters (what
    trains) or buffers. `rows[s]` is set s's, saved as `{name}.{s}`: the sets of tasks of other
    classes (datasets joined, each task its own classes) have rows of their own count."""

    def __init__(self, classes: list[int], shape: tuple[int, ...], buffer: bool = False):
        super().__init__()
        for s, n in enumerate(classes):
            if buffer:
                self.register_buffer(str(s), torch.zeros(n, *shape))
            else:
                self.register_parameter(str(s), nn.Parameter(torch.zeros(n, *shape)))
        self.n_sets = len(classes)

    def __getitem__(self, s: int) -> torch.Tensor:
        return getattr(self, str(s))

    def __len__(self) -> int:
        return self.n_sets

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[s] for s in range(self.n_sets))


class PetlModule(Hooks, L.LightningModule):
    """Trains a method's parameters over a frozen CLIP on several tasks at once."""

    method_name = "base"  # set by @register_method
    # True when no trainable parameter changes the class text features: they are then computed
    # once per task instead of every step.
    text_frozen = False
    # False when the text side is the same for every task (shared prompts, a shared tower).
    text_depends_on_task = True
    # How a step combines the tasks' losses: "sum" or "mean" (the runner sets `train.task_loss`).
    task_loss = "sum"
    # True when no trainable parameter changes the image features (no vision hook, no image
    # tower weight trains): the module then lets test image features come from a cache.
    image_frozen = False
    # True: one parameter set shared by all tasks (MT); False: one set per task (ST); None: trains nothing.
    shared: bool | None = None
    # False for a method fitted in closed form by `prepare` (a linear probe): the runner skips SGD.
    trained_by_sgd = True
    # True when what trains works for class names it never saw (prompts, adapters, LoRA): a model
    # trained on some classes can score others. False where it holds a weight per trained class.
    open_vocabulary = True
    # What holds a row per class of its set's tasks ("probe", "cache"; "": nothing): each set has its
    # tasks' classes (`class_rows`), so one shared by every task (MT) needs every task's classes alike.
    per_class = ""

    def __init__(self, cfg: MethodConfig, backbone: ClipBackbone, tasks: list[Task], optim: OptimConfig | None = None):
        super().__init__()
        self.cfg = validate_params(cfg)  # the runner validated it already; the Python API did not
        self.backbone = backbone
        self.tasks = list(tasks)
        self.task_names = [task.name for task in self.tasks]
        if any(len(task.classnames) < 2 for task in self.tasks):
            raise UserError("every task needs at least two classes to classify")
        self.check_tasks(self.tasks)
        self.optim = optim or OptimConfig()
        self.accuracy = nn.ModuleList(
            MulticlassAccuracy(num_classes=len(task.classnames), average="micro") for task in self.tasks
        )
        self.test_accuracy: dict[str, float] = {}
        self.val_accuracy: list[dict[str, float]] = []  # per epoch, as `_scores` gives them (kept in checkpoints)
        self.checkpoint_meta: dict = {}  # the run config, filled by the runner
        self._tokens: dict[str, torch.Tensor] = {}
        self._text_cache: dict = {}  # text_key -> features, while they cannot change
        self._step_text: dict | None = None  # text_key -> features, within one training step
        self._handwritten: dict = {}  # (classnames, template) -> frozen features of the hand-written prompts
        self._attachments: list = []  # what this module attached inside the backbone's blocks
        # A partial state dict (trainable parameters only) is the checkpoint format.
        self.strict_loading = False

    @classmethod
    def prepare(cls, run: RunConfig, backbone: ClipBackbone, data, work_dir: Path) -> tuple[MethodConfig, dict]:
        """Settle data-dependent choices before the module is built, e.g. MmAP's task groups from
        gradients. Returns the resolved method config (`run.params` by default) and facts for the
        run record (files go in `work_dir`). It must return a config that needs no further
        preparing."""
        return run.params, {}

    # -- which parameter set a task uses: the ST / MT choice, made here once ---------------------
    @property
    def n_sets(self) -> int:
        """How many parameter sets the method holds: one shared by all tasks (MT), else one per task."""
        return 1 if self.shared else len(self.tasks)

    @classmethod
    def tasks_by_set(cls, tasks: list[Task]) -> dict[str, list[Task]]:
        """The tasks each parameter set serves, in set order, by the set's name in run records:
        "shared" (MT), else the task's own."""
        return {"shared": list(tasks)} if cls.shared else {task.name: [task] for task in tasks}

    @classmethod
    def check_tasks(cls, tasks: list[Task]) -> None:
        """Refuse tasks the method cannot serve, before any work (the runner asks it before `prepare`):
        a row per class shared by tasks of other classes (joined datasets', `--dataset a+b`)."""
        if cls.per_class and cls.shared:
            other = next((task for task in tasks if task.classnames != tasks[0].classnames), None)
            if other is not None:
                raise UserError(
                    f"{cls.method_name}: its one {cls.per_class}, shared by every task, holds a row per class, so "
                    f"every task needs the same classes (those of {other.name} differ from those of {tasks[0].name}); "
                    "its single-task variant keeps one per task"
                )

    def class_rows(self, *shape: int, buffer: bool = False) -> SetRows:
        """Zeros of a row per class for each set, [its tasks' classes, *shape] (`SetRows`)."""
        served = [[task for task in self.tasks if self.set_index(task.name) == s] for s in range(self.n_sets)]
        classes = [len(tasks[0].classnames) for tasks in served]
        return SetRows(classes, shape, buffer)

    def set_index(self, task: str) -> int:
        """Which of the `n_sets` sets the task uses: the shared one (MT), else its own."""
        return 0 if self.shared else self.task_names.index(task)

    # -- what trains ----------------------------------------------------------------------------
    def trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The parameters this method trains. Default: its own, i.e. all outside the backbone."""
        return ((n, p) for n, p in self.named_parameters() if not n.startswith("backbone."))

    def apply_trainable(self) -> list[nn.Parameter]:
        """The one place that sets `requires_grad`: on exactly the parameters of `trainable()`."""
        self.requires_grad_(False)
        params = [p for _, p in self.trainable()]
        for p in params:
            p.requires_grad_(True)
        return params

    @property
    def num_trainable(self) -> int:
        return sum(p.numel() for _, p in self.trainable())

    # -- inside the backbone's blocks: attached for the module's life ----------------------------
    def attach_to_blocks(self, sites: list[Site]) -> None:
        """Route these block weights and modules through `block_weight` / `block_output` whenever
        this module runs the backbone (LoRA, adapters), until `release()`."""
        self._attachments.append(self.backbone.attach(self, sites))

    def release(self) -> None:
        """Detach everything this module attached to the shared backbone, which is then as before
        the module was built (module tree, state-dict keys, forward). The runner calls it when a
        run ends, so that one loaded backbone can serve run after run."""
        for attachment in self._attachments:
            attachment.remove()
        self._attachments.clear()

    # -- features and logits --------------------------------------------------------------------
    def encoder(self, task: str) -> ClipBackbone:
        """The CLIP that encodes the task's images and class texts: the shared backbone by default."""
        return self.backbone

    def task(self, name: str) -> Task:
        return self.tasks[self.task_names.index(name)]

    def prompts(self, task: str) -> list[str]:
        """The text fed to the tokenizer for each class of the task: its template's by default."""
        return self.template_prompts(task)

    def template_prompts(self, task: str) -> list[str]:
        """The hand-written prompt of each class of the task (zero-shot's), from its template."""
        spec = self.task(task)
        return [spec.prompt(name) for name in spec.classnames]

    def handwritten_features(self, task: str) -> torch.Tensor:
        """The frozen CLIP's text features of the task's hand-written prompts (zero-shot's classifier):
        KgCoOp's and TCP's regulariser target, ProGrad's teacher, TCP's class-level knowledge."""
        spec = self.task(task)
        key = (spec.classnames, spec.template)
        if key not in self._handwritten:
            tokens = self.backbone.tokenize(self.template_prompts(task)).to(self.device)
            with torch.no_grad():
                self._handwritten[key] = self.backbone.encode_text(tokens, IDENTITY, task)
        return self._handwritten[key].to(self.device)

    def tokens(self, task: str) -> torch.Tensor:
        if task not in self._tokens:
            self._tokens[task] = self.backbone.tokenize(self.prompts(task))
        return self._tokens[task].to(self.device)

    def text_key(self, task: str):
        """What the class text features depend on: the task, or only its classes when the text
        side ignores the task, so that tasks with the same classes and template share one text pass."""
        spec = self.task(task)
        return task if self.text_depends_on_task else (spec.classnames, spec.template)

    def class_text_features(self, task: str) -> torch.Tensor:
        """Text features of the task's classes: computed once while nothing trainable can change
        them (frozen text side, or evaluation), else once per training step and `text_key`."""
        frozen = self.text_frozen or not torch.is_grad_enabled()
        cache = self._text_cache if frozen else self._step_text
        key = self.text_key(task)
        if cache is None or key not in cache:
            with torch.set_grad_enabled(not frozen):
                features = self.encoder(task).encode_text(self.tokens(task), self, task)
            if cache is None:
                return features
            cache[key] = features
        return cache[key]

    def text_features(self, image_feat: torch.Tensor, task: str) -> torch.Tensor | None:
        """What the images are compared with: the class text features [classes, dim] by default;
        a method whose prompts depend on the image (CoCoOp) returns them per image [batch, classes, dim]."""
        return self.class_text_features(task)

    def logits(self, image_feat: torch.Tensor, text_feat: torch.Tensor | None, task: str) -> torch.Tensor:
        """logit_scale.exp() * cos(image, class text), for class text per task or per image."""
        assert text_feat is not None, "a module whose text_features gives none overrides logits"
        image, text = F.normalize(image_feat, dim=-1), F.normalize(text_feat, dim=-1)
        # Capped at 100 as in CLIP's training: full fine-tuning trains the scale too.
        scale = self.encoder(task).logit_scale.exp().clamp(max=100)
        if text.dim() == 3:
            return scale * torch.einsum("bd,bcd->bc", image, text)
        return scale * image @ text.t()

    def forward(self, images: torch.Tensor, task: str) -> torch.Tensor:
        """Logits over the task's classes."""
        return self.classify(self.encoder(task).encode_image(images, self, task), task)

    def classify(self, image: torch.Tensor, task: str) -> torch.Tensor:
        """Logits from image features (the image tower's output, before `head`)."""
        image, text = self.head(image, self.text_features(image, task), task)
        return self.logits(image, text, task)

    def frozen_image_encoder(
        self,
        device: torch.device | str | None = None,
        precision: str = "32-true",
        forward_context: Callable[[], AbstractContextManager] = nullcontext,
    ) -> FrozenImageEncoder | None:
        """What test image features may be cached as, for every run, method and seed that shares
        them: the frozen backbone's on `device` (by default wherever it is when encoding) in
        `precision` under `forward_context()`, when this module declares `image_frozen` and encodes
        every task with the shared backbone; else None (test images go through `forward`)."""
        if not self.image_frozen or any(self.encoder(task) is not self.backbone for task in self.task_names):
            return None
        return FrozenImageEncoder(self.backbone, device, precision, forward_context)

    # -- training -------------------------------------------------------------------------------
    def regularizer(self, task: str) -> torch.Tensor | float:
        """A term added to the task's loss (KgCoOp's distance to the hand-written prompt); none by default."""
        return 0.0

    def training_loss(self, task: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One task's training loss on its images: cross-entropy plus `regularizer` by default. A method
        whose extra terms need the step's images or logits (PromptSRC, CoPrompt, DePT's head) or whose
        gradient is not the loss's own (ProGrad) overrides it."""
        return F.cross_entropy(self(images, task), labels) + self.regularizer(task)

    def task_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """`training_loss` of each task in a step's batch (task -> (images, labels)), text passes shared."""
        self._step_text = {}
        try:
            return {
                task: self.training_loss(task, images.to(self.device), labels.to(self.device))
                for task, (images, labels) in batch.items()
            }
        finally:
            self._step_text = None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Cross-entropy per task, summed (or averaged: `task_loss`) over the tasks of the step."""
        losses = self.task_losses(batch)
        per_task = torch.stack(list(losses.values()))
        loss = per_task.mean() if self.task_loss == "mean" else per_task.sum()
        batch_size = sum(len(labels) for _, labels in batch.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for task, task_loss in losses.items():
            self.log(f"train/loss/{task}", task_loss, batch_size=len(batch[task][1]))
        return loss

    def lr_scale(self, name: str) -> float:
        """The factor on `optim.lr` (and its schedule) for the trainable parameter `name`: 1 by default;
        DePT's head trains faster than its prompts, as in its code."""
        return 1.0

    def optimizer_groups(self) -> list[dict]:
        """The trainable parameters, one optimiser group per `lr_scale`."""
        self.apply_trainable()
        groups: dict[float, list[nn.Parameter]] = {}
        for name, parameter in self.trainable():
            groups.setdefault(self.lr_scale(name), []).append(parameter)
        return [{"params": params, "lr": self.optim.lr * scale} for scale, params in groups.items()]

    def configure_optimizers(self):
        optim = self.optim
        groups = self.optimizer_groups()
        if optim.optimizer == "adamw":  # torch's default betas, as CLIP-LoRA and Tip-Adapter use them
            optimizer = torch.optim.AdamW(groups, lr=optim.lr, eps=optim.eps, weight_decay=optim.weight_decay)
        else:
            optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        trainer = self.trainer
        steps = max(1, int(trainer.estimated_stepping_batches))  # `max_steps` for an iteration-based run
        if trainer.train_dataloader is None:  # an iteration-based run's estimate did not load the data
            trainer.fit_loop.setup_data()
        interval, factor = lr_factor(optim, max(1, trainer.max_epochs or 1), steps, int(trainer.num_training_batches))
        # A function, not a callable object: LambdaLR saves no state for it, so the checkpoint holds
        # only numbers (weights_only loading).
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": interval}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # The learning rate this step trains at, in the CSV log and W&B.
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)

    def setup(self, stage: str) -> None:
        count = len(self.apply_trainable())
        if stage == "fit" and count:
            self.print(f"{self.method_name}: {self.num_trainable:,} trainable parameters")

    def on_train_epoch_start(self) -> None:
        # Features cached under inference mode during evaluation cannot enter autograd graphs.
        self._text_cache.clear()

    # -- evaluation -----------------------------------------------------------------------------
    def _task_accuracy(self) -> list[MulticlassAccuracy]:
        """The accuracy metric of each task, in task order (`self.accuracy` holds them as modules)."""
        return [cast(MulticlassAccuracy, metric) for metric in self.accuracy]

    def on_test_epoch_start(self) -> None:
        self._start_scoring()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_accuracy = self._scores()
        for name, value in self.test_accuracy.items():
            self.log(f"test/acc/{name}", value, add_dataloader_idx=False)

    def on_validation_epoch_start(self) -> None:
        self._start_scoring()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        """The epoch's validation accuracy: logged as `val/acc` (the tasks' mean) and `val/acc/{task}`,
        kept in `val_accuracy`. It selects nothing: the run tests the last epoch's weights."""
        scores = self._scores()
        for name, value in scores.items():
            self.log("val/acc" if name == "average" else f"val/acc/{name}", value, add_dataloader_idx=False)
        if not self.trainer.sanity_checking:
            self.val_accuracy.append(scores)

    def _start_scoring(self) -> None:
        self._text_cache.clear()
        for metric in self._task_accuracy():
            metric.reset()

    def _score(self, batch, dataloader_idx: int) -> None:
        """A batch of the task `dataloader_idx` into its accuracy: images, or cached image features."""
        task = self.task_names[dataloader_idx]
        if isinstance(batch, dict):  # cached features of the frozen image tower
            logits, labels = self.classify(batch["image_features"], task), batch["labels"]
        else:
            images, labels = batch
            logits = self(images, task)
        self._task_accuracy()[dataloader_idx].update(logits, labels)

    def _scores(self) -> dict[str, float]:
        """Each task's accuracy in percent, and their mean (`average`)."""
        scores = {
            name: 100.0 * metric.compute().item()
            for name, metric in zip(self.task_names, self._task_accuracy(), strict=True)
        }
        scores["average"] = sum(scores.values()) / len(self.task_names)
        return scores

    # -- checkpoints: trainable parameters and the config, never the frozen backbone --------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, _ in self.trainable()}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trainable_state_dict()
        checkpoint["petl_bench"] = {
            "method": self.method_name,
            "params": dataclasses.asdict(self.cfg),
            "val_accuracy": self.val_accuracy,
            **self.checkpoint_meta,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.check_trainable_state(checkpoint["state_dict"])
        self.restore_history(checkpoint)

    def restore_history(self, checkpoint: dict) -> None:
        """What the checkpoint's epochs measured (their validation accuracy), for the run record."""
        self.val_accuracy = list(checkpoint.get("petl_bench", {}).get("val_accuracy", []))

    def check_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """A saved state must hold every trainable parameter, each of the shape this module has."""
        expected = {n: p.shape for n, p in self.trainable()}
        missing = sorted(set(expected) - set(state))
        wrong = sorted(n for n in set(expected) & set(state) if state[n].shape != expected[n])
        if missing or wrong:
            what = f"lacks {missing[:3]}" if missing else f"has other shapes for {wrong[:3]}"
            raise UserError(f"checkpoint does not fit {self.method_name}: it {what}")

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        state = self.unstacked(state)
        self.check_trainable_state(state)
        self.load_state_dict(state, strict=False)

    def unstacked(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with each tensor saved stacked over the sets (`name` [sets, classes, ...], as states
        were before each set had rows of its own count) as this module's `SetRows` name them."""
        names = self.state_dict().keys()
        split: dict[str, torch.Tensor] = {}
        for name, tensor in state.items():
            if name not in names and f"{name}.0" in names:
                split.update({f"{name}.{s}": rows for s, rows in enumerate(tensor)})
            else:
                split[name] = tensor
        return split
