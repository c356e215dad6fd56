"""Checkpoint files: read as tensors and plain data only, written whole, and enough to resume exactly.

Reading: every checkpoint or weights file goes through `torch.load(weights_only=True)` (here, in
Lightning's resume and in open_clip's loader), so a crafted file cannot run code; one that needs
more is a one-line error naming it. Our own checkpoints hold only tensors, dicts, lists, str,
int, float, bool and None.

Writing (`StreamingCheckpointIO`): straight into a temporary file beside the target, then renamed
over it, so `last.ckpt` is always a whole epoch's, whatever stops the run.

Resuming (`RunProgress`): each epoch checkpoint also holds the RNG states at the epoch boundary
(Python, NumPy, torch CPU and CUDA) and the run's progress across attempts. A resumed run restores
the states as Lightning loads the checkpoint, so its next epoch draws what the uninterrupted run
drew there: loader shuffling, worker seeds and augmentation all derive from these global states at
each epoch's start (the contract every data loader keeps), and a resumed run ends bit for bit where
the uninterrupted one does on CPU. This holds while nothing else draws random numbers between an
epoch's end and the next epoch's first batch (hooks at epoch start or fit start must not): Lightning
creates the first loader iterator of a resumed fit before `on_train_epoch_start`, the others after
it, so the states are restored at load time, before either.

What a checkpoint costs (`benchmarks/checkpoint_size.py` measures every method on ViT-B/16): the
trainable parameters only (never the frozen backbone), plus SGD's momentum buffer for each, the
floor for an exact resume at every epoch, so that a killed run loses at most the epoch in
progress. A prompt method's checkpoint is kilobytes to a few megabytes; full fine-tuning's is
weights + momentum, 2 x 2.4 GB for four task copies. Above that floor nothing is spent: the file is
streamed without an in-memory copy, the last epoch's checkpoint drops the optimizer and scheduler
state (nothing trains after it: it halves the file a full fine-tuning run leaves behind), and a
resume reads the checkpoint memory-mapped to check its config before Lightning loads it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import TorchCheckpointIO

from .config import RunConfig
from .errors import UserError
from .files import atomic_path, unloadable_reason

PROGRESS = "resume"  # the checkpoint's key for `RunProgress`'s state
TRAINER_ONLY = ("optimizer_states", "lr_schedulers")  # what the last epoch's checkpoint leaves out


def load_plain(path: Path, what: str = "checkpoint"):
    """`torch.load` of tensors and plain data only (memory-mapped where the file allows it);
    a file that needs more, or is no torch file at all, is a one-line UserError naming it."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip torch file
    except Exception as err:  # torch.load raises many types for files it cannot read
        raise UserError(f"{what} {path} not loaded: {unloadable_reason(err)}") from None


class StreamingCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, streaming into a temporary file renamed over the target.
    (Lightning's own first serializes the whole checkpoint into memory: 4.8 GB more RAM at every
    epoch end for full fine-tuning.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path, size=tensor_bytes(checkpoint)) as tmp:
            torch.save(checkpoint, tmp)


def tensor_bytes(data) -> int:
    """The bytes of every tensor in nested dicts and lists: about a checkpoint's size on disk."""
    if isinstance(data, torch.Tensor):
        return data.nelement() * data.element_size()
    if isinstance(data, dict):
        return sum(map(tensor_bytes, data.values()))
    if isinstance(data, list | tuple):
        return sum(map(tensor_bytes, data))
    return 0


def resumable_checkpoint(work_dir: Path, cfg: RunConfig) -> tuple[Path | None, dict | None]:
    """(the last epoch checkpoint of an earlier attempt at this very config, or None; its content
    if it is the last epoch's, when training is done, or None). The content is memory-mapped and
    kept only then: the epochs to come replace a file that is still training. A checkpoint of
    another config (the same run name, other settings) is removed: the run starts afresh."""
    last = work_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None, None
    checkpoint = load_plain(last)
    meta = checkpoint.get("petl_bench", {}) if isinstance(checkpoint, dict) else {}
    if PROGRESS not in checkpoint or RunConfig.sha256_of(meta.get("run_config", {})) != cfg.sha256():
        last.unlink()
        return None, None
    trained = not any(key in checkpoint for key in TRAINER_ONLY)  # the last epoch's holds weights only
    return last, checkpoint if trained else None


def training_ends(trainer, epochs: int) -> bool:
    """Whether training ends with `epochs` done: the last epoch, or the steps of an iteration-based
    run (`max_steps`) are done (its `max_epochs` is -1)."""
    if trainer.max_steps > 0:
        return trainer.global_step >= trainer.max_steps
    return epochs >= trainer.max_epochs


class RunProgress(Callback):
    """A run's progress over all its attempts, saved in each epoch checkpoint and restored from it:
    epochs done, attempts, wall time and training throughput so far, and the RNG states at the
    epoch boundary, which the next epoch restores (see the module's docstring)."""

    def __init__(self, started: float):
        self.started = started  # this attempt's start, time.time()
        self.earlier_wall_s = 0.0  # earlier attempts, up to the checkpoint this one resumed
        self.images, self.seconds = 0, 0.0  # training images and the seconds their steps took
        self.attempts = 1
        self.resumed_from_epoch: int | None = None
        self._step_start = 0.0

    @property
    def wall_s(self) -> float:
        return self.earlier_wall_s + time.time() - self.started

    @property
    def images_per_s(self) -> float | None:
        return round(self.images / self.seconds, 2) if self.seconds else None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._step_start
        self.images += sum(len(labels) for _, labels in batch.values())

    def on_save_checkpoint(self, trainer, module, checkpoint):
        epochs = trainer.current_epoch + 1  # saved as an epoch ends
        checkpoint[PROGRESS] = {
            "epochs": epochs,
            "attempts": self.attempts,
            "wall_s": self.wall_s,
            "images": self.images,
            "seconds": self.seconds,
            "rng": capture_rng(),
        }
        if training_ends(trainer, epochs):  # nothing trains after this one: weights suffice
            for key in TRAINER_ONLY:
                checkpoint.pop(key, None)

    def on_load_checkpoint(self, trainer, module, checkpoint):
        self.restore(checkpoint[PROGRESS])

    def restore(self, progress: dict) -> None:
        """Carry on from a checkpoint's progress and RNG states (Lightning's resume calls this, and
        the runner does for a checkpoint that finished training)."""
        self.earlier_wall_s, self.images, self.seconds = progress["wall_s"], progress["images"], progress["seconds"]
        self.attempts = progress["attempts"] + 1
        self.resumed_from_epoch = progress["epochs"]
        restore_rng(progress["rng"])


# -- the RNG states, as plain data --------------------------------------------------------------------
def capture_rng() -> dict:
    version, python_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # the global generator is MT19937: the legacy tuple form
    _, keys, pos, has_gauss, cached = numpy_state
    states = {
        "python": [version, list(python_state), gauss],
        "numpy": {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    numpy = states["numpy"]
    np.random.set_state(
        ("MT19937", np.array(numpy["keys"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
