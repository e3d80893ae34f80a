"""Snapshot streams: a leader's KV state sent to one follower in chunks, apart from messages.

A snapshot used to travel inside one MsgSnap frame, so a store larger than a peer frame (64 MiB)
could never be sent. Now MsgSnap never goes on the message connection: the leader's node opens a
dedicated TCP connection to the follower's peer port (as etcd's rafthttp sends snapshots apart
from its message stream) and writes, as length-prefixed frames (wire.frame):

* hello: msgpack ``["fastraft-snap", 1, cluster_id, from, to, transfer_id, msg_term, index,
  snap_term, voters, learners]``: the MsgSnap's metadata;
* chunks: ``b"C"`` + msgpack of alternating keys and values (about CHUNK_BYTES each; keys
  ascend across the stream: a RocksDB iterator over a consistent view, kv.snapshot_chunks);
* end: ``b"E"`` + msgpack ``[chunks, bytes, sha256, members]``: the count, length and SHA-256 of
  the chunk payloads in order, and the member list as of the snapshot's index.

The follower stages the chunks without touching its live state, verifies the end frame, and only
then installs (storage/logstore.py, "Installing a received snapshot") and hands the MsgSnap
to its core.
It answers with one frame ``["fastraft-snap-ack", ok, reason]`` and closes.

Both sides bound memory: the sender builds one chunk at a time in a worker thread and waits for
the socket to drain (``drain`` with a small high-water mark) before building the next; the
receiver pauses reading while RECV_QUEUE chunks wait to be staged. A stream that makes no
progress for ``stall_timeout`` seconds is dropped on both sides; the leader's core is then told
the snapshot failed and sends a new one from scratch later.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

import msgpack

from fastraft.net.framing import FrameDecoder, WireError, frame

__all__ = [
    "StreamHello",
    "SnapshotStreamError",
    "InboundStream",
    "send_snapshot",
    "is_stream_hello",
    "decode_stream_hello",
    "decode_end",
    "CHUNK_BYTES",
    "STALL_TIMEOUT",
]

log = logging.getLogger("fastraft.snapstream")

CHUNK_BYTES = 1 << 20
# Bytes the sender lets the kernel/user buffer hold before it waits: a few chunks at most.
SEND_HIGH_WATER = 2 * CHUNK_BYTES
RECV_QUEUE = 2  # frames waiting to be staged before the receiver stops reading
STALL_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
# After the end frame the follower verifies, ingests and installs: bounded, but generous.
ACK_TIMEOUT = 60.0

_MAGIC = "fastraft-snap"
_MAGIC_BYTES = _MAGIC.encode()
_ACK_MAGIC = "fastraft-snap-ack"
_VERSION = 1
CHUNK = 0x43  # b"C"
END = 0x45  # b"E"


class SnapshotStreamError(Exception):
    """A snapshot stream failed (refused, cut, stalled or corrupt); the reason is the message."""


class StreamHello:
    """The MsgSnap a stream carries: who sends it to whom, and the snapshot's metadata."""

    __slots__ = ("cluster_id", "frm", "to", "transfer_id", "term", "index", "snap_term",
                 "voters", "learners")

    def __init__(self, cluster_id: int, frm: int, to: int, transfer_id: int, term: int,
                 index: int, snap_term: int, voters: tuple[int, ...],
                 learners: tuple[int, ...]) -> None:
        self.cluster_id = cluster_id
        self.frm = frm
        self.to = to
        self.transfer_id = transfer_id
        self.term = term
        self.index = index
        self.snap_term = snap_term
        self.voters = voters
        self.learners = learners

    def encode(self) -> bytes:
        return msgpack.packb([_MAGIC, _VERSION, self.cluster_id, self.frm, self.to,
                              self.transfer_id, self.term, self.index, self.snap_term,
                              list(self.voters), list(self.learners)])


