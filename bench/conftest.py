"""Benchmarks run with `python -m pytest bench --benchmark-enable` (see bench/RESULTS.md)."""
