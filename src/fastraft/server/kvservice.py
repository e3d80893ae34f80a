"""The KV service of one member: client requests in, results out, whatever door they came by.

A front end (the msgpack listener in net/listener.py; later gRPC, HTTP probes) hands a request to
:meth:`KVService.submit` as an operation name and its arguments, with a ``done(error, result)``
callback, or awaits :meth:`KVService.call`. Nothing here knows what a connection is: a front end
that buffers its replies (the msgpack listener writes once per socket read) registers a flush
hook (:meth:`KVService.add_flush_hook`), called once after a batch of answers given outside the
request's own call (after an apply, after expiry), so they go out now, not one loop iteration
later. Watches are streams: :meth:`KVService.watch` takes a :class:`~fastraft.storage.watch.Sink`.

* writes (put/delete/txn/compact) are validated, encoded and batched; the batch is proposed once
  per loop iteration (``_core.ProposalBatch``, at once when it is full). The answer waits for the
  entry to apply, keyed by (index, term): an entry of another term at that index means
  NOT_COMMITTED (definitely not applied); no answer in time means TIMEOUT (outcome unknown).
  Followers answer NOT_LEADER with the leader's client URLs.
* a range is served at its read level (server/readlevels.py: linearizable through a ReadIndex
  round, lease, serializable, bounded staleness) from local state.
* membership requests (member_add/remove/promote) are validated (server/membership.py) and
  proposed as one conf-change entry by the leader; the answer waits for that entry to apply.
* status, member_list and health answer from this member's state.
* ``snapshot`` (a stream, like ``watch``) sends this member's KV state to the client
  (server/backup.py); ``move_leader`` has the leader hand leadership to a named voter, with the
  handover a graceful stop uses (the node's ``_transfer_leadership``).

The batch lives here, not in the node, because it is the request side: who asked is known only
here, and the node sees proposals only as the one ``raft.propose_batch`` per iteration. The node
(server/node.py) keeps the ready loop and apply, and calls in at its points: ``answer_writes`` and
``answer_member_changes`` while applying, ``expire`` every tick, ``fail_all`` when stopping,
``propose_internal`` for its own entries (published client URLs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastraft import _version
from fastraft._core import ProposalBatch
from fastraft.config import ServerConfig
from fastraft.errors import (
    BadRequestError,
    ConfChangeInProgressError,
    FastraftError,
    LeaderTransferError,
    NoLeaderError,
    NotCommittedError,
    NotLeaderError,
    ProposalDroppedError,
    StoppingError,
    TimeoutError,
    UnknownOperationError,
)
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_ADD_VOTER,
    CC_PROMOTE,
    CC_REMOVE,
    ENTRY_INDEX,
    ENTRY_TERM,
    LEADER,
    Entry,
    Raft,
)
from fastraft.server.backup import SNAPSHOT_OP, BackupStreams
from fastraft.server.publish import parse_publish, publish_entry
from fastraft.server.membership import (
    Membership,
    check_promote,
    encode_member_context,
    new_member_id,
    parse_member_add,
    parse_member_id,
)
from fastraft.server.readlevels import LevelReads, parse_read_level
from fastraft.server.reads import LinearizableReads
from fastraft.server.stats import NodeStats
from fastraft.server.wait import Done, Waiter
from fastraft.storage.logstore import Storage
from fastraft.storage.mvcc import KV, RangeScan
from fastraft.storage.watch import Sink, WatchHub

__all__ = ["KVService", "Done", "WRITE_OPS", "MEMBER_OPS", "STREAM_OPS"]

log = logging.getLogger("fastraft.node")

WRITE_OPS = frozenset(("put", "delete", "txn", "compact"))
MEMBER_OPS = frozenset(("member_add", "member_remove", "member_promote"))
# Operations that open or end a stream of answers: served by KVService.watch, not submit.
STREAM_OPS = frozenset(("watch", "watch_cancel", SNAPSHOT_OP))
# A range is read on the loop up to this many keys (most are answered there, at no thread hop);
# a longer one goes on in the worker thread, in steps of RANGE_THREAD_STEP_KEYS between which
# it checks whether the member is stopping.
RANGE_INLINE_KEYS = 2048
RANGE_THREAD_STEP_KEYS = 8192

_REPLACED = "the proposal was replaced by another leader's entry: not applied"
_CC_REPLACED = "the membership change was replaced by another leader's entry: not applied"
_TRANSFERRING = "leadership transfer in progress: not applied"


class KVService:
    """Requests of one member (see the module docstring). Runs on the member's event loop."""

    stream_ops = STREAM_OPS

    def __init__(self, *, members: Membership, reads: LinearizableReads, watch_hub: WatchHub,
                 stopping: Callable[[], bool], closed: Callable[[], bool],
                 schedule_ready: Callable[[], None],
                 transfer_leadership: Callable[..., Awaitable[None]],
                 keep_task: Callable[[asyncio.Task[None]], None], levels: LevelReads,
                 stats: NodeStats, request_timeout: float, read_timeout: float,
                 backups: BackupStreams | None = None) -> None:
        self.members = members
        self.backups = backups
        self.reads = reads
        self.levels = levels
        self.stats = stats  # plain counters for /metrics, touched per batch
        self.watch_hub = watch_hub
        self._stopping = stopping
        self._closed = closed
        self._schedule_ready = schedule_ready
        self._transfer_leadership = transfer_leadership
        self._keep_task = keep_task
        # Writes answer TIMEOUT (outcome unknown) and reads NO_LEADER after these.
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        # Set by open() once the member's state is open (before any request can arrive).
        self.cfg: ServerConfig | None = None
        self.token = ""
        self.raft: Raft | None = None
        self.kv: KV | None = None
        self.storage: Storage | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._scan_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._scans_closing = False
        # Client proposals of this loop iteration, proposed in one propose_batch (one sync,
        # one MsgApp per follower for all); each waiter is a done callback (None: internal).
        self._proposals = ProposalBatch()
        self._proposals_scheduled = False
        # Writes waiting for their entry (by index) to apply; the node tests it after apply.
        self.waiters: dict[int, Waiter] = {}
        # Membership requests waiting for their conf-change entry (by index) to apply.
        self.member_waiters: dict[int, tuple[Waiter, int, str]] = {}
        self._flush_hooks: list[Callable[[], None]] = []
        # The member proposed its own published client URLs and they have not applied yet.
        self.publish_pending = False
        # The node's own leadership transfer is under way (a graceful stop): writes are held,
        # never refused, until its outcome is known (release_held).
        self.handing_over = False
        # Writes that came during a leadership transfer (never proposed): (datas, dones,
        # deadline), answered or proposed once the new leader is known.
        self.held: list[tuple[list[bytes], list[Done | None], float]] = []

    def open(self, cfg: ServerConfig, token: str, raft: Raft, kv: KV, storage: Storage,
             loop: asyncio.AbstractEventLoop) -> None:
        """The member's state is open: serve from it."""
        self.cfg, self.token, self.raft, self.kv, self.storage, self.loop = (
            cfg, token, raft, kv, storage, loop)
        # Ranges longer than RANGE_INLINE_KEYS go on here, one at a time (bounded memory: one
        # answer of up to --max-response-bytes built at once), so that the loop keeps ticking,
        # replicating and heartbeating while a big range is read.
        self._scan_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"range-{cfg.name}")
        self._scans_closing = False

    def close(self) -> None:
        """Stop the range scans in the worker thread (before the DB closes)."""
        self._scans_closing = True
        pool, self._scan_pool = self._scan_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs after answers given outside a request's own call (apply, expiry):
        a front end that buffers answers writes them then."""
        self._flush_hooks.append(hook)

    def _flush(self) -> None:
        for hook in self._flush_hooks:
            hook()

    # ------------------------------------------------------------------ the doors
    def submit(self, op: str, args: dict[str, Any], done: Done) -> None:
        """Serve one request: ``done(None, result)`` or ``done(error, None)``, now or later,
        exactly once. ``args`` may be changed. Raises only on a bug (never FastraftError)."""
        try:
            self._route(op, args, done)
        except FastraftError as e:
            done(e, None)

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Serve one request and return its result; raises its FastraftError."""
        assert self.loop is not None
        fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()

        def done(err: FastraftError | None, res: dict[str, Any] | None) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(res if res is not None else {})

        self.submit(op, args, done)
        return await fut

    def watch(self, sink: Sink, req_id: int, op: str, args: dict[str, Any]) -> None:
        """``watch`` / ``watch_cancel``: the watch's frames go to ``sink`` under ``req_id``,
        served from local applied state. Raises FastraftError for a bad request."""
        if self._stopping():
            raise StoppingError("the member is stopping")
        if op == SNAPSHOT_OP:
            if self.backups is None:
                raise UnknownOperationError("this member does not serve snapshots")
            self.backups.start(sink, req_id, args)
            return
        self.watch_hub.handle(sink, req_id, op, args)

    def stream_closed(self, sink: Sink) -> None:
        """The front end lost ``sink``'s client: drop its watchers and snapshot streams."""
        self.watch_hub.connection_lost(sink)
        if self.backups is not None:
            self.backups.connection_lost(sink)

    # ------------------------------------------------------------------ routing
    def _route(self, op: str, args: dict[str, Any], done: Done) -> None:
        if self._stopping():
            raise StoppingError("the member is stopping")
        kv, raft = self.kv, self.raft
        assert kv is not None and raft is not None
        if op in WRITE_OPS:
            data = kv.encode_command(op, args)  # validates fully; raises a FastraftError
            if raft.role != LEADER and not self.handing_over:
                raise self.not_leader()
            self.queue_proposal(data, done)  # handing over: held until a leader is known
        elif op in MEMBER_OPS:
            self._member_change(op, args, done)
        elif op == "range":
            self._range(args, done)
        elif op == "status":
            done(None, self.status())
        elif op == "member_list":
            done(None, {"header": self.header(kv.revision, raft.term),
                        "members": self.member_list()})
        elif op == "health":
            self.health(lambda res: done(None, res))
        elif op == "move_leader":
            self._move_leader(args, done)
        elif op == "member_publish":
            mid, urls = parse_publish(args, self.members)
            if raft.role != LEADER:
                raise self.not_leader()
            m = self.members.get(mid)
            recorded = m is not None and m.client_urls == urls  # then nothing to propose
            if not recorded:
                self.propose_internal(publish_entry(mid, urls))
            # Answered once proposed: the member asking sees the entry applied, or asks again.
            done(None, {"header": self.header(kv.revision, raft.term), "recorded": recorded})
        elif op in STREAM_OPS:
            raise BadRequestError(f"{op} is a stream: it needs a front end that streams")
        else:
            raise UnknownOperationError(
                f"unknown operation {op!r}; expected one of put, range, delete, txn, compact, "
                "status, member_list, member_add, member_remove, member_promote, "
                "member_publish, health, move_leader, watch, watch_cancel, snapshot")

    def _range(self, args: dict[str, Any], done: Done) -> None:
        """A range at its read level (server/readlevels.py); bad args raise before anything."""
        kv, raft = self.kv, self.raft
        assert kv is not None and raft is not None
        level, bound = parse_read_level(args)
        kv.validate("range", args)

        def finish(res: dict[str, Any], contact_age: float | None) -> None:
            res = self._with_header(res, raft.term)
            if contact_age is not None:  # serializable and bounded answers only
                res["header"]["contact_age_ms"] = round(contact_age * 1000.0, 1)
            done(None, res)

        def do_range(err: FastraftError | None, contact_age: float | None) -> None:
            if err is not None:
                done(err, None)
                return
            try:
                scan = kv.range_scan(args)
                # The first step pins the state read (the scan's iterator) here, on the loop.
                res = scan.run(RANGE_INLINE_KEYS)
            except FastraftError as e:
                done(e, None)
                return
            if res is not None:
                finish(res, contact_age)
            else:
                self._scan_rest(scan, lambda r: finish(r, contact_age), done)

        self.levels.read(level, bound, do_range)

    # ------------------------------------------------------------------ leadership
    def _move_leader(self, args: dict[str, Any], done: Done) -> None:
        """move_leader {target}: the leader hands leadership to voter ``target`` and answers
        once that member leads (etcd's MoveLeader). Bad targets are refused before anything."""
        raft, kv, cfg, loop = self.raft, self.kv, self.cfg, self.loop
        assert raft is not None and kv is not None and cfg is not None and loop is not None
        for name in args:
            if name != "target":
                raise BadRequestError(f"move_leader: unknown argument {name!r}")
        target = args.get("target")
        if type(target) is not int or not 0 < target < 1 << 64:
            raise BadRequestError("move_leader: target must be a member id (a non-zero "
                                  "64-bit integer)")
        if raft.role != LEADER:
            # The leader's member list is the one that counts (a follower's may lag).
            raise self.not_leader()
        m = self.members.get(target)
        if m is None:
            raise BadRequestError(f"move_leader: member {target:x} is not in the cluster "
                                  f"(see `member list`)")
        if m.is_learner or target in raft.learners:
            raise BadRequestError(f"move_leader: member {target:x} is a learner; only a voting "
                                  f"member can lead (promote it first)")
        me = cfg.member_id
        if target == me:
            done(None, {"header": self.header(kv.revision, raft.term), "leader": me,
                        "previous": me})
            return
        if self.handing_over or raft.lead_transferee:
            raise LeaderTransferError("move_leader: a leadership transfer is already in "
                                      "progress; try again in a moment")
        self._keep_task(loop.create_task(self._move(target, done)))

    async def _move(self, target: int, done: Done) -> None:
        raft, cfg = self.raft, self.cfg
        assert raft is not None and cfg is not None and self.kv is not None
        await self._transfer_leadership(f"asked to move leadership to {target:x}", to=target)
        if raft.leader == target:
            done(None, {"header": self.header(self.kv.revision, raft.term), "leader": target,
                        "previous": cfg.member_id})
        elif raft.role == LEADER:
            done(LeaderTransferError(
                f"move_leader: leadership was not transferred to {target:x}: it is not "
                f"connected to the leader or did not catch up within an election timeout; "
                f"{cfg.member_id:x} is still the leader"), None)
        else:
            who = format(raft.leader, "x") if raft.leader else "no member (an election runs)"
            done(LeaderTransferError(f"move_leader: leadership went to {who}, not to "
                                     f"{target:x}"), None)
        self._flush()

    def _scan_rest(self, scan: RangeScan, finish: Callable[[dict[str, Any]], None],
                   done: Done) -> None:
        """Run the rest of a long range in the worker thread; answer on the loop."""
        loop, pool = self.loop, self._scan_pool
        assert loop is not None
        if pool is None or self._stopping():
            done(StoppingError("the member is stopping"), None)
            return

        def work() -> dict[str, Any]:
            while not self._scans_closing:
                res = scan.run(RANGE_THREAD_STEP_KEYS)
                if res is not None:
                    return res
            scan.close()  # its iterator must not keep the DB open once the member closes it
            raise StoppingError("the member is stopping")

        def answered(fut: asyncio.Future[dict[str, Any]]) -> None:
            if fut.cancelled():
                done(StoppingError("the member is stopping"), None)
            else:
                err = fut.exception()
                if err is None:
                    finish(fut.result())
                elif isinstance(err, FastraftError):
                    done(err.with_traceback(None), None)
                else:
                    log.error("range scan failed: %r", err)
                    done(FastraftError(f"range failed: {type(err).__name__}: {err}"), None)
            self._flush()

        try:
            fut = loop.run_in_executor(pool, work)
        except RuntimeError:  # the pool was shut down meanwhile
            done(StoppingError("the member is stopping"), None)
            return
        fut.add_done_callback(answered)

    # ------------------------------------------------------------------ membership requests
    def _member_change(self, op: str, args: dict[str, Any], done: Done) -> None:
        """member_add / member_remove / member_promote: validate, propose the conf change and
        answer once it is applied (the leader only; one change at a time, as the core allows)."""
        raft, kv, cfg = self.raft, self.kv, self.cfg
        assert raft is not None and kv is not None and cfg is not None and self.loop is not None
        if raft.role == LEADER and raft.pending_conf_index > kv.applied:
            # The core allows the next change once the previous one is committed; we wait until
            # it is applied too, so the checks below see the member list it produced.
            raise ConfChangeInProgressError()
        if op == "member_add":
            name, urls, learner = parse_member_add(args)  # bad input: same answer on any member
            if raft.role != LEADER:
                raise self.not_leader()
            mid = new_member_id(name, urls, self.token, self.members)
            cc = CC_ADD_LEARNER if learner else CC_ADD_VOTER
            context = encode_member_context(name, urls)
        else:
            if raft.role != LEADER:
                # Before looking the id up: a follower's member list may lag the leader's.
                raise self.not_leader()
            mid = parse_member_id(op, args, self.members)
            context = b""
            if op == "member_remove" and mid == cfg.member_id and len(raft.voters) > 1:
                # The leader removing itself: hand leadership to another voter first, then
                # answer NOT_LEADER so the client sends the removal to the new leader. (A
                # leader that committed its own removal would step down before telling the
                # others the commit index, leaving them to elect a leader with it still in
                # their configuration.)
                self._keep_task(self.loop.create_task(self._handover_then_redirect(done)))
                return
            if op == "member_remove":
                cc = CC_REMOVE
            else:
                progress = raft.status().get("progress", {})
                learner = progress.get(mid)
                check_promote(mid, self.members,
                              None if learner is None else int(learner["match"]),
                              raft.last_index)
                cc = CC_PROMOTE
        try:
            index = raft.propose_conf_change(cc, mid, context)
        except NotLeaderError:
            raise self.not_leader() from None
        except ProposalDroppedError:
            raise NotCommittedError(_TRANSFERRING) from None
        except ValueError as e:  # the core's own membership checks
            raise BadRequestError(f"{op}: {e}") from None
        # ConfChangeInProgressError propagates: its code tells the client to retry later.
        old = self.member_waiters.pop(index, None)
        if old is not None and old[0].done is not None:
            old[0].done(NotCommittedError(_CC_REPLACED), None)
        self.member_waiters[index] = (
            Waiter(raft.term, done, self.loop.time() + self.request_timeout), mid, op)
        log.info("%s: proposed %s of %x at index %d", cfg.name, op, mid, index)
        self._schedule_ready()

    async def _handover_then_redirect(self, done: Done) -> None:
        raft = self.raft
        assert raft is not None
        if raft.role == LEADER:
            await self._transfer_leadership("asked to remove itself")
        if raft.role == LEADER:
            done(NotCommittedError(
                "member_remove: this member is the leader and could not hand leadership to "
                "another voter (none reachable and in sync?); not applied, retry later"), None)
        else:
            done(self.not_leader(), None)

    def answer_member_changes(self, entries: list[Entry]) -> None:
        """Entries are being applied (before the KV applies them): answer the membership
        requests whose conf change (or the entry that replaced it) is among them."""
        waiting = self.member_waiters
        answered = False
        for e in entries:
            if e[ENTRY_INDEX] in waiting:
                answered |= self._answer_member_change(e)
        if answered:
            self._flush()

    def _answer_member_change(self, e: Entry) -> bool:
        entry = self.member_waiters.pop(e[ENTRY_INDEX], None)
        if entry is None:
            return False
        w, mid, op = entry
        if w.done is None:
            return False
        if w.term != e[ENTRY_TERM]:
            w.done(NotCommittedError(_CC_REPLACED), None)
            return True
        assert self.kv is not None and self.raft is not None
        m = self.members.get(mid)
        res: dict[str, Any] = {"header": self.header(self.kv.revision, self.raft.term),
                               "members": self.member_list()}
        if op == "member_add":
            # The token too: the new member needs it to derive the same id (etcd's token is
            # not secret either; it only keeps clusters' ids apart).
            res["cluster_token"] = self.token
        if m is not None:
            res["member"] = m.info()
        w.done(None, res)
        return True

    # ------------------------------------------------------------------ writes
    def queue_proposal(self, data: bytes, done: Done | None) -> None:
        """Propose ``data`` with this loop iteration's batch; ``done`` gets the apply result."""
        if self._proposals.add(data, done):
            # Full (count or bytes bound): propose these now; later ones wait for the loop.
            self._flush_proposals()
            return
        if not self._proposals_scheduled:
            self._proposals_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush_proposals)

    def propose_internal(self, data: bytes) -> None:
        """An entry of the member's own (nobody waits for its answer)."""
        self.queue_proposal(data, None)

    def _flush_proposals(self) -> None:
        self._proposals_scheduled = False
        datas, batch = self._proposals.take()
        if not batch or self.raft is None:
            return
        if self._closed():
            stopping = StoppingError("the member is stopping")
            for done in batch:
                if done is not None:
                    done(stopping, None)
            return
        raft = self.raft
        try:
            last = raft.propose_batch(datas)
        except (NotLeaderError, ProposalDroppedError) as e:
            if isinstance(e, ProposalDroppedError) or (self.handing_over and raft.leader == 0):
                # A leadership transfer is under way: hold these (never proposed) until its
                # outcome is known, then send them on to the new leader, or propose them if it
                # was given up (release_held).
                assert self.loop is not None
                self.held.append((datas, batch, self.loop.time() + self.request_timeout))
                return
            err: FastraftError = self.not_leader()
            self.stats.proposals_failed += len(batch)
            for done in batch:
                if done is not None:
                    done(err, None)
            self.publish_pending = False
            return
        assert self.loop is not None
        self.stats.proposal_batch.observe(len(batch))
        term = raft.term
        deadline = self.loop.time() + self.request_timeout
        first = last - len(batch) + 1
        waiters = self.waiters
        for i, done in enumerate(batch):
            old = waiters.pop(first + i, None)
            if old is not None and old.done is not None:
                # Our own earlier entry at this index was overwritten: it never applied.
                old.done(NotCommittedError(_REPLACED), None)
            waiters[first + i] = Waiter(term, done, deadline)
        # Scheduled, not run here: peer messages (acks) that came in this same iteration then
        # join the pass. Running it directly measured no better and worse at moderate load.
        self._schedule_ready()

    def answer_writes(self, entries: list[Entry], results: list[tuple[int, Any]]) -> None:
        """``entries`` were applied with ``results`` ((index, result) from ``KV.apply``):
        answer the writes that waited for them, then flush the front ends."""
        assert self.raft is not None
        by_index = dict(results)
        term = self.raft.term
        waiters = self.waiters
        answered = False
        for index, term_e, _, _ in entries:
            w = waiters.pop(index, None)
            if w is None or w.done is None:
                continue
            answered = True
            res = by_index.get(index)
            if w.term != term_e or res is None:
                self.stats.proposals_failed += 1
                w.done(NotCommittedError(_REPLACED), None)
            elif isinstance(res, FastraftError):
                w.done(res, None)
            else:
                w.done(None, self._with_header(cast(dict, res), term))
        if answered:
            self._flush()  # now, not one loop iteration later

    def expire(self, now: float) -> None:
        """Answer what waited past its deadline (called every tick)."""
        answered = False
        waiters = self.waiters
        while waiters:
            index = next(iter(waiters))
            w = waiters[index]
            if w.deadline > now:
                break  # insertion order is deadline order
            del waiters[index]
            self.stats.proposals_failed += 1
            if w.done is not None:
                answered = True
                w.done(TimeoutError(
                    "request timed out: the write may or may not have been applied"), None)
        for index, (w, _, _) in list(self.member_waiters.items()):
            if w.deadline <= now:
                del self.member_waiters[index]
                if w.done is not None:
                    answered = True
                    w.done(TimeoutError(
                        "membership change timed out: it may or may not have been applied; "
                        "check `member list`"), None)
        if answered:
            self._flush()

    def release_held(self) -> None:
        """Answer or propose the writes held during a leadership transfer: sent on to the new
        leader (NOT_LEADER with its URLs: they were never proposed, so the client may send them
        again), proposed here if the transfer was given up, NO_LEADER once they waited too
        long. Called by the node on each tick and soft-state change while some are held."""
        raft = self.raft
        assert raft is not None and self.loop is not None
        if raft.role == LEADER:
            if raft.lead_transferee:
                return
            held, self.held = self.held, []
            for datas, batch, _ in held:
                for data, done in zip(datas, batch):
                    self.queue_proposal(data, done)
            return
        now = self.loop.time()
        if raft.leader == 0 and all(deadline > now for _, _, deadline in self.held):
            return  # still electing: the next soft-state change names the leader
        held, self.held = self.held, []
        err = self.not_leader()
        for _, batch, _ in held:
            for done in batch:
                if done is not None:
                    done(err, None)
        self._flush()  # now: the client's pause lasts until it hears this

    def fail_all(self, err: FastraftError) -> None:
        """Answer everything pending (the member is closing): ``err`` for what was never
        proposed, outcome unknown (TIMEOUT) for what was: it may yet commit through another
        leader."""
        never: list[Done | None] = []
        for _, batch, _ in self.held:
            never.extend(batch)
        self.held = []
        never.extend(self._proposals.take()[1])
        waiters, self.waiters = self.waiters, {}
        member_waiters, self.member_waiters = self.member_waiters, {}
        for done in never:
            if done is not None:
                done(err, None)
        unknown = TimeoutError(f"{err.message} before the write was applied: it may or may not "
                               f"have been applied")
        for w in waiters.values():
            if w.done is not None:
                w.done(unknown, None)
        for w, _, _ in member_waiters.values():
            if w.done is not None:
                w.done(TimeoutError(
                    f"{err.message} before the membership change was applied: it may or may "
                    f"not have been applied; check `member list`"), None)
        self._flush()

    # ------------------------------------------------------------------ answers
    def not_leader(self) -> FastraftError:
        """NOT_LEADER with the leader's client URLs, or NO_LEADER when there is none."""
        assert self.raft is not None
        leader = self.raft.leader
        if leader == 0:
            return NoLeaderError("no leader: the cluster has no quorum or is electing one")
        m = self.members.get(leader)
        return NotLeaderError(f"not the leader; the leader is {leader:x}",
                              leader=format(leader, "x"),
                              leader_urls=list(m.client_urls) if m is not None else [])

    def header(self, revision: int, term: int) -> dict[str, int]:
        cfg = self.cfg
        assert cfg is not None
        return {"cluster_id": cfg.cluster_id, "member_id": cfg.member_id, "revision": revision,
                "raft_term": term}

    def _with_header(self, res: dict[str, Any], term: int) -> dict[str, Any]:
        assert self.kv is not None
        res["header"] = self.header(res.pop("revision", self.kv.revision), term)
        return res

    def status(self) -> dict[str, Any]:
        raft, kv, st, cfg = self.raft, self.kv, self.storage, self.cfg
        assert raft is not None and kv is not None and st is not None and cfg is not None
        me = cfg.member_id
        return {
            "header": self.header(kv.revision, raft.term),
            "member_id": me,
            "leader": raft.leader,
            "version": _version.__version__,
            "db_size": st.db_size(),
            "raft_term": raft.term,
            "raft_index": raft.last_index,
            "raft_applied_index": kv.applied,
            # A joiner has no configuration until the leader's snapshot: until then, what the
            # cluster listed it as when it joined.
            "is_learner": (me in raft.learners if raft.voters else
                           bool((m := self.members.get(me)) and m.is_learner)),
            "errors": ["no leader"] if raft.leader == 0 else [],
        }

    def member_list(self) -> list[dict[str, Any]]:
        return self.members.listing()

    @property
    def check_timeout(self) -> float:
        """How long a health check's read may take: "quickly" is one election timeout (at
        least 0.5 s), at most the normal read timeout. The HTTP probes use it too."""
        assert self.cfg is not None
        return min(self.read_timeout, max(0.5, self.cfg.election_timeout / 1000.0))

    def health(self, done: Callable[[dict[str, Any]], None]) -> None:
        """``done({"health": bool, "reason": str})`` once a read index is confirmed (healthy)
        or could not be within about one election timeout."""
        loop = self.loop
        assert loop is not None
        started = loop.time()

        def confirmed(err: FastraftError | None) -> None:
            took = (loop.time() - started) * 1000.0
            if err is None:
                done({"health": True, "reason": f"read index confirmed in {took:.1f} ms"})
            else:
                done({"health": False, "reason": err.message})

        self.reads.read(loop, confirmed, timeout=self.check_timeout)
