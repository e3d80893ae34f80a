"""PeerTransport on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

import pytest

from _wire_helpers import until
from fastraft._core import Message
from fastraft.net.transport import BACKOFF_MAX, BACKOFF_MIN, PeerTransport
from fastraft.net.framing import frame
from fastraft.net.peercodec import encode_hello, encode_message

CLUSTER = 0xC1
A, B, C = 0xA, 0xB, 0xC
LOOPBACK = ("127.0.0.1", 0)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hb(to: int, frm: int, term: int = 1) -> Message:
    return Message(type=7, to=to, frm=frm, term=term, commit=term, context=b"c")


class Node:
    """A transport plus the list of messages it received."""

    def __init__(self, member_id: int, peers: dict[int, tuple[str, int]] | None = None,
                 cluster: int = CLUSTER, **kw: Any) -> None:
        self.got: list[Message] = []
        self.t = PeerTransport(member_id, cluster, LOOPBACK, peers or {}, self.got.append, **kw)


async def pair(**kw: Any) -> tuple[Node, Node]:
    b = Node(B, **kw)
    await b.t.start()
    a = Node(A, {B: b.t.listen_addr}, **kw)
    await a.t.start()
    await until(lambda: a.t.is_connected(B))
    return a, b


def test_delivery_between_two_transports(run: Any) -> None:
    async def main() -> None:
        a, b = await pair()
        assert b.t.listen_addr[1] != 0
        msgs = [hb(B, A, term=i) for i in range(1, 51)]
        msgs.append(Message(type=1, to=B, frm=A, term=3, index=5, log_term=2,
                            entries=[(6, 3, 0, b"x" * 1000)], commit=4))
        a.t.send(msgs)
        await until(lambda: len(b.got) == 51)
        assert b.got == msgs  # in order, intact
        assert a.got == []  # connections are one-way
        await a.t.stop()
        await b.t.stop()

    run(main())


class CountingTransport:
    """Stands in for an asyncio transport to count write calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def test_send_groups_one_write_per_peer(run: Any) -> None:
    async def main() -> None:
        t = PeerTransport(A, CLUSTER, LOOPBACK, {B: ("127.0.0.1", 1), C: ("127.0.0.1", 1)},
                          lambda m: None)
        fb, fc = CountingTransport(), CountingTransport()
        t._loop = asyncio.get_running_loop()
        t._peers[B].transport, t._peers[C].transport = fb, fc  # type: ignore[assignment]
        msgs = [hb(B, A), hb(C, A), hb(B, A, 2), hb(0xDEAD, A), hb(C, A, 3), hb(B, A, 4)]
        t.send(msgs)
        assert len(fb.writes) == 1 and len(fc.writes) == 1
        assert fb.writes[0] == b"".join(frame(encode_message(m)) for m in msgs if m.to == B)
        assert fc.writes[0] == b"".join(frame(encode_message(m)) for m in msgs if m.to == C)

    run(main())


def test_send_never_raises(run: Any) -> None:
    async def main() -> None:
        t = PeerTransport(A, CLUSTER, LOOPBACK, {}, lambda m: None)
        t.send([hb(B, A)])  # before start, unknown peer
        await t.start()
        bad = Message(type=1, to=B, frm=A, entries=[(1, 1, 0, object())])
        t.send([bad, hb(0x99, A)])
        await t.stop()

    run(main())


def test_reconnect_after_receiver_restarts(run: Any) -> None:
    async def main() -> None:
        a, b = await pair()
        a.t.send([hb(B, A)])
        await until(lambda: len(b.got) == 1)
        port = b.t.listen_addr[1]
        await b.t.stop()
        await until(lambda: not a.t.is_connected(B))
        b2 = Node(B)
        b2.t.listen_addr = ("127.0.0.1", port)
        await b2.t.start()
        # Sends are dropped until the redial succeeds; Raft would keep resending, so do we.
        await until(lambda: len(b2.got) > 0, timeout=8, step=0.02,
                    tick=lambda: a.t.send([hb(B, A, 2)]))
        assert b2.got[0].term == 2 and a.t.dropped(B) >= 1
        await a.t.stop()
        await b2.t.stop()

    run(main())


