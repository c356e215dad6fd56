"""Gradient-driven task grouping (MmAP, eq. 8), and the partitions it is compared with.

1. Warm up one global prompt set shared by all tasks for `warmup_steps` SGD steps on batches of
   every task, then average each task's loss gradient with respect to it over `batches` batches.
2. Similarity S_ij = g_i . g_j (eq. 8); the search uses the cosine, so that a task with large
   gradients does not dominate.
3. Partition the tasks into at most `max_groups` disjoint groups maximising the sum, over pairs in
   the same group, of (cos_ij - mean pairwise cos): pairs more similar than average are grouped, the
   rest kept apart. (Maximising plain within-group similarity is degenerate: with all similarities
   positive it always returns one group.) Exact by enumerating the set partitions up to
   `EXACT_UP_TO` tasks; beyond, a greedy merge (see `greedy_partition`).

`random_partition` draws the Table 3 "random" baseline: a seeded random partition with the same
group sizes, other than the gradient one whenever another exists.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .files import atomic_path
from .phases import phase

EXACT_UP_TO = 8  # Bell(8) = 4,140 partitions: instant; Bell(12) is 4.2 M


@dataclass
class TaskSimilarity:
    tasks: list[str]
    dot: torch.Tensor  # [T, T] g_i . g_j of the averaged gradients
    cosine: torch.Tensor  # [T, T]


def task_gradients(
    module, loader, warmup_steps: int, batches: int, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Each task's loss gradient with respect to `module`'s trainable parameters (flattened),
    averaged over `batches` combined batches after `warmup_steps` optimisation steps."""
    params = module.apply_trainable()
    batches_of_every_task = _cycle(loader)
    sums: dict[str, torch.Tensor] = {}
    doing = f"{warmup_steps} warm-up steps, then each task's gradient over {batches} batches"
    with (
        phase("grouping", doing),
        tqdm(total=warmup_steps + batches, desc="task grouping", unit="step", disable=None, leave=False) as bar,
    ):  # disable=None: a bar on terminals only
        for _ in range(warmup_steps):
            optimizer.zero_grad()
            torch.stack(list(module.task_losses(next(batches_of_every_task)).values())).sum().backward()
            optimizer.step()
            bar.update()
        for _ in range(batches):
            for task, loss in module.task_losses(next(batches_of_every_task)).items():
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                flat = (
                    torch.cat(
                        [
                            (g if g is not None else torch.zeros_like(p)).flatten()
                            for g, p in zip(grads, params, strict=True)
                        ]
                    )
                    .detach()
                    .cpu()
                )
                sums[task] = sums.get(task, 0) + flat
            bar.update()
    return {task: total / batches for task, total in sums.items()}


def _cycle(loader) -> Iterator[dict]:
    while True:
        for item in loader:
            yield item[0] if isinstance(item, tuple) else item  # CombinedLoader yields (batch, idx, loader idx)


def similarity(gradients: dict[str, torch.Tensor]) -> TaskSimilarity:
    tasks = list(gradients)
    g = torch.stack([gradients[t] for t in tasks]).double()
    dot = g @ g.t()
    norms = g.norm(dim=1).clamp_min(1e-30)
    return TaskSimilarity(tasks, dot, dot / norms[:, None] / norms[None, :])


def partition_score(partition: list[list[int]], cosine: torch.Tensor) -> float:
    """Sum over same-group pairs of (cos_ij - mean of all pairwise cos)."""
    centred = cosine - mean_pairwise(cosine)
    return sum(float(centred[i, j]) for group in partition for i, j in itertools.combinations(group, 2))


def mean_pairwise(cosine: torch.Tensor) -> float:
    n = len(cosine)
    if n < 2:
        return 0.0
    return float((cosine.sum() - cosine.diagonal().sum()) / (n * (n - 1)))


def set_partitions(n: int, max_groups: int) -> Iterator[list[list[int]]]:
    """Every partition of range(n) into at most `max_groups` non-empty groups, each once."""

    def extend(i: int, groups: list[list[int]]):
        if i == n:
            yield [list(g) for g in groups]
            return
        for group in groups:
            group.append(i)
            yield from extend(i + 1, groups)
            group.pop()
        if len(groups) < max_groups:
            groups.append([i])
            yield from extend(i + 1, groups)
            groups.pop()

    yield from extend(0, [])


def best_partition(cosine: torch.Tensor, max_groups: int) -> list[list[int]]:
    """The partition of highest `partition_score`; among equals, the one with fewest groups."""
    n = len(cosine)
    if n > EXACT_UP_TO:
        return greedy_partition(cosine, max_groups)
    best: list[list[int]] = []  # set_partitions yields at least one partition (for n = 0 the empty one)
    best_key: tuple[float, int] | None = None
    for partition in set_partitions(n, max_groups):
        key = (round(partition_score(partition, cosine), 12), -len(partition))
        if best_key is None or key > best_key:
            best, best_key = partition, key
    return best


def greedy_partition(cosine: torch.Tensor, max_groups: int) -> list[list[int]]:
    """Start from one group per task; repeatedly merge the two groups whose merge raises the score
    most, while a merge raises it or there are more than `max_groups` groups."""
    centred = cosine - mean_pairwise(cosine)
    groups = [[i] for i in range(len(cosine))]

    def gain(a: list[int], b: list[int]) -> float:
        return float(centred[a][:, b].sum())

    while len(groups) > 1:
        (x, y), value = max(
            (((x, y), gain(groups[x], groups[y])) for x, y in itertools.combinations(range(len(groups)), 2)),
            key=lambda kv: kv[1],
        )
        if value <= 0 and len(groups) <= max_groups:
            break
        groups[x] = sorted(groups[x] + groups.pop(y))
    return groups


def random_partition(n: int, sizes: list[int], seed: int, avoid: list[list[int]] | None = None) -> list[list[int]]:
    """A seeded random partition of range(n) into groups of `sizes`, other than `avoid` unless
    that is the only one."""
    rng = random.Random(seed)
    avoid_key = _canonical(avoid) if avoid else None
    for _ in range(1000):
        order = list(range(n))
        rng.shuffle(order)
        cuts = list(itertools.accumulate(sizes))
        partition = [sorted(order[a:b]) for a, b in itertools.pairwise([0, *cuts])]
        if _canonical(partition) != avoid_key:
            return partition
    return partition  # only one partition has these sizes (e.g. one group)


def _canonical(partition: list[list[int]]) -> list[tuple[int, ...]]:
    return sorted(tuple(sorted(g)) for g in partition)


def save_heatmap(sim: TaskSimilarity, groups: list[list[str]], path: Path) -> Path:
    """The cosine matrix as a heatmap, tasks ordered group by group, the chosen groups outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [sim.tasks.index(t) for group in groups for t in group]
    matrix = sim.cosine[order][:, order].numpy()
    names = [sim.tasks[i] for i in order]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1.2))
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i, j in itertools.product(range(len(names)), repeat=2):
        ax.text(
            j,
            i,
            f"{matrix[i, j]:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if abs(matrix[i, j]) > 0.6 else "black",
        )
    start = 0
    for group in groups:
        ax.add_patch(
            plt.Rectangle(
                (start - 0.5, start - 0.5), len(group), len(group), fill=False, edgecolor="black", linewidth=2.5
            )
        )
        start += len(group)
    ax.set_title("task gradient cosine similarity\n(boxes: the chosen groups)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
