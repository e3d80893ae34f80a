"""The Raft rules, as a deterministic state machine.

No sockets, no disk, no clock: the host calls ``tick()``, ``step(msg)`` and ``propose(...)``, then
takes a ``Ready`` (entries and hard state to persist, messages to send, committed entries to apply),
does the I/O and calls ``advance(ready)``. Randomness (the election timeout) comes from a seeded
generator, so a simulation that fails replays exactly from its seed.

The per-entry work (the log, progress tracking, quorum arithmetic) lives in ``_core.pyx``; this file
holds the rules of the Raft paper (Ongaro & Ousterhout, 2014) and the thesis' extensions: PreVote,
CheckQuorum, leadership transfer, ReadIndex, leader leases and single-server membership changes.
"""

from __future__ import annotations

import enum
import logging
import random
import struct
from typing import Any, Final, NamedTuple

import msgpack

from fastraft._core import (
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
    PROBE,
    REPLICATE,
    SNAPSHOT,
    Log,
    Message,
    ProgressTracker,
    register_msg_names,
)
from fastraft.errors import ConfChangeInProgressError, NotLeaderError, ProposalDroppedError

logger = logging.getLogger("fastraft.raft")

# A log entry is a plain tuple (index, term, type, data): _core.Log keeps them so, and the apply
# loops (storage/mvcc.py KV.apply, the node's _apply) unpack them, which is as fast as a tuple
# gets. Where one entry crosses modules by itself, these name its fields.
Entry = tuple[int, int, int, bytes]
ENTRY_INDEX: Final = 0
ENTRY_TERM: Final = 1
ENTRY_TYPE: Final = 2
ENTRY_DATA: Final = 3

__all__ = [
    "CC_ADD_LEARNER",
    "CC_ADD_VOTER",
    "CC_PROMOTE",
    "CC_REMOVE",
    "ENTRY_CONF_CHANGE",
    "ENTRY_NORMAL",
    "Entry",
    "ENTRY_INDEX",
    "ENTRY_TERM",
    "ENTRY_TYPE",
    "ENTRY_DATA",
    "Config",
    "LEADER_COMMIT_UNKNOWN",
    "Message",
    "MsgType",
    "Raft",
    "ReadState",
    "Ready",
    "Snapshot",
    "heartbeat_round_of",
]


class MsgType(enum.IntEnum):
    MsgApp = 1
    MsgAppResp = 2
    MsgVote = 3
    MsgVoteResp = 4
    MsgPreVote = 5
    MsgPreVoteResp = 6
    MsgHeartbeat = 7
    MsgHeartbeatResp = 8
    MsgSnap = 9
    MsgTimeoutNow = 10
    MsgReadIndex = 11
    MsgReadIndexResp = 12


register_msg_names({t.value: t.name for t in MsgType})


def msg_name(t: int) -> str:
    try:
        return MsgType(t).name
    except ValueError:
        return f"Msg({t})"


APP = MsgType.MsgApp.value
APP_RESP = MsgType.MsgAppResp.value
VOTE = MsgType.MsgVote.value
VOTE_RESP = MsgType.MsgVoteResp.value
PRE_VOTE = MsgType.MsgPreVote.value
PRE_VOTE_RESP = MsgType.MsgPreVoteResp.value
HEARTBEAT = MsgType.MsgHeartbeat.value
HEARTBEAT_RESP = MsgType.MsgHeartbeatResp.value
SNAP = MsgType.MsgSnap.value
TIMEOUT_NOW = MsgType.MsgTimeoutNow.value
READ_INDEX = MsgType.MsgReadIndex.value
READ_INDEX_RESP = MsgType.MsgReadIndexResp.value

# Messages a leader may send before its own disk write finishes (§10.2.1 of the thesis): they
# carry nothing that depends on this member's unpersisted state being durable.
_LEADER_SEND_NOW = frozenset({APP, HEARTBEAT, SNAP, TIMEOUT_NOW, READ_INDEX_RESP})

CC_ADD_VOTER = 0
CC_REMOVE = 1
CC_ADD_LEARNER = 2
CC_PROMOTE = 3

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"

TRANSFER_CONTEXT = b"transfer"

# A leader's lease is shortened by this many ticks to absorb clock-rate differences between
# members (see Raft.lease_valid).
LEASE_MARGIN_TICKS = 2

# Terms and indexes no cluster reaches; a message carrying one is dropped, so the arithmetic on
# them (term + 1, index + 1) stays within the 64-bit fields of the wire and of _core.
_MAX_NUMBER = 1 << 62

# A heartbeat's context, echoed by the follower: the leader's heartbeat round, the tick it was
# sent at and the leader's commit index then. Only the leader that made it reads it back (an
# answer of another term is dropped). The commit is there for the follower too: the heartbeat's
# own commit field is min(its match, commit), which is not the leader's commit for a follower
# that lags, and bounded-staleness reads need the real one (see leader_commit).
_HB_CTX = struct.Struct(">QQQ")
# The leader's own place in quorum_round(): newer than any round it sent.
_NOW = 1 << 64
# A leader's commit index that proves nothing: until a leader commits an entry of its own term,
# its commit index may be behind what earlier leaders committed (§6.4), so it is not evidence of
# freshness. As a commit index it is above any real one, so no applied state ever covers it.
LEADER_COMMIT_UNKNOWN = (1 << 64) - 1


def heartbeat_round_of(ctx: bytes) -> int:
    """The heartbeat round a MsgHeartbeat(Resp) context carries (0: none). The host times peer
    round trips by it (the core itself knows no time)."""
    return _HB_CTX.unpack(ctx)[0] if len(ctx) == _HB_CTX.size else 0


