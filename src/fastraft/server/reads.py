"""Linearizable reads of one member: batched ReadIndex rounds, and the reads waiting for the
state machine to apply their read index.

The reads that arrive in one loop iteration share one ReadIndex round (one context); a read with
its own timeout (health) gets a round of its own. A round asked of a leader that is gone is
failed, as is one not confirmed by its deadline; a confirmed read waits until ``applied`` reaches
its index. The node calls in at each of those points; nothing here knows time but ``now``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from fastraft.errors import FastraftError, NoLeaderError, StoppingError, TimeoutError
from fastraft.server.stats import Buckets
from fastraft.server.wait import ReadBatch

__all__ = ["LinearizableReads"]

log = logging.getLogger("fastraft.node")

ReadCallback = Callable[[FastraftError | None], None]


class LinearizableReads:
    """The node's pending linearizable reads (see the module docstring)."""

    def __init__(self, name: str, read_timeout: float, *, raft: Callable[[], Any],
                 closed: Callable[[], bool], applied: Callable[[], int],
                 schedule_ready: Callable[[], None],
                 latency: Buckets | None = None) -> None:
        self.name = name
        # Observed once per round served (not per read), in perf_counter seconds: uvloop's
        # loop.time() counts whole milliseconds, coarser than a ReadIndex round on loopback.
        self._latency = latency
        self.read_timeout = read_timeout
        self._raft = raft
        self._closed = closed
        self._applied = applied
        self._schedule_ready = schedule_ready
        self._batch: ReadBatch | None = None  # the batch this loop iteration's reads join
        self._asked: dict[bytes, ReadBatch] = {}  # ReadIndex asked, no answer yet
        self._waiting_apply: list[ReadBatch] = []
        # Read contexts are this prefix and a counter: the random prefix keeps a leader's answer
        # to a read of an earlier run of this member from answering a new read with the same
        # number.
        self._nonce = os.urandom(8)
        self._seq = itertools.count(1)

    def read(self, loop: asyncio.AbstractEventLoop, cb: ReadCallback,
             timeout: float | None = None,
             on_index: Callable[[int], None] | None = None) -> None:
        """Call ``cb(None)`` once a read of local state is linearizable, or ``cb(error)``.

        ``on_index(read index)``, for a read with its own ``timeout``, is called when the leader
        confirms the index, before the wait for it to apply."""
        raft = self._raft()
        assert raft is not None
        if raft.leader == 0:
            cb(NoLeaderError("no leader: cannot serve a linearizable read"))
            return
        b = self._batch
        if b is None or timeout is not None:
            ctx = self._nonce + next(self._seq).to_bytes(8, "big")
            b = ReadBatch(ctx, loop.time() + (timeout or self.read_timeout), time.perf_counter())
            if timeout is None:
                self._batch = b
            else:
                b.on_index = on_index
            loop.call_soon(self._flush, b)
        b.cbs.append(cb)

    def wait_applied(self, loop: asyncio.AbstractEventLoop, index: int,
                     cb: ReadCallback) -> None:
        """Call ``cb(None)`` once the state machine has applied ``index`` (a lease read's
        commit index), or ``cb(TimeoutError)`` after the read timeout."""
        if self._applied() >= index:
            cb(None)
            return
        b = ReadBatch(b"", loop.time() + self.read_timeout)
        b.index = index
        b.cbs.append(cb)
        self._waiting_apply.append(b)

    def _flush(self, b: ReadBatch) -> None:
        if self._batch is b:
            self._batch = None
        raft = self._raft()
        if self._closed() or raft is None:
            self._finish(b, StoppingError("the member is stopping"))
            return
        b.leader = raft.leader
        self._asked[b.ctx] = b
        raft.read_index(b.ctx)
        self._schedule_ready()

    def on_read_states(self, states: list) -> None:
        """The core's answers (a ready's read_states)."""
        applied = self._applied()
        for rs in states:
            b = self._asked.pop(rs.ctx, None)
            if b is None:
                continue
            if not rs.ok:
                self._finish(b, NoLeaderError("no leader: the read index was refused"))
                continue
            if b.on_index is not None:
                try:
                    b.on_index(rs.index)
                except Exception:  # must not cost the other rounds their answers
                    log.exception("%s: read index callback failed", self.name)
            if applied >= rs.index:
                self._finish(b, None)
            else:
                b.index = rs.index
                self._waiting_apply.append(b)

    def on_applied(self) -> None:
        """Entries were applied: serve the reads whose index is now reached."""
        if not self._waiting_apply:
            return
        applied = self._applied()
        ready = [b for b in self._waiting_apply if b.index <= applied]
        if ready:
            self._waiting_apply = [b for b in self._waiting_apply if b.index > applied]
            for b in ready:
                self._finish(b, None)

    def on_leader(self, leader: int) -> None:
        """The leader changed: rounds asked of another leader may never be answered."""
        for ctx, b in list(self._asked.items()):
            if b.leader != leader:
                del self._asked[ctx]
                self._finish(b, NoLeaderError("no leader: leadership changed during read"))

    def expire(self, now: float) -> None:
        """Fail what waited past its deadline (called every tick)."""
        for ctx, b in list(self._asked.items()):
            if b.deadline <= now:
                del self._asked[ctx]
                self._finish(b, NoLeaderError(
                    "no leader: the read could not be confirmed by a quorum in time"))
        if self._waiting_apply:
            late = [b for b in self._waiting_apply if b.deadline <= now]
            if late:
                self._waiting_apply = [b for b in self._waiting_apply if b.deadline > now]
                for b in late:
                    self._finish(b, TimeoutError("read timed out waiting for apply"))

    def fail_all(self, err: FastraftError) -> None:
        batches = list(self._asked.values()) + self._waiting_apply
        if self._batch is not None:
            batches.append(self._batch)
        self._asked = {}
        self._waiting_apply = []
        self._batch = None
        for b in batches:
            self._finish(b, err)

    def _finish(self, b: ReadBatch, err: FastraftError | None) -> None:
        if err is None and self._latency is not None:
            self._latency.observe(time.perf_counter() - b.asked)
        for cb in b.cbs:
            try:
                cb(err)
            except Exception:  # one bad callback must not starve the others
                log.exception("%s: read callback failed", self.name)
        b.cbs = []
