"""A fixed disk workload (append 4 KiB to a file, fdatasync) that the regression gate divides
disk-bound medians by, such as the end-to-end put, whose time is mostly one sync.

The CPU calibration (test_calibration.py) says nothing about a machine's disk, and CI machines'
disks differ from this one's by more than any margin a gate could allow. See bench/gate.py.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = b"x" * 4096


def test_calibration_disk(benchmark, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        def append_sync() -> int:
            n = os.write(fd, BLOCK)
            os.fdatasync(fd)
            return n

        assert benchmark(append_sync) == len(BLOCK)
    finally:
        os.close(fd)
    assert (tmp_path / "wal").stat().st_size % len(BLOCK) == 0
