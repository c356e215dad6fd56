"""Training and evaluation throughput and peak memory of one method on random images.

    python benchmarks/speed.py --method coop-mt --model tiny
    python benchmarks/speed.py --method coop --model ViT-B-16 --device cuda --precision bf16

Four tasks of 65 classes (Office-Home's shape), `--batch` images per task per step, as in training.
`benchmarks/grid_time.py` uses `measure` for every method of a grid.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.datamodules import Task
from petl_bench.registry import get_method


@dataclass(frozen=True)
class Throughput:
    trainable: int  # parameters
    train: float | None  # images/s; None for a method that trains nothing
    test: float  # images/s
    peak_mib: float  # GPU memory allocated, or the process's RSS on a CPU
    cached_features: bool  # a run's test reads the frozen image tower's features from the shared cache


def measure(
    method: str,
    backbone: ClipBackbone,
    tasks: list[Task],
    batch: int,
    steps: int,
    device: str,
    precision: str,
    params=None,
) -> Throughput:
    """Images/s of `steps` training steps (`batch` random images per task each, SGD) and of as
    many test batches, after one warm-up step each. `params`: the method's config (default: its
    defaults); `precision`: fp32 or bf16 (autocast, as Lightning's bf16-mixed)."""
    torch.manual_seed(0)
    entry = get_method(method)
    module = entry.cls(params or entry.config_cls(), backbone, tasks).to(device)
    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    trainable = module.apply_trainable()
    optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9) if trainable else None
    size, classes = backbone.image_size, len(tasks[0].classnames)
    data = {
        t.name: (torch.randn(batch, 3, size, size, device=device), torch.randint(classes, (batch,), device=device))
        for t in tasks
    }
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def train_step():
        with autocast:
            loss = module.training_step(data, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def test_step():
        with torch.inference_mode(), autocast:
            for name, (images, _) in data.items():
                module(images, name)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = batch * len(tasks) * steps
    train = images / timed(train_step, steps, device) if optimizer else None
    module._text_cache.clear()  # the test measures the text features' encoding too, once
    test = images / timed(test_step, steps, device)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return Throughput(module.num_trainable, train, test, peak, module.frozen_image_encoder() is not None)


def timed(step, steps: int, device: str) -> float:
    step()  # warm-up: allocations, cached text features
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="coop-mt")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch", type=int, default=16, help="images per task per step")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--classes", type=int, default=65)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()

    torch.manual_seed(0)
    backbone = ClipBackbone.from_pretrained(args.model, None)  # random weights: speed only
    tasks = [Task(f"task{i}", tuple(f"class {c}" for c in range(args.classes))) for i in range(args.tasks)]
    speed = measure(args.method, backbone, tasks, args.batch, args.steps, args.device, args.precision)
    print(
        f"{args.method} on {args.model} ({args.device}, {args.precision}), "
        f"{speed.trainable:,} trainable parameters, {args.batch * args.tasks} images per step"
    )
    if speed.train is not None:
        print(f"train: {speed.train:8.1f} images/s")
    print(f"test:  {speed.test:8.1f} images/s")
    print(f"peak memory: {speed.peak_mib:,.0f} MiB ({'GPU allocated' if args.device == 'cuda' else 'process RSS'})")


if __name__ == "__main__":
    main()
