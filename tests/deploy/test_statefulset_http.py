"""The HTTP port of members started as the image starts them (``fastraft statefulset run``):
/health, /readyz, /livez and /metrics answer on 2381 and move with a put, a leader killed and a
quorum lost; the image's HEALTHCHECK command (``fastraft statefulset probe``) follows /health."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from fastraft import Client
from polling import wait_for
from statefulset_pods import Pods

pytestmark = pytest.mark.slow


def get(pods: Pods, i: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{pods.addr(i)}:2381{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(pods: Pods, i: int, name: str) -> float:
    code, text = get(pods, i, "/metrics")
    assert code == 200
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics of fastraft-{i}"
    return float(m.group(1))


def test_health_readiness_and_metrics_follow_puts_leader_loss_and_quorum_loss(
        pods: Pods) -> None:
    for i in range(3):
        pods.start(i)
    leader = pods.wait_leader([0, 1, 2])
    for i in range(3):
        wait_for(lambda i=i: get(pods, i, "/readyz")[0] == 200, 10.0, f"fastraft-{i} ready")
        code, body = get(pods, i, "/health")
        assert code == 200 and json.loads(body)["health"] == "true"
        assert get(pods, i, "/livez") == (200, "ok\n")
        assert metric(pods, i, "etcd_server_has_leader") == 1
    assert pods.ctl(leader, "statefulset", "probe", "/health").returncode == 0

    committed = metric(pods, leader, "etcd_server_proposals_committed_total")
    with Client(pods.endpoints(range(3)), timeout=5.0) as c:
        for k in range(5):
            c.put(b"m%d" % k, b"v")
    assert metric(pods, leader, "etcd_server_proposals_committed_total") >= committed + 5

    # kill -9 the leader: the others elect another and count the change
    survivors = [i for i in range(3) if i != leader]
    changes = {i: metric(pods, i, "etcd_server_leader_changes_seen_total") for i in survivors}
    pods.kill(leader)
    pods.wait_leader(survivors)
    for i in survivors:
        wait_for(lambda i=i: metric(pods, i, "etcd_server_leader_changes_seen_total")
                 > changes[i], 10.0, f"fastraft-{i} to count the leader change")
        assert metric(pods, i, "etcd_server_has_leader") == 1

    # one member left of three: no leader, not healthy, not ready, still alive
    pods.stop(survivors[1])
    last = survivors[0]
    wait_for(lambda: metric(pods, last, "etcd_server_has_leader") == 0, 10.0,
             "the last member to lose its leader")
    code, body = get(pods, last, "/health")
    assert code == 503 and json.loads(body)["health"] == "false"
    assert get(pods, last, "/readyz")[0] == 503
    assert get(pods, last, "/livez") == (200, "ok\n")
    probe = pods.ctl(last, "statefulset", "probe", "/health")
    assert probe.returncode == 1 and "503" in probe.stdout