async def _pair_then_disconnected() -> tuple[Node, Node, Any]:
    """A connected to B (start() dials), then that connection closed: A's peer state for B with
    no connection and no dial under way."""
    a, b = await pair()
    p = a.t._peers[B]
    p.transport.close()
    await until(lambda: p.transport is None and not p.connecting)
    return a, b, p


def test_messages_sent_while_dialling_go_out_when_connected(run: Any) -> None:
    """The first message to a peer we are not connected to (a vote answer, say) is not lost:
    it waits for the dial it starts."""
    async def main() -> None:
        a, b, p = await _pair_then_disconnected()
        p.next_attempt = 0.0
        dropped = a.t.dropped(B)
        a.t.send([hb(B, A, term=5)])  # not connected: this dials
        a.t.send([hb(B, A, term=6)])  # still dialling
        await until(lambda: len(b.got) == 2)
        assert [m.term for m in b.got] == [5, 6] and a.t.dropped(B) == dropped
        await a.t.stop()
        await b.t.stop()

    run(main())


def test_a_peer_that_dials_us_is_dialled_back_despite_the_backoff(run: Any) -> None:
    """A restarted peer dials us: our backoff to it (grown while it was down) must not delay our
    next message to it."""
    async def main() -> None:
        a, b, p = await _pair_then_disconnected()
        p.backoff, p.next_attempt = 2.0, asyncio.get_running_loop().time() + 60
        b.t.add_peer(A, a.t.listen_addr)
        b.t.send([hb(A, B)])  # B dials A
        await until(lambda: len(a.got) == 1)
        await until(lambda: a.t.is_connected(B))
        a.t.send([hb(B, A, term=9)])
        await until(lambda: any(m.term == 9 for m in b.got))
        await a.t.stop()
        await b.t.stop()

    run(main())


def test_backoff_doubles_to_cap_with_seeded_jitter(run: Any) -> None:
    async def main() -> None:
        dead = ("127.0.0.1", free_port())
        t = PeerTransport(A, CLUSTER, LOOPBACK, {B: dead}, lambda m: None, seed=7)
        await t.start()
        p = t._peers[B]
        seen: list[float] = []
        for _ in range(8):
            await until(lambda: not p.connecting and p.backoff > (seen[-1] if seen else 0)
                        or p.backoff == BACKOFF_MAX, timeout=5)
            seen.append(p.backoff)
            p.next_attempt = 0.0  # skip the wait, keep the backoff step
            t.send([hb(B, A)])
        assert seen[0] == BACKOFF_MIN
        assert seen[:6] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
        assert seen[-1] == BACKOFF_MAX
        # Each send waited for the dial it started and was dropped when that failed.
        await until(lambda: not p.connecting)
        assert not t.is_connected(B) and t.dropped(B) == 8
        wait = p.next_attempt - asyncio.get_running_loop().time()
        assert 0 < wait <= BACKOFF_MAX  # jittered within [0.5, 1) of the step
        # A send inside the backoff window does not dial again.
        p.next_attempt = asyncio.get_running_loop().time() + 60
        t.send([hb(B, A)])
        assert not p.connecting
        await t.stop()

    run(main())


