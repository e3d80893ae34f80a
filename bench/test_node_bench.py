"""Regression gate: one end-to-end put through an in-process single-member Node.

Real storage with fsync (one sync per put: the commit-only ready does not sync), real client
over loopback TCP: the request path (decode, propose, ready, save + sync, commit, apply, reply)
with no peers. Its median is mostly one fsync plus one loopback round trip.

Run: python -m pytest bench/test_node_bench.py --benchmark-enable
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess_member import InProcessMember  # tests/ is on pytest's pythonpath

from fastraft import Client

VALUE = b"v" * 256


@pytest.fixture
def member(tmp_path: Path) -> Iterator[InProcessMember]:
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_put_end_to_end_single_member(benchmark, member: InProcessMember) -> None:
    with Client(member.endpoint, timeout=10.0) as c:
        start = c.put(b"k", VALUE).header.revision  # also waits out the (instant) election
        n = 0

        def put() -> None:
            nonlocal n
            n += 1
            c.put(b"k", VALUE)

        benchmark.pedantic(put, rounds=300, iterations=1, warmup_rounds=20)
        # Every put applied exactly once, in order: the revision counts them all.
        assert c.put(b"k", VALUE).header.revision == start + n + 1
        got = c.get(b"k")
    assert got.kvs[0].value == VALUE and got.kvs[0].version == n + 2
