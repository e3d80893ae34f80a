"""Snapshots without a copy: metadata-only snapshots in storage, O(1) views of the KV."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from fastraft.storage.mvcc import KV
from fastraft.storage.logstore import Storage


def open_store(path: Path) -> Storage:
    return Storage.open(str(path), cluster_id=0xC1A55, member_id=0xABCDEF, name="alpha")


def ents(first: int, last: int, term: int) -> list[tuple]:
    return [(i, term, 0, b"e%d" % i) for i in range(first, last + 1)]


def put_entry(kv: KV, index: int, key: bytes, value: bytes) -> tuple:
    return (index, 1, 0, kv.encode_command("put", {"key": key, "value": value}))


def kv_meta_of(data: bytes) -> tuple[list, int]:
    """([applied, revision, compact_revision], number of current keys) inside KV snapshot data."""
    up = msgpack.Unpacker(raw=False)
    up.feed(data)
    next(up), next(up)  # magic, format version
    n = next(up)
    meta, current = None, 0
    for _ in range(n):
        k, v = next(up), next(up)
        if k == b"m":
            meta = msgpack.unpackb(v)
        elif k.startswith(b"c"):
            current += 1
    assert meta is not None
    return meta, current


def test_save_snapshot_meta_drops_the_log_and_writes_no_file(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save((1, 0, 20), ents(1, 20, 1))
        s.sync()
        s.save_snapshot_meta(12, 1, (1, 2), ())
        s.sync()
        assert not s.has_snapshot_file(12)
        assert s.load_snapshot_data() is None
        assert os.listdir(tmp_path / "m" / "snap") == []
        _hs, snap, entries = s.initial_state()
        assert snap == (12, 1, (1, 2), ())
        assert entries == ents(13, 20, 1)
        with pytest.raises(ValueError, match="older"):
            s.save_snapshot_meta(11, 1, (1, 2), ())
        assert s.snapshot_meta() == (12, 1, (1, 2), ())  # the refused call changed nothing
    finally:
        s.close()
    s = open_store(tmp_path / "m")  # durable across a reopen
    try:
        _hs, snap, entries = s.initial_state()
        assert snap == (12, 1, (1, 2), ()) and entries == ents(13, 20, 1)
        assert s.last_index() == 20
    finally:
        s.close()


def test_received_snapshot_file_is_reported(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        s.save_snapshot(7, 1, (1,), (), b"state@7")
        assert s.has_snapshot_file(7) and not s.has_snapshot_file(8)
    finally:
        s.close()


def test_view_is_the_state_when_taken_even_after_more_applies_and_a_flush(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        kv = KV(s)
        kv.apply([put_entry(kv, i, b"k%d" % i, b"v") for i in range(1, 11)])
        expected = kv.snapshot_data()
        view = kv.snapshot_view()
        kv.apply([put_entry(kv, i, b"k%d" % i, b"w") for i in range(11, 21)])
        s.db.flush()  # memtable to SST: the view must still see the old state
        kv.apply([put_entry(kv, 21, b"k1", b"changed")])
        got = kv.snapshot_data(view)
        assert got == expected
        meta, current = kv_meta_of(got)
        assert meta[0] == 10 and current == 10
        assert kv_meta_of(kv.snapshot_data())[0][0] == 21
        assert kv.snapshot_data(view) == expected  # a view can be serialized again
        del view
    finally:
        s.close()


def test_serializing_a_view_can_be_cancelled(tmp_path: Path) -> None:
    s = open_store(tmp_path / "m")
    try:
        kv = KV(s)
        # 2,000 puts = 6,000 records (current, history, change log): past one 4096-key poll.
        kv.apply([put_entry(kv, i, b"k%d" % i, b"v") for i in range(1, 2001)])
        polls: list[int] = []

        def cancelled() -> bool:
            polls.append(1)
            return True

        with pytest.raises(InterruptedError):
            kv.snapshot_data(kv.snapshot_view(), cancelled)
        assert polls == [1]
        full = kv.snapshot_data(kv.snapshot_view(), lambda: False)  # never cancelled: complete
        assert kv_meta_of(full) == ([2000, 2001, 0], 2000)
    finally:
        s.close()