def test_foreign_cluster_hello_refused(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        a, b = await pair()
        stranger = Node(C, {B: b.t.listen_addr}, cluster=0xF00)
        with caplog.at_level(logging.WARNING, logger="fastraft.transport"):
            await stranger.t.start()
            await until(lambda: any("cluster f00" in r.getMessage() for r in caplog.records))
            stranger.t.send([hb(B, C)])
            await until(lambda: not stranger.t.is_connected(B))
        line = next(r.getMessage() for r in caplog.records if "cluster f00" in r.getMessage())
        assert "c1" in line and "member c" in line
        assert all(m.frm != C for m in b.got)
        a.t.send([hb(B, A, 9)])  # the server keeps serving its own cluster
        await until(lambda: any(m.term == 9 for m in b.got))
        for n in (a, b, stranger):
            await n.t.stop()

    run(main())


async def raw_exchange(addr: tuple[str, int], payload: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes; return what comes back until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_garbage_bytes_do_not_crash_the_receiver(run: Any) -> None:
    async def main() -> None:
        a, b = await pair()
        hello = frame(encode_hello(CLUSTER, C))
        for payload in (b"\x00\x00\x00\x03abc", frame(b"\xc1\xc1"),
                        hello + frame(b"garbage!"), hello + frame(b"\x93\x01\x02\x03"),
                        hello + frame(encode_message(hb(B, A))),  # frm is not the hello's member
                        frame(encode_hello(CLUSTER, C)[:-1])):
            assert await raw_exchange(b.t.listen_addr, payload) == b""  # closed by the server
        assert b.got == []
        a.t.send([hb(B, A, 5)])
        await until(lambda: len(b.got) == 1 and b.got[0].term == 5)
        await a.t.stop()
        await b.t.stop()

    run(main())


def test_oversized_frame_closes_connection(run: Any) -> None:
    async def main() -> None:
        b = Node(B, max_frame=1024)
        await b.t.start()
        ok = frame(encode_message(hb(B, C, 4)))
        payload = frame(encode_hello(CLUSTER, C)) + ok + struct.pack(">I", 1025)
        t0 = time.monotonic()
        assert await raw_exchange(b.t.listen_addr, payload) == b""
        assert time.monotonic() - t0 < 5
        assert [m.term for m in b.got] == [4]  # the frame before the oversized one got through
        await b.t.stop()

    run(main())


def test_backpressure_drops_instead_of_buffering(run: Any) -> None:
    async def main() -> None:
        # A listener that accepts and never reads: the kernel buffers fill, then ours.
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.setblocking(False)
        t = PeerTransport(A, CLUSTER, LOOPBACK, {B: srv.getsockname()}, lambda m: None,
                          high_water=256 * 1024)
        await t.start()
        await until(lambda: t.is_connected(B))
        conn, _ = srv.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = Message(type=1, to=B, frm=A, entries=[(1, 1, 0, b"x" * (256 * 1024))])
        for _ in range(400):  # bounded: at most ~100 MiB offered
            t.send([big])
            await asyncio.sleep(0)
            if t.dropped(B) > 0:
                break
        assert t.dropped(B) > 0
        buffered = t._peers[B].transport.get_write_buffer_size()  # type: ignore[union-attr]
        assert buffered <= 2 * 256 * 1024 + 4096
        conn.close()
        srv.close()
        await t.stop()

    run(main())


def test_delay_ms_defers_writes(run: Any) -> None:
    async def main() -> None:
        a, b = await pair()
        # 500 ms: long enough that "sent without the delay" (well under it) keeps a wide
        # margin for a loaded 2-core machine.
        a.t.set_delay(B, 500)
        t0 = time.monotonic()
        a.t.send([hb(B, A)])
        await until(lambda: len(b.got) == 1)
        assert time.monotonic() - t0 >= 0.48
        a.t.set_delay(B, None)
        t0 = time.monotonic()
        a.t.send([hb(B, A)])
        await until(lambda: len(b.got) == 2)
        assert time.monotonic() - t0 < 0.45
        with pytest.raises(KeyError):
            a.t.set_delay(0x77, 1)
        await a.t.stop()
        await b.t.stop()

    run(main())


def test_add_and_remove_peer(run: Any) -> None:
    async def main() -> None:
        b = Node(B)
        await b.t.start()
        a = Node(A)
        await a.t.start()
        assert not a.t.is_connected(B)
        a.t.add_peer(B, b.t.listen_addr)
        await until(lambda: a.t.is_connected(B))
        a.t.send([hb(B, A)])
        await until(lambda: len(b.got) == 1)
        a.t.remove_peer(B)
        assert not a.t.is_connected(B)
        a.t.send([hb(B, A)])
        await asyncio.sleep(0.05)
        assert len(b.got) == 1
        await a.t.stop()
        await b.t.stop()

    run(main())
