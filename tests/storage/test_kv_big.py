"""A big store's reads and compaction, at test size: a range answer is bounded by
``max_response_bytes`` (RESPONSE_TOO_LARGE past it, found as soon as the scan passes it), a range
runs in steps over one pinned view, and a compaction's records go in steps after its apply (the
apply itself only moves the compact revision)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastraft.errors import CompactedError, ResponseTooLargeError
from fastraft.storage.logstore import Storage
from fastraft.storage.mvcc import KV, RangeScan, _Buffer

N = 300
VALUE = b"v" * 100


class Store:
    def __init__(self, path: Path, max_response_bytes: int) -> None:
        self.storage = Storage.open(str(path), cluster_id=1, member_id=2, name="m")
        self.kv = KV(self.storage, max_response_bytes=max_response_bytes)
        self.index = self.kv.applied

    def do(self, op: str, args: dict) -> object:
        self.index += 1
        res = self.kv.apply([(self.index, 1, 0, self.kv.encode_command(op, args))])
        return res[0][1]

    def records(self, prefix: bytes) -> int:
        return sum(1 for k in self.storage.column_family("kv").keys() if k[:1] == prefix)


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "m", max_response_bytes=16 * 1024)
    for i in range(N):
        st.do("put", {"key": b"k/%05d" % i, "value": VALUE})
    yield st
    st.storage.close()


def test_range_past_max_response_bytes_is_refused_with_a_clear_error(s: Store) -> None:
    kv = s.kv
    with pytest.raises(ResponseTooLargeError) as ei:
        kv.range(b"k/", b"k0")  # 300 x ~210 B > 16 KiB
    assert ei.value.code == "RESPONSE_TOO_LARGE"
    assert "16,384 bytes" in ei.value.message and "--limit" in ei.value.message
    # What fits is answered: a count of everything, a page, a smaller range.
    assert kv.range(b"k/", b"k0", count_only=True)["count"] == N
    page = kv.range(b"k/", b"k0", limit=20)
    assert len(page["kvs"]) == 20 and page["count"] == N and page["more"] is True
    # A pager's page: the scan stops at limit + 1 keys (more is exact, count is not the total).
    pg = kv.range_scan({"key": b"k/", "range_end": b"k0", "limit": 20, "exact_count": False})
    res = pg.run()
    assert res is not None and len(res["kvs"]) == 20 and res["more"] is True
    assert res["count"] == 21
    small = kv.range(b"k/", b"k/00050")
    assert [x["key"] for x in small["kvs"]] == [b"k/%05d" % i for i in range(50)]
    with pytest.raises(ResponseTooLargeError):  # inside a txn too
        kv._range(_Buffer(s.storage.column_family("kv")), {"key": b"k/", "range_end": b"k0"})


def test_range_scan_in_steps_reads_the_state_of_its_first_step(s: Store) -> None:
    kv = s.kv
    kv.max_response_bytes = 1 << 20
    rev = kv.revision
    scan = kv.range_scan({"key": b"k/", "range_end": b"k0", "keys_only": True})
    assert isinstance(scan, RangeScan)
    assert scan.run(10) is None  # 10 keys looked at; the view is pinned now
    s.do("put", {"key": b"k/00299", "value": b"changed"})
    s.do("delete", {"key": b"k/00100"})
    s.do("put", {"key": b"k/zzz", "value": b"new"})
    steps = 0
    res = None
    while res is None and steps < 1000:
        res = scan.run(7)
        steps += 1
    assert res is not None and steps > 10
    assert res["revision"] == rev and res["count"] == N
    assert [x["key"] for x in res["kvs"]] == [b"k/%05d" % i for i in range(N)]


def test_compaction_apply_only_moves_the_revision_and_steps_drop_the_records(s: Store) -> None:
    kv = s.kv
    for i in range(0, N, 3):  # a second version of every third key, then delete some
        s.do("put", {"key": b"k/%05d" % i, "value": b"w"})
    for i in range(0, N, 10):
        s.do("delete", {"key": b"k/%05d" % i})
    target = kv.revision
    before = {rev: kv.range(b"k/", b"k0", revision=rev, count_only=True)["count"]
              for rev in (target, target - 1)}
    changes = s.records(b"r")
    assert changes == N + N // 3 + N // 10
    assert s.do("compact", {"revision": target - 1}) == {"revision": target}
    # The apply did constant work: every record is still on disk, reads below are refused.
    assert s.records(b"r") == changes
    assert kv.compaction_pending
    with pytest.raises(CompactedError):
        kv.range(b"k/", b"k0", revision=target - 2)
    steps = 0
    while steps < 10_000:
        steps += 1
        more = kv.compact_step(max_changes=7)
        # Reads at and above the compact revision are the same at every step.
        for rev, count in before.items():
            assert kv.range(b"k/", b"k0", revision=rev, count_only=True)["count"] == count
        if not more:
            break
    assert steps >= changes // 7
    assert not kv.compaction_pending
    assert s.records(b"r") == 1  # the change at the target revision itself (> target - 1)
    # One history entry per live key; the key deleted at the target revision keeps two (its
    # record <= the compact revision and the tombstone after it); the other deleted keys none.
    assert s.records(b"i") == N - N // 10 + 2
