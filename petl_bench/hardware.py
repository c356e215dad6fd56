"""The device a run trains on, its precision and TF32 (the CPUs it may use: `cpus.py`).

One place for these choices, so that the runner, `petl-bench eval` and MmAP's group search agree.
"""

from __future__ import annotations

import torch

AUTO = "auto"


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
