"""Read levels of one member: which evidence lets it answer a ``range`` at each level.

* ``linearizable`` (default): ReadIndex, a quorum round per batch (server/reads.py).
* ``lease``: the leader answers from its lease, no round trip: it holds while a quorum
  acknowledged a heartbeat round *sent* less than ``lease_duration`` ago (election timeout, less
  one heartbeat interval for the followers' tick granularity, less ``--lease-clock-drift``), and
  only when the core can promise no other leader meanwhile (``Raft.lease_refusal``). The read
  then waits, as a ReadIndex read does, until the state machine has applied the commit index.
* ``serializable``: the local applied state, whatever its age.
* ``bounded``: the local applied state if it is fresh within ``max_staleness``: the member has
  applied everything its leader had committed, as the leader told it (MsgApp's commit or the
  heartbeat context) in a message that *arrived* no longer than ``max_staleness`` ago. A leader is
  fresh as of the send time of its newest quorum-acknowledged heartbeat round (a quorum
  followed it then, so nobody else had committed anything newer).

The core has no clock: ``TickClock`` maps its tick numbers to this member's monotonic time and
``LeaderContacts`` notes when the core heard a leader's commit index. Everything here takes
``now`` as an argument, so the simulator (tests/core/raftsim.py) runs the same checks in its
own time.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any

from fastraft.errors import (
    BadRequestError,
    FastraftError,
    LeaseUnavailableError,
    TooStaleError,
)
from fastraft.raft.core import LEADER, LEADER_COMMIT_UNKNOWN, Raft

__all__ = ["LEVELS", "LeaderContacts", "ReadLevels", "TickClock", "parse_read_level"]

LEVELS = ("linearizable", "lease", "serializable", "bounded")

# (error or None, contact age in seconds or None): how a level answers the node.
LevelCallback = Callable[[FastraftError | None, float | None], None]


def parse_read_level(args: dict[str, Any]) -> tuple[str, float | None]:
    """Take the read level out of ``range`` args: (level, max staleness in seconds or None).

    ``consistency`` is one of LEVELS; ``max_staleness_ms`` (a number > 0) goes with "bounded"
    only. Old clients send ``serializable`` (a bool) instead; both together must agree."""
    serializable = args.pop("serializable", None)
    level = args.pop("consistency", None)
    bound_ms = args.pop("max_staleness_ms", None)
    if serializable is not None and type(serializable) is not bool:
        raise BadRequestError("range: serializable must be a bool")
    if level is None:
        level = "serializable" if serializable else "linearizable"
    elif level not in LEVELS:
        raise BadRequestError(f"range: consistency must be one of {', '.join(LEVELS)}, "
                              f"got {level!r}")
    elif serializable and level != "serializable":
        raise BadRequestError(f"range: serializable=true contradicts consistency={level!r}")
    if level != "bounded":
        if bound_ms is not None:
            raise BadRequestError(f"range: max_staleness_ms applies to consistency=bounded only, "
                                  f"not {level!r}")
        return level, None
    if bound_ms is None:
        raise BadRequestError("range: consistency=bounded needs max_staleness_ms (> 0)")
    if (type(bound_ms) not in (int, float) or not math.isfinite(bound_ms) or bound_ms <= 0
            or bound_ms > 86_400_000):
        raise BadRequestError(f"range: max_staleness_ms must be a number of milliseconds in "
                              f"(0, 86400000], got {bound_ms!r}")
    return level, bound_ms / 1000.0


class TickClock:
    """The host time at which the core's tick counter reached each recent value."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._times: dict[int, float] = {}

    def record(self, tick: int, now: float) -> None:
        self._times[tick] = now
        old = tick - self.keep
        if old in self._times:
            del self._times[old]

    def time_of(self, tick: int) -> float | None:
        """When the counter reached ``tick``; None if too old to remember (treat as too old).
        Anything the core did "at tick t" happened at or after this time."""
        return self._times.get(tick)

    def reset(self) -> None:
        """A new core (a restart within the process): its ticks count from 0 again."""
        self._times.clear()


