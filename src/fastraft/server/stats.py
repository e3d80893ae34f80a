"""What one member counts, as plain numbers (exposed by server/metrics.py at scrape time).

Nothing here is called per put: the node touches these once per proposal batch, apply batch,
fsync, read round or leader change, so counting costs the put path nothing measurable (see
bench/RESULTS.md). A histogram is a list of counts (:class:`Buckets`), not a prometheus-client
object: no lock, no label lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["Buckets", "NodeStats"]


def exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Upper bounds start, start*factor, ... (as Prometheus' ExponentialBuckets)."""
    return tuple(start * factor ** i for i in range(count))


# etcd's buckets: disk latencies 1 ms .. 8 s, peer round trips 0.1 ms .. 3.3 s.
DISK_BUCKETS = exponential(0.001, 2, 14)
RTT_BUCKETS = exponential(0.0001, 2, 16)
# Ours: apply and read-index latencies from 50 µs; batch sizes 1 .. 4096 (ProposalBatch's bound).
LATENCY_BUCKETS = exponential(0.00005, 2, 18)
BATCH_BUCKETS = exponential(1, 2, 13)
# Heartbeat rounds whose send time is kept: an echo of an older one is not timed.
RTT_ROUNDS_KEPT = 64


class Buckets:
    """A histogram kept as plain counts: ``observe`` is a bisect and two additions, no lock.
    Each is observed from one thread at a time (the fsync one from the loop or the sync
    thread, never both at once: one ready is outstanding); a scrape reading mid-update sees
    the old or the new count, fine for monitoring."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class NodeStats:
    """Counters the node keeps as plain numbers (read by server/metrics.py at scrape time)."""

    def __init__(self) -> None:
        self.leader = 0  # the leader as last seen (0: none)
        self.leader_changes = 0
        self.proposals_failed = 0
        self.health_ok = 0
        self.health_failed = 0
        self.proposal_batch = Buckets(BATCH_BUCKETS)
        self.apply_seconds = Buckets(LATENCY_BUCKETS)
        self.read_index_seconds = Buckets(LATENCY_BUCKETS)
        self.wal_fsync_seconds = Buckets(DISK_BUCKETS)
        self.backend_commit_seconds = Buckets(DISK_BUCKETS)
        self.peer_rtt: dict[int, Buckets] = {}
        self.heartbeat_round = 0  # the last round seen going out
        self._round_sent: dict[int, float] = {}  # heartbeat round -> loop time sent
        self.snapshot_sends: dict[tuple[int, bool], int] = {}  # (to, ok) -> count
        self.snapshot_bytes_sent = 0
        self.snapshot_receives: dict[bool, int] = {}
        self.snapshot_bytes_received = 0

    def on_leader(self, leader: int) -> None:
        """The soft state changed: count a new leader as etcd does (a change to a leader other
        than the one we had, not a loss of the leader)."""
        if leader != 0 and leader != self.leader:
            self.leader_changes += 1
        self.leader = leader

    def on_heartbeat_round(self, round_: int, now: float) -> None:
        """A ready pass is about to send heartbeat round ``round_`` (the core numbers them).
        ``now`` here and in on_heartbeat_echo is ``time.perf_counter()``: uvloop's loop.time()
        counts whole milliseconds, too coarse for a loopback round trip."""
        self._round_sent[round_] = now
        self._round_sent.pop(round_ - RTT_ROUNDS_KEPT, None)  # bounded: recent rounds only

    def on_heartbeat_echo(self, peer: int, round_: int, now: float) -> None:
        """``peer`` echoed round ``round_``: one round trip, as the two members' loops see it
        (the wire plus each side's scheduling)."""
        sent = self._round_sent.get(round_)
        if sent is None:
            return
        b = self.peer_rtt.get(peer)
        if b is None:
            b = self.peer_rtt[peer] = Buckets(RTT_BUCKETS)
        b.observe(now - sent)

    def on_snapshot_sent(self, to: int, ok: bool, nbytes: int) -> None:
        self.snapshot_sends[(to, ok)] = self.snapshot_sends.get((to, ok), 0) + 1
        self.snapshot_bytes_sent += nbytes

    def on_snapshot_received(self, ok: bool, nbytes: int) -> None:
        self.snapshot_receives[ok] = self.snapshot_receives.get(ok, 0) + 1
        self.snapshot_bytes_received += nbytes


