"""Local snapshots are views of the KV, not copies (server/snapshotter.py): crash-safety.

kill -9 of every member while snapshots are taken every 50 entries, restarts, and a member that
was down catching up by a snapshot served by a leader that itself restarted (so its view was
re-taken at start-up). Real processes, killed and stopped by PID.
"""

from __future__ import annotations

import threading

from fastraft.tools.localcluster import LocalCluster, request
from acked_writes import write_acked  # tests/ is on pytest's pythonpath
from polling import wait_for


def _crash_all_and_restart(lc: LocalCluster, names: list[str]) -> None:
    for n in names:
        lc.kill(n)
    for n in names:
        lc.start(n)
    for n in names:
        lc.wait_ready(n)
    lc.wait_leader(timeout=15, among=names)


def test_acked_writes_survive_crashes_across_view_snapshots_and_a_lagger_catches_up(
        make_cluster) -> None:
    lc = make_cluster(3, extra_args=["--snapshot-count", "50"])
    names = [m.name for m in lc.members]
    acked: list[int] = []
    stop = threading.Event()
    t = threading.Thread(target=write_acked, args=(lc.endpoints, 0, 100_000, acked, stop),
                         daemon=True)
    t.start()
    try:
        wait_for(lambda: len(acked) >= 300, 20, "300 acknowledged writes")
        # Crash mid-stream, with snapshots (metadata only, not synced by themselves) behind.
        for n in names:
            lc.kill(n)
    finally:
        stop.set()
        t.join(timeout=10)
    lagger = names[2]
    up = names[:2]
    for n in up:
        lc.start(n)
    for n in up:
        lc.wait_ready(n)
    lc.wait_leader(timeout=15, among=up)
    write_acked(lc.endpoints, 200_000, 200, acked)  # the log moves far past what the lagger has
    # Crash again: the leader that serves the lagger below restarts from a view-only snapshot.
    _crash_all_and_restart(lc, up)
    leader = lc.wait_leader(timeout=15, among=up)
    assert "took snapshot" in lc.member(leader).log_text()
    lc.start(lagger)
    lc.wait_ready(lagger)
    write_acked(lc.endpoints, 300_000, 20, acked)
    lst = lc.status(leader)
    assert lst is not None
    wait_for(lambda: (lc.status(lagger) or {}).get("raft_applied_index", 0)
             >= lst["raft_applied_index"], 20, f"{lagger} to catch up")
    # The other follower too: a write is acknowledged once a majority has it, and a follower
    # of that majority may apply it a moment later (a loaded machine made this one read early).
    for n in up:
        wait_for(lambda n=n: (lc.status(n) or {}).get("raft_applied_index", 0)
                 >= lst["raft_applied_index"], 20, f"{n} to apply the last writes")
    assert "restored state from snapshot" in lc.member(lagger).log_text()
    # Streamed from the leader's view (a worker thread reads it a chunk at a time).
    assert "streaming snapshot" in lc.member(leader).log_text()
    assert "(streamed)" in lc.member(lagger).log_text()
    for m in lc.members:  # every acknowledged write, on every member, read locally
        err, res = request(m.endpoint, "range",
                           {"key": b"k", "range_end": b"l", "serializable": True})
        assert err is None
        have = {kv["key"]: kv["value"] for kv in res["kvs"]}
        missing = [i for i in acked if have.get(b"k%06d" % i) != b"v%d" % i]
        assert not missing, f"{m.name}: {len(missing)} acknowledged writes lost: {missing[:5]}"
