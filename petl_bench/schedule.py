"""Learning-rate schedules: the factor on `optim.lr` at each epoch or step, as `LambdaLR` takes it.

`optim.schedule=dassl` (the default) is Dassl's as MaPLe and CoOp configure it, stepped once per
epoch; `linear-cosine` is stepped per batch, over `train.epochs` epochs or `train.iterations` steps
(an iteration-based run takes only it: `config.check_sections`). Plain functions of numbers (no torch), so a schedule
can be printed or tested without building a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .config import OptimConfig


def lr_factor(optim: OptimConfig, epochs: int, steps: int, steps_per_epoch: int) -> tuple[str, Callable[[int], float]]:
    """When the scheduler steps ("epoch" or "step") and the factor on `optim.lr` at each of them, for
    a run of `epochs` epochs (dassl) or `steps` steps in all, `steps_per_epoch` of them an epoch."""
    if optim.schedule == "dassl":
        return "epoch", lambda epoch: (dassl_lr(epoch, optim, epochs) / optim.lr) if optim.lr else 0.0
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    return "step", lambda step: warmup_cosine(step, warmup, steps)


def dassl_lr(epoch: int, optim: OptimConfig, epochs: int) -> float:
    """The learning rate of epoch `epoch` (from 0) under Dassl's schedule as MaPLe and CoOp configure
    it (LR_SCHEDULER cosine, WARMUP_TYPE constant, WARMUP_RECOUNT true), stepped once per epoch:
    `warmup_lr` for the first `warmup_epochs`, then CosineAnnealingLR(T_max=`epochs`) counted from
    the warm-up's end. lr 0.0035, 5 epochs: 1e-5, 3.5e-3, 3.17e-3, 2.29e-3, 1.21e-3."""
    if epoch < optim.warmup_epochs:
        return optim.warmup_lr
    return 0.5 * optim.lr * (1.0 + math.cos(math.pi * (epoch - optim.warmup_epochs) / epochs))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