class LeaderContacts:
    """(arrival time, leader's commit index carried) of messages from a leader, pruned to what
    can still decide a read: with the commit indexes kept strictly increasing and the times too,
    the freshest evidence for ``applied`` is the last entry whose commit is <= applied."""

    # At most this many entries (a follower far behind hears many commit indexes before it
    # applies them): past it, every other older entry goes, which only makes the evidence for
    # some applied indexes older (more conservative), never fresher.
    MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self._times: list[float] = []
        self._commits: list[int] = []
        self.last: float | None = None  # the newest contact, whatever it carried

    def record(self, now: float, commit: int) -> None:
        self.last = now
        # A later fact with a commit no higher makes every entry with a commit >= it useless.
        while self._commits and self._commits[-1] >= commit:
            self._commits.pop()
            self._times.pop()
        self._commits.append(commit)
        self._times.append(now)
        if len(self._commits) > self.MAX_ENTRIES:
            half = len(self._commits) // 2
            del self._commits[1:half:2]
            del self._times[1:half:2]

    def prune(self, applied: int) -> None:
        """Forget what ``applied`` has made useless (called as it grows)."""
        self.fresh_since(applied)

    def fresh_since(self, applied: int) -> tuple[float, int] | None:
        """(arrival time, commit) of the newest contact whose commit ``applied`` covers."""
        i = bisect.bisect_right(self._commits, applied)
        if i == 0:
            return None
        if i > 1:  # older entries below it can never be the best again (applied only grows)
            del self._commits[:i - 1]
            del self._times[:i - 1]
            i = 1
        return self._times[i - 1], self._commits[i - 1]

    def next_needed(self, applied: int) -> int | None:
        """The smallest commit index heard that ``applied`` does not cover (for messages)."""
        i = bisect.bisect_right(self._commits, applied)
        return self._commits[i] if i < len(self._commits) else None

    def clear(self) -> None:
        self._times.clear()
        self._commits.clear()
        self.last = None


class ReadLevels:
    """The lease and bounded-staleness evidence of one member, and the checks on it.

    Times are seconds of one monotonic clock. ``on_tick`` is called after every ``raft.tick()``
    and ``on_stepped`` after every ``raft.step()``: both are cheap."""

    def __init__(self, *, election_timeout: float, heartbeat_interval: float,
                 clock_drift: float, election_tick: int) -> None:
        self.election_timeout = election_timeout
        # A follower's timer restarts when the heartbeat arrives (after it was sent) and fires
        # after election_tick of its ticks, the first of which may come right away: so no vote
        # for another leader before (election timeout - one interval) of its clock after the
        # send, which is (that - drift) of ours.
        self.lease_duration = election_timeout - heartbeat_interval - clock_drift
        if self.lease_duration <= 0:
            raise ValueError("lease clock drift leaves no lease")
        # A refusal that the next heartbeat round or the end of a transfer ends on a healthy
        # leader tells the client to ask again after this long (retry_ms); an expired lease
        # does not: that leader is cut off, and the read should fail fast.
        self.retry_ms = max(1, round(heartbeat_interval * 1000))
        self.clock = TickClock(keep=4 * election_tick + 16)
        self.contacts = LeaderContacts()
        self._seen_contacts = 0
        self._raft: Raft | None = None

    # ------------------------------------------------------------------ evidence
    def on_tick(self, raft: Raft, now: float, applied: int) -> None:
        self._adopt(raft)
        self.clock.record(raft.ticks, now)
        self.contacts.prune(applied)
        if raft.role == LEADER:
            # A leader's quorum round is evidence like a follower's contact: kept, so it still
            # counts (and dates the contact) after this member steps down.
            q = self._quorum_round(raft)
            if q is not None and (self.contacts.last is None or q[0] > self.contacts.last):
                self.contacts.record(q[0], q[1])

    def on_stepped(self, raft: Raft, now: Callable[[], float]) -> None:
        """After a step: note the leader's commit index if the core heard one. Called for every
        peer message, so the clock is read only when there is something to date."""
        if raft is not self._raft:
            self._adopt(raft)
        n = raft.leader_contacts
        if n != self._seen_contacts:
            self._seen_contacts = n
            self.contacts.record(now(), raft.leader_commit)

    def _adopt(self, raft: Raft) -> None:
        if raft is not self._raft:
            # A new core: tick numbers restart; contacts (facts about leaders) stay true.
            self._raft = raft
            self.clock.reset()
            self.clock.record(raft.ticks, float("-inf"))  # its time unknown: too old
            self._seen_contacts = 0

    def _quorum_round(self, raft: Raft) -> tuple[float, int] | None:
        """(time at or before the send, commit then) of the leader's newest quorum round."""
        q = raft.quorum_round()
        if q is None:
            return None
        t = self.clock.time_of(q[0])
        if t is None or t == float("-inf"):
            return None
        return t, q[1]

    # ------------------------------------------------------------------ checks
    def lease_index(self, raft: Raft, now: float) -> int:
        """The index a lease read must see applied; raises LeaseUnavailableError. The caller
        checks leadership first (a follower answers NOT_LEADER)."""
        why = raft.lease_refusal()
        if why is not None:
            # CheckQuorum off never changes; the others (a new term, a transfer) pass soon.
            retry = {"retry_ms": self.retry_ms} if raft.cfg.check_quorum else {}
            raise LeaseUnavailableError(f"lease read refused: {why}", **retry)
        q = self._quorum_round(raft)
        if q is None:
            raise LeaseUnavailableError("lease read refused: no heartbeat round acknowledged by "
                                        "a quorum of voters yet in this term",
                                        retry_ms=self.retry_ms)
        age = now - q[0]
        if age >= self.lease_duration or not raft.lease_valid:
            raise LeaseUnavailableError(
                f"lease read refused: lease expired: the newest heartbeat round a quorum "
                f"acknowledged was sent {age * 1000:.0f} ms ago, the lease lasts "
                f"{self.lease_duration * 1000:.0f} ms (election timeout - heartbeat interval - "
                f"lease clock drift)")
        return raft.commit

    def bounded_check(self, raft: Raft, applied: int, now: float, bound: float) -> float | None:
        """Raise TooStaleError unless the applied state is fresh within ``bound`` seconds;
        returns the contact age (as contact_age)."""
        best: float | None = None
        if raft.role == LEADER:
            q = self._quorum_round(raft)
            if q is not None and applied >= q[1]:
                best = q[0]
        f = self.contacts.fresh_since(applied)
        if f is not None and (best is None or f[0] > best):
            best = f[0]
        if best is not None and now - best <= bound:
            return self.contact_age(raft, now)
        need = self.contacts.next_needed(applied)
        if best is None:
            why = ("it has heard no leader's commit index that its applied state covers"
                   if self.contacts.last is not None or raft.role == LEADER else
                   "it has heard from no leader since it started")
        else:
            why = f"it is fresh only as of {(now - best) * 1000:.0f} ms ago"
        if need is None:
            lag = ""
        elif need == LEADER_COMMIT_UNKNOWN:
            lag = " (a new leader has not yet committed an entry of its term)"
        else:
            lag = f" (applied {applied}, a leader had committed {need})"
        raise TooStaleError(f"bounded read refused: {why}{lag}; the bound is "
                            f"{bound * 1000:.0f} ms",
                            staleness_ms=None if best is None else round((now - best) * 1000, 1),
                            max_staleness_ms=round(bound * 1000, 1))

    def contact_age(self, raft: Raft, now: float) -> float | None:
        """Seconds since this member last heard from a leader: 0 on a leader whose newest
        quorum round is within an election timeout; None if it never did."""
        if raft.role == LEADER:
            q = self._quorum_round(raft)
            if q is not None:
                age = now - q[0]
                return 0.0 if age < self.election_timeout else age
        last = self.contacts.last
        return None if last is None else max(0.0, now - last)


