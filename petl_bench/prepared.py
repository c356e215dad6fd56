"""For methods whose starting state comes from the data (Tip-Adapter-F's cache, a linear probe's
fitted weights, CLAP's penalties): image features of a run's training shots, the zero-shot class
text features, and the state file that `prepare` leaves for the module.

`PetlModule.prepare` returns a config, not tensors, so such a method's `prepare` writes the state
(parameter name -> tensor, as a checkpoint holds it) to a file beside the run and puts the file's
path in the resolved config; the module loads it when it is built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from .backbone import ClipBackbone
from .datamodules.loading import ImageFiles, QuietLoader, collate_train
from .datamodules.records import Task
from .errors import UserError
from .files import atomic_path
from .guard import quiet_worker
from .phases import phase

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def writes_state(prepare: Callable) -> Callable:
    """A method's `prepare` that writes its state file: skipped, the config returned as it is, once
    `state` names a file that exists (a checkpoint's resolved config, already prepared)."""

    @functools.wraps(prepare)
    def once(cls, run, backbone, data, work_dir):
        if run.params.state and Path(run.params.state).is_file():
            return run.params, {}
        return prepare(cls, run, backbone, data, work_dir)

    return once


@contextmanager
def on_device(backbone: ClipBackbone) -> Iterator[torch.device]:
    """The frozen backbone in eval mode on the GPU when there is one, for a `prepare`'s passes; as
    it was afterwards."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.to(DEVICE).eval()
    try:
        yield torch.device(DEVICE)
    finally:
        backbone.to(device).train(was_training)


def shot_feature_passes(
    backbone: ClipBackbone, data, transform, passes: int = 1, part: str = "train"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Task -> (image features [passes, shots, embed dim], labels [shots]) of the training shots
    (`part` "val": the validation shots) in split order, one row per pass of `transform` (random
    augmentations differ from pass to pass), from the frozen backbone with identity hooks."""
    found = {}
    shots = data.val_records if part == "val" else data.train_records
    words = "validation" if part == "val" else "training"
    doing = f"image features of the {len(shots):,} {words} images" + (
        f", {passes} augmented passes" if passes > 1 else ""
    )
    with on_device(backbone), phase("features", doing):
        for task in data.tasks:
            records = [r for r in shots if r.domain == task.name]
            # The split drew only images that decode; one changed since is left out, with a warning.
            loader = QuietLoader(
                ImageFiles(data.manifest.root, records, transform),
                shuffle=False,
                batch_size=data.cfg.eval_batch_size,
                num_workers=data.workers,
                collate_fn=collate_train,
                worker_init_fn=quiet_worker,
            )
            rows, labels = [], torch.zeros(0, dtype=torch.long)
            for _ in tqdm(range(passes), desc=f"features of {task.name}'s shots", leave=False, disable=None):
                with torch.no_grad():
                    batches = [(backbone.encode_image(images.to(DEVICE)).float().cpu(), y) for images, y in loader]
                rows.append(torch.cat([f for f, _ in batches]))
                labels = torch.cat([y for _, y in batches])
            found[task.name] = (torch.stack(rows), labels)
    return found


def shot_features(
    backbone: ClipBackbone, data, transform, passes: int = 1, part: str = "train"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Task -> (image features [shots, embed dim], labels [shots]) of the training shots (`part`
    "val": the validation shots) in split order, each feature the mean over `passes` passes of
    `transform` (`shot_feature_passes`)."""
    return {
        task: (features.mean(0), labels)
        for task, (features, labels) in shot_feature_passes(backbone, data, transform, passes, part).items()
    }


def template_text_features(backbone: ClipBackbone, task: Task) -> torch.Tensor:
    """The frozen text tower's features [classes, embed dim] of the task's hand-written prompts, not
    normalised: zero-shot's classifier, as `PetlModule.template_prompts` words it."""
    with on_device(backbone) as device, torch.no_grad():
        tokens = backbone.tokenize([task.prompt(name) for name in task.classnames]).to(device)
        return backbone.encode_text(tokens).float().cpu()


def save_state(path: Path, state: dict[str, torch.Tensor]) -> str:
    """Write a prepared state atomically; its path, for the resolved config."""
    with atomic_path(Path(path)) as tmp:
        torch.save({name: tensor.contiguous() for name, tensor in state.items()}, tmp)
    return str(path)


def set_state(name: str, tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each set's tensor as the module's `SetRows` parameter `name` holds it (`name.{set}`)."""
    return {f"{name}.{s}": tensor for s, tensor in enumerate(tensors)}


def load_state(module, path: str) -> None:
    """Load a state that `prepare` wrote into the module's trainable parameters (names and shapes checked)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise UserError(f"{module.method_name}: cannot read its prepared state {path}: {err}") from None
    module.load_trainable_state(state)
