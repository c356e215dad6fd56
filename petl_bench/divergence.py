"""A run whose training loss stops being a finite number ends there, in one line, with no record.

SGD on a NaN or infinite loss goes on quietly: the weights become NaN and the test writes a
chance-level record that looks like any other. `StopOnDivergence` looks at each step's loss as the
step ends (the loss as the method computed it, before any fp16 loss scaling) and raises `Diverged`
with the epoch, the step and the last finite loss, before the epoch's end could checkpoint weights
the step made NaN; the run writes no record and exits non-zero, and a sweep reports it as failed
with that line in its log.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback

from .errors import UserError


class Diverged(UserError):
    """The training loss became NaN or infinite (the recipe's fault: a learning rate too high)."""


class StopOnDivergence(Callback):
    def __init__(self) -> None:
        self.last_finite: tuple[int, float] | None = None  # (step, loss) of the last finite step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # a step the method skipped
            return
        value = float(loss)
        step = trainer.global_step - 1  # this step's index (counted from 0, as the CSV log's `step`)
        if math.isfinite(value):
            self.last_finite = (step, value)
            return
        last = (
            f"the last finite loss was {self.last_finite[1]:.4g} at step {self.last_finite[0]}"
            if self.last_finite
            else "no earlier step of this attempt"
        )
        raise Diverged(
            f"training diverged at epoch {trainer.current_epoch}, step {step}: the loss is {value} "
            f"({last}); no record written (a lower optim.lr or optim.warmup_lr may train)"
        )
