"""Benchmarks (pytest-benchmark): ratios against baselines run in the same process."""
