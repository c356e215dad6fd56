"""Linear probe (Radford et al., ICML 2021, appendix A.3): L2-regularised logistic regression on
frozen CLIP image features, one classifier per task, fitted in closed form, no SGD.

Trainable (fitted): per task a weight [classes, d] and a bias [classes] on the projected image
feature (d = embed dim): logits = W f + b; text is not used. `prepare` computes the features of
the training shots (the test transform: no augmentation), and for each task fits the multinomial
logistic regression with L-BFGS (at most 1,000 iterations; scikit-learn's objective
C * sum of cross-entropies + |W|^2 / 2, bias unpenalised) in float64. C = 1/lambda is chosen, unless
`c` is given, on the split's validation shots where it has them (CoOp's protocol; CoOp's lpclip
searches there), else on held-out training shots: a third of each class's shots (at least one; a
seeded draw) is held out. CLIP's search runs on them (C = 10^-6, 10^-4, ..., 10^6, then the interval
around the best is halved until 8 steps per decade; the best held-out accuracy wins, ties go to
the lower held-out loss), and the chosen C is fitted on all training shots. With one shot per class
nothing can be held out and C = 1 (scikit-learn's default). The fitted weights go to
`seed{K}/linear-probe.pt` (the resolved `state`), the chosen C and held-out accuracy per task to the
record's `prepared.linear_probe`; the runner skips SGD (`trained_by_sgd = False`).
ViT-B/16, 65 classes: 65 x 512 + 65 = 33,345 per task, 133,380 for four tasks.

Init: a module built without `state` has W = 0, b = 0 (uniform logits) until loaded.

Departures from CLIP's protocol: CLIP probes ViT features before the projection (768 wide for
ViT-B/16), ours the projected ones, as CoOp's linear-probe baseline (lpclip/) does; on a split
without validation shots (a pool), held-out training shots replace them; torch's L-BFGS replaces
scikit-learn's (same objective, not a dependency here).
"""

import contextlib
import dataclasses
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from petl_bench.module import PetlModule
from petl_bench.prepared import load_state, save_state, set_state, shot_features, writes_state
from petl_bench.registry import register_method

from .configs import LinearProbeConfig

FIRST_GRID = [10.0**e for e in range(-6, 7, 2)]  # CLIP's starting values of C
STEPS_PER_DECADE = 8  # the search's final resolution
MAX_ITER = 1000
TOLERANCE = 1e-4  # on the largest gradient entry of the averaged objective, as scikit-learn's `tol`


@contextlib.contextmanager
def one_thread():
    """The fits are small dense problems: torch's thread pool costs more than it saves (measured on
    2 busy cores: CLIP's search on 390 x 64 features took 147 s with 2 threads, 4 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise C * sum_i CE(W x_i + b, y_i) + |W|^2 / 2 with L-BFGS; -> (W [classes, d], b [classes])."""
    x, y = x.double(), y.long()
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=MAX_ITER,
        tolerance_grad=TOLERANCE,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def objective():  # scikit-learn's, divided by C * n: the same minimiser, better scaled
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.t() + bias, y) + (weight**2).sum() / (2 * c * len(y))
        loss.backward()
        return loss

    with torch.enable_grad(), one_thread():
        optimizer.step(objective)
    return weight.detach().float(), bias.detach().float()


def held_out_split(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Indices (fit, held out): a third of each class's shots held out (at least one), or None
    when a class has a single shot."""
    rng = random.Random(seed)
    fit, held = [], []
    for label in sorted(set(y.tolist())):
        shots = (y == label).nonzero().flatten().tolist()
        if len(shots) < 2:
            return None
        out = set(rng.sample(shots, max(1, len(shots) // 3)))
        fit += [i for i in shots if i not in out]
        held += sorted(out)
    return torch.tensor(fit), torch.tensor(held)


Shots = tuple[torch.Tensor, torch.Tensor]  # (features [n, d], labels [n])


def choose_c(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, val: Shots | None = None):
    """CLIP's search for C, scored on the validation shots `val` where the split has them (CoOp's
    lpclip), else on held-out training shots; -> (C, accuracy % on what it was scored on, None if
    nothing could be)."""
    if val is not None:
        (fit_x, fit_y), (held_x, held_y) = (x, y), val
    elif (split := held_out_split(y, seed)) is not None:
        fit, held = split
        (fit_x, fit_y), (held_x, held_y) = (x[fit], y[fit]), (x[held], y[held])
    else:
        return 1.0, None
    scores: dict[float, tuple[float, float]] = {}

    def score(log_c: float) -> tuple[float, float]:
        if log_c not in scores:
            weight, bias = fit_logistic(fit_x, fit_y, n_classes, 10.0**log_c)
            logits = held_x.float() @ weight.t() + bias
            accuracy = (logits.argmax(-1) == held_y).float().mean().item()
            scores[log_c] = (accuracy, -F.cross_entropy(logits, held_y).item())
        return scores[log_c]

    grid = [math.log10(c) for c in FIRST_GRID]
    best = max(grid, key=score)
    step = grid[1] - grid[0]
    while step > 1.0 / STEPS_PER_DECADE:
        step /= 2
        best = max((e for e in (best - step, best, best + step) if grid[0] <= e <= grid[-1]), key=score)
    return 10.0**best, 100.0 * scores[best][0]


@register_method("linear-probe", LinearProbeConfig)
class LinearProbe(PetlModule):
    """Linear probe: logistic regression on frozen image features, fitted per task (CLIP's protocol)."""

    shared = False
    trained_by_sgd = False
    text_frozen = True
    image_frozen = True  # a classifier on the frozen tower's features
    open_vocabulary = False  # a weight row per trained class
    per_class = "probe"
    text_depends_on_task = False

    def __init__(self, cfg: LinearProbeConfig, backbone, tasks, optim=None):
        super().__init__(cfg, backbone, tasks, optim)
        self.probe_weight = self.class_rows(backbone.embed_dim)
        self.probe_bias = self.class_rows()
        if cfg.state:
            load_state(self, cfg.state)

    @classmethod
    @writes_state
    def prepare(cls, run, backbone, data, work_dir):
        cfg = run.params
        features = shot_features(backbone, data, data.test_transform)
        searched = not cfg.c and bool(data.val_records)  # a fixed split's validation shots score C
        val = shot_features(backbone, data, data.test_transform, part="val") if searched else {}
        weights, biases, chosen, accuracy = [], [], {}, {}
        for task in data.tasks:
            x, y = features[task.name]
            c, held_out = (
                (cfg.c, None) if cfg.c else choose_c(x, y, len(task.classnames), data.cfg.seed, val.get(task.name))
            )
            weight, bias = fit_logistic(x, y, len(task.classnames), c)
            weights.append(weight)
            biases.append(bias)
            chosen[task.name], accuracy[task.name] = c, held_out
        state = {**set_state("probe_weight", weights), **set_state("probe_bias", biases)}
        path = save_state(Path(work_dir) / "linear-probe.pt", state)
        scored_on = "validation shots" if searched else "held-out training shots"
        prepared = {"c": chosen, "held_out_accuracy": accuracy, "c_scored_on": None if cfg.c else scored_on}
        return dataclasses.replace(cfg, state=path), {"linear_probe": prepared}

    def text_features(self, image_feat, task):
        return None  # no text: the classifier is W f + b

    def logits(self, image_feat, text_feat, task):
        s = self.set_index(task)
        return image_feat @ self.probe_weight[s].t() + self.probe_bias[s]
