"""Tests of KV.events / KV.events_page: the change log read back as watch events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fastraft.errors import BadRequestError, CompactedError
from fastraft.storage.mvcc import KV
from fastraft.storage.logstore import Storage


class One:
    """One member's KV with a helper that applies a command as the next log entry."""

    def __init__(self, path: Path) -> None:
        self.storage = Storage.open(str(path), cluster_id=1, member_id=2, name="m")
        self.kv = KV(self.storage)
        self.index = self.kv.applied

    def do(self, op: str, args: dict) -> dict:
        self.index += 1
        res = self.kv.apply([(self.index, 1, 0, self.kv.encode_command(op, args))])
        assert isinstance(res[0][1], dict), res
        return res[0][1]

    def put(self, key: bytes, value: bytes) -> int:
        return self.do("put", {"key": key, "value": value})["revision"]


@pytest.fixture
def s(tmp_path: Path) -> Iterator[One]:
    one = One(tmp_path / "m")
    yield one
    one.storage.close()


def brief(evs: list[dict]) -> list[tuple]:
    return [(e["type"], e["kv"]["key"], e["kv"]["value"], e["kv"]["mod_revision"]) for e in evs]


def test_puts_and_deletes_in_order_with_kv_fields(s: One) -> None:
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.do("delete", {"key": b"a"})  # 4
    s.put(b"a", b"3")  # 5
    evs = s.kv.events(b"a", b"", 1)
    assert brief(evs) == [("PUT", b"a", b"1", 2), ("PUT", b"a", b"2", 3),
                          ("DELETE", b"a", b"", 4), ("PUT", b"a", b"3", 5)]
    # create_revision / version as in etcd: the re-created key starts over.
    assert [(e["kv"]["create_revision"], e["kv"]["version"]) for e in evs] == [
        (2, 1), (2, 2), (0, 0), (5, 1)]
    assert all("prev_kv" not in e for e in evs)


def test_prev_kv(s: One) -> None:
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.do("delete", {"key": b"a"})  # 4
    s.put(b"a", b"3")  # 5
    evs = s.kv.events(b"a", b"", 2, prev_kv=True)
    prevs = [e.get("prev_kv", {}).get("value") for e in evs]
    assert prevs == [None, b"1", b"2", None]  # nothing before the first put or after a delete
    assert evs[2]["prev_kv"]["mod_revision"] == 3


def test_txn_with_several_changes_is_one_revision_in_sub_order(s: One) -> None:
    s.put(b"k1", b"x")  # 2
    s.put(b"k2", b"x")  # 3
    r = s.do("txn", {"compare": [], "success": [
        ["put", {"key": b"k9", "value": b"n"}],
        ["delete", {"key": b"k1", "range_end": b"k3"}],
        ["put", {"key": b"k0", "value": b"z"}]], "failure": []})
    assert r["revision"] == 4
    evs = s.kv.events(b"k", b"l", 4)
    assert brief(evs) == [("PUT", b"k9", b"n", 4), ("DELETE", b"k1", b"", 4),
                          ("DELETE", b"k2", b"", 4), ("PUT", b"k0", b"z", 4)]


def test_ranges_prefix_all_keys_and_end_revision(s: One) -> None:
    for k in (b"a", b"b/1", b"b/2", b"b0", b"c", b"a\x00x"):
        s.put(k, k)  # revisions 2..7
    assert [e["kv"]["key"] for e in s.kv.events(b"b/", b"b0", 1)] == [b"b/1", b"b/2"]
    assert [e["kv"]["key"] for e in s.kv.events(b"b", b"c", 1)] == [b"b/1", b"b/2", b"b0"]
    assert [e["kv"]["key"] for e in s.kv.events(b"b0", b"\x00", 1)] == [b"b0", b"c"]
    assert [e["kv"]["key"] for e in s.kv.events(b"a", b"", 1)] == [b"a"]  # not a prefix
    assert len(s.kv.events(b"\x00", b"\x00", 1)) == 6
    assert brief(s.kv.events(b"\x00", b"\x00", 3, 4)) == [
        ("PUT", b"b/1", b"b/1", 3), ("PUT", b"b/2", b"b/2", 4)]
    assert s.kv.events(b"a", b"", 8) == []  # the future: nothing yet


