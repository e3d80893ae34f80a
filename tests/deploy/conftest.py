"""Pods of a StatefulSet on this machine, stopped by PID when the test ends (statefulset_pods.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statefulset_pods import Pods


@pytest.fixture
def pods(tmp_path: object) -> Iterator[Pods]:
    p = Pods(str(tmp_path))
    try:
        yield p
    finally:
        p.close()
