"""Backups: one member's KV state streamed to a client (``fastractl snapshot save``).

The ``snapshot`` request is a stream op: the KV service hands it here with the front end's
:class:`~fastraft.storage.watch.Sink`, as it hands ``watch`` to the watch hub, so any door that
streams (the msgpack listener now, a gRPC door later) serves it unchanged.

What is sent is what a leader streams to a follower that needs a snapshot (net/snapstream.py,
server/snapshotter.py): a RocksDB view of the KV column family taken on the loop between two
applies (so one applied index, one revision), read in ~1 MiB chunks by ``KV.snapshot_chunks`` in
a worker thread, then an end record with the count, length and SHA-256 of the chunks and the
member list as of the view. Frames, all under the request's id::

    {"snapshot": {cluster_id, member_id, index, term, revision, compact_revision}, "header"}
    {"chunk": bytes} ...
    {"end": {chunks, bytes, sha256, members}}

The client writes them into a file (client/snapfile.py). Memory stays bounded on the member: the
next chunk is read only once the connection's unsent bytes are below ``high_water``; a client that
does not read for ``stall_timeout`` seconds gets its stream cancelled. A closed connection or a
stopping member ends the stream; its view (which pins RocksDB files) goes with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastraft.errors import BadRequestError, FastraftError, StoppingError, UnavailableError
from fastraft.raft.core import Raft
from fastraft.server.membership import Membership
from fastraft.storage.mvcc import KV
from fastraft.storage.watch import Sink

__all__ = ["BackupStreams", "SNAPSHOT_OP"]

log = logging.getLogger("fastraft.node")

SNAPSHOT_OP = "snapshot"
# Streams at once per member: each holds a RocksDB view (pinning the files of its moment).
MAX_STREAMS = 4


class _Stream:
    __slots__ = ("sink", "req_id", "task")

    def __init__(self, sink: Sink, req_id: int) -> None:
        self.sink = sink
        self.req_id = req_id
        self.task: asyncio.Task[None] | None = None


class BackupStreams:
    """The backup streams of one member (see the module docstring)."""

    def __init__(self, members: Membership, *, header: Callable[[int], dict[str, Any]],
                 keep_task: Callable[[asyncio.Task[None]], None],
                 high_water: int = 4 << 20, stall_timeout: float = 30.0,
                 chunk_bytes: int = 1 << 20) -> None:
        self._members = members
        self._header = header
        self._keep_task = keep_task
        self.high_water = high_water
        self.stall_timeout = stall_timeout
        self.chunk_bytes = chunk_bytes
        self.name = ""
        self.cluster_id = self.member_id = 0
        self.raft: Raft | None = None
        self.kv: KV | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[_Stream] = set()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False  # read by the worker thread: stop reading RocksDB

    def open(self, name: str, cluster_id: int, member_id: int, raft: Raft, kv: KV,
             loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.cluster_id, self.member_id = name, cluster_id, member_id
        self.raft, self.kv, self.loop = raft, kv, loop
        # One thread: streams take turns reading RocksDB; the loop never does.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"backup-{name}")

    # ------------------------------------------------------------------ requests
    def start(self, sink: Sink, req_id: int, args: dict[str, Any]) -> None:
        """Serve a ``snapshot`` request; raises FastraftError (nothing started) when refused."""
        if args:
            raise BadRequestError(f"snapshot: unknown argument {next(iter(args))!r}")
        kv, raft, loop = self.kv, self.raft, self.loop
        if kv is None or raft is None or loop is None or self._closing:
            raise StoppingError("the member is not serving")
        if len(self._streams) >= MAX_STREAMS:
            raise UnavailableError(f"snapshot: {MAX_STREAMS} snapshots are being sent by this "
                                   f"member already; try again later")
        # On the loop, between applies: the view, the revision, the index and the member list
        # are of one moment.
        view = kv.snapshot_view()
        meta = {"cluster_id": self.cluster_id, "member_id": self.member_id,
                "index": kv.applied, "term": raft.term, "revision": kv.revision,
                "compact_revision": kv.compact_revision}
        members = self._members.wire()
        s = _Stream(sink, req_id)
        sink.reply(req_id, None, {"header": self._header(kv.revision), "snapshot": meta})
        s.task = loop.create_task(self._pump(s, view, members, meta))
        self._streams.add(s)
        self._keep_task(s.task)

    async def _pump(self, s: _Stream, view: Any, members: dict[str, dict[str, Any]],
                    meta: dict[str, Any]) -> None:
        kv, loop, ex = self.kv, self.loop, self._executor
        assert kv is not None and loop is not None and ex is not None
        chunks: Iterator[bytes] = kv.snapshot_chunks(
            view, self.chunk_bytes, cancelled=lambda: self._closing)
        digest = hashlib.sha256()
        n = nbytes = 0
        started = time.monotonic()
        log.info("%s: sending a snapshot [index: %d, revision: %d] to a client", self.name,
                 meta["index"], meta["revision"])

        def pull() -> bytes | None:
            chunk = next(chunks, None)
            if chunk is not None:
                digest.update(chunk)  # releases the GIL for large buffers
            return chunk

        try:
            while True:
                await self._wait_drained(s)
                chunk = await loop.run_in_executor(ex, pull)
                if s.sink.closed:
                    return
                if chunk is None:
                    break
                n += 1
                nbytes += len(chunk)
                s.sink.reply(s.req_id, None, {"chunk": chunk})
            s.sink.reply(s.req_id, None, {"end": {"chunks": n, "bytes": nbytes,
                                                  "sha256": digest.digest(),
                                                  "members": members}})
            took = time.monotonic() - started
            log.info("%s: sent a snapshot [index: %d] to a client: %d chunks, %.1f MiB in "
                     "%.2fs", self.name, meta["index"], n, nbytes / 2**20, took)
        except asyncio.CancelledError:
            raise
        except InterruptedError:
            pass  # the member is stopping; close() told the client
        except FastraftError as e:
            log.warning("%s: snapshot to a client ended: %s", self.name, e.message)
            s.sink.reply(s.req_id, e, None)
        except Exception as e:  # a RocksDB error: tell the client, keep serving
            log.error("%s: snapshot to a client failed: %r", self.name, e)
            s.sink.reply(s.req_id, ("INTERNAL", f"snapshot failed: {e!r}", {}), None)
        finally:
            self._streams.discard(s)
            del chunks, view  # the RocksDB view goes now, not when the task is collected

    async def _wait_drained(self, s: _Stream) -> None:
        """Back-pressure: wait until the client took most of what was sent; a client that
        reads nothing for stall_timeout seconds is cut off (FastraftError)."""
        sink = s.sink
        if sink.buffered() < self.high_water:
            return
        deadline = time.monotonic() + self.stall_timeout
        while not sink.closed and sink.buffered() >= self.high_water // 2:
            if time.monotonic() >= deadline:
                raise FastraftError(f"snapshot cancelled: the client read nothing for "
                                    f"{self.stall_timeout:g}s")
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ endings
    def connection_lost(self, sink: Sink) -> None:
        """The front end lost ``sink``'s client: stop its streams."""
        for s in list(self._streams):
            if s.sink is sink and s.task is not None:
                s.task.cancel()

    def stop(self, reason: str) -> None:
        """The member stops: end every stream with STOPPING (the client removes its part
        file)."""
        self._closing = True
        err = StoppingError(reason)
        for s in list(self._streams):
            if s.task is not None:
                s.task.cancel()
            s.sink.reply(s.req_id, err, None)

    async def close(self) -> None:
        """Before the DB closes: the streams' tasks and the worker thread end, so no RocksDB
        view outlives its DB."""
        self._closing = True
        tasks = [s.task for s in self._streams if s.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
