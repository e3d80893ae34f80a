"""WatchHub with a real KV and a fake connection: catch-up/live switch, flow control, cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastraft.errors import BadRequestError, CompactedError
from fastraft.storage.mvcc import KV
from fastraft.storage.logstore import Storage
from fastraft.storage.watch import WatchHub


class FakeConn:
    """Records every reply; ``unread`` plays the bytes the client has not read."""

    def __init__(self) -> None:
        self.closed = False
        self.unread = 0
        self.frames: list[tuple[int, Any, dict]] = []

    def buffered(self) -> int:
        return self.unread

    def reply(self, req_id: int, error: Any, result: dict[str, Any] | None) -> None:
        self.frames.append((req_id, error, result or {}))

    def events(self, req_id: int) -> list[tuple[str, bytes, int]]:
        return [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"])
                for rid, _err, res in self.frames if rid == req_id
                for e in res.get("events", [])]


class Store:
    def __init__(self, path: Path) -> None:
        self.storage = Storage.open(str(path), cluster_id=1, member_id=2, name="m")
        self.kv = KV(self.storage)
        self.index = 0

    def put(self, key: bytes, value: bytes = b"v") -> int:
        self.index += 1
        cmd = self.kv.encode_command("put", {"key": key, "value": value})
        res = self.kv.apply([(self.index, 1, 0, cmd)])
        return res[0][1]["revision"]  # type: ignore[index]

    def compact(self, rev: int) -> None:
        self.index += 1
        self.kv.apply([(self.index, 1, 0, self.kv.encode_command("compact", {"revision": rev}))])


@pytest.fixture
def st(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "m")
    yield s
    s.storage.close()


def make_hub(st: Store, **kw: Any) -> WatchHub:
    return WatchHub(lambda: st.kv, lambda rev: {"revision": rev}, **kw)


async def settle(hub: WatchHub, rounds: int = 200) -> None:
    """Let scheduled pumps run (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
        if not any(w.scheduled for w in hub.watchers.values()):
            return


def test_catch_up_in_pages_then_live_with_writes_in_between(st: Store) -> None:
    first = st.put(b"k/0")
    for i in range(1, 50):
        st.put(b"k/%d" % i)

    async def run() -> FakeConn:
        hub = make_hub(st, page_limit=7)
        conn = FakeConn()
        hub.handle(conn, 5, "watch", {"key": b"k/", "range_end": b"k0",
                                      "start_revision": first})
        assert conn.frames[0][2]["created"] is True
        # Writes land while the watcher is still catching up (between its pages).
        for i in range(50, 60):
            await asyncio.sleep(0)
            st.put(b"k/%d" % i)
            st.put(b"other")
            hub.notify()
        await settle(hub)
        st.put(b"k/last")
        hub.notify()
        await settle(hub)
        return conn

    conn = asyncio.run(run())
    revs = [r for _t, _k, r in conn.events(5)]
    assert len(revs) == 61 and len(set(revs)) == 61 and revs == sorted(revs)
    assert revs[0] == first
    assert all(len(res.get("events", [])) <= 7 for _r, _e, res in conn.frames)
    assert conn.events(5)[-1][1] == b"k/last"


def test_over_the_buffer_limit_cancels_with_a_reason(st: Store) -> None:
    async def run() -> FakeConn:
        hub = make_hub(st, max_buffer=1 << 21, page_bytes=1 << 20)
        conn = FakeConn()
        hub.handle(conn, 1, "watch", {"key": b"a"})
        conn.unread = (1 << 21) + 1
        st.put(b"a")
        hub.notify()
        assert not hub.watchers
        return conn

    conn = asyncio.run(run())
    last = conn.frames[-1][2]
    assert last["canceled"] is True and "slow consumer" in last["reason"]
    assert conn.events(1) == []


def test_stalled_consumer_waits_then_is_cancelled(st: Store) -> None:
    async def run() -> tuple[FakeConn, bool]:
        hub = make_hub(st, max_buffer=1 << 21, page_bytes=1 << 20, stall_timeout=0.2,
                       retry_interval=0.01)
        conn = FakeConn()
        hub.handle(conn, 1, "watch", {"key": b"a"})
        conn.unread = (1 << 20) + 1  # over half: paused, not cancelled yet
        st.put(b"a")
        hub.notify()
        paused_alive = bool(hub.watchers) and conn.events(1) == []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while hub.watchers and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return conn, paused_alive

    conn, paused_alive = asyncio.run(run())
    assert paused_alive
    assert "no progress" in conn.frames[-1][2]["reason"]


def test_paused_consumer_resumes_when_it_reads(st: Store) -> None:
    async def run() -> FakeConn:
        hub = make_hub(st, max_buffer=1 << 21, page_bytes=1 << 20, stall_timeout=5)
        conn = FakeConn()
        hub.handle(conn, 1, "watch", {"key": b"a"})
        conn.unread = (1 << 20) + 1
        st.put(b"a")
        hub.notify()
        await asyncio.sleep(0.05)
        conn.unread = 0  # the client read its data
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while not conn.events(1) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return conn

    conn = asyncio.run(run())
    assert [k for _t, k, _r in conn.events(1)] == [b"a"]


def test_connection_lost_and_close(st: Store) -> None:
    async def run() -> tuple[FakeConn, FakeConn]:
        hub = make_hub(st)
        a, b = FakeConn(), FakeConn()
        hub.handle(a, 1, "watch", {"key": b"x"})
        hub.handle(a, 2, "watch", {"key": b"y"})
        hub.handle(b, 1, "watch", {"key": b"x"})
        assert len(hub.watchers) == 3
        with pytest.raises(BadRequestError):  # b may not cancel a's watch
            hub.handle(b, 9, "watch_cancel", {"watch_id": 1})
        a.closed = True
        hub.connection_lost(a)
        assert len(hub.watchers) == 1
        hub.close("stopping")
        assert not hub.watchers
        return a, b

    a, b = asyncio.run(run())
    assert b.frames[-1][2]["canceled"] and b.frames[-1][2]["reason"] == "stopping"
    assert not any(res.get("canceled") for _r, _e, res in a.frames)


def test_compacted_start_is_refused_and_jump_past_cursor_cancels(st: Store) -> None:
    r = [st.put(b"c") for _ in range(5)]
    st.compact(r[2])

    async def run() -> FakeConn:
        hub = make_hub(st)
        conn = FakeConn()
        with pytest.raises(CompactedError):
            hub.handle(conn, 1, "watch", {"key": b"c", "start_revision": r[1]})
        hub.handle(conn, 2, "watch", {"key": b"c", "start_revision": r[2] + 1})
        await settle(hub)
        # As if a snapshot from the leader jumped this member past the watcher's cursor.
        w = next(iter(hub.watchers.values()))
        w.cursor = (r[0], 0)
        st.put(b"c")
        hub.notify()
        assert not hub.watchers
        return conn

    conn = asyncio.run(run())
    assert [rev for _t, _k, rev in conn.events(2)] == [r[3], r[4]]
    last = conn.frames[-1][2]
    assert last["canceled"] and last["compact_revision"] == r[2] and "COMPACTED" in last["reason"]


def test_many_live_watchers_share_one_read_and_match_per_watcher_results(st: Store) -> None:
    base = st.put(b"seed")
    ranges = [(b"m/a", b""), (b"m/", b"m0"), (b"m/b", b"m/d"), (b"m/c", b"\x00"), (b"zz", b"")]

    async def run() -> list[FakeConn]:
        hub = make_hub(st, page_limit=50)
        conns = []
        for i, (k, end) in enumerate(ranges * 2):
            c = FakeConn()
            conns.append(c)
            hub.handle(c, 1, "watch", {"key": k, "range_end": end, "prev_kv": i >= len(ranges)})
        calls = []
        real = st.kv.events_page
        st.kv.events_page = lambda *a, **kw: calls.append(1) or real(*a, **kw)  # type: ignore
        try:
            for i in range(30):  # small applies: every notify takes the shared path
                st.put(b"m/%s" % b"abcd"[i % 4: i % 4 + 1], b"%d" % i)
                hub.notify()
            assert calls == []
            for i in range(120):  # one big apply window: more than a page, read per watcher
                st.put(b"m/b", b"big%d" % i)
            hub.notify()
            await settle(hub)
            assert calls
        finally:
            del st.kv.events_page
        return conns

    conns = asyncio.run(run())
    for i, c in enumerate(conns):
        k, end = ranges[i % len(ranges)]
        want = st.kv.events(k, end, base + 1, limit=10_000, prev_kv=i >= len(ranges))
        got = [e for _r, _e, res in c.frames for e in res.get("events", [])]
        assert got == want, (k, end)
        assert (len(got) > 0) == (k != b"zz")
