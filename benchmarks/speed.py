"""Training and evaluation throughput and peak memory of one method on random images.

    python benchmarks/speed.py --method coop-mt --model tiny
    python benchmarks/speed.py --method coop --model ViT-B-16 --device cuda --precision bf16

Four tasks of 65 classes (Office-Home's shape), `--batch` images per task per step, as in training.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from petl_bench.datamodules import Task

from petl_bench.backbone import ClipBackbone
from petl_bench.registry import get_method


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
    entry = get_method(args.method)
    module = entry.cls(entry.config_cls(), backbone, tasks).to(args.device)
    params = module.apply_trainable()
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9) if params else None
    size = backbone.image_size
    batch = {t.name: (torch.randn(args.batch, 3, size, size, device=args.device),
                      torch.randint(args.classes, (args.batch,), device=args.device)) for t in tasks}
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def train_step():
        with autocast:
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step():
        with torch.inference_mode(), autocast:
            for name, (images, _) in batch.items():
                module(images, name)

    module.log = lambda *a, **k: None  # no Trainer attached: logging is a no-op here
    images_per_step = args.batch * args.tasks
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    print(f"{args.method} on {args.model} ({args.device}, {args.precision}), "
          f"{module.num_trainable:,} trainable parameters, {images_per_step} images per step")
    if optimizer:
        print(f"train: {images_per_step * args.steps / timed(train_step, args.steps, args.device):8.1f} images/s")
    module._text_cache.clear()
    print(f"eval:  {images_per_step * args.steps / timed(eval_step, args.steps, args.device):8.1f} images/s")
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"peak memory: {peak:,.0f} MiB ({'GPU allocated' if args.device == 'cuda' else 'process RSS'})")


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


if __name__ == "__main__":
    main()
