"""What a run's checkpoint holds, per method, on a model built without weights (bytes as torch.save
writes them; no file is written).

    python benchmarks/checkpoint_size.py                    # ViT-B/16, Office-Home's 4 x 65 classes
    python benchmarks/checkpoint_size.py --model tiny

Columns: the trainable parameters; an epoch checkpoint (trainable weights, SGD's momentum buffers
and the RNG states: what an exact resume needs); the last epoch's checkpoint (weights and RNG states:
nothing trains after it). The frozen backbone is in neither. MmAP is counted with 2 task groups.
Lightning's own bookkeeping (loops, callbacks, the run config) adds a few kilobytes to each.
"""

from __future__ import annotations

import argparse

import torch

from petl_bench.backbone import ClipBackbone
from petl_bench.checkpoints import capture_rng
from petl_bench.datamodules import Task
from petl_bench.registry import get_method, method_names


class ByteCounter:
    """A write-only file that counts what torch.save writes to it."""

    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def saved_bytes(obj) -> int:
    counter = ByteCounter()
    torch.save(obj, counter)
    return counter.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--classes", type=int, default=65)
    args = parser.parse_args()

    backbone = ClipBackbone.from_pretrained(args.model, None)
    tasks = [Task(f"task{i}", tuple(f"class {c}" for c in range(args.classes))) for i in range(args.tasks)]
    groups = "|".join(",".join(t.name for t in tasks[i::2]) for i in range(2))
    print(f"{'method':<14}{'trainable':>14}{'epoch ckpt (B)':>18}{'last ckpt (B)':>18}")
    for name in method_names():
        entry = get_method(name)
        fields = set(entry.config_cls.__dataclass_fields__)
        cfg = entry.config_cls(groups=groups) if "groups" in fields else entry.config_cls()
        module = entry.cls(cfg, backbone, tasks)
        params = dict(module.trainable())
        weights = module.trainable_state_dict()
        rng = capture_rng()
        # SGD's state: one momentum buffer per parameter. `empty_like` pages are not touched until
        # written, and read back as zeros, so even full fine-tuning's 2.4 GB costs no memory here.
        optimizer = {
            "state": {i: {"momentum_buffer": torch.empty_like(p)} for i, p in enumerate(params.values())},
            "param_groups": [{"lr": 0.0035, "momentum": 0.9, "params": list(range(len(params)))}],
        }
        epoch = saved_bytes({"state_dict": weights, "optimizer_states": [optimizer], "resume": {"rng": rng}})
        last = saved_bytes({"state_dict": weights, "resume": {"rng": rng}})
        count = sum(p.numel() for p in params.values())
        print(f"{name:<14}{count:>14,}{epoch:>18,}{last:>18,}", flush=True)
        del module, params, weights, optimizer


if __name__ == "__main__":
    main()
