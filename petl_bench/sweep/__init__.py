"""Sweeps: a grid of runs (`grid.py`), their state (`state.py`), the driver that runs those not done
(`driver.py`) through the local launcher and its workers (`local.py`, `worker.py`) or Slurm
(`slurm.py`), each run a job with an `Outcome` (`jobs.py`). docs/design.md draws the layers."""
