"""The HTTP door of real member processes (--listen-metrics-urls): /health, /readyz, /livez,
/metrics, and what a malformed request does to it (nothing)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

from prometheus_client.parser import text_string_to_metric_families

from fastraft import Client
from fastraft.tools.localcluster import LocalCluster, MemberProc, free_ports
from polling import wait_for


def _get(m: MemberProc, path: str, timeout: float = 5.0) -> tuple[int, str]:
    assert m.metrics_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", m.metrics_port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _metrics(m: MemberProc) -> dict[str, float]:
    """Every unlabelled sample, and labelled ones as name{k=v,...}."""
    status, text = _get(m, "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                            + "}" if s.labels else "")
            out[key] = s.value
    return out


def _health(m: MemberProc) -> tuple[int, dict[str, str]]:
    status, body = _get(m, "/health")
    return status, json.loads(body)


def test_probes_and_metrics_follow_puts_a_leader_kill_and_quorum_loss(make_cluster) -> None:
    lc: LocalCluster = make_cluster(3, metrics=True)
    leader = lc.wait_leader()
    for m in lc.members:
        assert _get(m, "/livez") == (200, "ok\n")
        wait_for(lambda m=m: _health(m)[0] == 200, 5, f"{m.name} /health 200")
        assert _health(m) == (200, {"health": "true", "reason": ""})
        wait_for(lambda m=m: _get(m, "/readyz")[0] == 200, 5, f"{m.name} /readyz 200")
    before = {m.name: _metrics(m) for m in lc.members}
    assert [before[m.name]["etcd_server_has_leader"] for m in lc.members] == [1.0] * 3
    assert sum(before[m.name]["etcd_server_is_leader"] for m in lc.members) == 1.0
    assert before[leader]["etcd_server_is_leader"] == 1.0

    with Client(lc.endpoints, timeout=10) as c:
        for i in range(20):
            c.put(b"k%d" % i, b"v")
    lm = lc.member(leader)
    after = _metrics(lm)
    b = before[leader]
    assert after["etcd_server_proposals_committed_total"] >= \
        b["etcd_server_proposals_committed_total"] + 20
    assert after["etcd_server_proposals_applied_total"] >= \
        b["etcd_server_proposals_applied_total"] + 20
    assert after["fastraft_proposal_batch_size_count"] >= \
        b["fastraft_proposal_batch_size_count"] + 1
    assert after["fastraft_proposal_batch_size_sum"] >= b["fastraft_proposal_batch_size_sum"] + 20
    assert after["etcd_disk_wal_fsync_duration_seconds_count"] > \
        b["etcd_disk_wal_fsync_duration_seconds_count"]
    assert after["fastraft_apply_duration_seconds_count"] > \
        b["fastraft_apply_duration_seconds_count"]
    assert after["etcd_mvcc_db_total_size_in_bytes"] > 0
    assert after["etcd_debugging_mvcc_current_revision"] >= 21
    # Heartbeats echoed by both followers are timed as the peer round trip, per follower.
    ids = {format(st["member_id"], "x") for m in lc.members if m.name != leader
           for st in [lc.status(m.name)] if st is not None}
    assert len(ids) == 2
    for fid in ids:
        wait_for(lambda fid=fid: _metrics(lm).get(
            f"etcd_network_peer_round_trip_time_seconds_count{{To={fid}}}", 0) > 0, 5,
            f"round trips to {fid} timed")
    # /health itself did a ReadIndex on each member: counted, and timed.
    assert after["fastraft_health_checks_total{result=ok}"] >= 1
    assert after["fastraft_read_index_duration_seconds_count"] >= 1

    # Kill the leader: the others see a new one (one more leader change) and stay healthy.
    lc.kill(leader)
    new = lc.wait_leader(timeout=10)
    rest = [m for m in lc.members if m.alive]
    for m in rest:
        wait_for(lambda m=m: _metrics(m)["etcd_server_leader_changes_seen_total"] ==
                 before[m.name]["etcd_server_leader_changes_seen_total"] + 1, 5,
                 f"{m.name} to count the new leader")
        assert _metrics(m)["etcd_server_has_leader"] == 1.0
    assert _metrics(lc.member(new))["etcd_server_is_leader"] == 1.0
    for m in rest:
        wait_for(lambda m=m: _health(m)[0] == 200, 5, f"{m.name} healthy under the new leader")

    # One member of three left: no quorum. /health answers 503 quickly (no hang), and so does
    # /readyz; has_leader drops to 0.
    lc.kill(rest[0].name)
    last = rest[1]
    wait_for(lambda: _health(last)[0] == 503, 5, "/health 503 without a quorum")
    t0 = time.monotonic()
    status, body = _health(last)
    took = time.monotonic() - t0
    assert status == 503 and body["health"] == "false" and body["reason"]
    assert took < 3.0, f"/health took {took:.2f}s without a quorum"  # generous: ~0.5 s here
    assert _get(last, "/readyz")[0] == 503
    wait_for(lambda: _metrics(last)["etcd_server_has_leader"] == 0.0, 5, "has_leader 0")
    assert _metrics(last)["fastraft_health_checks_total{result=failed}"] >= 1
    assert _get(last, "/livez") == (200, "ok\n")  # the loop still answers


def test_a_learner_is_not_ready_and_malformed_http_changes_nothing(make_cluster) -> None:
    lc: LocalCluster = make_cluster(3, metrics=True)
    cport, pport, mport = free_ports(3)
    n4 = MemberProc("n4", cport, pport, os.path.join(lc.base_dir, "n4.fastraft"),
                    os.path.join(lc.base_dir, "n4.log"), metrics_port=mport,
                    extra=["--initial-cluster-state", "existing"])
    with Client(lc.endpoints, timeout=10) as c:
        c.put(b"a", b"1")
        c.member_add("n4", [n4.peer_url], learner=True)
        lc.members.append(n4)  # lc.close() stops it by PID
        lc.start("n4")
        lc.wait_ready("n4")
        wait_for(lambda: (lc.status("n4") or {}).get("raft_applied_index", 0) >=
                 (lc.status(lc.wait_leader()) or {}).get("raft_applied_index", 1), 15,
                 "n4 to catch up")
        status, body = _get(n4, "/readyz")
        assert status == 503 and "learner" in body, body
        assert _metrics(n4)["etcd_server_is_learner"] == 1.0
        # A learner is healthy (it has a leader and can serve linearizable reads); voters ready.
        wait_for(lambda: _health(n4)[0] == 200, 5, "the learner's /health 200")
        assert _get(lc.member("n1"), "/readyz") == (200, "ok\n")

        m = lc.member("n1")
        assert m.metrics_port is not None
        bad = [b"\x00\xff garbage\r\n\r\n", b"GET /health\r\n\r\n", b"GET /health HTTP/9\r\n\r\n",
               b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
               b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
               b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"]
        for req in bad:
            with socket.create_connection(("127.0.0.1", m.metrics_port), timeout=5) as s:
                s.sendall(req)
                reply = s.recv(4096)
                assert reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), (req[:40], reply)
                assert s.recv(4096) == b""  # and closed: the stream cannot be split any more
        assert _get(m, "/nope")[0] == 404
        # The member kept serving: probes, metrics and writes.
        assert _health(m)[0] == 200
        assert _metrics(m)["etcd_server_has_leader"] == 1.0
        c.put(b"b", b"2")
        assert c.get(b"b").kvs[0].value == b"2"
