"""A fixed pure-Python workload that the regression gate divides every other median by.

Shared machines drift by tens of percent between runs; a benchmark's median relative to this one,
measured in the same run, drifts much less. See bench/gate.py.
"""

from __future__ import annotations


def _interpreter_work() -> int:
    d: dict[int, int] = {}
    for i in range(2000):
        d[i & 255] = d.get(i & 255, 0) + i
    return sum(d.values())


def test_calibration(benchmark) -> None:
    assert benchmark(_interpreter_work) == sum(range(2000))