class LevelReads:
    """Serves one ``range`` at its level: the node's single entry point for read levels.

    ``linearizable(cb)`` runs a ReadIndex read, ``wait_applied(index, cb)`` calls back once the
    state machine has applied ``index``; ``not_leader()`` is the error a follower answers."""

    def __init__(self, levels: ReadLevels, *, raft: Callable[[], Raft | None],
                 applied: Callable[[], int], now: Callable[[], float],
                 linearizable: Callable[[Callable[[FastraftError | None], None]], None],
                 wait_applied: Callable[[int, Callable[[FastraftError | None], None]], None],
                 not_leader: Callable[[], FastraftError]) -> None:
        self.levels = levels
        self._raft = raft
        self._applied = applied
        self._now = now
        self._linearizable = linearizable
        self._wait_applied = wait_applied
        self._not_leader = not_leader

    def on_tick(self) -> None:
        """After every ``raft.tick()``."""
        raft = self._raft()
        if raft is not None:
            self.levels.on_tick(raft, self._now(), self._applied())

    def on_stepped(self) -> None:
        """After every ``raft.step()``."""
        raft = self._raft()
        if raft is not None:
            self.levels.on_stepped(raft, self._now)

    def read(self, level: str, bound: float | None, cb: LevelCallback) -> None:
        """Call ``cb(None, contact_age)`` once local state may be read at ``level``, or
        ``cb(error, None)``. Errors are reported through ``cb``, never raised."""
        raft = self._raft()
        assert raft is not None
        if level == "linearizable":
            self._linearizable(lambda err: cb(err, None))
            return
        now = self._now()
        try:
            if level == "lease":
                if raft.role != LEADER:
                    raise self._not_leader()
                index = self.levels.lease_index(raft, now)
                self._wait_applied(index, lambda err: cb(err, None))
                return
            if level == "serializable":
                cb(None, self.levels.contact_age(raft, now))
                return
            assert bound is not None
            age = self.levels.bounded_check(raft, self._applied(), now, bound)
        except FastraftError as e:
            cb(e, None)
            return
        cb(None, age)