class Snapshot:
    """The state machine as of ``index``/``term``, with the membership at that point.

    The core keeps only the metadata; ``data`` is filled in by the host when a snapshot travels
    (to a follower, or from a follower's ready to its state machine)."""

    __slots__ = ("index", "term", "voters", "learners", "data")

    def __init__(self, index: int, term: int, voters: tuple[int, ...] = (),
                 learners: tuple[int, ...] = (), data: bytes | None = None) -> None:
        self.index = index
        self.term = term
        self.voters = tuple(voters)
        self.learners = tuple(learners)
        self.data = data

    def with_data(self, data: bytes | None) -> Snapshot:
        return Snapshot(self.index, self.term, self.voters, self.learners, data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (self.index, self.term, self.voters, self.learners, self.data) == (
            other.index, other.term, other.voters, other.learners, other.data)

    def __repr__(self) -> str:
        return (f"Snapshot(index={self.index}, term={self.term}, voters={self.voters}, "
                f"learners={self.learners}, data={'None' if self.data is None else len(self.data)})")


class ReadState(NamedTuple):
    """A ReadIndex answer: read the state machine once it has applied ``index``.
    ``ok`` is False when the read was refused (no leader, leadership lost)."""

    ctx: bytes
    # Shadows tuple.index() on purpose: the field is the API (etcd's ReadState.Index), and
    # nothing calls tuple.index on a ReadState.
    index: int  # type: ignore[assignment]
    ok: bool


class Ready:
    """What the host must do next. See docs/architecture.md for the contract."""

    __slots__ = ("number", "hard_state", "entries", "snapshot", "messages", "persisted_messages",
                 "committed_entries", "read_states", "soft_state")

    def __init__(self, number: int) -> None:
        self.number = number
        self.hard_state: tuple[int, int, int] | None = None
        self.entries: list[tuple] = []
        self.snapshot: Snapshot | None = None
        self.messages: list[Message] = []
        self.persisted_messages: list[Message] = []
        self.committed_entries: list[tuple] = []
        self.read_states: list[ReadState] = []
        self.soft_state: tuple[int, str] | None = None

    def must_sync(self) -> bool:
        return bool(self.hard_state is not None or self.entries or self.snapshot is not None)

    def __repr__(self) -> str:
        return (f"Ready(#{self.number} hs={self.hard_state} entries={len(self.entries)} "
                f"snap={self.snapshot!r} msgs={len(self.messages)}+{len(self.persisted_messages)} "
                f"committed={len(self.committed_entries)} reads={len(self.read_states)} "
                f"soft={self.soft_state})")


class Config:
    """Settings of one member's core. Ticks are the unit of time; the host decides their length."""

    def __init__(self, id: int, voters: tuple[int, ...] | list[int] = (),
                 learners: tuple[int, ...] | list[int] = (), *, election_tick: int = 10,
                 heartbeat_tick: int = 1, pre_vote: bool = True, check_quorum: bool = True,
                 max_entries_per_msg: int = 1024, max_bytes_per_msg: int = 1 << 20,
                 max_inflight_msgs: int = 256, max_committed_per_ready: int = 65536,
                 lease_read: bool = False, seed: int = 0, applied: int = 0) -> None:
        if id <= 0:
            raise ValueError("member id must be a positive 64-bit integer")
        if heartbeat_tick <= 0 or election_tick <= heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick (both > 0)")
        self.id = id
        self.voters = tuple(voters)
        self.learners = tuple(learners)
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.max_entries_per_msg = max_entries_per_msg
        self.max_bytes_per_msg = max_bytes_per_msg
        self.max_inflight_msgs = max_inflight_msgs
        self.max_committed_per_ready = max_committed_per_ready
        self.lease_read = lease_read
        self.seed = seed
        self.applied = applied


def encode_conf_change(op: int, node_id: int, context: bytes = b"") -> bytes:
    return msgpack.packb([op, node_id, context], use_bin_type=True)


def decode_conf_change(data: bytes) -> tuple[int, int, bytes]:
    op, node_id, context = msgpack.unpackb(data, raw=False)
    return int(op), int(node_id), bytes(context)


def next_membership(op: int, node_id: int, voters: Any, learners: Any) -> tuple[set[int], set[int]]:
    """The (voters, learners) after applying one conf change; a change that does not apply (a
    promotion of a non-learner, adding a voter as a learner) leaves them as they were."""
    v, lrn = set(voters), set(learners)
    if op == CC_ADD_VOTER:
        v.add(node_id)
        lrn.discard(node_id)
    elif op == CC_ADD_LEARNER:
        if node_id not in v:
            lrn.add(node_id)
    elif op == CC_PROMOTE:
        if node_id in lrn:
            lrn.discard(node_id)
            v.add(node_id)
    elif op == CC_REMOVE:
        v.discard(node_id)
        lrn.discard(node_id)
    return v, lrn


class _PendingRead:
    """A ReadIndex request waiting for a quorum to confirm this leader. ``round`` is the first
    heartbeat round broadcast after it was queued: only acks of that round or a later one count.
    ``ctx`` and ``requester`` only say whom to answer (ctxs are not unique across members)."""

    __slots__ = ("ctx", "index", "requester", "round")

    def __init__(self, ctx: bytes, index: int, requester: int, round: int) -> None:
        self.ctx = ctx
        self.index = index
        self.requester = requester
        self.round = round


class Raft:
    """One member's Raft state machine."""

    def __init__(self, config: Config, hard_state: tuple[int, int, int] = (0, 0, 0),
                 entries: Any = (), snapshot: Snapshot | None = None) -> None:
        self.cfg = config
        self.id = config.id
        self._rng = random.Random(config.seed)
        term, vote, commit = hard_state
        if snapshot is not None:
            self.log = Log(snapshot.index, snapshot.term, list(entries))
            voters, learners = snapshot.voters, snapshot.learners
            self.snapshot: Snapshot | None = snapshot.with_data(None)
        else:
            self.log = Log(0, 0, list(entries))
            voters, learners = config.voters, config.learners
            self.snapshot = None
        # No voters is a member joining a running cluster: it never campaigns (it is not
        # promotable) and takes its configuration from the leader's snapshot or log, never from
        # a member list it was told, which may be stale by the time it catches up.
        self.tracker = ProgressTracker(voters, learners, config.max_inflight_msgs)
        # Membership as of each applied conf change, so a snapshot records the one at its index.
        self._conf_history: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = [
            (self.log.offset, self.tracker.voters, self.tracker.learners)]
        self.term = term
        self.vote = vote
        self.leader = 0
        self.role = FOLLOWER
        commit = max(commit, self.log.offset)
        self.log.committed = min(commit, self.log.last_index())
        self._conf_applied = self.log.offset
        self._apply_conf_changes()
        self.applied = max(config.applied, self.log.offset)
        if self.applied > self.log.committed:
            # The state machine is ahead of the persisted commit index (commit is saved lazily):
            # what it applied was committed, so the commit index can catch up.
            self.log.committed = min(self.applied, self.log.last_index())
            self._apply_conf_changes()
        self._msgs_now: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_reads: list[_PendingRead] = []
        self._reads_before_commit: list[tuple[bytes, int]] = []
        self._received_snapshot: Snapshot | None = None
        self._bcast_pending = False
        self._commit_bcast = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._ticks = 0
        self._ack_tick: dict[int, int] = {}
        # Heartbeat rounds (never reset, so a round number names one broadcast of this instance):
        # the last one sent, whether queued reads wait for a new one, and per voter the highest
        # round it acknowledged and the tick that round was sent at (this term only).
        self._hb_round = 0
        self._read_round_due = False
        self._acked_round: dict[int, int] = {}
        self._acked_sent_tick: dict[int, int] = {}
        self._acked_commit: dict[int, int] = {}
        # A follower's view of its leader (this term): the commit index the leader's latest
        # MsgApp or heartbeat carried, and how many such messages arrived. The host notes the
        # time whenever the count moves (the core has no clock): that is the bounded-staleness
        # read's evidence (server/readlevels.py).
        self.leader_commit = LEADER_COMMIT_UNKNOWN
        self.leader_contacts = 0
        # A MsgTimeoutNow went out this term: its target may win votes that ignore the followers'
        # lease (at any later time: the message may be delayed), so lease reads stay off.
        self._timeout_now_sent = False
        self._leader_since = 0
        self._snap_sent_tick: dict[int, int] = {}
        self._randomized_timeout = config.election_tick
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self._ready_number = 0
        self._outstanding: tuple[int, int, int] | None = None  # (number, last index, last term)
        self._prev_hard_state = (term, vote, self.log.committed)
        self._prev_soft_state = (0, FOLLOWER)
        self._become_follower(term, 0, log_it=False)
        logger.info("%x newRaft [peers: [%s], term: %d, commit: %d, applied: %d, lastindex: %d, "
                    "lastterm: %d]", self.id, ",".join(format(v, "x") for v in self.tracker.voters),
                    self.term, self.log.committed, self.applied, self.log.last_index(),
                    self.log.last_term())

    # ------------------------------------------------------------------ read-only views
    @property
    def commit(self) -> int:
        return self.log.committed

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def first_index(self) -> int:
        return self.log.first_index()

    @property
    def voters(self) -> tuple[int, ...]:
        return self.tracker.voters

    @property
    def heartbeat_round(self) -> int:
        """The last heartbeat round this member sent as leader."""
        return self._hb_round

    @property
    def learners(self) -> tuple[int, ...]:
        return self.tracker.learners

    @property
    def lease_valid(self) -> bool:
        """Whether this leader may answer reads from its own state without a round of heartbeats.

        It holds while a majority acknowledged heartbeats this leader *sent* within the last
        election timeout, less LEASE_MARGIN_TICKS: a follower restarts its election timer when a
        heartbeat arrives, which is after it was sent but may be long before its answer comes back,
        so timing the lease from the answer would outlive the followers' promise. It relies on
        CheckQuorum (followers that heard from a leader within an election timeout refuse to vote)
        and on the members' clocks running at nearly the same rate: a member whose ticks run slower
        than the leader's by more than the margin could vote for a new leader while this one still
        believes its lease holds. A leadership transfer breaks the promise outright (MsgTimeoutNow
        makes the followers vote at once), so there is no lease during one nor, once MsgTimeoutNow
        went out, for the rest of the term. ReadIndex makes none of these assumptions."""
        if self.lease_refusal() is not None:
            return False
        q = self.quorum_round()
        return q is not None and self._ticks - q[0] < self.cfg.election_tick - LEASE_MARGIN_TICKS

    @property
    def ticks(self) -> int:
        """Ticks since this core was made: the host maps them to its clock."""
        return self._ticks

    def lease_refusal(self) -> str | None:
        """Why this member cannot serve a lease read whatever the time (None: it may, if its
        last quorum-acknowledged round is recent enough; see lease_valid)."""
        if self.role != LEADER:
            return "not the leader"
        if not self.cfg.check_quorum:
            return "CheckQuorum is off, so followers do not promise to ignore other candidates"
        if self.lead_transferee:
            return f"leadership transfer to {self.lead_transferee:x} in progress"
        if self._timeout_now_sent:
            return "MsgTimeoutNow was sent this term: its target may win an election at any time"
        if not self._committed_in_term():
            return "no entry of this term is committed yet"
        return None

    def quorum_round(self) -> tuple[int, int] | None:
        """(send tick, commit index then) of the newest heartbeat round a quorum of voters (this
        leader included) acknowledged; None if not a leader or no such round this term. The
        commit is LEADER_COMMIT_UNKNOWN for a round sent before an entry of this term committed.

        A round a quorum echoed was sent while this member was the only leader a majority
        followed, so no other leader had committed anything by its send tick: the leader's
        commit index then covered every write acknowledged by then (bounded-staleness reads
        on the leader) and the followers' election timers restarted after it (lease reads)."""
        if self.role != LEADER:
            return None
        # This leader counts as acknowledging everything up to now (round _NOW).
        now = (_NOW, self._ticks,
               self.log.committed if self._committed_in_term() else LEADER_COMMIT_UNKNOWN)
        acked = sorted((now if v == self.id else
                        (self._acked_round.get(v, 0), self._acked_sent_tick.get(v, -1),
                         self._acked_commit.get(v, LEADER_COMMIT_UNKNOWN))
                        for v in self.tracker.voters), reverse=True)
        # Rounds, ticks and commits all grow together (an unknown commit only in the rounds sent
        # before the first commit of this term), so the quorum-th newest round gives the oldest
        # send tick and smallest commit of that quorum.
        rnd, tick, commit = acked[self.tracker.quorum() - 1]
        if rnd == 0:
            return None
        return tick, commit

    def _quorum_ack_age(self, unanswered: int) -> int:
        """Ticks since a majority of voters (this leader included) last acknowledged it; a voter
        that has not answered this leader counts as having answered at tick ``unanswered``."""
        acks = sorted((self._ticks if v == self.id else self._ack_tick.get(v, unanswered)
                       for v in self.tracker.voters), reverse=True)
        return self._ticks - acks[self.tracker.quorum() - 1]

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "id": self.id, "term": self.term, "vote": self.vote, "leader": self.leader,
            "role": self.role, "commit": self.log.committed, "applied": self.applied,
            "first_index": self.log.first_index(), "last_index": self.log.last_index(),
            "stable_index": self.log.stable, "voters": self.tracker.voters,
            "learners": self.tracker.learners, "lead_transferee": self.lead_transferee,
        }
        if self.role == LEADER:
            st["progress"] = {id_: {"match": p.match, "next": p.next,
                                    "state": ("probe", "replicate", "snapshot")[p.state],
                                    "inflight": p.inflight}
                              for id_, p in self.tracker.progress.items()}
        return st

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        self._ticks += 1
        if self.role == LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        # CheckQuorum, every tick: a leader that has not heard from a majority for a whole election
        # timeout steps down (so within one timeout of the cut, not up to two as with a check
        # once per timeout window).
        # Voters that have not answered yet count from the moment this leader took office.
        if (self.cfg.check_quorum
                and self._quorum_ack_age(self._leader_since) >= self.cfg.election_tick):
            logger.warning("%x stepped down to follower since quorum is not active", self.id)
            self._become_follower(self.term, 0)
            return
        if self._election_elapsed >= self.cfg.election_tick:
            self._election_elapsed = 0
            if self.cfg.check_quorum:
                self.tracker.reset_recent_active(self.id)
            if self.lead_transferee:
                logger.info("%x aborted leadership transfer to %x: it did not complete within an "
                            "election timeout", self.id, self.lead_transferee)
                self.lead_transferee = 0
        if self._heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had passed."""
        self._hup(transfer=False)

    def propose(self, data: bytes) -> int:
        return self.propose_batch([data])

    def propose_batch(self, datas: list[bytes]) -> int:
        """Append client proposals to the leader's log; returns the index of the last one.
        They go out to followers and to disk with the next ready, together with whatever else
        was proposed before it: that is the batching."""
        if self.role != LEADER:
            raise NotLeaderError(leader=self.leader)
        if self.lead_transferee:
            raise ProposalDroppedError()
        if not datas:
            return self.log.last_index()
        last = self.log.append_new(self.term, datas, ENTRY_NORMAL)
        self._bcast_pending = True
        return last

    def propose_conf_change(self, op: int, node_id: int, context: bytes = b"") -> int:
        """Propose one single-server membership change (§4.1 of the thesis: one at a time)."""
        if self.role != LEADER:
            raise NotLeaderError(leader=self.leader)
        if self.lead_transferee:
            raise ProposalDroppedError()
        if op not in (CC_ADD_VOTER, CC_REMOVE, CC_ADD_LEARNER, CC_PROMOTE) or node_id <= 0:
            raise ValueError(f"invalid membership change {op} for {node_id:x}")
        if self.pending_conf_index > self.log.committed:
            raise ConfChangeInProgressError()
        voters, learners = self.tracker.voters, self.tracker.learners
        if op == CC_PROMOTE and node_id not in learners:
            raise ValueError(f"{node_id:x} is not a learner")
        if op in (CC_ADD_VOTER, CC_ADD_LEARNER) and (node_id in voters or node_id in learners):
            raise ValueError(f"{node_id:x} is already a member")
        if op == CC_REMOVE:
            if node_id not in voters and node_id not in learners:
                raise ValueError(f"{node_id:x} is not a member")
            if node_id in voters and len(voters) == 1:
                raise ValueError("cannot remove the last voter")
        index = self.log.append_new(self.term, [encode_conf_change(op, node_id, context)],
                                    ENTRY_CONF_CHANGE)
        self.pending_conf_index = index
        self._bcast_pending = True
        return index

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; the answer comes in a later Ready's read_states."""
        if self.role == LEADER:
            self._leader_read_index(ctx, self.id)
        elif self.leader and self.role == FOLLOWER:
            self._send(Message(READ_INDEX, self.leader, self.id, self.term, context=ctx))
        else:
            self._read_states.append(ReadState(ctx, 0, False))

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to `to` once its log is up to date (thesis §3.10)."""
        if self.role != LEADER:
            raise NotLeaderError(leader=self.leader)
        if to == self.id or to not in self.tracker.voters:
            raise ValueError(f"cannot transfer leadership to {to:x}")
        if self.lead_transferee == to:
            return
        logger.info("%x [term %d] starts to transfer leadership to %x", self.id, self.term, to)
        self.lead_transferee = to
        self._election_elapsed = 0  # the transfer must finish within one election timeout
        pr = self.tracker.progress[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def compact(self, index: int, data: bytes | None = None) -> None:
        """The host holds a snapshot of its state machine at `index`: forget the log up to it."""
        if index > self.applied:
            raise ValueError(f"cannot compact to {index}: only {self.applied} is applied")
        if index <= self.log.offset:
            return
        term = self.log.term(index)
        voters, learners = self._conf_at(index)
        self.snapshot = Snapshot(index, term, voters, learners, None)
        self.log.compact(index)
        while len(self._conf_history) > 1 and self._conf_history[1][0] <= index:
            del self._conf_history[0]

    def report_unreachable(self, to: int) -> None:
        """The host could not deliver to `to`: stop streaming and probe again."""
        pr = self.tracker.progress.get(to)
        if self.role == LEADER and pr is not None and pr.state == REPLICATE:
            pr.become_probe()

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The host finished (or failed) sending a snapshot to `to`."""
        pr = self.tracker.progress.get(to)
        if self.role != LEADER or pr is None or pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer (or a heartbeat) before probing

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        """Feed one message from a peer. Stale, duplicated or reordered messages are dropped or
        answered as the rules say; nothing a peer sends makes this raise."""
        if m.to != self.id:
            return
        if m.term > self.term:
            if m.term >= _MAX_NUMBER:
                logger.warning("%x dropped %s from %x: term %d out of range", self.id,
                               msg_name(m.type), m.frm, m.term)
                return
            if m.type in (VOTE, PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                in_lease = (self.cfg.check_quorum and self.leader != 0
                            and self._election_elapsed < self.cfg.election_tick)
                if in_lease and not force:
                    # §4.2.3: a member that heard from its leader recently ignores vote
                    # requests, so a member that was cut off cannot depose a working leader.
                    logger.info("%x [logterm: %d, index: %d, vote: %x] ignored %s from %x "
                                "[logterm: %d, index: %d] at term %d: lease is not expired "
                                "(remaining ticks: %d)", self.id, self.log.last_term(),
                                self.log.last_index(), self.vote, msg_name(m.type), m.frm,
                                m.log_term, m.index, self.term,
                                self.cfg.election_tick - self._election_elapsed)
                    return
            if m.type == PRE_VOTE or (m.type == PRE_VOTE_RESP and not m.reject):
                # A pre-vote never changes terms: the term it names is only a proposal.
                pass
            else:
                logger.info("%x [term: %d] received a %s message with higher term from %x "
                            "[term: %d]", self.id, self.term, msg_name(m.type), m.frm, m.term)
                if m.type in (APP, HEARTBEAT, SNAP):
                    self._become_follower(m.term, m.frm)
                else:
                    self._become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (HEARTBEAT, APP):
                # A leader from an older term (cut off, then back): answering with our term makes
                # it step down. Without this, PreVote/CheckQuorum could leave it stuck forever.
                self._send(Message(APP_RESP, m.frm, self.id, self.term))
            elif m.type == PRE_VOTE:
                logger.info("%x [logterm: %d, index: %d, vote: %x] rejected %s from %x "
                            "[logterm: %d, index: %d] at term %d", self.id, self.log.last_term(),
                            self.log.last_index(), self.vote, msg_name(m.type), m.frm,
                            m.log_term, m.index, self.term)
                self._send(Message(PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return

        t = m.type
        if t == VOTE or t == PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role == LEADER:
            self._step_leader(m)
        elif self.role == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (self.vote == m.frm
                    or (self.vote == 0 and self.leader == 0)
                    or (m.type == PRE_VOTE and m.term > self.term))
        resp_type = VOTE_RESP if m.type == VOTE else PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            logger.info("%x [logterm: %d, index: %d, vote: %x] cast %s for %x [logterm: %d, "
                        "index: %d] at term %d", self.id, self.log.last_term(),
                        self.log.last_index(), self.vote, msg_name(m.type), m.frm, m.log_term,
                        m.index, self.term)
            # The answer carries the request's term: for a pre-vote that is the future term the
            # candidate will use, which it checks before counting the vote.
            self._send(Message(resp_type, m.frm, self.id, m.term))
            if m.type == VOTE:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            logger.info("%x [logterm: %d, index: %d, vote: %x] rejected %s from %x [logterm: %d, "
                        "index: %d] at term %d", self.id, self.log.last_term(),
                        self.log.last_index(), self.vote, msg_name(m.type), m.frm, m.log_term,
                        m.index, self.term)
            self._send(Message(resp_type, m.frm, self.id, self.term, reject=True))

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.tracker.progress.get(m.frm)
        if t == READ_INDEX:
            if pr is None:
                return
            self._leader_read_index(m.context, m.frm)
            return
        if pr is None:
            return
        if t == APP_RESP:
            pr.recent_active = True
            self._ack_tick[m.frm] = self._ticks
            if m.reject:
                hint = m.reject_hint
                if m.log_term > 0:
                    # Skip every entry of a term the follower does not have in one step.
                    hint = self.log.find_conflict_by_term(hint, m.log_term)
                if pr.maybe_decr_to(m.index, hint):
                    if pr.state == REPLICATE:
                        pr.become_probe()
                    self._send_append(m.frm)
                return
            was_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == PROBE:
                    pr.become_replicate()
                elif pr.state == SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state == REPLICATE:
                    pr.infl_free_le(m.index)
                if self._maybe_commit():
                    self._commit_bcast = True
                    if self.role != LEADER or m.frm not in self.tracker.progress:
                        # The commit applied a conf change removing the sender (or this leader).
                        return
                # Keep the pipeline to this follower full.
                while self._send_append(m.frm, send_empty=False):
                    pass
                if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                    logger.info("%x sent MsgTimeoutNow to %x after it caught up", self.id, m.frm)
                    self._send_timeout_now(m.frm)
            elif was_paused and not pr.is_paused():
                self._send_append(m.frm)
        elif t == HEARTBEAT_RESP:
            pr.recent_active = True
            self._ack_tick[m.frm] = self._ticks
            pr.probe_sent = False
            if (pr.state == SNAPSHOT and self._ticks - self._snap_sent_tick.get(m.frm, 0)
                    >= self.cfg.election_tick):
                # The follower is alive but the snapshot never got an answer: it was lost on the
                # way. Probe again, which leads to a fresh snapshot if one is still needed.
                pr.pending_snapshot = 0
                pr.become_probe()
            if pr.state == REPLICATE and pr.is_paused():
                pr.infl_free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._heartbeat_ack(m.context, m.frm)
        # Vote responses, snapshots and appends of our own term from others cannot happen for a
        # legitimate leader; they are dropped.

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == APP:
            self._election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_append(m)
        elif t == HEARTBEAT:
            self._election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_heartbeat(m)
        elif t == SNAP:
            self._election_elapsed = 0
            self._set_leader(m.frm)
            self._handle_snapshot(m)
        elif t == TIMEOUT_NOW:
            if self._promotable():
                logger.info("%x [term %d] received MsgTimeoutNow from %x and starts an election "
                            "to get leadership", self.id, self.term, m.frm)
                self._hup(transfer=True)
        elif t == READ_INDEX_RESP:
            self._read_states.append(ReadState(m.context, m.index, not m.reject))
        elif t == READ_INDEX:
            # Forwarded to us by mistake (we are not the leader): refuse so it does not hang.
            self._send(Message(READ_INDEX_RESP, m.frm, self.id, self.term, context=m.context,
                               reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == APP:
            self._become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == SNAP:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif (t == PRE_VOTE_RESP and self.role == PRE_CANDIDATE) or (
                t == VOTE_RESP and self.role == CANDIDATE):
            self.tracker.record_vote(m.frm, not m.reject)
            logger.info("%x received %s%s from %x at term %d", self.id, msg_name(t),
                        " rejection" if m.reject else "", m.frm, self.term)
            granted, rejected, result = self.tracker.tally_votes()
            logger.info("%x has received %d %s votes and %d vote rejections", self.id, granted,
                        msg_name(t), rejected)
            if result == 1:
                if self.role == PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result == -1:
                self._become_follower(self.term, 0)
        elif t == READ_INDEX:
            self._send(Message(READ_INDEX_RESP, m.frm, self.id, self.term, context=m.context,
                               reject=True))

    # ------------------------------------------------------------------ follower handlers
    def _handle_append(self, m: Message) -> None:
        self._append(m)
        # MsgApp's commit is the leader's own commit index when it sent it (checked against our
        # log once its entries are in).
        self._leader_contact(m.commit)

    def _append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to our commit index matches the leader's log already (§5.3).
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        ents = m.entries if type(m.entries) is list else list(m.entries)
        try:
            last = log.maybe_append(m.index, m.log_term, ents)
        except ValueError as e:  # entries that do not follow m.index: nothing was appended
            logger.warning("%x dropped a malformed MsgApp from %x: %s", self.id, m.frm, e)
            return
        if last:
            self._commit_to(min(m.commit, last))
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=last))
            return
        # Tell the leader where it may jump back to: the last index whose term is at most the
        # term of the entry it tried, and that term.
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        logger.debug("%x [logterm: %d, index: %d] rejected MsgApp [logterm: %d, index: %d] from "
                     "%x", self.id, log.term(m.index), m.index, m.log_term, m.index, m.frm)
        self._send(Message(APP_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
                           reject_hint=hint, log_term=log.term(hint)))

    def _handle_heartbeat(self, m: Message) -> None:
        if len(m.context) == _HB_CTX.size:
            self._leader_contact(_HB_CTX.unpack(m.context)[2])
        # The leader sends min(our match, its commit), so this never passes our log's end.
        self._commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(HEARTBEAT_RESP, m.frm, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        s = m.snapshot
        if s is None or not isinstance(s, Snapshot):
            return
        if s.index >= _MAX_NUMBER or s.term >= _MAX_NUMBER or not s.voters:
            logger.warning("%x dropped a malformed snapshot [index: %d, term: %d, voters: %d] "
                           "from %x", self.id, s.index, s.term, len(s.voters), m.frm)
            return
        log = self.log
        if s.index <= log.committed:
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        if log.match_term(s.index, s.term):
            # We already have the snapshot's last entry: just commit up to it.
            logger.info("%x [commit: %d] fast-forwarded commit to snapshot [index: %d, term: %d]",
                        self.id, log.committed, s.index, s.term)
            self._commit_to(s.index)
            self._send(Message(APP_RESP, m.frm, self.id, self.term, index=s.index))
            return
        if s.data is None:
            return  # the host must fill in the data; without it there is nothing to restore
        logger.info("%x [commit: %d] restored snapshot [index: %d, term: %d]", self.id,
                    log.committed, s.index, s.term)
        log.restore(s.index, s.term)
        self.tracker.set_config(tuple(s.voters), tuple(s.learners), s.index + 1)
        self._conf_history = [(s.index, self.tracker.voters, self.tracker.learners)]
        self._conf_applied = s.index
        self.snapshot = s.with_data(None)
        self._received_snapshot = s
        self._send(Message(APP_RESP, m.frm, self.id, self.term, index=s.index))

    def _leader_contact(self, commit: int) -> None:
        """A message of this term's leader carried its commit index. It is evidence of what was
        committed cluster-wide only once that leader committed an entry of its own term (§6.4;
        before, its commit index may lag earlier leaders'): so only if the entry there is of this
        term. (index, term) names one entry (Log Matching), so our copy of it tells."""
        log = self.log
        if 0 < commit <= log.last_index() and commit > log.offset and log.term(commit) == self.term:
            self.leader_commit = commit
        else:
            self.leader_commit = LEADER_COMMIT_UNKNOWN
        self.leader_contacts += 1

    # ------------------------------------------------------------------ role changes
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = 0
        self._set_leader(0)
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # Randomized in [election_tick, 2*election_tick) so split votes resolve (§5.2).
        self._randomized_timeout = self.cfg.election_tick + self._rng.randrange(
            self.cfg.election_tick)
        self.tracker.reset_votes()
        self.lead_transferee = 0
        self._timeout_now_sent = False
        self._pending_reads_fail()
        self._read_round_due = False
        self._acked_round.clear()
        self._acked_sent_tick.clear()
        self._acked_commit.clear()
        self.leader_commit = LEADER_COMMIT_UNKNOWN
        last = self.log.last_index()
        for p in self.tracker.progress.values():
            p.match = 0
            p.reset_state(PROBE)
            p.next = last + 1
            p.recent_active = False
        self._ack_tick.clear()

    def _become_follower(self, term: int, leader: int, log_it: bool = True) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self._set_leader(leader)
        if log_it:
            logger.info("%x became follower at term %d", self.id, self.term)

    def _become_pre_candidate(self) -> None:
        # Not _reset: a pre-candidate must not change its term or vote (thesis §9.6).
        self.tracker.reset_votes()
        self._set_leader(0)
        self.role = PRE_CANDIDATE
        logger.info("%x became pre-candidate at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE
        logger.info("%x became candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = LEADER
        self._set_leader(self.id)
        self._leader_since = self._ticks
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.become_replicate()
            me.match = self.log.stable
            me.next = self.log.last_index() + 1
            me.recent_active = True
        # Any conf change in the uncommitted tail must commit before we propose another (§4.1).
        self.pending_conf_index = self.log.last_index()
        # §8: an empty entry of the new term, so earlier entries commit as soon as it does.
        self.log.append_new(self.term, [b""], ENTRY_NORMAL)
        self._bcast_pending = True
        logger.info("%x became leader at term %d", self.id, self.term)

    def _set_leader(self, leader: int) -> None:
        old = self.leader
        if old == leader:
            return
        self.leader = leader
        if old and not leader:
            logger.info("raft.node: %x lost leader %x at term %d", self.id, old, self.term)
        elif not old and leader:
            logger.info("raft.node: %x elected leader %x at term %d", self.id, leader, self.term)
        else:
            logger.info("raft.node: %x changed leader from %x to %x at term %d", self.id, old,
                        leader, self.term)

    def _promotable(self) -> bool:
        return self.id in self.tracker.voters

    def _hup(self, transfer: bool) -> None:
        if self.role == LEADER:
            return
        if not self._promotable():
            return
        logger.info("%x is starting a new election at term %d", self.id, self.term)
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
            vote_type = PRE_VOTE
        else:
            self._become_candidate()
            term = self.term
            vote_type = VOTE
        self.tracker.record_vote(self.id, True)
        logger.info("%x received %sResp from %x at term %d", self.id, msg_name(vote_type),
                    self.id, self.term)
        _, _, result = self.tracker.tally_votes()
        if result == 1:
            # A single voter wins at once.
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CONTEXT if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.tracker.voters:
            if v == self.id:
                continue
            logger.info("%x [logterm: %d, index: %d] sent %s request to %x at term %d", self.id,
                        last_term, last_index, msg_name(vote_type), v, self.term)
            self._send(Message(vote_type, v, self.id, term, log_term=last_term, index=last_index,
                               context=ctx))

    # ------------------------------------------------------------------ leader machinery
    def _send(self, m: Message) -> None:
        # A leader's replication messages need not wait for its own disk, but only once its term
        # is durable: a leader elected in the step its term changed (a single voter, say) must
        # not speak for a term it could forget in a crash and then vote in again.
        if (self.role == LEADER and m.type in _LEADER_SEND_NOW
                and self._prev_hard_state[0] == self.term):
            self._msgs_now.append(m)
        else:
            self._msgs_after.append(m)

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        """Send `to` the next entries it needs (or a snapshot). Returns whether it sent anything."""
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        if pr.next <= log.offset:
            return self._send_snapshot(to, pr)
        last = log.last_index()
        if pr.next > last and not send_empty:
            return False
        prev = pr.next - 1
        ents = log.slice(pr.next, last + 1, self.cfg.max_entries_per_msg,
                         self.cfg.max_bytes_per_msg) if pr.next <= last else []
        self._send(Message(APP, to, self.id, self.term, log_term=log.term(prev), index=prev,
                           entries=ents, commit=log.committed))
        if ents:
            pr.sent_entries(ents[-1][0], len(ents))
        else:
            pr.sent_entries(prev, 0)
        return True

    def _send_snapshot(self, to: int, pr: Any) -> bool:
        snap = self.snapshot
        if snap is None:
            return False
        logger.info("%x [firstindex: %d, commit: %d] sent snapshot[index: %d, term: %d] to %x",
                    self.id, self.log.first_index(), self.log.committed, snap.index, snap.term, to)
        self._send(Message(SNAP, to, self.id, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)
        self._snap_sent_tick[to] = self._ticks
        return True

    def _send_timeout_now(self, to: int) -> None:
        self._timeout_now_sent = True
        self._send(Message(TIMEOUT_NOW, to, self.id, self.term))

    def _bcast_append(self) -> None:
        for id_ in self.tracker.progress:
            if id_ != self.id:
                while self._send_append(id_, send_empty=False):
                    pass

    def _bcast_heartbeat(self) -> None:
        """One heartbeat round: a new round number, echoed back by the followers, confirms the
        reads queued before it (ReadIndex) and times the lease from this tick."""
        self._hb_round += 1
        self._read_round_due = False
        committed = self.log.committed
        ctx = _HB_CTX.pack(self._hb_round, self._ticks,
                           committed if self._committed_in_term() else LEADER_COMMIT_UNKNOWN)
        for id_, pr in self.tracker.progress.items():
            if id_ != self.id:
                self._send(Message(HEARTBEAT, id_, self.id, self.term,
                                   commit=min(pr.match, committed), context=ctx))

    def _maybe_commit(self) -> bool:
        c = self.tracker.committed()
        # §5.4.2 (Figure 8): only an entry of the current term commits by counting replicas.
        if c > self.log.committed and self.log.term(c) == self.term:
            self._commit_to(c)
            return True
        return False

    def _commit_to(self, index: int) -> None:
        if index > self.log.committed:
            self.log.committed = index
            self._apply_conf_changes()
            if self.role == LEADER:
                self._release_reads_before_commit()

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    # ------------------------------------------------------------------ membership
    def _conf_at(self, index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        voters, learners = self._conf_history[0][1], self._conf_history[0][2]
        for idx, v, lrn in self._conf_history:
            if idx <= index:
                voters, learners = v, lrn
        return voters, learners

    def _apply_conf_changes(self) -> None:
        """Conf changes take effect as the commit index passes them (one pending at a time)."""
        idxs = self.log.conf_indexes
        changed = False
        while idxs and idxs[0] <= self.log.committed:
            index = idxs.pop(0)
            if index <= self._conf_applied:
                continue
            self._conf_applied = index
            entry = self.log.entry(index)
            try:
                if entry is None:  # compacted away: as malformed, skipped (never wedge)
                    raise ValueError(f"no entry at {index}")
                op, node_id, _ = decode_conf_change(entry[ENTRY_DATA])
            except Exception:  # a malformed entry from a buggy proposer: skip, do not wedge
                logger.error("%x ignored malformed conf change at index %d", self.id, index)
                continue
            voters, learners = next_membership(op, node_id, self.tracker.voters,
                                               self.tracker.learners)
            if not voters:
                logger.error("%x ignored conf change at index %d: it removes every voter",
                             self.id, index)
                continue
            self.tracker.set_config(tuple(voters), tuple(learners), self.log.last_index() + 1)
            self._conf_history.append((index, self.tracker.voters, self.tracker.learners))
            logger.info("%x applied conf change at index %d: voters=[%s] learners=[%s]", self.id,
                        index, ",".join(format(v, "x") for v in self.tracker.voters),
                        ",".join(format(v, "x") for v in self.tracker.learners))
            changed = True
        if not changed:
            return
        if self.role == LEADER:
            if self.id not in self.tracker.voters:
                logger.info("%x stepped down: it was removed from the voters", self.id)
                self._become_follower(self.term, 0)
                return
            me = self.tracker.progress[self.id]
            me.match = max(me.match, self.log.stable)
            if self.lead_transferee and self.lead_transferee not in self.tracker.voters:
                self.lead_transferee = 0
            self._bcast_pending = True
            if self._maybe_commit():
                self._commit_bcast = True

    # ------------------------------------------------------------------ reads
    def _leader_read_index(self, ctx: bytes, requester: int) -> None:
        if not self._committed_in_term():
            # §6.4: until an entry of this term commits, the leader's commit index may be behind.
            self._reads_before_commit.append((ctx, requester))
            return
        if len(self.tracker.voters) == 1 or (self.cfg.lease_read and self.lease_valid):
            self._answer_read(ctx, self.log.committed, requester, True)
            return
        # Confirmed by the next round broadcast (in this ready): acks of earlier rounds were sent
        # before this read existed and say nothing about leadership after it.
        self._pending_reads.append(_PendingRead(ctx, self.log.committed, requester,
                                                self._hb_round + 1))
        self._read_round_due = True

    def _release_reads_before_commit(self) -> None:
        if self._reads_before_commit and self._committed_in_term():
            reads, self._reads_before_commit = self._reads_before_commit, []
            for ctx, requester in reads:
                self._leader_read_index(ctx, requester)

    def _heartbeat_ack(self, ctx: bytes, frm: int) -> None:
        """A voter echoed heartbeat round ``ctx``: it was following this leader when the round
        was sent. Reads whose round a quorum has reached (or passed) are confirmed (§6.4)."""
        if len(ctx) != _HB_CTX.size or frm not in self.tracker.voters:
            return
        round, sent_tick, commit = _HB_CTX.unpack(ctx)
        if (round > self._hb_round or sent_tick > self._ticks
                or (commit > self.log.committed and commit != LEADER_COMMIT_UNKNOWN)):
            return  # not a round this leader sent
        if round > self._acked_round.get(frm, 0):
            self._acked_round[frm] = round
            self._acked_sent_tick[frm] = sent_tick
            self._acked_commit[frm] = commit
            if self._pending_reads and round >= self._pending_reads[0].round:
                self._confirm_reads()

    def _confirm_reads(self) -> None:
        """Answer the pending reads whose round a quorum of voters has acknowledged."""
        pending = self._pending_reads
        acked = sorted((self._hb_round if v == self.id else self._acked_round.get(v, 0)
                        for v in self.tracker.voters), reverse=True)
        quorum_round = acked[self.tracker.quorum() - 1]
        n = 0
        while n < len(pending) and pending[n].round <= quorum_round:
            n += 1
        if n:
            done, self._pending_reads = pending[:n], pending[n:]
            for r in done:
                self._answer_read(r.ctx, r.index, r.requester, True)

    def _answer_read(self, ctx: bytes, index: int, requester: int, ok: bool) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(ctx, index, ok))
        else:
            self._send(Message(READ_INDEX_RESP, requester, self.id, self.term, index=index,
                               context=ctx, reject=not ok))

    def _pending_reads_fail(self) -> None:
        pending = [(r.ctx, r.requester) for r in self._pending_reads] + self._reads_before_commit
        self._pending_reads = []
        self._reads_before_commit = []
        for ctx, requester in pending:
            if requester == self.id:
                self._read_states.append(ReadState(ctx, 0, False))
            # Forwarded reads: the follower's host times them out; it may have a new leader.

    # ------------------------------------------------------------------ ready / advance
    def _flush_leader(self) -> None:
        if self.role != LEADER:
            return
        if self._bcast_pending:
            self._bcast_pending = False
            self._bcast_append()
        if self._read_round_due:
            self._bcast_heartbeat()
            if len(self.tracker.voters) == 1:
                # The voters shrank to this leader alone while reads waited: it is the quorum.
                self._confirm_reads()
        if self._commit_bcast:
            self._commit_bcast = False
            sent = {m.to for m in self._msgs_now if m.type == APP}
            sent.update(m.to for m in self._msgs_after if m.type == APP)
            for id_ in self.tracker.progress:
                if id_ != self.id and id_ not in sent:
                    self._send_append(id_, send_empty=True)

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        log = self.log
        return bool(
            self._msgs_now or self._msgs_after or self._read_states
            or self._received_snapshot is not None
            or log.unstable <= log.last_index()
            or (self.role == LEADER
                and (self._bcast_pending or self._commit_bcast or self._read_round_due))
            or min(log.committed, log.stable) > self.applied
            or (self.term, self.vote, log.committed) != self._prev_hard_state
            or (self.leader, self.role) != self._prev_soft_state)

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("ready() called again before advance()")
        self._flush_leader()
        self._ready_number += 1
        rd = Ready(self._ready_number)
        log = self.log
        if self._received_snapshot is not None:
            rd.snapshot = self._received_snapshot
            self._received_snapshot = None
            self.applied = max(self.applied, rd.snapshot.index)
        rd.entries = log.take_unstable()
        hs = (self.term, self.vote, log.committed)
        if hs != self._prev_hard_state:
            rd.hard_state = hs
        ss = (self.leader, self.role)
        if ss != self._prev_soft_state:
            rd.soft_state = ss
            self._prev_soft_state = ss
        rd.messages, self._msgs_now = self._msgs_now, []
        rd.persisted_messages, self._msgs_after = self._msgs_after, []
        # Only entries already durable here are applied, so a member never applies what it
        # could lose in a crash.
        hi = min(log.committed, log.stable)
        if hi > self.applied:
            rd.committed_entries = log.slice(self.applied + 1, hi + 1,
                                             self.cfg.max_committed_per_ready, 0)
            if rd.committed_entries:
                self.applied = rd.committed_entries[-1][0]
        rd.read_states, self._read_states = self._read_states, []
        last = rd.entries[-1] if rd.entries else None
        self._outstanding = (rd.number, last[0] if last else 0, last[1] if last else 0)
        return rd

    def advance(self, rd: Ready) -> None:
        """The host persisted `rd` (entries, hard state, snapshot) and applied its committed
        entries."""
        if self._outstanding is None or self._outstanding[0] != rd.number:
            raise RuntimeError(f"advance() for ready #{rd.number}, which is not outstanding")
        _, last_index, last_term = self._outstanding
        self._outstanding = None
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if last_index:
            self.log.stable_to(last_index, last_term)
        if self.role == LEADER:
            me = self.tracker.progress.get(self.id)
            if me is not None and me.maybe_update(self.log.stable):
                if self._maybe_commit():
                    self._commit_bcast = True