def test_start_in_the_past_sees_only_later_revisions(s: One) -> None:
    revs = [s.put(b"k", b"%d" % i) for i in range(10)]
    evs = s.kv.events(b"k", b"", revs[6])
    assert [e["kv"]["value"] for e in evs] == [b"6", b"7", b"8", b"9"]


def test_compaction_makes_older_starts_fail_and_later_ones_work(s: One) -> None:
    for i in range(6):
        s.put(b"k", b"%d" % i)  # revisions 2..7
    s.do("compact", {"revision": 5})
    for start in (1, 4, 5):  # the compact revision's own change log is gone too
        with pytest.raises(CompactedError) as ei:
            s.kv.events(b"k", b"", start)
        assert ei.value.extra["compact_revision"] == 5
    assert [e["kv"]["mod_revision"] for e in s.kv.events(b"k", b"", 6, prev_kv=True)] == [6, 7]
    # prev_kv still works across the compaction boundary (the compact revision is readable).
    assert s.kv.events(b"k", b"", 6, prev_kv=True)[0]["prev_kv"]["value"] == b"3"


def test_paging_is_complete_without_duplicates_and_keeps_revisions_whole(s: One) -> None:
    for i in range(25):
        s.put(b"p/%02d" % i, b"v")  # revisions 2..26
    s.do("delete", {"key": b"p/", "range_end": b"p0"})  # revision 27: 25 deletes
    s.put(b"p/x", b"last")  # 28
    seen: list[tuple] = []
    cursor = (1, 0)
    pages = 0
    while cursor[0] <= s.kv.revision:
        evs, cursor = s.kv.events_page(b"p/", b"p0", cursor, limit=10)
        pages += 1
        assert pages < 20
        assert len(evs) <= 25  # a page never grows past its limit by more than one revision
        if evs and evs[0]["kv"]["mod_revision"] == 27:
            # The big delete revision came as its own pages, split at the limit only because it
            # alone is bigger than a page.
            assert {e["kv"]["mod_revision"] for e in evs} <= {27, 28}
        seen += brief(evs)
    assert len(seen) == 25 + 25 + 1
    assert len(set(seen)) == len(seen)
    assert [r[3] for r in seen] == sorted(r[3] for r in seen)
    assert seen[-1] == ("PUT", b"p/x", b"last", 28)
    assert pages >= 6


def test_page_with_earlier_revisions_does_not_split_the_next_one(s: One) -> None:
    s.put(b"a", b"1")  # 2
    s.do("txn", {"compare": [], "success": [["put", {"key": b"b", "value": b"x"}],
                                            ["put", {"key": b"c", "value": b"y"}]],
                 "failure": []})  # 3: two events
    evs, cursor = s.kv.events_page(b"\x00", b"\x00", (1, 0), limit=2)
    assert brief(evs) == [("PUT", b"a", b"1", 2)]
    assert cursor == (3, 0)
    evs, cursor = s.kv.events_page(b"\x00", b"\x00", cursor, limit=2)
    assert [e["kv"]["key"] for e in evs] == [b"b", b"c"]
    assert cursor == (4, 0)


def test_scan_limit_bounds_work_for_a_narrow_watch(s: One) -> None:
    for i in range(50):
        s.put(b"noise/%d" % i, b"x")  # 2..51
    s.put(b"target", b"t")  # 52
    cursor = (1, 0)
    calls = 0
    found: list[dict] = []
    while cursor[0] <= s.kv.revision:
        evs, cursor = s.kv.events_page(b"target", b"", cursor, limit=5, scan_limit=10)
        found += evs
        calls += 1
    assert calls >= 5  # it stopped every ~10 change-log entries
    assert brief(found) == [("PUT", b"target", b"t", 52)]


def test_bad_arguments_are_refused(s: One) -> None:
    s.put(b"a", b"1")
    with pytest.raises(BadRequestError):
        s.kv.events("a", b"", 1)  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        s.kv.events(b"a", b"", -1)
    with pytest.raises(BadRequestError):
        s.kv.events(b"a", b"", 1, limit=0)


def test_events_survive_reopen(s: One, tmp_path: Path) -> None:
    s.put(b"a", b"1")
    s.storage.close()
    again = One(tmp_path / "m")
    s.storage = again.storage  # the fixture closes it
    assert brief(again.kv.events(b"a", b"", 1)) == [("PUT", b"a", b"1", 2)]
