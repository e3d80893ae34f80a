"""One member's Prometheus view (``/metrics``, served by net/httpserver.py).

The put path runs at tens of thousands of entries a second, so nothing here is called per put:
the node keeps plain numbers (server/stats.py) and :class:`MemberCollector` turns them, and
state the node has anyway (leader, commit and applied index), into metric families only when
Prometheus scrapes. Each member has its own
:class:`~prometheus_client.CollectorRegistry` (tests run several members in one process).

Names are etcd's where etcd has the metric, so etcd's dashboards and alerts carry over; the
``fastraft_*`` ones are ours. Like etcd, ``etcd_server_proposals_committed_total`` and
``..._applied_total`` are gauges (the commit and applied index), not counters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from fastraft import _version
from fastraft.raft.core import LEADER
from fastraft.server.stats import Buckets

if TYPE_CHECKING:
    from fastraft.server.node import Node

__all__ = ["MemberCollector", "member_registry", "render", "CONTENT_TYPE"]

# The text exposition format version 0.0.4 (what Prometheus asks for by default).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MemberCollector(Collector):
    """Builds the member's metric families at scrape time from the node and its NodeStats."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        s = node.stats
        raft, kv, st = node.raft, node.kv, node.storage
        hex_id = node.hex_id
        yield InfoMetricFamily("fastraft_server", "Which fastraft member this is.",
                               value={"name": node.cfg.name, "member_id": hex_id,
                                      "cluster_id": format(node.cfg.cluster_id, "x"),
                                      "version": _version.__version__})
        yield _gauge("etcd_server_id", "Always 1; the label holds this member's id in hex.",
                     1, ["server_id"], [hex_id])
        yield _gauge("etcd_server_version", "Always 1; the label holds the fastraft version.",
                     1, ["server_version"], [_version.__version__])
        if raft is None or kv is None:
            return  # not started yet: identity only
        leader = raft.leader
        yield _gauge("etcd_server_has_leader", "1 while this member knows a leader, else 0.",
                     1 if leader else 0)
        yield _gauge("etcd_server_is_leader", "1 while this member is the leader, else 0.",
                     1 if raft.role == LEADER else 0)
        yield _gauge("etcd_server_is_learner", "1 while this member is a learner, else 0.",
                     1 if node.id in raft.learners else 0)
        yield CounterMetricFamily("etcd_server_leader_changes_seen",
                                  "Times this member saw a new leader.", s.leader_changes)
        yield _gauge("etcd_server_proposals_committed_total",
                     "The commit index: entries known committed.", raft.commit)
        yield _gauge("etcd_server_proposals_applied_total",
                     "The applied index: entries applied to the key-value store.", kv.applied)
        # Entries this leader appended and not applied yet (etcd: proposals in flight).
        pending = max(0, raft.last_index - kv.applied) if raft.role == LEADER else 0
        yield _gauge("etcd_server_proposals_pending",
                     "Entries the leader appended and has not applied yet (0 on a follower).",
                     pending)
        yield CounterMetricFamily("etcd_server_proposals_failed",
                                  "Client proposals refused, replaced by another leader's "
                                  "entry, or timed out.", s.proposals_failed)
        yield _gauge("etcd_server_term", "The raft term of this member.", raft.term)
        health = CounterMetricFamily("fastraft_health_checks",
                                     "/health answers, by outcome.", labels=["result"])
        health.add_metric(["ok"], s.health_ok)
        health.add_metric(["failed"], s.health_failed)
        yield health
        yield _gauge("etcd_debugging_mvcc_current_revision",
                     "The key-value store's current revision.", kv.revision)
        if st is not None and not node.closed:
            yield _gauge("etcd_mvcc_db_total_size_in_bytes",
                         "Bytes on disk under the data dir (RocksDB files and snapshots).",
                         st.db_size())
        yield _histogram(
            s.wal_fsync_seconds, "etcd_disk_wal_fsync_duration_seconds",
            "Seconds per fsync of the RocksDB write-ahead log (one per ready pass that "
            "persists).")
        yield _histogram(
            s.backend_commit_seconds, "etcd_disk_backend_commit_duration_seconds",
            "Seconds per RocksDB write batch (log appends and key-value applies; unsynced, "
            "the fsync is the WAL metric).")
        rtt = HistogramMetricFamily("etcd_network_peer_round_trip_time_seconds",
                                    "Seconds from a leader's heartbeat round going out to "
                                    "each follower's echo.", labels=["To"])
        for peer, b in sorted(s.peer_rtt.items()):
            _add_buckets(rtt, b, [format(peer, "x")])
        yield rtt
        sends = CounterMetricFamily("fastraft_snapshot_sends",
                                    "Snapshot streams sent to followers, by outcome.",
                                    labels=["To", "result"])
        for (to, good), n in sorted(s.snapshot_sends.items()):
            sends.add_metric([format(to, "x"), "ok" if good else "failed"], n)
        yield sends
        yield CounterMetricFamily("fastraft_snapshot_sent_bytes",
                                  "Bytes of snapshot data streamed to followers.",
                                  s.snapshot_bytes_sent)
        recv = CounterMetricFamily("fastraft_snapshot_receives",
                                   "Snapshot streams received, by outcome.", labels=["result"])
        for good, n in sorted(s.snapshot_receives.items()):
            recv.add_metric(["ok" if good else "failed"], n)
        yield recv
        yield CounterMetricFamily("fastraft_snapshot_received_bytes",
                                  "Bytes of snapshot data received from a leader.",
                                  s.snapshot_bytes_received)
        yield _histogram(
            s.proposal_batch, "fastraft_proposal_batch_size",
            "Client proposals handed to the Raft core together (one batch per loop turn).")
        yield _histogram(
            s.apply_seconds, "fastraft_apply_duration_seconds",
            "Time to apply one batch of committed entries to the key-value store.")
        yield _histogram(
            s.read_index_seconds, "fastraft_read_index_duration_seconds",
            "Time from asking a ReadIndex to a linearizable read being servable "
            "(quorum confirmed and the read index applied).")


def _histogram(b: Buckets, name: str, doc: str) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc)
    _add_buckets(fam, b)
    return fam


def _add_buckets(fam: HistogramMetricFamily, b: Buckets, values: Sequence[str] = ()) -> None:
    """One histogram sample set from plain counts (cumulative, as Prometheus wants)."""
    cum, acc = [], 0
    for le, c in zip([*(repr(float(x)) for x in b.bounds), "+Inf"], b.counts):
        acc += c
        cum.append((le, float(acc)))
    fam.add_metric(list(values), cum, b.sum)


def _gauge(name: str, doc: str, value: float, labels: list[str] | None = None,
           values: list[str] | None = None) -> GaugeMetricFamily:
    if labels:
        g = GaugeMetricFamily(name, doc, labels=labels)
        g.add_metric(values or [], value)
        return g
    return GaugeMetricFamily(name, doc, value=value)


def member_registry(node: Node) -> CollectorRegistry:
    """A registry of its own for one member: its metrics and the process's (CPU, memory, fds)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemberCollector(node))
    ProcessCollector(registry=reg)
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)
