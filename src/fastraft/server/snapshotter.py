"""Snapshots of one member: local views, streams sent and received, installs.

The node (server/node.py) calls in at four points: ``maybe_snapshot`` after each ready,
``stream`` for a MsgSnap the core sends, ``take_install`` when a ready carries a received
snapshot (the install goes into that ready's ``storage.save``), and ``restore`` once that ready
is durable. The transport calls ``on_stream`` when a leader opens a snapshot stream to us. What
it needs of the node it is given, as server/reads.py is: the state (core, KV, storage, loop) at
``start``, a few callbacks (schedule a ready pass, hold a task, where a peer is, whether the
member closed, and ``installed``: a streamed snapshot replaced the state, here are its members)
and the member's counters (server/stats.py).

The local snapshot is a RocksDB view, not a copy: the state machine lives in the same RocksDB as
the log, so taking one records the metadata, drops the log up to it and keeps an O(1) view of
the KV, serialized only when a follower needs it (net/snapstream.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from fastraft.config import ServerConfig
from fastraft.errors import FastraftError
from fastraft.net.framing import WireError
from fastraft.net.snapstream import (
    STALL_TIMEOUT,
    InboundStream,
    SnapshotStreamError,
    StreamHello,
    decode_end,
    send_snapshot,
)
from fastraft.raft.core import Message, MsgType, Raft, Snapshot
from fastraft.server.membership import Member, Membership, members_from_wire, members_to_wire
from fastraft.server.snapshot import STAGED_MAGIC, staged_marker
from fastraft.server.stats import NodeStats
from fastraft.storage.logstore import Install, Storage
from fastraft.storage.mvcc import KV

__all__ = ["Snapshotter", "SNAP_CATCH_UP_GRACE", "SnapView"]

log = logging.getLogger("fastraft.node")

SNAP = MsgType.MsgSnap.value

# Seconds after sending a snapshot during which the log is not compacted again (see
# maybe_snapshot).
SNAP_CATCH_UP_GRACE = 5.0
# A snapshot stream in progress is logged this often on both sides (a big store streams for
# minutes; the start and end lines alone say nothing meanwhile).
PROGRESS_LOG_SECONDS = 2.0

# (index, RocksDB view of the KV at index, members as of index)
SnapView = tuple[int, Any, list[Member]]


class Snapshotter:
    """The snapshot state of one node: its view, the stream it sends, the one it receives and
    a received snapshot on its way to being installed."""

    def __init__(self, member_id: int, members: Membership, *,
                 peer_addr: Callable[[int], tuple[str, int] | None],
                 closed: Callable[[], bool], schedule_ready: Callable[[], None],
                 keep_task: Callable[[asyncio.Task[None]], None],
                 installed: Callable[[list[Member]], None], stats: NodeStats) -> None:
        self.id = member_id
        self._members = members
        self._peer_addr = peer_addr
        self._closed = closed
        self._schedule_ready = schedule_ready
        self._keep_task = keep_task
        self._installed = installed
        self._stats = stats  # counters for /metrics (sent and received snapshots)
        # Given by start(), once the member's state is open.
        self.cfg: ServerConfig | None = None
        self.raft: Raft | None = None
        self.kv: KV | None = None
        self.storage: Storage | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.name = ""
        self.last_index = 0  # index of the last local snapshot (taken or installed)
        # Serialized only when a follower needs it.
        self.view: SnapView | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Snapshot streams (net/snapstream.py): the one we send (to, index, task), the one we
        # receive, and a received snapshot the core took, waiting for its ready to install it.
        self._sending: tuple[int, int, asyncio.Task[None]] | None = None
        self._recv: asyncio.Task[None] | None = None
        self._recv_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending_install: Install | None = None
        self._installing: Install | None = None  # written by a ready, activated after its sync
        self._transfer_seq = itertools.count(1)
        self.stall_timeout = STALL_TIMEOUT
        self._sent_at = float("-inf")
        # Set when a member was added to a cluster whose log was never compacted (see the
        # node's _apply_conf_change): the next maybe_snapshot compacts regardless of
        # snapshot_count.
        self.compact_for_join = False
        self._closing = False  # read by the snapshot worker thread: stop serializing

    # ------------------------------------------------------------------ lifecycle
    def start(self, cfg: ServerConfig, raft: Raft, kv: KV, storage: Storage,
              loop: asyncio.AbstractEventLoop) -> None:
        self.cfg, self.raft, self.kv, self.storage, self.loop = cfg, raft, kv, storage, loop
        self.name = name = cfg.name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"snap-{name}")
        # One thread: a cut transfer's last job runs before the next transfer's first.
        self._recv_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"snaprecv-{name}")

    async def close(self) -> None:
        """Stop the streams; a snapshot being streamed or staged uses the DB: let those threads
        end (the sender polls _closing) before the DB closes."""
        self._closing = True
        for task in (self._recv, self._sending[2] if self._sending else None):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        for ex in (self._executor, self._recv_executor):
            if ex is not None:
                ex.shutdown(wait=True)
        self.view = None  # RocksDB iterators must go before their DB

    def set_view(self, index: int, view: Any) -> None:
        # A copy: the members as of `index` (later changes must not leak into it).
        self.view = (index, view, self._members.copy())

    # ------------------------------------------------------------------ taking one
    def maybe_snapshot(self) -> None:
        """Compact the log every snapshot_count applied entries.

        The state machine lives in the same RocksDB as the log and its `applied` index, so the
        snapshot costs no copy (as etcd's backend): we record the metadata, drop the log up to
        it and keep an O(1) RocksDB view of the KV at that index for a follower that may need
        it. No sync here: the next ready's sync covers it (storage.save_snapshot_meta). Copying
        the whole KV on the loop here was the p99 spikes (and ~25% of CPU) before."""
        kv, raft, st, cfg = self.kv, self.raft, self.storage, self.cfg
        assert kv is not None and raft is not None and st is not None and cfg is not None
        if kv.applied - self.last_index < cfg.snapshot_count and not (
                self.compact_for_join and raft.snapshot is None):
            return
        if self._sending is not None:
            # A follower is receiving the current one: keep the entries after it (and the
            # view the stream reads).
            return
        loop = self.loop
        assert loop is not None
        if loop.time() - self._sent_at < SNAP_CATCH_UP_GRACE:
            # A follower just got the current snapshot and catches up from the log entries
            # that follow it: compacting them away now would send it another snapshot.
            return
        index = kv.applied
        self.compact_for_join = False
        raft.compact(index)
        s = raft.snapshot
        assert s is not None and s.index == index
        st.save_snapshot_meta(s.index, s.term, s.voters, s.learners)
        self.set_view(index, kv.snapshot_view())
        self.last_index = index
        log.info("%s: took snapshot at index %d and compacted the log", self.name, index)

    # ------------------------------------------------------------------ sending
    def stream(self, m: Message) -> None:
        """Send the core's MsgSnap ``m`` as a snapshot stream (net/snapstream.py), in a task.

        One stream at a time per member: the view is one RocksDB iterator (a second iterator
        would see a later state). The core re-sends MsgSnap while a transfer runs (it re-probes
        after an election timeout without an answer); a stream already on its way for the same
        follower and index is left to finish. Its end is reported to the core either way."""
        raft, snap, loop, cfg = self.raft, m.snapshot, self.loop, self.cfg
        assert raft is not None and snap is not None and loop is not None and cfg is not None
        cur = self._sending
        if cur is not None:
            if cur[0] != m.to or cur[1] != snap.index:
                raft.report_snapshot(m.to, False)  # busy: the core asks again later
            return
        view = self.view
        addr = self._peer_addr(m.to)
        if view is None or view[0] != snap.index or addr is None:
            log.error("%s: no view of snapshot %d to stream to %x", self.name, snap.index,
                      m.to)
            raft.report_snapshot(m.to, False)
            return
        tid = next(self._transfer_seq)
        hello = StreamHello(cfg.cluster_id, self.id, m.to, tid, m.term, snap.index,
                            snap.term, tuple(snap.voters), tuple(snap.learners))
        task = loop.create_task(self._run_stream(addr, hello, view))
        self._sending = (m.to, snap.index, task)
        self._keep_task(task)

    async def _run_stream(self, addr: tuple[str, int], hello: StreamHello,
                          view: SnapView) -> None:
        kv, loop = self.kv, self.loop
        assert kv is not None and loop is not None and self._executor is not None
        index, it, members = view
        log.info("%s: streaming snapshot [index: %d, term: %d] to %x (transfer %d)",
                 self.name, index, hello.snap_term, hello.to, hello.transfer_id)
        started = time.monotonic()
        ok = False
        nbytes = 0
        next_log = started + PROGRESS_LOG_SECONDS

        def progress(chunks: int, sent: int) -> None:
            # A big store takes minutes to stream: say now and then how far it got.
            nonlocal next_log
            now = time.monotonic()
            if now >= next_log:
                next_log = now + PROGRESS_LOG_SECONDS
                log.info("%s: streaming snapshot [index: %d] to %x: %d chunks, %.1f MiB sent "
                         "in %.0fs (%.1f MiB/s)", self.name, index, hello.to, chunks,
                         sent / 2**20, now - started, sent / 2**20 / max(now - started, 1e-9))

        try:
            n, nbytes = await send_snapshot(
                addr, hello, kv.snapshot_chunks(it, cancelled=lambda: self._closing),
                members_to_wire(members), self._executor, stall_timeout=self.stall_timeout,
                progress=progress)
            ok = True
            took = time.monotonic() - started
            log.info("%s: sent snapshot [index: %d] to %x: %d chunks, %.1f MiB in %.2fs "
                     "(%.1f MiB/s)", self.name, index, hello.to, n, nbytes / 2**20, took,
                     nbytes / 2**20 / max(took, 1e-9))
        except asyncio.CancelledError:
            raise
        except InterruptedError:
            pass  # we are stopping
        except Exception as e:  # refused, cut, stalled; uvloop raises RuntimeError on a
            # write to a connection the peer reset
            log.warning("%s: snapshot [index: %d] to %x failed: %s", self.name, index,
                        hello.to, str(e) or type(e).__name__)
        finally:
            cur = self._sending
            if cur is not None and cur[2] is asyncio.current_task():
                self._sending = None
            self._sent_at = loop.time()
            self._stats.on_snapshot_sent(hello.to, ok, nbytes)
            if self.raft is not None and not self._closed():
                # Failed: probe again, which sends a fresh snapshot from scratch if still needed.
                self.raft.report_snapshot(hello.to, ok)
                self._schedule_ready()

    # ------------------------------------------------------------------ receiving
    def on_stream(self, stream: InboundStream) -> None:
        """A leader opened a snapshot stream to us (called by the transport)."""
        assert self.loop is not None
        if self._closed():
            stream.answer(False, "the member is stopping")
            return
        old = self._recv
        if old is not None and not old.done():
            old.cancel()  # the leader gave up on it and starts from scratch
        task = self.loop.create_task(self._receive(stream))
        self._recv = task
        self._keep_task(task)

    async def _receive(self, stream: InboundStream) -> None:
        """Stage, verify, ingest (all off the live state), then hand the MsgSnap to the core,
        whose ready installs it atomically (``storage.save(..., install=...)``)."""
        st, loop, ex = self.storage, self.loop, self._recv_executor
        assert st is not None and loop is not None and ex is not None
        h = stream.hello
        log.info("%s: receiving snapshot [index: %d, term: %d] from %x (transfer %d)",
                 self.name, h.index, h.snap_term, h.frm, h.transfer_id)
        stage = st.new_stage()
        digest = hashlib.sha256()
        meta: list[bytes | None] = [None]
        n = nbytes = 0
        next_log = time.monotonic() + PROGRESS_LOG_SECONDS

        def stage_chunk(body: bytes) -> None:
            digest.update(memoryview(body)[1:])  # the payload after the frame type, no copy
            pairs = KV.parse_chunk(body, 1)
            for k, v in pairs:
                if k == b"m":
                    meta[0] = v
            stage.add(pairs)

        installed = False
        try:
            while True:
                body = await stream.next(self.stall_timeout)
                if body[:1] == b"C":
                    n += 1
                    nbytes += len(body) - 1
                    await loop.run_in_executor(ex, stage_chunk, body)
                    now = time.monotonic()
                    if now >= next_log:
                        next_log = now + PROGRESS_LOG_SECONDS
                        log.info("%s: receiving snapshot [index: %d]: %d chunks, %.1f MiB "
                                 "staged", self.name, h.index, n, nbytes / 2**20)
                elif body[:1] == b"E":
                    break
                else:
                    raise SnapshotStreamError("unexpected frame in a snapshot stream")
            want_n, want_bytes, want_digest, wire_members = decode_end(body)
            if (want_n, want_bytes) != (n, nbytes) or want_digest != digest.digest():
                raise SnapshotStreamError(
                    f"checksum mismatch ({n} chunks, {nbytes} bytes received; the sender "
                    f"sent {want_n}, {want_bytes}): nothing installed")
            try:
                members = members_from_wire(wire_members)
            except (ValueError, TypeError) as e:
                raise SnapshotStreamError(f"malformed members: {e}: nothing installed") from None
            meta_key, meta_value = KV.install_meta(meta[0], h.index)
            await loop.run_in_executor(ex, stage.finish)
            await loop.run_in_executor(ex, st.prepare_install, stage)
            if self._closed() or self.raft is None:
                raise SnapshotStreamError("the member is stopping")
            installed = self._offer(h, Install(stage.gen, h.index, meta_key, meta_value,
                                               members_to_wire(members)))
            stream.answer(True, "" if installed else "not needed (already has the entries)")
            self._stats.on_snapshot_received(True, nbytes)
            log.info("%s: received snapshot [index: %d] from %x: %d chunks, %.1f MiB",
                     self.name, h.index, h.frm, n, nbytes / 2**20)
        except asyncio.CancelledError:
            stream.close()
            raise
        except (SnapshotStreamError, WireError, ValueError, OSError) as e:
            log.warning("%s: snapshot [index: %d] from %x refused: %s", self.name,
                        h.index, h.frm, e)
            stream.answer(False, str(e))
            self._stats.on_snapshot_received(False, nbytes)
        except Exception as e:  # a RocksDB error while staging: refuse, keep the live state
            log.error("%s: snapshot [index: %d] from %x failed: %r", self.name, h.index,
                      h.frm, e)
            stream.answer(False, f"cannot stage the snapshot: {e!r}")
            self._stats.on_snapshot_received(False, nbytes)
        finally:
            if not installed:
                # After any job still running in the (one-thread) executor; the DB is closed
                # only after that executor drained (close).
                try:
                    ex.submit(st.discard_stage, stage)
                except RuntimeError:  # executor shut down: the next start cleans up
                    pass

    def _offer(self, h: StreamHello, install: Install) -> bool:
        """Step the streamed MsgSnap into the core; True when the core took it (its next ready
        then carries it, and ``install`` with it)."""
        raft = self.raft
        assert raft is not None
        before = raft.snapshot
        raft.step(Message(SNAP, self.id, h.frm, h.term, snapshot=Snapshot(
            h.index, h.snap_term, h.voters, h.learners, staged_marker(install))))
        self._schedule_ready()
        after = raft.snapshot
        if after is before or after is None or after.index != h.index:
            return False  # stale term, or our log already has it: the core answered itself
        old = self._pending_install
        if old is not None and self.storage is not None and self._recv_executor:
            # Replaced in the core by this newer one before its ready ran: never installed.
            self._recv_executor.submit(self.storage.discard_gen, old.gen)
        self._pending_install = install
        return True

    # ------------------------------------------------------------------ installing
    def take_install(self, snap: Snapshot) -> Install | None:
        """The install batch for a ready carrying ``snap``: None for a snapshot taken locally;
        raises FastraftError for a staged marker that matches no staged snapshot."""
        if not (snap.data or b"").startswith(STAGED_MAGIC):
            return None
        install = self._pending_install
        if install is None or snap.data != staged_marker(install):
            raise FastraftError(f"snapshot {snap.index} was taken but is not staged")
        # Held apart: another stream may stage a newer one while this ready syncs.
        self._pending_install = None
        self._installing = install
        return install

    def restore(self, snap: Snapshot) -> None:
        """A streamed snapshot's install batch (KV generation, applied index, members, snapshot
        record) is durable now: switch to it and forget the old generation."""
        kv, st = self.kv, self.storage
        assert kv is not None and st is not None
        install = self._installing
        if install is None or snap.data != staged_marker(install):
            # Cannot happen: the node drops every MsgSnap from the message connection.
            raise FastraftError(f"snapshot {snap.index} was not received on a snapshot stream")
        self._installing = None
        st.activate_kv(install.gen)
        kv.reload()
        # The members as the install wrote them (checked when the stream ended).
        self._installed(members_from_wire(install.members))
        self.last_index = snap.index
        # This member may lead later: the installed state is its snapshot view.
        self.set_view(snap.index, kv.snapshot_view())
        log.info("%s: restored state from snapshot at index %d (streamed)", self.name,
                 snap.index)
