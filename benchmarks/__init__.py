"""Sweep grids (`*.yaml`, read by `petl_bench.sweep.grid`) and speed scripts; installed as petl_bench.benchmarks."""
