"""Benchmarks of the KV state machine's apply path (RocksDB writes, no fsync).

Run: python -m pytest bench/test_kv_bench.py --benchmark-enable
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fastraft.storage.mvcc import KV
from fastraft.storage.logstore import Storage

VALUE = b"v" * 256
BATCH = 64


@pytest.fixture
def kv(tmp_path: Path):
    s = Storage.open(str(tmp_path / "m"), cluster_id=1, member_id=2, name="bench")
    yield KV(s)
    s.close()


def _make_batches(kv: KV, keyspace: int):
    """Endless batches of 64 put entries with increasing indexes; keys cycle over a keyspace so
    both first puts and overwrites (version bumps) are measured."""
    index = itertools.count(kv.applied + 1)
    key = itertools.count()
    # Encoding is the proposer's work, not apply's: prepare data outside the timed region.
    # The arguments as fastraft's clients send them (explicit defaults included).
    cmds = [kv.encode_command("put", {"key": b"key/%08d" % i, "value": VALUE, "prev_kv": False,
                                      "lease": 0}) for i in range(keyspace)]

    def next_batch() -> list[tuple]:
        return [(next(index), 1, 0, cmds[next(key) % keyspace]) for _ in range(BATCH)]

    return next_batch


def test_apply_batch_of_64_puts(benchmark, kv: KV) -> None:
    next_batch = _make_batches(kv, 10_000)

    batches = 0

    def setup():
        nonlocal batches
        batches += 1
        return (next_batch(),), {}

    results = benchmark.pedantic(kv.apply, setup=setup, rounds=400, iterations=1, warmup_rounds=20)
    assert len(results) == BATCH
    assert all(isinstance(r[1], dict) for r in results)
    # Every batch applied (counted, as --benchmark-disable runs it once).
    assert batches >= 1 and kv.revision == 1 + batches * BATCH
    if benchmark.stats is not None:  # None under --benchmark-disable
        per_put = benchmark.stats.stats.median / BATCH
        benchmark.extra_info["puts_per_second"] = round(1 / per_put)


def test_range_current_point_get(benchmark, kv: KV) -> None:
    next_batch = _make_batches(kv, 1000)
    for _ in range(20):
        kv.apply(next_batch())
    res = benchmark(kv.range, b"key/00000500")
    assert res["kvs"][0]["value"] == VALUE
