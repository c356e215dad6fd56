"""What this process may use: CPUs for data loading, the device a run trains on, its precision.

One place for these choices, so that the data module, the runner and MmAP's group search agree.
"""

from __future__ import annotations

import os

import torch

AUTO = "auto"


def cpu_budget() -> int:
    """CPUs this process may use: its CPU affinity (what taskset, cgroups or Slurm's binding
    allow), capped by Slurm's cpus_per_task when the process runs in a Slurm job."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)


def loader_workers(requested: int) -> int:
    """Data loader worker processes in all: `requested` (capped at the CPUs), or for -1 one per
    CPU less the main process, which feeds the model."""
    budget = cpu_budget()
    return budget - 1 if requested < 0 else min(requested, budget)


def run_device(accelerator: str) -> torch.device:
    """The device a run on `accelerator` (Lightning's names) trains on."""
    if accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps" or (accelerator == AUTO and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def run_precision(precision: str, device: torch.device) -> str:
    """Lightning's precision for `precision`: `auto` is bf16-mixed on a GPU that supports it,
    else full fp32."""
    if precision != AUTO:
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def allow_tf32(device: torch.device) -> bool:
    """Let fp32 matmuls and convolutions use TF32 on an NVIDIA GPU (Ampere or newer); returns
    whether they may."""
    if device.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.cuda.get_device_capability()[0] >= 8
