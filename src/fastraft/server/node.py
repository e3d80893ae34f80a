"""The host loop of one member: the only code that knows time.

It wires the deterministic core (raft/core.py) to the world: a repeating timer calls ``raft.tick()``
every heartbeat interval; peer messages and client proposals are fed in as they arrive; and a
*ready pass* does the I/O the core asks for::

    rd = raft.ready()
    send rd.messages                       (leader traffic goes out before our own disk write)
    storage.save(...) on the loop, then storage.sync(): on the loop for a small batch, else in
        the sync thread while the loop keeps stepping messages and taking proposals: they are
        what the NEXT ready persists with ONE sync (group commit) and sends in one MsgApp per
        follower
    kv.apply(rd.committed_entries) and answer the waiting clients: these entries are durable
        here already, so they are applied before this ready's sync (leader, small batch) or
        while it runs (big batch); a follower with a small batch syncs and acks first
    switch to a received snapshot if there is one (streamed and staged apart, installed by the
        same storage.save batch: see server/snapshotter.py, net/snapstream.py)
    raft.advance(rd); send rd.persisted_messages (acks and votes: only once durable)
    serve rd.read_states

At most one ready pass runs at a time (the core allows one outstanding ready); a pass is
scheduled with ``loop.call_soon`` after anything that may have produced work, so bursts coalesce.

Client requests (see docs/architecture.md, "Client protocol") are served by the KV service
(server/kvservice.py), which the front ends (net/listener.py) call; the node calls it back at
its points: when entries apply (answer the writes and membership changes that waited), every tick
(expire), when stopping (fail all). A member started with ``--initial-cluster-state existing`` on
an empty data dir first asks a listed member for the cluster id and members (server/join.py).

Members' names and URLs live in storage meta ("members"). Conf-change entries carry a new
member's attributes in their context. Client URLs are *published*: a member that becomes leader
proposes a small internal entry with its own client URLs (as etcd publishes member attributes
through raft), so followers can redirect clients to it. The node consumes that entry itself and
hands the KV a no-op in its place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack

from fastraft.client.codec import CLIENT_ENVELOPE_BYTES
from fastraft.config import ServerConfig, parse_url
from fastraft.errors import DataDirError, FastraftError, NotLeaderError, StoppingError
from fastraft.net.listener import ClientServer
from fastraft.net.transport import PeerTransport
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_ADD_VOTER,
    CC_PROMOTE,
    CC_REMOVE,
    ENTRY_CONF_CHANGE,
    ENTRY_DATA,
    ENTRY_INDEX,
    ENTRY_NORMAL,
    LEADER,
    Config,
    Entry,
    Message,
    MsgType,
    Raft,
    Ready,
    Snapshot,
    decode_conf_change,
    heartbeat_round_of,
)
from fastraft.server.backup import BackupStreams
from fastraft.server.join import discover_cluster
from fastraft.server.kvservice import KVService
from fastraft.server.membership import Member, Membership, members_from_wire, members_to_wire
from fastraft.server.publish import PUBLISH_PREFIX, ask_leader, publish_entry
from fastraft.server.readlevels import LevelReads, ReadLevels
from fastraft.server.reads import LinearizableReads
from fastraft.server.snapshot import decode_snapshot
from fastraft.server.snapshotter import Snapshotter
from fastraft.server.stats import NodeStats
from fastraft.server.syncer import Syncer
from fastraft.storage.logstore import Storage
from fastraft.storage.mvcc import KV
from fastraft.storage.watch import WatchHub

if TYPE_CHECKING:
    from fastraft.server.health import MemberHttp

__all__ = ["Node"]

log = logging.getLogger("fastraft.node")

# Seconds between two compaction steps (KV.compact_step, ~7 ms for 1000 changes here).
COMPACT_PAUSE = 0.01

SNAP = MsgType.MsgSnap.value
HEARTBEAT_RESP = MsgType.MsgHeartbeatResp.value


# Log entries kept in memory/disk after a snapshot is not configurable in this version: storage
# drops every entry up to the snapshot index (see the report / docs), so slow followers get a
# snapshot instead.


class Node:
    """One fastraft member: storage, KV, Raft core, peer transport and client server."""

    def __init__(self, cfg: ServerConfig, *, request_timeout: float = 4.0,
                 read_timeout: float = 3.0) -> None:
        self.cfg = cfg
        self.id = cfg.member_id
        self.hex_id = format(cfg.member_id, "x")
        # Writes answer TIMEOUT (outcome unknown) and reads NO_LEADER after these; both are
        # below the client library's 5 s default, so a client sees the server's clearer error.
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self.storage: Storage | None = None
        self.kv: KV | None = None
        self.raft: Raft | None = None
        self.transport: PeerTransport | None = None
        self.server: ClientServer | None = None
        self.members = Membership(cfg.member_id, list(cfg.advertise_client_urls))
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncer: Syncer | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._next_tick = 0.0  # loop time of the next tick (a fixed schedule: _tick)
        self._ready_scheduled = False
        self._in_ready = False
        self._tasks: set[asyncio.Task[None]] = set()  # held so they are not garbage-collected
        self._compactor: asyncio.Task[None] | None = None  # dropping compacted records
        # This run's client URLs applied in the member list (a follower asks the leader to
        # record them: server/publish.py), and the task that asks.
        self._published = False
        self._publisher: asyncio.Task[None] | None = None
        # The cluster's token (for new members' ids): kept in storage meta from the first start.
        self.token = cfg.initial_cluster_token
        # Plain counters for /metrics (server/stats.py): touched per batch, never per put.
        self.stats = NodeStats()
        self.http: MemberHttp | None = None  # /health, /readyz, /livez, /metrics
        self.reads = LinearizableReads(
            cfg.name, read_timeout, raft=lambda: self.raft, closed=lambda: self._closed,
            applied=lambda: self.kv.applied if self.kv is not None else 0,
            schedule_ready=self._schedule_ready, latency=self.stats.read_index_seconds)
        # Lease and bounded-staleness evidence (ticks -> time, leader contacts) and the
        # dispatch of a range to its read level (server/readlevels.py).
        self.levels = LevelReads(
            ReadLevels(election_timeout=cfg.election_timeout / 1000.0,
                       heartbeat_interval=cfg.heartbeat_interval / 1000.0,
                       clock_drift=cfg.lease_clock_drift / 1000.0,
                       election_tick=cfg.election_tick),
            raft=lambda: self.raft, applied=lambda: self.kv.applied if self.kv is not None else 0,
            now=time.monotonic,
            linearizable=lambda cb: self.reads.read(self._running_loop(), cb),
            wait_applied=lambda i, cb: self.reads.wait_applied(self._running_loop(), i, cb),
            not_leader=lambda: self.service.not_leader())
        self.watch_hub = WatchHub(lambda: self.kv, self._watch_header)
        self._stop_requested = False
        # Set by _fatal: this member could not persist (a full or failing disk) or a ready
        # pass broke. From then on it persists, sends and acknowledges nothing and exits.
        self._failed = False
        self._stopping = False  # set once requests are refused (after the handover)
        self._closed = False
        # Backups streamed to clients (`fastractl snapshot save`): a stream op of the service.
        self.backups = BackupStreams(self.members, header=self._watch_header,
                                     keep_task=self._keep_task)
        # Client requests in, results out (the front ends call it; writes are batched there).
        self.service = KVService(
            members=self.members, reads=self.reads, watch_hub=self.watch_hub,
            stopping=lambda: self._stopping, closed=lambda: self._closed,
            schedule_ready=self._schedule_ready, transfer_leadership=self._transfer_leadership,
            keep_task=self._keep_task, levels=self.levels, stats=self.stats,
            request_timeout=request_timeout, read_timeout=read_timeout, backups=self.backups)
        # Set when a soft-state change names a leader: wakes a stopping leader's handover wait.
        self._handover_done = asyncio.Event()
        # Local snapshot views, snapshot streams sent and received, installs.
        self.snapshots = Snapshotter(
            cfg.member_id, self.members,
            peer_addr=lambda mid: (self.transport.peer_addr(mid) if self.transport is not None
                                   else None),
            closed=lambda: self._closed, schedule_ready=self._schedule_ready,
            keep_task=self._keep_task, installed=self._snapshot_installed, stats=self.stats)
        self._saved_term_vote = (0, 0)
        # Readies with at most this many entries sync on the loop (see _run_ready).
        # Measured (3 members + load tool on 2 cores, noisy): ~28k vs ~24k puts/s at 128
        # clients against always-executor; always-inline was no better.
        self.inline_sync_max_entries = 8

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open storage, rebuild KV and the core, listen for peers and clients, start ticking.

        Raises DataDirError for a data dir this member must not use."""
        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        joined: list[Member] | None = None
        if cfg.initial_cluster_state == "existing":
            ident = Storage.read_identity(cfg.data_dir)
            if ident is None:
                # An empty data dir: join the running cluster (raises ConfigError if it cannot).
                cid, joined = await discover_cluster(cfg)
            else:
                # Resume as before, whatever --initial-cluster says now (as etcd): the cluster
                # id was fixed when this member first started.
                cid = ident["cluster_id"]
            if cid != cfg.cluster_id:
                cfg = self.cfg = dataclasses.replace(cfg, cluster_id=cid)
        self.storage = Storage.open(cfg.data_dir, cluster_id=cfg.cluster_id,
                                    member_id=cfg.member_id, name=cfg.name)
        try:
            st = self.storage
            if (joined is None and cfg.initial_cluster_state == "existing"
                    and st.get_meta("bootstrap_conf") is None and st.last_index() == 0
                    and st.snapshot_meta() is None):
                # A join that stopped between creating the data dir and recording what it
                # learned: ask again rather than start from --initial-cluster's list.
                cid, joined = await discover_cluster(cfg)
                if cid != cfg.cluster_id:
                    raise DataDirError(f"data dir {cfg.data_dir!r} belongs to cluster "
                                       f"{cfg.cluster_id:x}, but the members listed in "
                                       f"--initial-cluster belong to {cid:x}")
            if joined is not None:
                # Start with no configuration of our own: the leader's snapshot (every member
                # compacts when it applies an add) brings it. The member list learned here only
                # tells the transport where the peers are until then.
                self.storage.put_meta("members", members_to_wire(joined))
                self.storage.put_meta("bootstrap_conf", [[], []])
                self.storage.sync()
            await self._open_state()
            st = self.storage
            assert self.raft is not None and self.kv is not None
            self.service.open(self.cfg, self.token, self.raft, self.kv, st, self._loop)
            self.backups.open(cfg.name, self.cfg.cluster_id, cfg.member_id, self.raft, self.kv,
                              self._loop)
            self._syncer = Syncer(lambda: st.sync(), f"sync-{cfg.name}")
            self.snapshots.start(self.cfg, self.raft, self.kv, st, self._loop)
            self.transport = PeerTransport(cfg.member_id, cfg.cluster_id, cfg.peer_addr(),
                                           self.members.peer_addrs(), self._on_peer_message,
                                           delay_ms=cfg.experimental_peer_delay_ms)
            if cfg.experimental_peer_delay_ms:
                log.warning("%x: --experimental-peer-delay-ms %d: every peer message is held "
                            "%d ms before it is sent (testing only)", cfg.member_id,
                            cfg.experimental_peer_delay_ms, cfg.experimental_peer_delay_ms)
            self.transport.on_join_query = lambda: (self.cfg.cluster_id, self.members.wire())
            self.transport.on_snapshot_stream = self.snapshots.on_stream
            await self.transport.start()
            self.server = ClientServer(self.service,
                                       max_frame=cfg.max_request_bytes + CLIENT_ENVELOPE_BYTES)
            await self.server.start(cfg.client_addrs())
            st.on_sync_seconds = self.stats.wal_fsync_seconds.observe
            st.on_write_seconds = self.stats.backend_commit_seconds.observe
            if cfg.listen_metrics_urls:
                from fastraft.server.health import MemberHttp  # prometheus-client only if asked
                self.http = MemberHttp(self, cfg.readyz_max_lag)
                await self.http.start(cfg.metrics_addrs())
        except BaseException:
            await self._close_io()
            raise
        log.info("%s (%s) serving clients on %s, peers on %s; cluster %x", cfg.name, self.hex_id,
                 ",".join(cfg.listen_client_urls), cfg.listen_peer_urls[0], cfg.cluster_id)
        self._next_tick = self._loop.time() + cfg.heartbeat_interval / 1000.0
        self._ticker = self._loop.call_at(self._next_tick, self._tick)
        self._schedule_ready()
        if self.kv is not None and self.kv.compaction_pending:
            self._start_compactor()  # stopped midway, or records of before the compact revision

    async def _open_state(self) -> None:
        cfg = self.cfg
        st = self.storage
        assert st is not None
        hard_state, snap_meta, entries = st.initial_state()
        self._saved_term_vote = (hard_state[0], hard_state[1])
        self.kv = KV(st, max_value_bytes=cfg.max_request_bytes,
                     max_response_bytes=cfg.max_response_bytes)
        token = st.get_meta("cluster_token")
        if isinstance(token, str) and token:
            self.token = token
        else:
            st.put_meta("cluster_token", self.token)  # durable with the first sync
        stored = st.get_meta("members")
        if stored:
            self.members.load(members_from_wire(stored))
        else:
            self.members.load(Member(mid, name, list(urls))
                              for mid, (name, urls) in cfg.initial_members().items())
        snapshot = None
        if snap_meta is not None:
            index, term, voters, learners = snap_meta
            snapshot = Snapshot(index, term, tuple(voters), tuple(learners), None)
            self.snapshots.last_index = index
            if self.kv.applied < index:
                # A data dir of an older fastraft (snapshots received in one frame, kept as a
                # file) that crashed after persisting one but before restoring the KV from it.
                # Streamed snapshots cannot get here: they install in one write.
                data = st.load_snapshot_data()
                if data is None:
                    raise DataDirError(f"data dir {cfg.data_dir!r} is damaged: snapshot {index} "
                                       f"is recorded but its data is missing")
                _, members, kv_data = decode_snapshot(data)
                self.kv.restore(kv_data, index)
                self.members.load(members)
                st.put_meta("members", self.members.wire())
                st.sync()
        boot = st.get_meta("bootstrap_conf")
        if isinstance(boot, list) and len(boot) == 2:
            voters, learners = tuple(boot[0]), tuple(boot[1])
        else:
            # First start of a new cluster (or a data dir from before bootstrap_conf was kept):
            # the initial members. Recorded, so a later --initial-cluster that lists members
            # added since cannot change what this member started from.
            voters, learners = tuple(mid for mid in cfg.initial_members()), ()
            st.put_meta("bootstrap_conf", [list(voters), []])
        rcfg = Config(cfg.member_id, voters, learners,
                      election_tick=cfg.election_tick, heartbeat_tick=1,
                      pre_vote=True, check_quorum=True, seed=cfg.member_id,
                      applied=self.kv.applied)
        self.raft = Raft(rcfg, hard_state, entries, snapshot)
        if snap_meta is not None:
            # Our last snapshot was a view of the KV (or a received one), gone with the old
            # process. The KV now holds the state at `applied` (>= the snapshot's index):
            # snapshot that instead, so it can be streamed to a follower.
            applied = self.kv.applied
            if applied > snap_meta[0]:
                self.raft.compact(applied)
                s = self.raft.snapshot
                assert s is not None and s.index == applied
                st.save_snapshot_meta(s.index, s.term, s.voters, s.learners)
                st.sync()
                self.snapshots.last_index = applied
            self.snapshots.set_view(applied, self.kv.snapshot_view())

    async def stop(self) -> None:
        """Graceful stop: hand leadership over, fail what is pending, sync, close."""
        if self._stop_requested:
            await self.stopped.wait()
            return
        self._stop_requested = True
        try:
            raft = self.raft
            if (raft is not None and raft.role == LEADER and len(raft.voters) > 1
                    and not self._closed and not self._failed):
                # Requests are served through the handover: writes that come meanwhile are
                # held and then sent on to the new leader (NOT_LEADER with its URLs), not
                # refused. Not after a failure: the handover needs ready passes, which a
                # member that cannot persist must not run (the others elect a new leader).
                await self._transfer_leadership()
            self._stopping = True  # from here requests are refused (STOPPING)
            if self.server is not None:
                self.server.stop_listening()
            self._fail_all(StoppingError("the member is stopping"))
            self.watch_hub.close("the member is stopping; re-watch elsewhere from the last "
                                 "seen revision + 1")
            self.backups.stop("the member is stopping; take the snapshot from another member")
            # Let a ready pass in progress finish its sync: what it acknowledged must be
            # durable.
            deadline = time.monotonic() + 5.0
            while self._in_ready and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            await self._close_io()
        finally:
            # Always: the process waits on this to exit. A stop that raised and never set it
            # left a member that could not write alive and silent forever.
            self.stopped.set()

    async def _transfer_leadership(self, why: str = "stopping", to: int = 0) -> None:
        """Hand leadership to voter ``to`` (move-leader), or to the most up-to-date reachable
        voter (a stop, a leader removing itself); returns once a leader is known again or the
        attempt ended (bounded by an election timeout)."""
        raft = self.raft
        assert raft is not None and self._loop is not None
        progress = raft.status().get("progress", {})
        best, best_match = 0, -1
        if to:
            # A named target: only if it is a voter we reach now (else the core would wait an
            # election timeout for it, with writes held meanwhile, for nothing).
            if (to in raft.voters and to != self.id and self.transport is not None
                    and self.transport.is_connected(to)):
                best = to
        for vid in raft.voters if not to else ():
            # Only a peer we can reach now: a transfer to a dead member would just burn an
            # election timeout before the stop goes on (and leave the cluster leaderless).
            if (vid != self.id and vid in progress and progress[vid]["match"] > best_match
                    and self.transport is not None and self.transport.is_connected(vid)):
                best, best_match = vid, progress[vid]["match"]
        if not best:
            return
        try:
            raft.transfer_leader(best)
        except (NotLeaderError, ValueError):
            return
        self._schedule_ready()
        log.info("%s: %s; transferring leadership to %x", self.cfg.name, why, best)
        self.service.handing_over = True
        try:
            await self._await_handover()
        finally:
            self.service.handing_over = False

    async def _await_handover(self) -> None:
        raft = self.raft
        assert raft is not None and self._loop is not None
        # Bounded: the core aborts a transfer after one election timeout anyway. Woken by the
        # soft-state change that names the new leader (no polling: each poll step would add
        # to the pause every writing client sees).
        timeout = self.cfg.election_timeout / 1000.0
        deadline = self._loop.time() + timeout
        self._handover_done.clear()
        while (raft.role == LEADER and raft.lead_transferee) or raft.leader == 0:
            left = deadline - self._loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._handover_done.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass  # re-check: an aborted transfer changes no soft state
            self._handover_done.clear()
        if raft.role == LEADER:
            return  # the transfer did not happen; held writes were proposed again (_tick)
        # Our writes still in flight were replicated to the new leader before it was chosen;
        # it commits them with its first entry. Wait (bounded) until they apply here, so their
        # clients get their results instead of an outcome-unknown answer.
        while self.service.waiters and self._loop.time() < deadline:
            await asyncio.sleep(0.005)
        # Linger a moment answering NOT_LEADER, so a client whose request is on its way is sent
        # on rather than cut off by the close (bounded).
        await asyncio.sleep(min(0.05, self.cfg.heartbeat_interval / 1000.0))

    async def _close_io(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self.http is not None:
            await self.http.stop()
        if self.server is not None:
            await self.server.stop()
        if self.transport is not None:
            await self.transport.stop()
        if self._syncer is not None:
            self._syncer.stop()
        await self.backups.close()  # their RocksDB views go before the DB
        if self._compactor is not None:
            self._compactor.cancel()  # between two steps: each step is one synchronous write
        self.service.close()
        await self.snapshots.close()
        if self.storage is not None:
            # The last sync and the close fail too once the disk has failed (RocksDB keeps the
            # error): that failure was reported already; a new one is reported here.
            try:
                self.storage.sync()
            except Exception as e:
                self._storage_failed("cannot sync storage", e)
            try:
                self.storage.close()
            except Exception as e:
                self._storage_failed("cannot close storage", e)

    def _keep_task(self, task: asyncio.Task[None]) -> None:
        """Hold ``task`` until it ends (the loop keeps only a weak reference)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fatal(self, what: str, exc: BaseException | None = None) -> None:
        """A storage or state-machine failure (a full disk, an I/O error, a broken ready pass).

        Continuing could acknowledge what is not durable, or vote and forget it, so the member
        stops at once, as etcd exits on a WAL write error: no more ready passes (nothing more
        is persisted, sent or acknowledged), requests refused (STOPPING: never applied),
        writes in flight answered TIMEOUT (outcome unknown: they may commit through the
        others), no leadership handover (it needs ready passes: the others elect a leader
        after an election timeout), and exit status 1. One log line says why; what fails
        after it is a consequence and is not reported again. What this member acknowledged
        was durable before it did; restarted once the disk is fixed, it resumes with its data
        and catches up."""
        self._in_ready = False
        if self._failed:
            return
        self._storage_failed(what, exc)
        self._stopping = True
        if not self._stop_requested and self._loop is not None:
            self._keep_task(self._loop.create_task(self.stop()))

    def _storage_failed(self, what: str, exc: BaseException | None) -> None:
        """Report a failure once (the one critical line) and make the exit status 1."""
        if self._failed:
            return
        self._failed = True
        self.exit_code = 1
        why = f": {exc}" if exc is not None and str(exc) else (f": {exc!r}" if exc else "")
        log.critical("%s: %s (data dir %s)%s; stopping: this member acknowledges nothing more; "
                     "fix the disk (free space), then restart it: it resumes with its data",
                     self.cfg.name, what, self.cfg.data_dir, why)

    # ------------------------------------------------------------------ time and input
    def _tick(self) -> None:
        if self._closed:
            return
        assert self._loop is not None and self.raft is not None
        # On a fixed schedule, not one interval after this (late) callback: otherwise each
        # tick's lateness on a busy loop adds up, and an election timeout of N ticks (the time
        # to replace a crashed leader) stretches with it. A tick missed entirely is dropped, not
        # caught up in a burst (as a Go ticker does).
        interval = self.cfg.heartbeat_interval / 1000.0
        now = self._loop.time()
        self._next_tick += interval
        if self._next_tick <= now:
            self._next_tick = now + interval
        self._ticker = self._loop.call_at(self._next_tick, self._tick)
        self.raft.tick()
        self.levels.on_tick()
        self._expire(self._loop.time())
        if self.service.held:
            self.service.release_held()
        self._schedule_ready()

    def _on_peer_message(self, m: Message) -> None:
        if self._closed or self._failed or self.raft is None:
            return
        if m.type == HEARTBEAT_RESP and m.term == self.raft.term:
            self.stats.on_heartbeat_echo(m.frm, heartbeat_round_of(m.context),
                                         time.perf_counter())
        elif m.type == SNAP:
            # Snapshots arrive on snapshot streams only (server/snapshotter.py: checksummed,
            # staged, installed in one write). One in a message frame comes from an older
            # member or is forged: its data must never reach the core.
            log.warning("%s: ignored a snapshot sent by %x as a message (snapshots travel on "
                        "snapshot streams)", self.cfg.name, m.frm)
            return
        self.raft.step(m)
        self.levels.on_stepped()
        self._schedule_ready()

    # ------------------------------------------------------------------ the ready pass
    def _schedule_ready(self) -> None:
        if self._ready_scheduled or self._in_ready or self._closed or self._failed:
            return
        self._ready_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        self._ready_scheduled = False
        try:
            self._ready_pass()
        except Exception as e:
            # Anything the pass did not expect: without this the loop would log it and wait
            # forever with _in_ready set (a member alive but doing nothing).
            self._fatal("ready pass failed", e)

    def _ready_pass(self) -> None:
        raft = self.raft
        if (self._in_ready or self._closed or self._failed or raft is None
                or not raft.has_ready()):
            return
        self._in_ready = True
        rd = raft.ready()
        hs = rd.hard_state
        st = self.storage
        assert st is not None and self._loop is not None
        if raft.heartbeat_round != self.stats.heartbeat_round:  # a round goes out in this pass
            self.stats.heartbeat_round = raft.heartbeat_round
            self.stats.on_heartbeat_round(raft.heartbeat_round, time.perf_counter())
        if not (rd.entries or rd.snapshot is not None
                or (hs is not None and (hs[0], hs[1]) != self._saved_term_vote)):
            # Nothing must be durable first: at most the commit index moved, which (as etcd's
            # MustSync) need not be synced before we go on; the next sync covers it, and the
            # core recovers when applied > commit after a crash. This saves one fsync and two
            # thread hand-offs between a write's commit and its reply.
            if rd.persisted_messages:
                self._send(rd.messages)
                msgs: list[Message] = []
            else:
                # Answer clients first, then tell followers the new commit index.
                msgs = rd.messages
            self._finish_ready(rd)
            self._send(msgs)
            if hs is not None and not self._closed:
                try:
                    st.save(hs, [], None)
                except Exception as e:
                    self._fatal("cannot write to storage", e)
            return
        self._send(rd.messages)  # leader traffic first: followers write while we do
        install = None
        if rd.snapshot is not None:
            try:
                install = self.snapshots.take_install(rd.snapshot)
            except FastraftError as e:
                self._fatal(str(e))
                return
        try:
            if install is None:
                st.save(hs, rd.entries, rd.snapshot)
            else:
                st.save(hs, rd.entries, rd.snapshot, install=install)
        except Exception as e:
            self._fatal("cannot write to storage", e)
            return
        if hs is not None:
            self._saved_term_vote = (hs[0], hs[1])
        # The core hands out only entries that are committed AND already durable here (from
        # earlier readies), so they need not wait for this ready's sync: they can be applied,
        # and their clients answered, before or while the disk syncs (etcd's leader does so).
        can_apply = bool(rd.committed_entries) and rd.snapshot is None
        if len(rd.entries) <= self.inline_sync_max_entries:
            # A small batch means the loop is nearly idle: sync right here rather than pay two
            # thread hand-offs (start + call_soon_threadsafe wake-up) for it. Our messages are
            # already on the wire, so followers write in parallel meanwhile. A leader answers
            # its clients first; a follower syncs first, so its ack is not held up.
            early = can_apply and raft.role == LEADER
            if early:
                try:
                    self._apply(rd.committed_entries)
                except Exception as e:
                    self._fatal("ready pass failed", e)
                    return
            try:
                st.sync()
            except Exception as e:
                self._fatal("cannot sync storage", e)
                return
            self._finish_ready(rd, early)
            return
        # A big batch: the sync runs in a thread and the loop goes on taking requests and acks
        # (the next batch), after applying what is committed while the disk works.
        syncer = self._syncer
        assert syncer is not None
        state: list[bool | None] = [can_apply]  # None: the pass failed, ignore the sync's end
        try:
            syncer.start(self._loop, lambda err: self._after_sync(rd, err, state[0]))
        except RuntimeError as e:
            state[0] = None
            self._fatal("cannot sync storage", e)
            return
        if can_apply:
            try:
                self._apply(rd.committed_entries)
            except Exception as e:
                state[0] = None
                self._fatal("ready pass failed", e)

    def _after_sync(self, rd: Ready, err: BaseException | None, applied: bool | None) -> None:
        if applied is None:
            return  # _fatal was called for this pass
        if err is not None:
            self._fatal("cannot sync storage", err)
            return
        if self._closed or self._failed:
            self._in_ready = False
            return
        try:
            self._finish_ready(rd, applied)
        except Exception as e:  # never leave the loop waiting on a sync that ended
            self._fatal("ready pass failed", e)

    def _finish_ready(self, rd: Ready, applied: bool = False) -> None:
        """After ``rd`` is durable; ``applied``: its committed entries were applied already."""
        raft, kv = self.raft, self.kv
        assert raft is not None and kv is not None
        try:
            if rd.snapshot is not None:
                self.snapshots.restore(rd.snapshot)
            raft.advance(rd)
            self._send(rd.persisted_messages)
            if rd.committed_entries and not applied:
                self._apply(rd.committed_entries)
            if rd.read_states:
                self.reads.on_read_states(rd.read_states)
            if rd.soft_state is not None:
                self._on_soft_state(*rd.soft_state)
            self.snapshots.maybe_snapshot()
        except Exception as e:
            self._fatal("ready pass failed", e)
            return
        self._in_ready = False
        if raft.has_ready():
            self._schedule_ready()

    def _send(self, msgs: list[Message]) -> None:
        if not msgs or self.transport is None:
            return
        if any(m.type == SNAP for m in msgs):
            out = []
            for m in msgs:
                if m.type == SNAP and m.snapshot is not None and m.snapshot.data is None:
                    # Never on the message connection: its data goes on a stream of its own.
                    self.snapshots.stream(m)
                    continue
                out.append(m)
            msgs = out
        self.transport.send(msgs)

    # ------------------------------------------------------------------ applying
    def _apply(self, entries: list[Entry]) -> None:
        kv = self.kv
        assert kv is not None and self.raft is not None
        to_apply = entries
        members_changed = False
        for i, e in enumerate(entries):
            index, term, etype, data = e
            if etype == ENTRY_CONF_CHANGE:
                members_changed |= self._apply_conf_change(e)
            elif data.startswith(PUBLISH_PREFIX):
                members_changed |= self._apply_publish(e)
                if to_apply is entries:
                    to_apply = list(entries)
                to_apply[i] = (index, term, ENTRY_NORMAL, b"")  # the KV sees a no-op
        if members_changed and self.storage is not None:
            # Written before kv.apply's batch: one WAL, so a durable `applied` implies this too.
            self.storage.put_meta("members", self.members.wire())
        svc = self.service
        if svc.member_waiters:
            # The changes themselves, or (other term) the entries that replaced them.
            svc.answer_member_changes(entries)
        started = time.perf_counter()
        results = kv.apply(to_apply)
        self.stats.apply_seconds.observe(time.perf_counter() - started)
        if kv.compaction_pending:
            self._start_compactor()
        if self.watch_hub.watchers:  # the only watch cost on the apply path
            self.watch_hub.notify()
        if svc.waiters:
            svc.answer_writes(entries, results)
        self.reads.on_applied()

    def _apply_conf_change(self, e: Entry) -> bool:
        try:
            op, node_id, context = decode_conf_change(e[ENTRY_DATA])
            attrs = msgpack.unpackb(context, raw=False) if context else {}
            if not isinstance(attrs, dict):
                attrs = {}
        except Exception as exc:  # the core already ignores malformed conf changes; so do we
            log.error("%s: malformed conf change at index %d: %s", self.cfg.name,
                      e[ENTRY_INDEX], exc)
            return False
        h = format(node_id, "x")
        if op in (CC_ADD_VOTER, CC_ADD_LEARNER) and self.raft is not None \
                and self.raft.snapshot is None:
            # The initial configuration is not in the log (members start from
            # --initial-cluster), so a new member must not replay the log from index 1: it
            # takes its configuration, and the member list, from a snapshot. Compacting here
            # (a view, no copy) makes every later leader send it one (next <= log offset).
            self.snapshots.compact_for_join = True
        if op in (CC_ADD_VOTER, CC_ADD_LEARNER):
            m = self.members.add(node_id, attrs, learner=op == CC_ADD_LEARNER)
            if self.transport is not None and m.peer_urls and node_id != self.id:
                try:
                    self.transport.add_peer(node_id, parse_url(m.peer_urls[0]))
                except ValueError as exc:
                    log.error("%s: member %s has a bad peer URL: %s", self.cfg.name, h, exc)
        elif op == CC_PROMOTE:
            self.members.promote(node_id)
        elif op == CC_REMOVE:
            self.members.remove(node_id)
            if self.transport is not None:
                self.transport.remove_peer(node_id)
            if node_id == self.id:
                log.warning("%s: this member was removed from the cluster", self.cfg.name)
        return True

    def _apply_publish(self, e: Entry) -> bool:
        try:
            _, attrs = msgpack.unpackb(e[ENTRY_DATA], raw=False)
            mid = int(attrs["id"])
            urls = [str(u) for u in attrs["client_urls"]]
        except Exception as exc:
            log.error("%s: malformed member attributes at index %d: %s", self.cfg.name,
                      e[ENTRY_INDEX], exc)
            return False
        if not self.members.set_client_urls(mid, urls):  # ours stay the local truth
            return False
        if mid == self.id:
            self.service.publish_pending = False
            self._published = urls == list(self.cfg.advertise_client_urls)
        return True

    def _start_compactor(self) -> None:
        """Drop the records a compaction made obsolete, in steps between which the loop runs."""
        if self._compactor is not None or self._closed:
            return
        self._compactor = task = asyncio.get_running_loop().create_task(self._compact())
        self._keep_task(task)

    async def _compact(self) -> None:
        kv = self.kv
        started = time.monotonic()
        steps = 0
        try:
            while kv is not None and not self._closed and kv.compaction_pending:
                steps += 1
                if not kv.compact_step():
                    break
                # Pause between steps, as etcd's compaction does (10 ms between batches): ticks,
                # heartbeats, applies and reads run meanwhile, and three members compacting at
                # once on a small machine leave the CPU to their requests part of the time.
                await asyncio.sleep(COMPACT_PAUSE)
            if kv is not None and steps > 1:
                log.info("%s: compaction to revision %d dropped its records in %.1f s "
                         "(%d steps)", self.cfg.name, kv.compact_revision,
                         time.monotonic() - started, steps)
        finally:
            self._compactor = None
        if kv is not None and not self._closed and kv.compaction_pending:
            self._start_compactor()  # a newer compaction applied meanwhile

    def _snapshot_installed(self, members: list[Member]) -> None:
        """A streamed snapshot replaced the state (server/snapshotter.py): its members."""
        self.members.load(members)
        if self.storage is not None:
            self.storage.put_meta("members", self.members.wire())
        if self.transport is not None:
            for mid, addr in self.members.peer_addrs().items():
                self.transport.add_peer(mid, addr)
        if self.watch_hub.watchers:
            self.watch_hub.notify()  # the revision jumped: feed (or cancel, if compacted) them
        if self.kv is not None and self.kv.compaction_pending:
            self._start_compactor()  # the sender's store may hold records below its compaction

    # ------------------------------------------------------------------ soft state
    def _on_soft_state(self, leader: int, role: str) -> None:
        self.stats.on_leader(leader)
        self.reads.on_leader(leader)
        if self.service.held:
            self.service.release_held()
        self._handover_done.set()
        if role == LEADER:
            if self.id in self.members and not self.service.publish_pending:
                self.service.publish_pending = True
                self.service.propose_internal(
                    publish_entry(self.id, list(self.cfg.advertise_client_urls)))
        else:
            self.service.publish_pending = False
            if (leader and not self._published and not self._closed
                    and (self._publisher is None or self._publisher.done())):
                self._publisher = self._running_loop().create_task(self._publish_via_leader())
                self._keep_task(self._publisher)

    async def _publish_via_leader(self) -> None:
        """Ask the leader to record this member's client URLs until the entry is applied here
        (bounded: about a minute and a half of attempts; the next leader change starts again)."""
        timeout = max(1.0, 2 * self.cfg.election_timeout / 1000.0)
        pause = 0.05
        for _ in range(20):
            raft = self.raft
            if self._published or self._closed or self._stopping or raft is None:
                return
            if raft.role == LEADER or self.id not in self.members:
                return  # a leader publishes its own; a removed member has nothing to publish
            m = self.members.get(raft.leader) if raft.leader else None
            if m is not None and m.client_urls:
                try:
                    if await ask_leader(m.client_urls[0], self.id,
                                        list(self.cfg.advertise_client_urls), timeout):
                        self._published = True  # recorded by an earlier run
                        return
                except (OSError, asyncio.TimeoutError, FastraftError) as e:
                    log.debug("%s: asking the leader to record our client URLs: %s",
                              self.cfg.name, e)
            await asyncio.sleep(pause)  # then check: applied by now?
            pause = min(pause * 2, 5.0)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _watch_header(self, revision: int) -> dict[str, int]:
        return self.service.header(revision, self.raft.term if self.raft is not None else 0)

    def _expire(self, now: float) -> None:
        """Answer what waited past its deadline (called every tick)."""
        self.service.expire(now)
        self.reads.expire(now)

    def _fail_all(self, err: FastraftError) -> None:
        self.service.fail_all(err)
        self.reads.fail_all(err)

    # ------------------------------------------------------------------ status
    @property
    def closed(self) -> bool:
        """Its storage and sockets are closed (or closing): nothing may read them."""
        return self._closed

    @property
    def serving(self) -> bool:
        """Open and not stopping: requests are answered (the HTTP probes ask this)."""
        return (not self._stopping and not self._closed and self.raft is not None
                and self.kv is not None)

    def status(self) -> dict[str, Any]:
        return self.service.status()

    def member_list(self) -> list[dict[str, Any]]:
        return self.service.member_list()
