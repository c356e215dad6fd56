"""Every tuning method, one file each (`petl_bench.registry` declares them all, with their configs
from `configs.py`, and imports a method's file when a run needs its class)."""
