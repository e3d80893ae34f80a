"""Raft messages between members over asyncio Protocols (uvloop when the host installed it).

Each ordered pair of members uses one TCP connection in one direction: a member *dials* every peer
to send to it, and *accepts* connections to receive. So a connection never carries traffic both
ways, and a sender never waits on its receiver (Raft tolerates loss; it resends).

* The first frame of every connection is the hello (cluster ID, member ID). A hello from another
  cluster is refused with one warning line naming both IDs: two clusters that share an address
  list by mistake must not corrupt each other.
* :meth:`PeerTransport.send` never blocks and never raises. Messages are grouped per peer and each
  peer gets one ``transport.write`` per call, which is what lets a leader's many MsgApps and
  heartbeats share syscalls.
* A message for a peer that is not connected starts a connection attempt, with exponential
  backoff (50 ms doubling to 2 s, jittered from a seeded RNG). While an attempt is under way,
  messages wait for it (bounded: ``PENDING_MAX_BYTES``) and go out once it connects, or are
  dropped if it fails; outside an attempt (backing off) they are dropped. When a peer dials us
  (it restarted), our backoff to it is reset and we dial it back at once: a follower has nothing
  to send to another follower until it must answer its vote request, and that answer must not
  be the message that is lost (the election would wait another timeout).
* Back-pressure: when a peer's kernel/user write buffer passes ``high_water`` bytes, messages to
  it are dropped until it drains, so a slow or stalled follower cannot grow our memory without
  bound; Raft's probing resends what is missing once it catches up.
* A connection whose first frame is a *snapshot stream* hello (net/snapstream.py) carries one
  snapshot from a leader, apart from messages: its frames go to the host's
  ``on_snapshot_stream`` handler, which may answer on it.
* ``delay_ms`` (per transport, or per peer via :meth:`set_delay`) defers writes with
  ``loop.call_later``: a labelled, test-only stand-in for network latency.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, cast

from fastraft._core import Message
from fastraft.net.framing import MAX_PEER_FRAME, FrameDecoder, FrameTooLargeError, WireError, frame
from fastraft.net.peercodec import (
    decode_hello,
    decode_message,
    encode_hello,
    encode_join_answer,
    encode_message,
)
from fastraft.net.snapstream import InboundStream, decode_stream_hello, is_stream_hello

__all__ = ["PeerTransport", "DEFAULT_HIGH_WATER"]

log = logging.getLogger("fastraft.transport")

DEFAULT_HIGH_WATER = 16 * 1024 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
CONNECT_TIMEOUT = 2.0
# A connection that dies sooner than this after it was made does not reset the backoff: otherwise
# a peer that accepts and at once closes (say, a member of another cluster) would be redialled on
# every send.
STABLE_AFTER = 1.0
# Messages held for a peer while a dial to it is under way (a dial on loopback or a LAN takes
# about a millisecond; beyond this much they are dropped, as when not connecting).
PENDING_MAX_BYTES = 4 * 1024 * 1024


class _Peer:
    """Outbound state for one peer."""

    __slots__ = ("id", "addr", "transport", "protocol", "connecting", "backoff", "next_attempt",
                 "paused", "delay_ms", "connected_at", "dropped", "task", "pending",
                 "pending_bytes")

    def __init__(self, peer_id: int, addr: tuple[str, int]) -> None:
        self.id = peer_id
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.protocol: _Outbound | None = None
        self.connecting = False
        self.backoff = 0.0  # 0 = no failure yet: the next attempt may start at once
        self.next_attempt = 0.0
        self.paused = False
        self.delay_ms: float | None = None
        self.connected_at = 0.0
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None
        self.pending: list[bytes] = []  # frames waiting for the dial under way
        self.pending_bytes = 0

    def drop_pending(self) -> None:
        self.dropped += len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0


class _Outbound(asyncio.Protocol):
    """A connection we dialled: we only write to it."""

    def __init__(self, owner: PeerTransport, peer: _Peer) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        hw = self.owner.high_water
        transport.set_write_buffer_limits(high=hw, low=hw // 4)
        transport.write(self.owner._hello)
        p = self.peer
        if p.pending:  # what was sent while we dialled
            transport.write(b"".join(p.pending))
            p.pending.clear()
            p.pending_bytes = 0
        # Registered here, not after create_connection returns, so that a connection lost before
        # the dialling task resumes is still seen by connection_lost.
        p.transport = transport
        p.protocol = self
        p.paused = False
        p.connected_at = self.owner._loop.time() if self.owner._loop is not None else 0.0

    def data_received(self, data: bytes) -> None:
        # The receiver never writes on this connection; anything it sends is ignored.
        pass

    def pause_writing(self) -> None:
        self.peer.paused = True

    def resume_writing(self) -> None:
        self.peer.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._outbound_lost(self)


class _Inbound(asyncio.Protocol):
    """A connection a peer dialled: we only read from it."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.decoder = FrameDecoder(owner.max_frame)
        self.transport: asyncio.Transport | None = None
        self.remote_id: int | None = None  # known after the hello
        self.closed = False
        self.stream: InboundStream | None = None  # set when this is a snapshot stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.owner._inbound.add(self)

    def _close(self, why: str, *args: Any) -> None:
        log.warning("%x: closing peer connection from %s: " + why, self.owner.member_id,
                    self._peername(), *args)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _peername(self) -> str:
        name = self.transport.get_extra_info("peername") if self.transport else None
        rid = f" (member {self.remote_id:x})" if self.remote_id is not None else ""
        return f"{name[0]}:{name[1]}{rid}" if name else f"?{rid}"

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        oversized: FrameTooLargeError | None = None
        try:
            bodies = self.decoder.feed(data)
        except FrameTooLargeError as e:
            bodies, oversized = e.frames, e
        for body in bodies:
            if not self._handle(body):
                return
        if oversized is not None:
            self._close("%s", oversized.reason)

    def _handle(self, body: bytes) -> bool:
        owner = self.owner
        if self.stream is not None:
            self.stream.feed(body)
            return True
        if self.remote_id is None:
            if is_stream_hello(body):
                return self._open_stream(body)
            try:
                cluster_id, member_id = decode_hello(body)
            except WireError as e:
                self._close("bad hello: %s", e.reason)
                return False
            if cluster_id == 0 and owner.on_join_query is not None:
                self._answer_join_query(member_id)
                return False
            if cluster_id != owner.cluster_id:
                log.warning("%x: refused peer connection from member %x of cluster %x: this member "
                            "belongs to cluster %x", owner.member_id, member_id, cluster_id,
                            owner.cluster_id)
                self.closed = True
                assert self.transport is not None
                self.transport.close()
                return False
            self.remote_id = member_id
            owner._inbound_hello(self)
            return True
        try:
            m = decode_message(body)
        except WireError as e:
            self._close("undecodable message: %s", e.reason)
            return False
        if m.frm != self.remote_id:
            self._close("message from %x on the connection of %x", m.frm, self.remote_id)
            return False
        try:
            owner.on_message(m)
        except Exception:
            # A bug in the host's handler must not take the connection (and all later messages
            # from this peer) down with it.
            log.exception("%x: on_message failed for %r", owner.member_id, m)
        return True

    def _open_stream(self, body: bytes) -> bool:
        owner = self.owner
        try:
            hello = decode_stream_hello(body)
        except WireError as e:
            self._close("bad snapshot stream hello: %s", e.reason)
            return False
        if hello.cluster_id != owner.cluster_id or hello.to != owner.member_id:
            self._close("snapshot stream for member %x of cluster %x (this is %x of %x)",
                        hello.to, hello.cluster_id, owner.member_id, owner.cluster_id)
            return False
        if owner.on_snapshot_stream is None:
            self._close("snapshot streams are not accepted here")
            return False
        assert self.transport is not None
        self.remote_id = hello.frm
        self.stream = InboundStream(self.transport, hello)
        try:
            owner.on_snapshot_stream(self.stream)
        except Exception:  # never let a host bug take the loop down
            log.exception("%x: cannot take a snapshot stream", owner.member_id)
            self.stream.close()
            return False
        return True

    def _answer_join_query(self, member_id: int) -> None:
        # The one case where the receiving side writes: a joining member asks for the cluster
        # id and members before it has either (see net/peercodec.py).
        owner = self.owner
        assert owner.on_join_query is not None and self.transport is not None
        try:
            cid, members = owner.on_join_query()
            self.transport.write(frame(encode_join_answer(cid, members)))
            log.info("%x: answered the join query of member %x", owner.member_id, member_id)
        except Exception:  # never let a host bug take the loop down
            log.exception("%x: cannot answer a join query", owner.member_id)
        self.closed = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            self.stream.lost()
        self.owner._inbound_lost(self)


