"""Members started exactly as the image starts them (``fastraft statefulset run`` in pods
fastraft-0..N), scaled as a StatefulSet is: the seed's 3 -> 1 -> 2, and growing past the initial
size with a learner that is promoted, then shrinking, under client load."""

from __future__ import annotations

import threading

import pytest

from acked_writes import write_acked
from fastraft import Client
from fastraft.errors import FastraftError
from polling import wait_for
from statefulset_pods import Pods

pytestmark = pytest.mark.slow


def test_scale_3_to_1_to_2_loses_the_leader_then_regains_it_with_the_data(pods: Pods) -> None:
    for i in range(3):
        pods.start(i)
    pods.wait_leader([0, 1, 2])
    with Client(pods.endpoints(range(3)), timeout=5.0) as c:
        c.put(b"aaa", b"bbb")
        assert c.get(b"aaa").kvs[0].value == b"bbb"

    # replicas: 1 -> the controller stops fastraft-2 and fastraft-1 (highest ordinals first)
    for i in (2, 1):
        assert pods.stop(i) == 0, pods.log(i)[-2000:]
    # One member of three: it cannot win an election, so no leader and no linearizable read.
    wait_for(lambda: (s := pods.status(0)) is not None and s["leader"] == 0, 10.0,
             "fastraft-0 to lose its leader")
    st = pods.status(0)
    assert st is not None and st["errors"] == ["no leader"]
    with Client([pods.endpoint(0)], timeout=1.5) as c, pytest.raises(FastraftError):
        c.get(b"aaa")

    # replicas: 2 -> fastraft-1 comes back on its own volume: 2 of 3 elect a leader.
    pods.start(1)
    pods.wait_leader([0, 1])
    with Client(pods.endpoints([0, 1]), timeout=5.0) as c:
        assert c.get(b"aaa").kvs[0].value == b"bbb"
        assert len(c.member_list()) == 3  # still three members: scaling down removed none
    # fastraft-1 resumed as itself (its data dir), not as a new member
    assert "joining" not in pods.log(1)


def test_grow_past_initial_size_with_a_promoted_learner_then_shrink_under_load(
        pods: Pods) -> None:
    for i in range(3):
        pods.start(i)
    pods.wait_leader([0, 1, 2])
    acked: list[int] = []
    stop = threading.Event()
    writer = threading.Thread(target=write_acked, args=(pods.endpoints(range(3)), 0, 20_000,
                                                        acked, stop))
    writer.start()
    try:
        wait_for(lambda: len(acked) >= 50, 20.0, "the first acknowledged writes")
        # replicas: 4 -> fastraft-3 adds itself as a learner, catches up, is promoted
        pods.start(3)
        with Client(pods.endpoints(range(3)), timeout=5.0) as c:
            def voter() -> bool:
                ms = {m.name: m for m in c.member_list()}
                return "fastraft-3" in ms and not ms["fastraft-3"].is_learner
            wait_for(voter, 30.0, "fastraft-3 to be added and promoted")
        assert "added as learner" in pods.log(3)
        assert "promoted to voter" in pods.log(3)
        n_grown = len(acked)
        wait_for(lambda: len(acked) >= n_grown + 50, 20.0, "writes with four voters")

        # shrink back to 3: remove the member first, then the controller stops the pod
        done = pods.ctl(0, "statefulset", "shrink", "--to", "3")
        assert done.returncode == 0, done.stderr
        assert "removed: fastraft-3" in done.stdout
        pods.stop(3)
        n_shrunk = len(acked)
        wait_for(lambda: len(acked) >= n_shrunk + 50, 20.0, "writes after the shrink")
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive()
    with Client(pods.endpoints(range(3)), timeout=5.0) as c:
        assert sorted(m.name for m in c.member_list()) == ["fastraft-0", "fastraft-1",
                                                           "fastraft-2"]
        got = {kv.key: kv.value for kv in c.get(b"k", prefix=True).kvs}
    lost = [i for i in acked if got.get(b"k%06d" % i) != b"v%d" % i]
    assert not lost, f"{len(lost)} acknowledged writes lost, first {lost[:5]}"
    assert len(acked) >= 150
