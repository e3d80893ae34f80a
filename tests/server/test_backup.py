"""BackupStreams (server/backup.py) with a real KV and a fake sink: one consistent view, the file
it makes, back-pressure (nothing read while the client is behind; a stalled client is cut
off), and the endings (connection lost, member closing)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastraft.client.snapfile import SnapshotHeader, SnapshotWriter, verify_snapshot
from fastraft.errors import BadRequestError
from fastraft.server.backup import BackupStreams
from fastraft.server.membership import Member, Membership
from fastraft.storage.logstore import Storage
from fastraft.storage.mvcc import KV


class FakeSink:
    def __init__(self) -> None:
        self.closed = False
        self.unread = 0
        self.frames: list[tuple[int, Any, dict[str, Any]]] = []

    def buffered(self) -> int:
        return self.unread

    def reply(self, req_id: int, error: Any, result: dict[str, Any] | None) -> None:
        self.frames.append((req_id, error, result or {}))

    def chunks(self) -> list[bytes]:
        return [r["chunk"] for _, _, r in self.frames if "chunk" in r]

    def end(self) -> dict[str, Any] | None:
        return next((r["end"] for _, _, r in self.frames if "end" in r), None)


class FakeRaft:
    term = 3


class Store:
    def __init__(self, path: Path) -> None:
        self.storage = Storage.open(str(path), cluster_id=7, member_id=2, name="m")
        self.kv = KV(self.storage)
        self.index = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.index += 1
        self.kv.apply([(self.index, 1, 0, self.kv.encode_command("put", {"key": key,
                                                                         "value": value}))])


@pytest.fixture
def st(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "m")
    yield s
    s.storage.close()


def _streams(st: Store, loop: asyncio.AbstractEventLoop, **kw: Any) -> BackupStreams:
    members = Membership(2, [])
    members.load([Member(2, "m", ["http://127.0.0.1:1"])])
    tasks: set[asyncio.Task[None]] = set()
    b = BackupStreams(members, header=lambda rev: {"revision": rev}, keep_task=tasks.add, **kw)
    b.open("m", 7, 2, FakeRaft(), st.kv, loop)  # type: ignore[arg-type]
    return b


async def _until(cond: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_one_consistent_view_streamed_into_a_valid_file(st: Store, tmp_path: Path) -> None:
    for i in range(2000):
        st.put(b"k/%05d" % i, b"x" * 500)
    rev = st.kv.revision

    async def run() -> FakeSink:
        b = _streams(st, asyncio.get_running_loop(), chunk_bytes=64 << 10)
        sink = FakeSink()
        b.start(sink, 5, {})
        # Writes after the request are not in it: the view is of the moment it came.
        st.put(b"k/later", b"y")
        await _until(lambda: sink.end() is not None)
        await b.close()
        return sink

    sink = asyncio.run(run())
    first = sink.frames[0][2]["snapshot"]
    assert first["revision"] == rev and first["index"] == 2000 and first["term"] == 3
    assert all(rid == 5 and err is None for rid, err, _ in sink.frames)
    chunks = sink.chunks()
    assert len(chunks) > 10  # streamed in pieces, not one frame
    end = sink.end()
    assert end is not None
    assert end["chunks"] == len(chunks) and end["bytes"] == sum(map(len, chunks))
    assert end["sha256"] == hashlib.sha256(b"".join(chunks)).digest()
    assert list(end["members"]) == [format(2, "x")]
    assert not any(b"k/later" in c for c in chunks)

    path = str(tmp_path / "b.db")
    with SnapshotWriter(path) as w:
        w.header(SnapshotHeader(7, 2, first["index"], 3, rev, 0, 0.0))
        for c in chunks:
            w.chunk(c)
        w.end(end["chunks"], end["bytes"], end["sha256"], end["members"])
        w.commit()
    info = verify_snapshot(path)
    assert info.total_keys == 2000 and info.header.revision == rev


def test_nothing_is_read_while_the_client_is_behind_and_a_stalled_one_is_cut(
        st: Store) -> None:
    for i in range(200):
        st.put(b"k/%05d" % i, b"x" * 1000)

    async def run() -> tuple[FakeSink, int]:
        b = _streams(st, asyncio.get_running_loop(), chunk_bytes=4 << 10,
                     high_water=1 << 20, stall_timeout=0.5)
        sink = FakeSink()
        sink.unread = 1 << 30  # the client reads nothing
        b.start(sink, 1, {})
        await _until(lambda: any(err is not None for _, err, _ in sink.frames))
        left = len(b._streams)
        await b.close()
        return sink, left

    sink, left = asyncio.run(run())
    assert sink.chunks() == []  # not one chunk read from RocksDB while the client was behind
    err = sink.frames[-1][1]
    assert "read nothing" in err.message
    assert left == 0


def test_a_lost_connection_ends_the_stream_and_close_ends_the_rest(st: Store) -> None:
    for i in range(200):
        st.put(b"k/%05d" % i, b"x" * 1000)

    async def run() -> tuple[FakeSink, FakeSink, int]:
        b = _streams(st, asyncio.get_running_loop(), chunk_bytes=4 << 10,
                     high_water=1 << 20, stall_timeout=60)
        lost, held = FakeSink(), FakeSink()
        lost.unread = held.unread = 1 << 30
        b.start(lost, 1, {})
        b.start(held, 2, {})
        with pytest.raises(BadRequestError):
            b.start(FakeSink(), 3, {"bogus": 1})
        await asyncio.sleep(0.05)
        lost.closed = True
        b.connection_lost(lost)
        await _until(lambda: len(b._streams) == 1)
        b.stop("the member is stopping")
        await b.close()
        return lost, held, len(b._streams)

    lost, held, left = asyncio.run(run())
    assert left == 0
    assert held.frames[-1][1].code == "STOPPING"
    assert all(err is None for _, err, _ in lost.frames)