def _uint(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
        raise WireError(f"snapshot stream: bad {what} {v!r}")
    return v


def is_stream_hello(body: bytes) -> bool:
    """Cheap test whether a connection's first frame opens a snapshot stream."""
    return _MAGIC_BYTES in body[:24]


def decode_stream_hello(body: bytes) -> StreamHello:
    """Raises WireError on anything but a valid stream hello."""
    try:
        f = msgpack.unpackb(body, raw=False)
    except Exception as e:  # msgpack raises several types on garbage
        raise WireError(f"snapshot stream: undecodable hello ({e})") from None
    if not isinstance(f, list) or len(f) != 11 or f[0] != _MAGIC:
        raise WireError("snapshot stream: not a stream hello")
    if f[1] != _VERSION:
        raise WireError(f"snapshot stream: unsupported version {f[1]!r}")
    if not isinstance(f[9], list) or not isinstance(f[10], list):
        raise WireError("snapshot stream: voters and learners must be lists")
    cid, frm, to, tid, term, index, snap_term = (_uint(f[i], n) for i, n in enumerate(
        ("cluster id", "from", "to", "transfer id", "term", "index", "snapshot term"), 2))
    return StreamHello(cid, frm, to, tid, term, index, snap_term,
                       tuple(_uint(v, "voter") for v in f[9]),
                       tuple(_uint(v, "learner") for v in f[10]))


def encode_end(chunks: int, nbytes: int, digest: bytes, members: dict[str, dict]) -> bytes:
    return bytes([END]) + msgpack.packb([chunks, nbytes, digest, members], use_bin_type=True)


def decode_end(body: bytes) -> tuple[int, int, bytes, dict[str, dict[str, Any]]]:
    """(chunks, bytes, sha256, members) of an end frame; WireError on anything else."""
    try:
        f = msgpack.unpackb(body[1:], raw=False)
    except Exception as e:  # msgpack raises several types on garbage
        raise WireError(f"snapshot stream: undecodable end frame ({e})") from None
    if (not isinstance(f, list) or len(f) != 4 or not isinstance(f[2], bytes)
            or not isinstance(f[3], dict)
            or not all(isinstance(k, str) and isinstance(v, dict) for k, v in f[3].items())):
        raise WireError("snapshot stream: malformed end frame")
    return _uint(f[0], "chunk count"), _uint(f[1], "byte count"), f[2], f[3]


def _encode_ack(ok: bool, reason: str) -> bytes:
    return frame(msgpack.packb([_ACK_MAGIC, ok, reason]))


# ------------------------------------------------------------------------------------- sender


async def send_snapshot(addr: tuple[str, int], hello: StreamHello, chunks: Iterator[bytes],
                        members: dict[str, dict], executor: concurrent.futures.Executor, *,
                        stall_timeout: float = STALL_TIMEOUT,
                        progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Stream one snapshot to the member at ``addr``; return (chunks, bytes) sent.

    ``chunks`` is pulled one item at a time in ``executor`` (it reads RocksDB). Raises
    SnapshotStreamError (or OSError / asyncio.TimeoutError) when the follower refuses it, the
    connection is cut, or no progress is made for ``stall_timeout`` seconds. ``progress(chunks,
    bytes)`` is called after each chunk is written (the host logs from it now and then)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), CONNECT_TIMEOUT)
    try:
        cast(asyncio.WriteTransport, writer.transport).set_write_buffer_limits(
            high=SEND_HIGH_WATER, low=SEND_HIGH_WATER // 2)
        writer.write(frame(hello.encode()))
        digest = hashlib.sha256()
        n = nbytes = 0

        def pull() -> bytes | None:
            chunk = next(chunks, None)
            if chunk is not None:
                digest.update(chunk)  # releases the GIL for large buffers
                return frame(bytes([CHUNK]) + chunk)
            return None

        while True:
            data = await asyncio.wait_for(loop.run_in_executor(executor, pull), stall_timeout)
            if data is None:
                break
            n += 1
            nbytes += len(data) - 5
            writer.write(data)
            if progress is not None:
                progress(n, nbytes)
            # Backpressure: the next chunk is built only once this one is (mostly) sent.
            await asyncio.wait_for(writer.drain(), stall_timeout)
        writer.write(frame(encode_end(n, nbytes, digest.digest(), members)))
        await asyncio.wait_for(writer.drain(), stall_timeout)
        dec = FrameDecoder(1 << 16)
        deadline = loop.time() + ACK_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise SnapshotStreamError("no answer from the follower after the last chunk")
            data = await asyncio.wait_for(reader.read(4096), left)
            if not data:
                raise SnapshotStreamError("the follower closed the stream without answering")
            bodies = dec.feed(data)
            if bodies:
                break
        try:
            magic, ok, reason = msgpack.unpackb(bodies[0], raw=False)
        except Exception:  # msgpack raises several types on garbage
            raise SnapshotStreamError("undecodable answer from the follower") from None
        if magic != _ACK_MAGIC:
            raise SnapshotStreamError("unexpected answer from the follower")
        if not ok:
            raise SnapshotStreamError(f"refused by the follower: {reason}")
        return n, nbytes
    finally:
        writer.close()


# ----------------------------------------------------------------------------------- receiver


class InboundStream:
    """The receiving end of one stream, fed frame bodies by the peer transport's connection.

    Bounded: once RECV_QUEUE bodies wait, reading pauses until the host takes them."""

    def __init__(self, transport: asyncio.Transport, hello: StreamHello) -> None:
        self.transport = transport
        self.hello = hello
        self._queue: collections.deque[bytes] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False

    def feed(self, body: bytes) -> None:
        if self.closed:
            return
        self._queue.append(body)
        if len(self._queue) >= RECV_QUEUE and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def lost(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)

    async def next(self, timeout: float) -> bytes:
        """The next frame body; SnapshotStreamError when the stream is cut or stalls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._queue:
            if self.closed:
                raise SnapshotStreamError("the stream was cut")
            left = deadline - loop.time()
            if left <= 0:
                raise SnapshotStreamError(f"no progress for {timeout:g}s")
            self._wakeup = loop.create_future()
            try:
                await asyncio.wait_for(self._wakeup, left)
            except asyncio.TimeoutError:
                pass
            finally:
                self._wakeup = None
        body = self._queue.popleft()
        if self._paused and len(self._queue) < RECV_QUEUE and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return body

    def answer(self, ok: bool, reason: str = "") -> None:
        """Tell the sender how it went, then close (the stream is done either way)."""
        if not self.closed:
            try:
                self.transport.write(_encode_ack(ok, reason))
            except Exception:  # the connection went while we answered: nothing to tell
                pass
        self.close()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self.transport.close()
