"""What CPUs this process may use: for loader workers and the threads that check images.

Kept apart from `hardware.py` (device and precision, which need torch) so that reading a dataset
root imports no torch.
"""

from __future__ import annotations

import os


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
