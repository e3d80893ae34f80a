"""A deterministic, seeded simulator of a fastraft cluster (the core only: no sockets, no disk).

Every member is a real ``fastraft.raft.Raft`` driven by a host loop shaped like the node's: take a
ready, send its ``messages`` at once, persist (possibly over several steps, while the member keeps
stepping and ticking), ``advance()``, send ``persisted_messages``, apply ``committed_entries``,
answer read states. Storage is split into a durable part (what ``advance()`` confirmed) and a
volatile part, so a crash loses exactly what a real crash would.

Everything random comes from ``random.Random(seed)``: a failing run replays from its seed.

`Cluster` gives manual control (scenario tests); `run_random` drives a cluster through random
faults, leadership transfers, membership changes (add learner, promote, remove, re-add) and
linearizable reads, checks the Raft safety properties after every step (see `Cluster.check`) and
the client history (puts and ReadIndex reads) for linearizability at the end.

Read contexts are member-local, as the node makes them: a per-run prefix and a counter from 1. Here
the prefix is the member's incarnation number, so the same context is used by different members
(and a crash never reuses one on the same member, as the node's random prefix ensures): the core
must never confuse two reads with equal contexts from different members. Besides the history
check, every confirmed read is checked at once against the members' terms when it was asked
(`Cluster.check_read_confirmation`), which catches a leader counting answers older than the read
even when no write happened to make the result stale.

Lease and bounded-staleness reads run the node's own checks (server/readlevels.py) with the
simulator's step as the clock: the host notes, as the node does, when each tick happened and when
the core heard a leader's commit index. A lease read joins the linearizability check and must see
at least every index committed anywhere when it was asked; a bounded read with bound B answered
at step T must have applied every index committed anywhere by step T - B - D, D being the longest
a message may travel (the one-way delay caveat of the README).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import random
from typing import Any, Callable

import msgpack

from fastraft.errors import ConfChangeInProgressError, NotLeaderError, ProposalDroppedError
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_PROMOTE,
    CC_REMOVE,
    ENTRY_CONF_CHANGE,
    Config,
    Message,
    MsgType,
    Raft,
    ReadState,
    Ready,
    Snapshot,
    decode_conf_change,
    next_membership,
)

from fastraft.errors import FastraftError
from fastraft.server.readlevels import ReadLevels

import lincheck

SNAP = MsgType.MsgSnap.value
READ_INDEX_RESP = MsgType.MsgReadIndexResp.value


class SimError(AssertionError):
    """A safety or liveness property failed (or the harness saw the core break its contract)."""


# ---------------------------------------------------------------------------------------------
# The state machine: a register per key, plus a running digest of everything applied, so two
# members (or a member and a snapshot) can be compared at an index in O(1).

def encode_put(key: bytes, value: bytes) -> bytes:
    return msgpack.packb([key, value], use_bin_type=True)


def decode_put(data: bytes) -> tuple[bytes, bytes]:
    key, value = msgpack.unpackb(data, raw=False)
    return key, value


@dataclasses.dataclass
class StateMachine:
    kv: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    index: int = 0
    digest: bytes = b""
    applied: list[tuple[int, int, bytes]] = dataclasses.field(default_factory=list)

    def apply(self, entry: tuple) -> None:
        index, term, etype, data = entry
        if index != self.index + 1:
            raise SimError(f"applied index {index} after {self.index}: a gap or a repeat")
        self.index = index
        self.digest = hashlib.blake2b(self.digest + repr((index, term, etype, data)).encode(),
                                      digest_size=16).digest()
        self.applied.append((index, term, data))
        if etype != ENTRY_CONF_CHANGE and data:
            key, value = decode_put(data)
            self.kv[key] = value

    def snapshot_data(self) -> bytes:
        return msgpack.packb([self.index, self.digest, self.kv], use_bin_type=True)

    @classmethod
    def restore(cls, data: bytes) -> StateMachine:
        index, digest, kv = msgpack.unpackb(data, raw=False)
        return cls(dict(kv), index, digest, [])


# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Durable:
    """What survives a crash: what advance() confirmed (plus the host's own snapshots)."""
    hard_state: tuple[int, int, int] = (0, 0, 0)
    entries: list[tuple] = dataclasses.field(default_factory=list)
    snapshot: Snapshot | None = None
    # Called with durable entries about to be overwritten (the simulator checks none of them
    # was committed).
    on_truncate: Callable[[list[tuple]], None] | None = None

    @property
    def offset(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    def term_at(self, index: int) -> int | None:
        """The durable term at `index`; None if not held (compacted indexes count as held: -1)."""
        off = self.offset
        if index <= off:
            return -1
        i = index - off - 1
        if i < len(self.entries):
            return self.entries[i][1]
        return None

    def write(self, rd: Ready) -> None:
        """One atomic batch: snapshot, then entries (truncate-suffix rule), then hard state."""
        if rd.snapshot is not None:
            if rd.snapshot.data is None:
                raise SimError(f"ready #{rd.number} carries a snapshot without data")
            # A received snapshot replaces the whole log (the core restored its log from it).
            if self.on_truncate is not None:
                self.on_truncate([e for e in self.entries if e[0] > rd.snapshot.index])
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0][0]
            off = self.offset
            if first <= off:
                raise SimError(f"ready #{rd.number} writes entry {first} at or below the "
                               f"snapshot index {off}")
            keep = first - off - 1
            if keep > len(self.entries):
                raise SimError(f"ready #{rd.number} writes entry {first} but the durable log ends "
                               f"at {off + len(self.entries)}: a hole")
            if self.on_truncate is not None and keep < len(self.entries):
                self.on_truncate(self.entries[keep:])
            del self.entries[keep:]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        drop = snap.index - self.offset
        if drop <= 0:
            return
        self.entries = self.entries[drop:]
        self.snapshot = snap


class Member:
    """One member's host: the core, its storage and state machine, its outstanding ready."""

    def __init__(self, cluster: Cluster, id: int, joining: bool = False) -> None:
        self.c = cluster
        self.id = id
        # A joiner, as the node starts one: no configuration of its own until a snapshot (or the
        # log) brings one.
        self.joining = joining
        self.durable = Durable(on_truncate=cluster.on_truncate)
        self.incarnation = 0
        self.alive = True
        self.raft: Raft = self._new_raft(applied=0)
        self.levels = cluster.new_levels()
        self.sm = StateMachine()
        self.pending: Ready | None = None
        self.persist_left = 0
        self.read_waits: list[tuple[bytes, int]] = []  # (ctx, read index) waiting for apply
        self.read_states: list[ReadState] = []          # every read state seen (tests look)
        self.applied_since_compact = 0
        self.seen_commit = 0
        self.read_seq = 0

    def next_read_ctx(self, at_least: int = 0) -> bytes:
        """A member-local read context: incarnation, then a counter from 1 that may skip ahead
        to `at_least` (see the module doc)."""
        self.read_seq = max(self.read_seq + 1, at_least)
        return self.incarnation.to_bytes(8, "big") + self.read_seq.to_bytes(8, "big")

    def _new_raft(self, applied: int) -> Raft:
        c = self.c
        voters, learners = ((), ()) if self.joining else (c.voters, c.learners)
        cfg = Config(self.id, voters, learners, seed=c.member_seed(self.id, self.incarnation),
                     applied=applied, **c.cfg_kw)
        d = self.durable
        return Raft(cfg, d.hard_state, list(d.entries), d.snapshot)

    # ------------------------------------------------------------------ crash / restart
    def crash(self) -> None:
        """Lose everything volatile. An outstanding ready's batch may or may not have reached the
        disk (it is atomic): the coin decides, the host never learnt which."""
        if not self.alive:
            return
        if self.pending is not None and self.c.rng.random() < 0.5:
            self.durable.write(self.pending)
        self.pending = None
        self.alive = False
        self.read_waits = []
        self.c.event("crash", self.id)

    def restart(self) -> None:
        if self.alive:
            return
        self.incarnation += 1
        self.read_seq = 0
        snap = self.durable.snapshot
        # The state machine is rebuilt from the snapshot; the log replays the rest.
        self.sm = StateMachine.restore(snap.data) if snap is not None else StateMachine()
        self.raft = self._new_raft(applied=self.sm.index)
        self.alive = True
        self.seen_commit = self.raft.commit
        self.c.event("restart", self.id, self.raft.term, self.raft.commit)

    # ------------------------------------------------------------------ host loop
    def pump(self) -> None:
        """Run the host loop until the core has nothing more or a persist is in progress."""
        if not self.alive:
            return
        r = self.raft
        for _ in range(64):  # bounded: each round makes progress or stops
            if self.pending is None:
                if not r.has_ready():
                    return
                rd = r.ready()
                self.c.on_ready(self, rd)
                for m in rd.messages:
                    self.c.send(self, m)
                self.pending = rd
                self.persist_left = self.c.persist_delay()
            if self.persist_left > 0:
                return
            self._finish(self.pending)
        raise SimError(f"{self.id:x}: host loop did not settle in 64 rounds")

    def _finish(self, rd: Ready) -> None:
        self.durable.write(rd)
        if rd.snapshot is not None:
            self.sm = StateMachine.restore(rd.snapshot.data)
            if self.sm.index != rd.snapshot.index:
                raise SimError(f"{self.id:x}: snapshot data is at {self.sm.index}, metadata at "
                               f"{rd.snapshot.index}")
            self.c.on_snapshot_restored(self, rd.snapshot)
        for e in rd.committed_entries:
            if self.durable.term_at(e[0]) not in (e[1], -1):
                raise SimError(f"{self.id:x}: applying {e[:2]} which is not durable here")
            self.sm.apply(e)
            self.c.on_apply(self, e)
        self.applied_since_compact += len(rd.committed_entries)
        self.raft.advance(rd)
        self.pending = None
        for m in rd.persisted_messages:
            self.c.send(self, m)
        for rs in rd.read_states:
            self.read_states.append(rs)
            if rs.ok:
                self.read_waits.append((rs.ctx, rs.index))
            self.c.on_read_state(self, rs)
        self.serve_reads()
        ce = self.c.compact_every
        if ce and self.applied_since_compact >= ce and self.sm.index > self.raft.first_index:
            self.take_snapshot()

    def serve_reads(self) -> None:
        if not self.read_waits:
            return
        ready = [w for w in self.read_waits if w[1] <= self.sm.index]
        if ready:
            self.read_waits = [w for w in self.read_waits if w[1] > self.sm.index]
            for ctx, index in ready:
                self.c.on_read_served(self, ctx, index)

    def take_snapshot(self) -> None:
        idx = self.sm.index
        data = self.sm.snapshot_data()
        self.raft.compact(idx, data)
        meta = self.raft.snapshot
        if meta is None or meta.index != idx:
            raise SimError(f"{self.id:x}: compact({idx}) left snapshot {meta!r}")
        self.durable.compact(meta.with_data(data))
        self.applied_since_compact = 0
        self.c.event("compact", self.id, idx)

    def step_persist_timer(self) -> None:
        if self.pending is not None and self.persist_left > 0:
            self.persist_left -= 1


# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Faults:
    """Per-run fault probabilities (per message or per step)."""
    drop: float = 0.0
    dup: float = 0.0
    max_delay: int = 0        # steps a message may be delayed
    reorder: bool = False     # False: each link is FIFO (like TCP); True: any order
    persist_delay: float = 0.0  # probability a persist takes 1-3 extra steps
    crash: float = 0.0
    restart: float = 0.0
    partition: float = 0.0
    heal: float = 0.0


class Cluster:
    """Members, a network and the invariant bookkeeping. Steps are the unit of time: one tick per
    member per step."""

    def __init__(self, n: int = 3, seed: int = 0, *, faults: Faults | None = None,
                 compact_every: int = 0, ids: list[int] | None = None,
                 learners: tuple[int, ...] = (), check: bool = True, **cfg_kw: Any) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.compact_every = compact_every
        self.cfg_kw = cfg_kw
        ids = ids or [i + 1 for i in range(n)]
        self.voters = tuple(ids)
        self.learners = tuple(learners)
        self.checking = check
        self.now = 0          # step
        self.clock = 0        # event counter: the "real time" of client histories
        self.events: collections.deque[tuple] = collections.deque(maxlen=60)
        self.queue: list[tuple[int, int, Message]] = []  # (deliver_at, seq, msg)
        self.seq = 0
        self.blocked: set[tuple[int, int]] = set()  # (frm, to) pairs cut by a partition
        self.link_last: dict[tuple[int, int], int] = {}  # FIFO links: last delivery step
        self.drop_filter: Callable[[Message], bool] | None = None
        self.members: dict[int, Member] = {}
        for i in ids + list(learners):
            self.members[i] = Member(self, i)
        # --- invariant bookkeeping
        self.leaders: dict[int, int] = {}                  # term -> leader id
        self.entry_sig: dict[tuple[int, int], tuple] = {}  # (index, term) -> entry
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, commit term)
        self.max_committed = 0
        self.applied_at: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.digest_at: dict[int, bytes] = {}
        self.lc_checked: dict[tuple[int, int], int] = {}
        self.full_check_every = 25
        # --- client bookkeeping
        # Conf-change entries known committed (index -> data), from applies and commits.
        self.conf_entries: dict[int, bytes] = {}
        # --- client bookkeeping
        self.history: list[lincheck.Op] = []
        self.put_ops: dict[bytes, lincheck.Op] = {}        # entry data -> its put
        # Reads by (member, ctx): contexts are member-local.
        self.read_ops: dict[tuple[int, bytes], lincheck.Op] = {}
        self.read_floor: dict[tuple[int, bytes], int] = {}  # max commit when asked
        # Every member's durable term when the read was asked (see check_read_confirmation).
        self.read_terms: dict[tuple[int, bytes], dict[int, int]] = {}
        # --- lease and bounded reads
        self.commit_times: list[tuple[int, int]] = [(0, 0)]  # (step, max committed by then)
        self.lease_seq = 0
        self.reads_lease_ok = 0
        self.reads_bounded_ok = 0
        self.reads_refused = 0

    def new_levels(self) -> ReadLevels:
        """A member's read-level evidence, in steps (one tick per step: the heartbeat interval).
        The members' clocks run in lockstep here, so no drift."""
        et = self.cfg_kw.get("election_tick", 10)
        return ReadLevels(election_timeout=float(et), heartbeat_interval=1.0, clock_drift=0.0,
                          election_tick=et)

    # ------------------------------------------------------------------ plumbing
    def member_seed(self, id: int, incarnation: int) -> int:
        return (self.seed * 1_000_003 + id * 7919 + incarnation * 104_729) & ((1 << 63) - 1)

    def event(self, *ev: Any) -> None:
        self.events.append((self.now, *ev))

    def tick_clock(self) -> float:
        self.clock += 1
        return float(self.clock)

    def persist_delay(self) -> int:
        if self.faults.persist_delay and self.rng.random() < self.faults.persist_delay:
            return self.rng.randint(1, 3)
        return 0

    def alive(self) -> list[Member]:
        return [m for m in self.members.values() if m.alive]

    def leader_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.alive and m.raft.role == "leader"]

    def leader(self) -> Member | None:
        """The leader of the highest term among live members, if any."""
        ls = self.leader_members()
        return max(ls, key=lambda m: m.raft.term) if ls else None

    def send(self, frm: Member, m: Message) -> None:
        if m.type == READ_INDEX_RESP and not m.reject:
            self.check_read_confirmation(frm, m.term, m.to, m.context)
        if m.type == SNAP:
            # The core leaves snapshot.data empty; the host fills it in from its storage.
            # The message may have been built before the host compacted again: storage keeps
            # only the newest snapshot, which covers the older one, so that one is sent.
            snap = frm.durable.snapshot
            if snap is None or m.snapshot is None or snap.index < m.snapshot.index:
                raise SimError(f"{frm.id:x} sends snapshot {m.snapshot!r} but its storage has "
                               f"{snap!r}")
            m = m.copy()
            m.snapshot = snap
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            self.event("drop", m)
            return
        copies = 2 if f.dup and self.rng.random() < f.dup else 1
        for _ in range(copies):
            delay = self.rng.randint(0, f.max_delay) if f.max_delay else 0
            at = self.now + delay
            if not f.reorder:
                link = (m.frm, m.to)
                at = max(at, self.link_last.get(link, 0))
                self.link_last[link] = at
            self.seq += 1
            self.queue.append((at, self.seq, m if copies == 1 else m.copy()))

    def deliver_due(self, limit: int = 100_000) -> int:
        """Deliver every message due by now, each batch in random order (that, and the random
        delays, is the reordering); returns how many were delivered."""
        n = 0
        while True:
            due = [q for q in self.queue if q[0] <= self.now]
            if not due:
                return n
            self.queue = [q for q in self.queue if q[0] > self.now]
            self.rng.shuffle(due)
            if not self.faults.reorder:
                # Like TCP: links interleave at random, but each link delivers in send order.
                slots: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
                for pos, q in enumerate(due):
                    slots[(q[2].frm, q[2].to)].append(pos)
                fifo = list(due)
                for positions in slots.values():
                    for pos, q in zip(positions, sorted((due[p] for p in positions),
                                                        key=lambda q: q[1])):
                        fifo[pos] = q
                due = fifo
            for _, _, m in due:
                self.deliver(m)
            n += len(due)
            if n > limit:
                raise SimError(f"more than {limit} deliveries in one step")

    def deliver(self, m: Message) -> None:
        to = self.members.get(m.to)
        if to is None or not to.alive:
            return
        if (m.frm, m.to) in self.blocked:
            return
        if self.drop_filter is not None and self.drop_filter(m):
            self.event("filtered", m)
            return
        self.event("deliver", m)
        to.raft.step(m)
        to.levels.on_stepped(to.raft, lambda: float(self.now))
        to.pump()

    # ------------------------------------------------------------------ hooks from members
    def on_ready(self, mem: Member, rd: Ready) -> None:
        if rd.soft_state is not None:
            self.event("soft", mem.id, rd.soft_state)
        if mem.raft.role == "leader":
            for rs in rd.read_states:
                if rs.ok:
                    self.check_read_confirmation(mem, mem.raft.term, mem.id, rs.ctx)
        durable_term = mem.durable.hard_state[0]
        for m in rd.messages:
            # Sent before this ready is durable: nothing may speak for a term the member could
            # forget in a crash.
            if m.term > durable_term:
                raise SimError(f"{mem.id:x} sends {m!r} before its term {m.term} is durable "
                               f"(durable term {durable_term})")
        for e in rd.entries:
            key = (e[0], e[1])
            old = self.entry_sig.get(key)
            if old is None:
                self.entry_sig[key] = e
            elif old != e:
                raise SimError(f"two different entries at index {e[0]} term {e[1]}: {old!r} "
                               f"(seen before) and {e!r} at {mem.id:x}")

    def on_truncate(self, removed: list[tuple]) -> None:
        for e in removed:
            c = self.committed.get(e[0])
            if c is not None and c[0] == e[1]:
                raise SimError(f"a member's storage overwrote committed entry {e[:2]}")

    def on_snapshot_restored(self, mem: Member, snap: Snapshot) -> None:
        self.event("snapshot-restored", mem.id, snap.index)
        self._check_digest(mem, snap.index, mem.sm.digest)

    def on_apply(self, mem: Member, e: tuple) -> None:
        index, term, _, data = e
        prev = self.applied_at.get(index)
        if prev is None:
            self.applied_at[index] = (term, data)
        elif prev != (term, data):
            raise SimError(f"state machine safety: {mem.id:x} applied {(term, data)!r} at "
                           f"{index}, another member applied {prev!r}")
        c = self.committed.get(index)
        if c is not None and (c[0], c[1]) != (term, data):
            raise SimError(f"{mem.id:x} applied {(term, data)!r} at {index} but "
                           f"{(c[0], c[1])!r} was committed there")
        self._check_digest(mem, index, mem.sm.digest)
        if e[2] == ENTRY_CONF_CHANGE:
            self.conf_entries.setdefault(index, data)
        op = self.put_ops.get(data) if data else None
        if op is not None and op.complete is None:
            # Committed and applied: it took effect by now.
            op.complete = self.tick_clock()
            op.outcome = "ok"

    def _check_digest(self, mem: Member, index: int, digest: bytes) -> None:
        if not self.checking:
            return
        prev = self.digest_at.get(index)
        if prev is None:
            self.digest_at[index] = digest
        elif prev != digest:
            raise SimError(f"{mem.id:x}'s state machine at {index} differs from another member's")

    def on_read_state(self, mem: Member, rs: ReadState) -> None:
        self.event("read-state", mem.id, rs)
        if rs.ok:
            floor = self.read_floor.get((mem.id, rs.ctx))
            if floor is not None and rs.index < floor:
                raise SimError(f"ReadIndex at {mem.id:x} answered {rs.index}, but {floor} was "
                               f"committed before the read was asked")

    def check_read_confirmation(self, leader: Member, term: int, requester: int,
                                ctx: bytes) -> None:
        """ReadIndex (§6.4): `leader` of `term` confirms a read only after a quorum of voters
        acknowledged it as leader after the read was asked. A voter whose durable term was
        already above `term` when the read was asked can never have done so (terms only grow),
        so a quorum of such acks means the core counted answers given before the read existed.
        (Lease reads are answered from earlier acks by design: not checked.)"""
        asked = self.read_terms.get((requester, ctx))
        if asked is None or leader.raft.cfg.lease_read:
            return
        voters = leader.raft.voters
        could = [v for v in voters if v == leader.id or asked.get(v, 0) <= term]
        if len(could) < len(voters) // 2 + 1:
            raise SimError(f"{leader.id:x} (term {term}) confirmed {requester:x}'s read "
                           f"{ctx.hex()} although only {len(could)} of voters {voters} were at "
                           f"term {term} or below when it was asked: {asked}")

    def on_read_served(self, mem: Member, ctx: bytes, index: int) -> None:
        op = self.read_ops.get((mem.id, ctx))
        if op is None or op.complete is not None:
            return
        op.value = mem.sm.kv.get(op.key)
        op.complete = self.tick_clock()
        op.outcome = "ok"
        if ctx.startswith(b"lease"):
            self.reads_lease_ok += 1

    # ------------------------------------------------------------------ client actions
    def propose(self, mem: Member, key: bytes, value: bytes) -> int | None:
        """A client put at `mem`; returns the index or None if refused (definitely not applied)."""
        data = encode_put(key, value)
        op = lincheck.Op(key, "put", value, self.tick_clock(), None, "unknown")
        try:
            index = mem.raft.propose(data)
        except (NotLeaderError, ProposalDroppedError):
            op.complete = self.tick_clock()
            op.outcome = "fail"
            self.history.append(op)
            return None
        self.history.append(op)
        self.put_ops[data] = op
        self.event("propose", mem.id, index, key, value)
        mem.pump()
        return index

    def lease_read(self, mem: Member, key: bytes) -> bool:
        """A lease read at `mem`: refused (False) unless it is the leader and its lease holds;
        else it waits for its index to apply and joins the history as a get."""
        now = float(self.now)
        try:
            if mem.raft.role != "leader":
                raise FastraftError("not the leader")
            index = mem.levels.lease_index(mem.raft, now)
        except FastraftError as e:
            self.event("lease-refused", mem.id, e.message)
            self.reads_refused += 1
            return False
        if index < self.max_committed:
            raise SimError(f"lease read at {mem.id:x} (term {mem.raft.term}) reads index {index} "
                           f"but {self.max_committed} was committed before it was asked")
        self.lease_seq += 1
        ctx = b"lease" + self.lease_seq.to_bytes(8, "big")
        op = lincheck.Op(key, "get", None, self.tick_clock(), None, "unknown")
        self.history.append(op)
        self.read_ops[(mem.id, ctx)] = op
        self.event("lease-read", mem.id, index)
        mem.read_waits.append((ctx, index))
        mem.serve_reads()
        return True

    def committed_by(self, step: float) -> int:
        """The highest index committed anywhere by the end of `step`."""
        best = 0
        for at, idx in self.commit_times:
            if at > step:
                break
            best = idx
        return best

    def bounded_read(self, mem: Member, bound: int) -> bool:
        """A bounded-staleness read at `mem` (answered at once, or refused: False)."""
        now = float(self.now)
        try:
            mem.levels.bounded_check(mem.raft, mem.sm.index, now, float(bound))
        except FastraftError as e:
            self.event("bounded-refused", mem.id, e.message)
            self.reads_refused += 1
            return False
        # The one-way delay of the leader's commit index, from its core to this member's: up to
        # max_delay steps on the wire, up to 3 more waiting in the leader's core while its
        # host persists a ready (the node's sync thread does the same), +1 for a message sent
        # after a step's ticks. max_committed is taken at the end of each step.
        delay = self.faults.max_delay + (3 if self.faults.persist_delay else 0) + 1
        floor = self.committed_by(now - bound - delay)
        if mem.sm.index < floor:
            raise SimError(f"bounded read (bound {bound}) at {mem.id:x} step {self.now}: applied "
                           f"{mem.sm.index}, but {floor} was committed by step "
                           f"{now - bound - delay:.0f}")
        self.reads_bounded_ok += 1
        self.event("bounded-read", mem.id, mem.sm.index, bound)
        return True

    def read(self, mem: Member, key: bytes, at_least: int = 0) -> bytes:
        """A linearizable client get at `mem` through ReadIndex; returns the read's ctx (unique
        at `mem` only; its counter skips ahead to `at_least` if behind)."""
        ctx = mem.next_read_ctx(at_least)
        op = lincheck.Op(key, "get", None, self.tick_clock(), None, "unknown")
        self.history.append(op)
        self.read_ops[(mem.id, ctx)] = op
        self.read_floor[(mem.id, ctx)] = self.max_committed
        self.read_terms[(mem.id, ctx)] = {i: m.durable.hard_state[0]
                                          for i, m in self.members.items()}
        mem.raft.read_index(ctx)
        mem.pump()
        return ctx

    # ------------------------------------------------------------------ manual control
    def isolate(self, id: int) -> None:
        for o in self.members:
            if o != id:
                self.blocked.add((id, o))
                self.blocked.add((o, id))
        self.event("isolate", id)

    def partition(self, *groups: list[int] | tuple[int, ...] | set[int]) -> None:
        """Cut every link between members of different groups (members not named: own group)."""
        side = {}
        for gi, g in enumerate(groups):
            for i in g:
                side[i] = gi
        ids = list(self.members)
        self.blocked = {(a, b) for a in ids for b in ids
                        if a != b and side.get(a, -1 - a) != side.get(b, -1 - b)}
        self.event("partition", groups)

    def heal(self) -> None:
        self.blocked = set()
        self.event("heal")

    def add_member(self, id: int, joining: bool = False) -> Member:
        """A fresh, empty member (to be added by a conf change). Like every member it starts from
        the bootstrap membership (``voters``/``learners``) and learns the rest from the log; with
        ``joining`` it starts with no membership, as the node's joiner does, and learns it from a
        snapshot."""
        m = Member(self, id, joining)
        self.members[id] = m
        return m

    def configs(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The committed memberships in order: the bootstrap one, then one per conf change
        known committed (by the core's rules for applying them)."""
        voters, learners = set(self.voters), set(self.learners)
        out = [(tuple(sorted(voters)), tuple(sorted(learners)))]
        for index in sorted(self.conf_entries):
            op, node_id, _ = decode_conf_change(self.conf_entries[index])
            v, lrn = next_membership(op, node_id, voters, learners)
            if v:  # the core skips a change that would leave no voter
                voters, learners = v, lrn
                out.append((tuple(sorted(voters)), tuple(sorted(learners))))
        return out

    def step(self, tick: bool = True) -> None:
        """One unit of time: deliver due messages, tick every live member, run the host loops,
        then check every invariant."""
        self.deliver_due()
        if tick:
            for m in list(self.members.values()):
                if m.alive:
                    m.raft.tick()
                    m.levels.on_tick(m.raft, float(self.now), m.sm.index)
        for m in list(self.members.values()):
            m.step_persist_timer()
            m.pump()
        self.deliver_due()
        self.now += 1
        if self.checking:
            self.check()

    def run(self, steps: int, tick: bool = True) -> None:
        for _ in range(steps):
            self.step(tick)

    def stabilize(self, max_steps: int = 200) -> None:
        """Deliver without ticking until no message is in flight and no member has a ready."""
        for _ in range(max_steps):
            if not self.queue and not any(m.alive and (m.pending is not None or
                                                       m.raft.has_ready())
                                          for m in self.members.values()):
                return
            self.step(tick=False)
        raise SimError(f"cluster did not stabilize in {max_steps} steps")

    def run_until(self, pred: Callable[[], bool], max_steps: int, what: str) -> int:
        for i in range(max_steps):
            if pred():
                return i
            self.step()
        if pred():
            return max_steps
        raise SimError(f"{what}: not reached within {max_steps} steps")

    def elect(self, id: int) -> Member:
        """Make `id` campaign and deliver messages (no ticks) until the election settles; it must
        have won and committed its first entry."""
        m = self.members[id]
        m.raft.campaign()
        m.pump()
        self.stabilize()
        if m.raft.role != "leader":
            raise SimError(f"{id:x} did not win: {m.raft.role} at term {m.raft.term}")
        return m

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """The Raft safety properties (Figure 3 of the paper) over the current state."""
        live = [m for m in self.members.values() if m.alive]
        # Election safety: at most one leader per term, ever.
        for m in live:
            r = m.raft
            if r.role == "leader":
                prev = self.leaders.setdefault(r.term, m.id)
                if prev != m.id:
                    raise SimError(f"two leaders in term {r.term}: {prev:x} and {m.id:x}")
        # Newly committed entries, by anyone, with the term in which they were known committed.
        for m in live:
            r = m.raft
            if r.commit > m.seen_commit:
                log = r.log
                for i in range(max(m.seen_commit + 1, log.offset + 1), r.commit + 1):
                    e = log.entry(i)
                    if e[2] == ENTRY_CONF_CHANGE:
                        self.conf_entries.setdefault(i, e[3])
                    prev = self.committed.get(i)
                    if prev is None:
                        self.committed[i] = (e[1], e[3], r.term)
                    elif (prev[0], prev[1]) != (e[1], e[3]):
                        raise SimError(f"{m.id:x} committed {e[:2]} at {i}, but term {prev[0]} "
                                       f"was committed there before")
                m.seen_commit = r.commit
                if r.commit > self.max_committed:
                    self.max_committed = r.commit
                    if self.commit_times[-1][0] == self.now:
                        self.commit_times[-1] = (self.now, r.commit)
                    else:
                        self.commit_times.append((self.now, r.commit))
        # Log matching across live members: wherever two logs hold the same (index, term), the
        # logs are identical up to there.
        logs = [(m.id, m.raft.log.offset, m.raft.log.entries()) for m in live]
        for a in range(len(logs)):
            ida, offa, ea = logs[a]
            for b in range(a + 1, len(logs)):
                idb, offb, eb = logs[b]
                lo = max(offa, offb) + 1
                hi = min(offa + len(ea), offb + len(eb))
                i = hi
                while i >= lo and ea[i - offa - 1][1] != eb[i - offb - 1][1]:
                    i -= 1
                if i >= lo and ea[lo - offa - 1:i - offa] != eb[lo - offb - 1:i - offb]:
                    raise SimError(f"log matching: {ida:x} and {idb:x} agree on the term at {i} "
                                   f"but differ before it")
        # Leader completeness: a leader of term T holds every entry committed in a term <= T.
        # A leader's log only grows while it leads, and new commits land above old ones, so each
        # (leader, term) is checked from where its last check stopped.
        for m in live:
            r = m.raft
            if r.role != "leader":
                continue
            log = r.log
            key = (m.id, r.term)
            lo = max(log.offset + 1, self.lc_checked.get(key, 0) + 1)
            self.lc_checked[key] = self.max_committed
            for i in range(lo, self.max_committed + 1):
                c = self.committed.get(i)
                if c is None or c[2] > r.term:
                    continue
                e = log.entry(i)
                if e is None or e[1] != c[0]:
                    raise SimError(f"leader completeness: leader {m.id:x} (term {r.term}) lacks "
                                   f"entry {i} term {c[0]} committed in term {c[2]}: has {e!r}")
        # No committed entry lost: each is durable at a majority of the voters (as an entry of
        # the same term, or inside a snapshot). Overwrites of committed entries are caught at
        # every write (on_truncate); this full count runs every few steps to bound its cost.
        if self.now % self.full_check_every == 0:
            self.check_durable_majority()

    def check_durable_majority(self) -> None:
        """Every committed entry is durable at a majority of the newest committed membership or
        of the one before it. (The newest conf change committed under the one before, which puts
        everything up to it on a majority of that; entries after it committed under either.)"""
        configs = [[self.members[v] for v in voters if v in self.members]
                   for voters, _ in self.configs()[-2:]]
        starts = []
        for voters in configs:
            offs = sorted((v.durable.offset for v in voters), reverse=True)
            # Below this a majority holds it in a snapshot already.
            starts.append(offs[len(voters) // 2] + 1)
        for i in range(min(starts), self.max_committed + 1):
            c = self.committed.get(i)
            if c is None:
                continue
            counts = []
            for voters in configs:
                have = sum(1 for v in voters if v.durable.term_at(i) in (c[0], -1))
                if have >= len(voters) // 2 + 1:
                    break
                counts.append(f"{have} of {len(voters)}")
            else:
                raise SimError(f"committed entry {i} (term {c[0]}) is durable at only "
                               f"{' / '.join(counts)} voters (last two memberships)")

    def describe(self) -> str:
        lines = [f"step {self.now}, seed {self.seed}"]
        for m in self.members.values():
            if m.alive:
                r = m.raft
                lines.append(f"  {m.id:x}: {r.role} term={r.term} leader={r.leader:x} "
                             f"commit={r.commit} applied={m.sm.index} log=({r.first_index}.."
                             f"{r.last_index}) pending={m.pending is not None}")
            else:
                lines.append(f"  {m.id:x}: down (durable hs={m.durable.hard_state})")
        lines.append("last events:")
        for ev in self.events:
            lines.append("  " + " ".join(repr(x) if not isinstance(x, int) else str(x)
                                         for x in ev))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Random runs

@dataclasses.dataclass
class Profile:
    n: int = 3
    steps: int = 1500
    faults: bool = True
    keys: int = 3
    liveness_steps: int = 400
    churn: bool = True        # leadership transfers and membership changes (with faults only)


@dataclasses.dataclass
class RunResult:
    seed: int
    leaders: int            # distinct (term, leader) pairs seen
    committed: int
    applied_min: int
    snapshots_sent: int
    crashes: int
    history_ops: int
    lincheck: lincheck.CheckResult
    transfers: int = 0      # leadership transfers started
    conf_changes: int = 0   # conf changes committed (add learner, promote, remove, re-add)
    reads_ok: int = 0       # linearizable reads answered (and so checked)
    lease_ok: int = 0       # lease reads answered (checked as linearizable reads)
    bounded_ok: int = 0     # bounded-staleness reads answered (checked against their bound)
    level_refused: int = 0  # lease and bounded reads refused


def random_faults(rng: random.Random) -> Faults:
    return Faults(
        drop=rng.choice([0.0, 0.01, 0.05, 0.15]),
        dup=rng.choice([0.0, 0.02, 0.1]),
        max_delay=rng.choice([0, 1, 2, 4]),
        reorder=rng.random() < 0.3,
        persist_delay=rng.choice([0.0, 0.1, 0.4]),
        crash=rng.choice([0.0, 0.002, 0.006]),
        restart=rng.choice([0.02, 0.1]),
        partition=rng.choice([0.0, 0.003, 0.01]),
        heal=rng.choice([0.01, 0.05]),
    )


def run_random(seed: int, profile: Profile) -> RunResult:
    """One seeded run: faults for `profile.steps` steps, then a heal and the liveness check."""
    rng = random.Random(seed)
    faults = random_faults(rng) if profile.faults else Faults()
    # A full window of one-entry appends delivered out of order makes every stale rejection
    # re-send the window (the probe/replicate rule relies on mostly-ordered links): with
    # reordering, windows stay small so a run's message count stays bounded.
    inflight = rng.choice([2, 8] if faults.reorder else [2, 8, 256])
    cfg_kw = dict(election_tick=rng.choice([6, 10]), max_inflight_msgs=inflight,
                  max_entries_per_msg=rng.choice([1, 4, 64]))
    c = Cluster(profile.n, seed=rng.randrange(1 << 30), faults=faults,
                compact_every=rng.choice([0, 10, 25, 60]), **cfg_kw)
    crashes = 0
    snaps = 0
    value_no = 0
    keys = [b"k%d" % i for i in range(profile.keys)]
    p_prop = rng.choice([0.1, 0.3, 0.8])
    p_read = rng.choice([0.05, 0.2, 0.5])
    # Sometimes a client reads the key at every member at once, each member's counter skipping
    # to one number: then the same context reaches the leader from several members.
    p_read_all = rng.choice([0.0, 0.3])
    # Lease and bounded reads, at random members (a follower's lease read is refused).
    p_lease = rng.choice([0.0, 0.1, 0.3])
    p_bounded = rng.choice([0.0, 0.1, 0.3])
    max_down = (profile.n - 1) // 2 if rng.random() < 0.7 else profile.n  # sometimes lose quorum
    churn = profile.faults and profile.churn
    p_transfer = rng.choice([0.0, 0.003, 0.01]) if churn else 0.0
    p_conf = rng.choice([0.0, 0.005, 0.02]) if churn else 0.0
    # Ids a membership change may add: two spares beyond the bootstrap members.
    pool = list(c.members) + [profile.n + 1, profile.n + 2]
    transfers = 0
    ids = list(c.members)
    try:
        for _ in range(profile.steps):
            if p_transfer and rng.random() < p_transfer:
                transfers += _random_transfer(c, rng)
            if p_conf and rng.random() < p_conf:
                _random_conf_change(c, rng, pool, profile.n)
                ids = list(c.members)
            if faults.crash and rng.random() < faults.crash:
                up = c.alive()
                if len(ids) - len(up) < max_down and up:
                    rng.choice(up).crash()
                    crashes += 1
            if faults.restart:
                for m in c.members.values():
                    if not m.alive and rng.random() < faults.restart:
                        m.restart()
            if faults.partition and rng.random() < faults.partition:
                kind = rng.random()
                if kind < 0.4:
                    c.isolate(rng.choice(ids))
                elif kind < 0.8:
                    shuffled = ids[:]
                    rng.shuffle(shuffled)
                    k = rng.randint(1, len(ids) - 1)
                    c.partition(shuffled[:k], shuffled[k:])
                else:
                    # Asymmetric: one direction of one link.
                    a, b = rng.sample(ids, 2)
                    c.blocked.add((a, b))
                    c.event("cut", a, b)
            if c.blocked and rng.random() < faults.heal:
                c.heal()
            if rng.random() < p_prop:
                ls = c.leader_members()
                target = rng.choice(ls) if ls else rng.choice(c.alive() or [c.members[ids[0]]])
                # Client backpressure (as a real server bounds its uncommitted proposals), so
                # the backlog the liveness phase must drain stays bounded.
                if target.alive and target.raft.last_index - target.raft.commit < MAX_BACKLOG:
                    value_no += 1
                    c.propose(target, rng.choice(keys), b"v%d" % value_no)
            if rng.random() < p_read:
                up = c.alive()
                if up:
                    key = rng.choice(keys)
                    if rng.random() < p_read_all:
                        seq = max(m.read_seq for m in up) + 1
                        for m in up:
                            c.read(m, key, seq)
                    else:
                        c.read(rng.choice(up), key)
            if p_lease and rng.random() < p_lease:
                up = c.alive()
                ls = [m for m in up if m.raft.role == "leader"]
                if up:
                    c.lease_read(rng.choice(ls if ls and rng.random() < 0.8 else up),
                                 rng.choice(keys))
            if p_bounded and rng.random() < p_bounded:
                up = c.alive()
                if up:
                    c.bounded_read(rng.choice(up), rng.choice([1, 3, 6, 15, 40]))
            before = sum(1 for q in c.queue if q[2].type == SNAP)
            c.step()
            snaps += max(0, sum(1 for q in c.queue if q[2].type == SNAP) - before)

        # Liveness: heal everything, restart everyone, stop injecting faults.
        c.heal()
        c.faults = Faults(max_delay=min(faults.max_delay, 1))
        for m in c.members.values():
            m.restart()
        c.run_until(lambda: _stable_leader(c), profile.liveness_steps + _backlog(c) * 4,
                    "a leader after the final heal (and its log committed)")
        lead = c.leader()
        assert lead is not None
        # Members removed for good are out of the liveness checks (they may never learn it).
        current = [c.members[i] for i in lead.raft.voters + lead.raft.learners]
        final: list[int] = []
        for i in range(5):
            value_no += 1
            idx = c.propose(lead, keys[i % len(keys)], b"v%d" % value_no)
            if idx is None:
                raise SimError(f"the stable leader {lead.id:x} refused a proposal")
            final.append(idx)
        target = max(final)
        # A member added late may still be catching up on the whole log, an entry or two a step.
        c.run_until(lambda: all(m.sm.index >= target for m in current),
                    profile.liveness_steps + (target - min(m.sm.index for m in current)) * 4,
                    f"proposals up to {target} applied everywhere")
        for m in current:
            if m.raft.term != lead.raft.term or m.raft.leader != lead.id:
                raise SimError(f"{m.id:x} does not follow the final leader {lead.id:x}")
        # Reads after the heal complete too.
        ops = [c.read_ops[(m.id, c.read(m, keys[0]))] for m in current]
        c.run_until(lambda: all(op.complete is not None for op in ops),
                    profile.liveness_steps, "reads after the final heal")
        # Puts whose entries never got applied anywhere are gone for good: every log now matches
        # the final leader's and everything in it is applied.
        for op in c.history:
            if op.kind == "put" and op.outcome == "unknown" and op.complete is None:
                op.complete = c.tick_clock()
                op.outcome = "fail"
        result = lincheck.check(c.history, max_states=200_000)
        if not result.ok:
            raise SimError(f"client history is not linearizable: {result.message}")
    except AssertionError as e:
        raise SimError(f"{e}\n{c.describe()}") from e
    return RunResult(seed, len(c.leaders), c.max_committed,
                     min(m.sm.index for m in current), snaps, crashes,
                     len(c.history), result, transfers, len(c.conf_entries),
                     sum(1 for (_, ctx), op in c.read_ops.items()
                         if op.outcome == "ok" and not ctx.startswith(b"lease")),
                     c.reads_lease_ok, c.reads_bounded_ok, c.reads_refused)


def _random_transfer(c: Cluster, rng: random.Random) -> int:
    """Ask the leader to hand leadership to a random other voter; 1 if it started."""
    lead = c.leader()
    if lead is None:
        return 0
    others = [v for v in lead.raft.voters if v != lead.id]
    if not others:
        return 0
    to = rng.choice(others)
    try:
        lead.raft.transfer_leader(to)
    except (NotLeaderError, ValueError):
        return 0
    c.event("transfer", lead.id, to)
    lead.pump()
    return 1


def _random_conf_change(c: Cluster, rng: random.Random, pool: list[int], n: int) -> None:
    """One membership change at the leader: add a learner (a new member, or one removed before:
    a re-add, with the storage it kept), promote a learner, or remove a learner or a voter (the
    leader too), keeping between n-1 and n+1 voters."""
    lead = c.leader()
    if lead is None:
        return
    voters, learners = lead.raft.voters, lead.raft.learners
    choices: list[tuple[int, int]] = [(CC_ADD_LEARNER, i) for i in pool
                                      if i not in voters and i not in learners]
    choices += [(CC_REMOVE, i) for i in learners]
    if len(voters) < n + 1:
        choices += [(CC_PROMOTE, i) for i in learners]
    if len(voters) > n - 1:
        choices += [(CC_REMOVE, i) for i in voters]
    if not choices:
        return
    op, node_id = rng.choice(choices)
    try:
        lead.raft.propose_conf_change(op, node_id)
    except (ConfChangeInProgressError, NotLeaderError, ProposalDroppedError, ValueError):
        return
    if op == CC_ADD_LEARNER:
        m = c.members.get(node_id)
        if m is None:
            c.add_member(node_id)
        elif not m.alive:
            m.restart()
    c.event("conf-change", lead.id, op, node_id)
    lead.pump()


MAX_BACKLOG = 200


def _backlog(c: Cluster) -> int:
    """Entries some member still has to receive: with one-entry messages, a window of 2 and
    drops, draining them takes a few steps each."""
    last = max(m.raft.last_index for m in c.members.values())
    return last - min(m.raft.commit for m in c.members.values())


def _stable_leader(c: Cluster) -> bool:
    lead = c.leader()
    # A transfer still running ends within an election timeout (done or aborted).
    if lead is None or lead.raft.commit < lead.raft.last_index or lead.raft.lead_transferee:
        return False
    return all(m.alive and m.raft.term == lead.raft.term and m.raft.leader == lead.id
               for m in (c.members[i] for i in lead.raft.voters + lead.raft.learners))


def seeds_from_env(default: int, base: int = 0) -> list[int]:
    """FASTRAFT_SIM_SEED=<n> replays one seed; FASTRAFT_SIM_SEEDS=<count> widens the sweep."""
    one = os.environ.get("FASTRAFT_SIM_SEED")
    if one:
        return [int(one)]
    count = int(os.environ.get("FASTRAFT_SIM_SEEDS", default))
    return [base + i for i in range(count)]
