"""CPU seconds and wall seconds per step of the tiny CLIP's pre-training, by torch threads and by
whether the whole 49,408-row token embedding trains or only the rows the captions use
(`petl_bench.tinyclip` trains those, with one thread).

    python benchmarks/tinyclip_step.py            # 20 steps per setting, after 3 warm-up steps
    python benchmarks/tinyclip_step.py --steps 50
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from petl_bench.backbone import TINY, TINY_CONFIG, ClipBackbone
from petl_bench.datamodules.synth import pretrain_style
from petl_bench.tinyclip import _used_rows

BATCH = 64  # tinyclip.pretrain's


def seconds_per_step(threads: int, used_rows_only: bool, steps: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = ClipBackbone.from_config(TINY_CONFIG, TINY)
    model = backbone.model
    rng = random.Random(0)
    tokens = backbone.tokenize([f"{pretrain_style(rng)[1]} desk lamp {k}." for k in range(BATCH)])
    if used_rows_only:
        model.token_embedding, tokens, _ = _used_rows(model.token_embedding, tokens)
    images = torch.randn(BATCH, 3, 32, 32)
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def step():
        image = F.normalize(model.encode_image(images), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * image @ text.t()
        loss = F.cross_entropy(logits, torch.arange(BATCH))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    return (time.process_time() - cpu) / steps, (time.perf_counter() - wall) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"{'threads':>7}  {'embedding rows':<14}  {'CPU s/step':>10}  {'wall s/step':>11}")
    for threads in (1, 2):
        for used in (False, True):
            cpu, wall = seconds_per_step(threads, used, args.steps)
            print(f"{threads:>7}  {'used' if used else 'all 49,408':<14}  {cpu:>10.3f}  {wall:>11.3f}")


if __name__ == "__main__":
    main()
