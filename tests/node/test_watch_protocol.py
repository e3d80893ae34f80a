"""The watch protocol against one in-process member: frames, interleaving, cancel, flow control.

A single member on its own loop thread (tests/inprocess_member.py) with a real client server on
127.0.0.1: fast, and the hub's limits can be set on its loop for the slow-consumer cases.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastraft import AsyncClient, Client
from fastraft import WatchCanceledError, WatchLostError
from fastraft.errors import BadRequestError, CompactedError
from fastraft.net.framing import FrameDecoder, frame
from fastraft.client.codec import decode_response, encode_request
from inprocess_member import InProcessMember
from polling import wait_for


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessMember]:
    m = InProcessMember(tmp_path_factory.mktemp("watch") / "solo")
    m.start()
    with Client(m.endpoint) as c:
        wait_for(lambda: c.status()["leader"] != 0, 10, "the member to elect itself")
    yield m
    m.stop()


class Raw:
    """A raw protocol connection: send requests, read response frames with a deadline."""

    def __init__(self, endpoint: str) -> None:
        host, port = endpoint.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.dec = FrameDecoder(64 << 20)
        self.ready: list[tuple[int, Any, dict]] = []

    def send(self, req_id: int, op: str, args: dict) -> None:
        self.sock.sendall(frame(encode_request(req_id, op, args)))

    def recv(self, timeout: float = 5.0) -> tuple[int, Any, dict]:
        deadline = time.monotonic() + timeout
        while not self.ready:
            left = deadline - time.monotonic()
            assert left > 0, "no frame in time"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("no frame in time") from None
            assert chunk, "connection closed"
            self.ready += [decode_response(b) for b in self.dec.feed(chunk)]
        return self.ready.pop(0)

    def close(self) -> None:
        self.sock.close()


def test_created_then_events_and_pipelined_requests_interleave(member: InProcessMember) -> None:
    with Client(member.endpoint) as c:
        base = c.put(b"pw/a", b"0").header.revision
    raw = Raw(member.endpoint)
    try:
        raw.send(7, "watch", {"key": b"pw/", "range_end": b"pw0", "start_revision": base,
                              "prev_kv": True})
        rid, err, res = raw.recv()
        assert (rid, err) == (7, None) and res["created"] is True and res["watch_id"] > 0
        assert res["header"]["revision"] >= base
        wid = res["watch_id"]
        # Pipeline writes and a read on the same connection as the watch stream.
        raw.send(8, "put", {"key": b"pw/b", "value": b"1"})
        raw.send(9, "range", {"key": b"pw/a", "serializable": True})
        raw.send(10, "put", {"key": b"pw/a", "value": b"2"})
        got: dict[int, list] = {}
        events: list[dict] = []
        for _ in range(20):
            if 8 in got and 9 in got and 10 in got and len(events) >= 3:
                break
            rid, err, res = raw.recv()
            assert err is None, err
            if rid == 7:
                assert res["watch_id"] == wid
                events += res["events"]
            else:
                got[rid] = res
        assert got[9]["kvs"][0]["value"] == b"0"
        assert [(e["type"], e["kv"]["key"], e["kv"]["value"]) for e in events] == [
            ("PUT", b"pw/a", b"0"), ("PUT", b"pw/b", b"1"), ("PUT", b"pw/a", b"2")]
        assert events[2]["prev_kv"]["value"] == b"0" and "prev_kv" not in events[1]
        assert events[2]["kv"]["mod_revision"] == got[10]["header"]["revision"]
        # Cancel: the cancel request is answered, and the stream ends with canceled.
        raw.send(11, "watch_cancel", {"watch_id": wid})
        answers = {}
        for _ in range(4):
            rid, err, res = raw.recv()
            answers[rid] = (err, res)
            if 7 in answers and 11 in answers:
                break
        assert answers[11] == (None, {"watch_id": wid, "canceled": True,
                                      "header": answers[11][1]["header"]})
        assert answers[7][1]["canceled"] is True and "client" in answers[7][1]["reason"]
        assert member.call(lambda: len(member.node.watch_hub.watchers)) == 0
        # Nothing more for the cancelled watch after a new write.
        raw.send(12, "put", {"key": b"pw/c", "value": b"x"})
        rid, err, res = raw.recv()
        assert rid == 12 and err is None
        with pytest.raises(AssertionError, match="no frame"):
            raw.recv(timeout=0.3)
    finally:
        raw.close()


@pytest.mark.parametrize("args, code", [
    ({"key": b""}, "BAD_REQUEST"),
    ({"key": "text"}, "BAD_REQUEST"),
    ({"key": b"a", "range_end": b"a"}, "BAD_REQUEST"),
    ({"key": b"a", "start_revision": -1}, "BAD_REQUEST"),
    ({"key": b"a", "prev_kv": 1}, "BAD_REQUEST"),
    ({"key": b"a", "bogus": 1}, "BAD_REQUEST"),
])
def test_bad_watch_requests_are_refused_and_create_nothing(member: InProcessMember,
                                                           args: dict, code: str) -> None:
    raw = Raw(member.endpoint)
    try:
        raw.send(1, "watch", args)
        rid, err, res = raw.recv()
        assert rid == 1 and err is not None and err[0] == code, (err, res)
        raw.send(2, "watch_cancel", {"watch_id": 424242})
        rid, err, _ = raw.recv()
        assert rid == 2 and err is not None and err[0] == "BAD_REQUEST"
        assert member.call(lambda: len(member.node.watch_hub.watchers)) == 0
    finally:
        raw.close()


def test_connection_close_removes_watchers(member: InProcessMember) -> None:
    raw = Raw(member.endpoint)
    raw.send(1, "watch", {"key": b"cc"})
    assert raw.recv()[2]["created"]
    assert member.call(lambda: len(member.node.watch_hub.watchers)) == 1
    raw.close()
    wait_for(lambda: member.call(lambda: len(member.node.watch_hub.watchers)) == 0, 5,
             "the closed connection's watcher to go")


def test_watch_from_history_is_paged_then_live_without_gaps(member: InProcessMember) -> None:
    with Client(member.endpoint) as c:
        first = c.put(b"hist/0000", b"v").header.revision
        for i in range(1, 2500):
            c.put(b"hist/%04d" % (i % 300), b"v%d" % i)
        with c.watch(b"hist/", prefix=True, start_revision=first) as w:
            seen = []
            for ev in w:
                seen.append(ev.revision)
                if len(seen) == 2500:
                    c.put(b"hist/live", b"x")  # while the watcher is (just) caught up
                if len(seen) == 2501:
                    break
            assert seen == list(range(first, first + 2501))
            assert w.next_revision == first + 2501


def test_slow_consumer_is_cancelled_on_the_member(member: InProcessMember) -> None:
    """End to end through real sockets; the canceled frame's reason is checked in
    test_watch_hub.py (draining a tiny receive window here would take minutes)."""
    hub = member.node.watch_hub
    saved = (hub.max_buffer, hub.page_bytes, hub.stall_timeout)

    def small() -> None:
        hub.max_buffer, hub.page_bytes, hub.stall_timeout = 256 << 10, 64 << 10, 0.5

    member.call(small)
    raw = Raw(member.endpoint)
    try:
        # A tiny receive window, never read: the member's write buffer must fill.
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.send(1, "watch", {"key": b"slow/", "range_end": b"slow0"})
        assert raw.recv()[2]["created"]
        with Client(member.endpoint) as c:
            # Write until the kernel's socket buffers (a few MB) and then the member's are full;
            # bounded: 2000 x 50 kB = 100 MB.
            n = 0
            while member.call(lambda: len(hub.watchers)) and n < 2000:
                for _ in range(20):
                    c.put(b"slow/%d" % n, b"x" * 50_000)
                    n += 1
                if n >= 200:
                    time.sleep(0.02)  # let the stall timer run once the kernel buffers are full
            assert member.call(lambda: len(hub.watchers)) == 0, f"not cancelled after {n} puts"
            # The member is fine: other clients are served, writes keep working.
            assert c.get(b"slow/%d" % (n - 1)).kvs[0].value == b"x" * 50_000
    finally:
        raw.close()
        member.call(lambda: setattr(hub, "max_buffer", saved[0]) or setattr(
            hub, "page_bytes", saved[1]) or setattr(hub, "stall_timeout", saved[2]))


def test_compacted_start_and_client_errors(member: InProcessMember) -> None:
    with Client(member.endpoint) as c:
        r1 = c.put(b"cmp", b"1").header.revision
        r2 = c.put(b"cmp", b"2").header.revision
        c.compact(r2)
        with pytest.raises(CompactedError):
            c.watch(b"cmp", start_revision=r1)
        with pytest.raises(BadRequestError):
            c.watch(b"cmp", b"zz", prefix=True)
        with c.watch(b"cmp", start_revision=r2 + 1) as w:
            c.put(b"cmp", b"3")
            ev = w.get(timeout=5)
            assert ev is not None and (ev.type, ev.kv.value, ev.revision) == ("PUT", b"3", r2 + 1)
            assert w.get(timeout=0.1) is None  # nothing else came
        assert w.get(timeout=0.1) is None  # cancelled: ends quietly


def test_async_watch(member: InProcessMember) -> None:
    async def run() -> list[tuple[str, bytes]]:
        async with AsyncClient(member.endpoint) as c:
            start = (await c.put(b"aw/x", b"0")).header.revision
            out: list[tuple[str, bytes]] = []
            async with c.watch(b"aw/", prefix=True, start_revision=start) as w:
                await c.delete(b"aw/x")
                async for ev in w:
                    out.append((ev.type, ev.kv.key))
                    if len(out) == 2:
                        break
            return out

    assert asyncio.run(run()) == [("PUT", b"aw/x"), ("DELETE", b"aw/x")]


def test_member_stop_ends_watch_with_an_error(tmp_path: Path) -> None:
    m = InProcessMember(tmp_path / "solo2")
    m.start()
    try:
        with Client(m.endpoint) as c:
            wait_for(lambda: c.status()["leader"] != 0, 10, "the member to elect itself")
            rev = c.put(b"st", b"1").header.revision
        w = Client(m.endpoint).watch(b"st", start_revision=rev)
        assert w.get(timeout=5) is not None
    finally:
        m.stop()
    with pytest.raises((WatchCanceledError, WatchLostError)) as ei:
        w.get(timeout=5)
    assert ei.value.resume_revision == rev + 1
    w.close()
