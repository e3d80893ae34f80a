"""Benchmarks of the Raft core's hot path, with no I/O.

Run: python -m pytest bench/test_core_bench.py --benchmark-enable
"""

from __future__ import annotations

import pytest

from fastraft._core import Log, ProgressTracker
from fastraft.raft.core import Config, Raft

VALUE = b"v" * 256
BATCH = [VALUE] * 64


def test_log_append_one(benchmark):
    log = Log()

    def append_one():
        log.append_new(1, [VALUE])
        if len(log) > 100_000:  # keep the log bounded, as compaction does in a real member
            log.compact(log.last_index())

    benchmark(append_one)


def test_log_append_batch64(benchmark):
    log = Log()

    def append_batch():
        log.append_new(1, BATCH)
        if len(log) > 100_000:
            log.compact(log.last_index())

    benchmark(append_batch)
    benchmark.extra_info["entries_per_call"] = 64


@pytest.mark.parametrize("voters", [3, 5])
def test_commit_advance(benchmark, voters):
    ids = tuple(range(1, voters + 1))
    tracker = ProgressTracker(ids)
    progress = [tracker.progress[i] for i in ids]
    state = {"index": 0}

    def advance():
        # Every member acknowledges 64 more entries; the quorum index moves by 64.
        state["index"] += 64
        for p in progress:
            p.maybe_update(state["index"])
        return tracker.committed()

    assert advance() == 64
    benchmark(advance)


class _Cluster:
    """Three cores wired back to back; what a host does, minus the disk and the sockets."""

    def __init__(self, n: int = 3) -> None:
        ids = tuple(range(1, n + 1))
        self.nodes = {i: Raft(Config(i, ids, seed=i)) for i in ids}
        self.nodes[1].campaign()
        for _ in range(4):
            self.pump()
        self.leader = self.nodes[1]
        assert self.leader.role == "leader"

    def pump(self) -> None:
        nodes = self.nodes
        moved = True
        while moved:
            moved = False
            net = []
            for r in nodes.values():
                if r.has_ready():
                    rd = r.ready()
                    net.extend(rd.messages)
                    r.advance(rd)
                    net.extend(rd.persisted_messages)
                    moved = True
            for m in net:
                nodes[m.to].step(m)


@pytest.mark.parametrize("voters", [3, 5])
def test_replication_round_batch64(benchmark, voters):
    """Leader proposes 64 entries -> followers append and ack -> leader commits -> all apply."""
    cluster = _Cluster(voters)
    leader = cluster.leader

    calls = 0

    def round_():
        nonlocal calls
        calls += 1
        leader.propose_batch(BATCH)
        cluster.pump()

    before = leader.commit
    benchmark.pedantic(round_, rounds=2000, iterations=1, warmup_rounds=50)
    committed = leader.commit - before
    # Every round committed its 64 (counted, as --benchmark-disable runs it once).
    assert calls >= 1 and committed == 64 * calls
    assert all(r.applied == leader.commit for r in cluster.nodes.values())
    benchmark.extra_info["entries_per_round"] = 64
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["entries_per_second_median"] = 64 / benchmark.stats.stats.median