class PeerTransport:
    """Sends and receives Raft messages for one member.

    ``peers`` maps member IDs to ``(host, port)`` of their peer listeners. ``on_message`` is
    called on the event loop for every message received (from any member of the same cluster).
    """

    def __init__(self, member_id: int, cluster_id: int, listen_addr: tuple[str, int],
                 peers: dict[int, tuple[str, int]], on_message: Callable[[Message], None], *,
                 max_frame: int = MAX_PEER_FRAME, high_water: int = DEFAULT_HIGH_WATER,
                 seed: int | None = None, delay_ms: float = 0.0) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.listen_addr = listen_addr
        self.on_message = on_message
        # Set by the host to answer join queries: () -> (cluster_id, members).
        self.on_join_query: Callable[[], tuple[int, dict[str, dict[str, Any]]]] | None = None
        # Set by the host to receive snapshot streams (net/snapstream.py).
        self.on_snapshot_stream: Callable[[InboundStream], None] | None = None
        self.max_frame = max_frame
        self.high_water = high_water
        self.delay_ms = delay_ms
        # Seeded so backoff schedules replay exactly in tests; default: derived from the member.
        self._rng = random.Random(member_id if seed is None else seed)
        self._hello = frame(encode_hello(cluster_id, member_id))
        self._peers: dict[int, _Peer] = {}
        self._inbound: set[_Inbound] = set()
        self._inbound_by_id: dict[int, _Inbound] = {}
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        for pid, addr in peers.items():
            if pid != member_id:
                self._peers[pid] = _Peer(pid, addr)

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen on ``listen_addr`` (port 0 picks one; read it back from ``listen_addr``)."""
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        host, port = self.listen_addr
        self._server = await self._loop.create_server(lambda: _Inbound(self), host, port,
                                                      reuse_address=True)
        sock = self._server.sockets[0]
        self.listen_addr = (host, sock.getsockname()[1])
        for p in self._peers.values():
            self._connect(p)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        self._stopped = True
        if self._server is not None:
            self._server.close()
        tasks = []
        for p in self._peers.values():
            if p.task is not None:
                p.task.cancel()
                tasks.append(p.task)
            if p.transport is not None:
                p.transport.close()
        for conn in list(self._inbound):
            if conn.transport is not None:
                conn.transport.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            # Python 3.11's wait_closed returns at once; 3.12+ waits for handlers: bound it.
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
            self._server = None
        # Let connection_lost callbacks of the closed transports run before returning.
        await asyncio.sleep(0)

    # ------------------------------------------------------------------------- peers

    def add_peer(self, peer_id: int, addr: tuple[str, int]) -> None:
        """Start sending to ``peer_id`` at ``addr`` (replaces a previous address)."""
        if peer_id == self.member_id:
            return
        old = self._peers.get(peer_id)
        if old is not None:
            if old.addr == addr:
                return
            self.remove_peer(peer_id)
        p = _Peer(peer_id, addr)
        self._peers[peer_id] = p
        if self._loop is not None and not self._stopped:
            self._connect(p)

    def remove_peer(self, peer_id: int) -> None:
        """Stop sending to ``peer_id`` and close its connections."""
        p = self._peers.pop(peer_id, None)
        if p is not None:
            if p.task is not None:
                p.task.cancel()
            if p.transport is not None:
                p.transport.close()
        conn = self._inbound_by_id.pop(peer_id, None)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    def peer_addr(self, peer_id: int) -> tuple[str, int] | None:
        """The peer address we dial ``peer_id`` at (None for an unknown peer)."""
        p = self._peers.get(peer_id)
        return p.addr if p is not None else None

    def is_connected(self, peer_id: int) -> bool:
        """True when an outbound connection to ``peer_id`` is open (our hello was written)."""
        p = self._peers.get(peer_id)
        return p is not None and p.transport is not None and not p.transport.is_closing()

    def set_delay(self, peer_id: int, delay_ms: float | None) -> None:
        """Delay writes to one peer (None: use the transport-wide ``delay_ms``)."""
        p = self._peers.get(peer_id)
        if p is None:
            raise KeyError(f"unknown peer {peer_id:x}")
        p.delay_ms = delay_ms

    def dropped(self, peer_id: int) -> int:
        """How many messages to ``peer_id`` were dropped (not connected, or back-pressure)."""
        p = self._peers.get(peer_id)
        return p.dropped if p is not None else 0

    # -------------------------------------------------------------------------- send

    def send(self, msgs: list[Message]) -> None:
        """Queue messages for their peers; never blocks, never raises.

        Messages to unknown or unreachable peers are dropped (Raft resends).
        """
        groups: dict[int, list[bytes]] = {}
        for m in msgs:
            try:
                data = frame(encode_message(m))
            except Exception as e:  # an unencodable message is a host bug; never kill the loop
                log.error("%x: cannot encode %r: %s", self.member_id, m, e)
                continue
            chunks = groups.get(m.to)
            if chunks is None:
                groups[m.to] = [data]
            else:
                chunks.append(data)
        for peer_id, chunks in groups.items():
            p = self._peers.get(peer_id)
            if p is None:
                continue
            t = p.transport
            if t is None or t.is_closing():
                self._connect(p)
                size = sum(len(c) for c in chunks)
                # Held only for a dial not yet connected (connection_made sends them); a
                # connection that is closing takes nothing more.
                if (p.connecting and t is None
                        and p.pending_bytes + size <= PENDING_MAX_BYTES):
                    p.pending.extend(chunks)
                    p.pending_bytes += size
                else:
                    p.dropped += len(chunks)
                continue
            if p.paused:
                p.dropped += len(chunks)
                continue
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            delay = p.delay_ms if p.delay_ms is not None else self.delay_ms
            if delay > 0 and self._loop is not None:
                self._loop.call_later(delay / 1000.0, self._delayed_write, p, t, data, len(chunks))
            else:
                t.write(data)

    def _delayed_write(self, p: _Peer, t: asyncio.Transport, data: bytes, n: int) -> None:
        # Only onto the same connection: bytes after a reconnect would start mid-stream.
        if p.transport is t and not t.is_closing():
            t.write(data)
        else:
            p.dropped += n

    # ---------------------------------------------------------------------- connecting

    def _connect(self, p: _Peer) -> None:
        loop = self._loop
        if loop is None or self._stopped or p.connecting or p.transport is not None:
            return
        if loop.time() < p.next_attempt:
            return
        p.connecting = True
        p.task = loop.create_task(self._dial(p))

    async def _dial(self, p: _Peer) -> None:
        loop = self._loop
        assert loop is not None
        try:
            host, port = p.addr
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Outbound(self, p), host, port), CONNECT_TIMEOUT)
        except asyncio.CancelledError:
            p.connecting = False
            p.drop_pending()
            raise
        except (OSError, asyncio.TimeoutError) as e:
            p.connecting = False
            p.drop_pending()
            self._failed(p)
            log.debug("%x: cannot connect to peer %x at %s:%d: %s; retry in %.3fs",
                      self.member_id, p.id, p.addr[0], p.addr[1], e,
                      p.next_attempt - loop.time())
            return
        p.connecting = False
        if self._peers.get(p.id) is not p or self._stopped:
            # Removed (or stopped) while dialling.
            assert proto.transport is not None
            proto.transport.close()
            return
        log.info("%x: connected to peer %x at %s:%d", self.member_id, p.id, p.addr[0], p.addr[1])

    def _failed(self, p: _Peer) -> None:
        assert self._loop is not None
        p.backoff = BACKOFF_MIN if p.backoff == 0 else min(BACKOFF_MAX, p.backoff * 2)
        # Jitter in [0.5, 1.0) of the step keeps members from redialling in lockstep.
        p.next_attempt = self._loop.time() + p.backoff * (0.5 + self._rng.random() / 2)

    def _outbound_lost(self, proto: _Outbound) -> None:
        p = proto.peer
        if p.protocol is not proto:
            return
        p.transport = None
        p.protocol = None
        p.paused = False
        p.drop_pending()
        if self._loop is None or self._stopped:
            return
        if self._loop.time() - p.connected_at >= STABLE_AFTER:
            p.backoff = 0.0
            p.next_attempt = 0.0
        else:
            self._failed(p)
        log.info("%x: lost connection to peer %x", self.member_id, p.id)

    # ------------------------------------------------------------------------ inbound

    def _inbound_hello(self, conn: _Inbound) -> None:
        assert conn.remote_id is not None
        old = self._inbound_by_id.get(conn.remote_id)
        if old is not None and old is not conn and old.transport is not None:
            # The peer redialled (it restarted or lost the old connection first): keep the new one.
            old.transport.close()
        self._inbound_by_id[conn.remote_id] = conn
        p = self._peers.get(conn.remote_id)
        if p is not None and p.transport is None and not p.connecting:
            # It is up (it just dialled us): dial it back now, whatever our backoff says, so
            # that our next message to it (say, the answer to its vote request) gets through.
            p.backoff = 0.0
            p.next_attempt = 0.0
            self._connect(p)

    def _inbound_lost(self, conn: _Inbound) -> None:
        self._inbound.discard(conn)
        if conn.remote_id is not None and self._inbound_by_id.get(conn.remote_id) is conn:
            del self._inbound_by_id[conn.remote_id]
