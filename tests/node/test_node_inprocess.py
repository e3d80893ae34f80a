"""One member in this process (fast, no subprocess): sync counts and local snapshots."""

from __future__ import annotations

from pathlib import Path

import msgpack
from inprocess_member import InProcessMember  # tests/ is on pytest's pythonpath

from fastraft import Client
from fastraft.server.snapshot import decode_snapshot, encode_snapshot


def _kv_applied_in(kv_data: bytes) -> tuple[int, int]:
    """(applied, number of current keys) recorded inside KV snapshot data."""
    up = msgpack.Unpacker(raw=False)
    up.feed(kv_data)
    next(up), next(up)  # magic, format version
    n = next(up)
    applied, current = -1, 0
    for _ in range(n):
        k, v = next(up), next(up)
        if k == b"m":
            applied = msgpack.unpackb(v)[0]
        elif k.startswith(b"c"):
            current += 1
    return applied, current


def test_one_sync_per_put_the_commit_only_ready_does_not_sync(tmp_path: Path) -> None:
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        st = m.node.storage
        assert st is not None
        real_sync = st.sync
        calls = [0]

        def counting_sync() -> None:
            calls[0] += 1
            real_sync()

        with Client(m.endpoint, timeout=10.0) as c:
            c.put(b"warm", b"up")
            m.call(lambda: setattr(st, "sync", counting_sync))
            for i in range(20):
                c.put(b"k%d" % i, b"v")
            # Each put: one ready with the entry (synced), then one where only the commit
            # index moved (saved, not synced), which applies and answers.
            assert calls[0] == 20
            assert c.get(b"k19").kvs[0].value == b"v"
    finally:
        m.stop()


def test_local_snapshot_is_a_view_at_its_index_and_is_retaken_after_restart(
        tmp_path: Path) -> None:
    d = tmp_path / "m"
    m = InProcessMember(d, snapshot_count=50)
    m.start()
    try:
        with Client(m.endpoint, timeout=10.0) as c:
            for i in range(120):
                c.put(b"k%03d" % i, b"v%d" % i)
        node = m.node

        def inspect() -> tuple[int, int, int, bytes, bool]:
            raft, kv, st = node.raft, node.kv, node.storage
            assert raft is not None and kv is not None and st is not None
            snap = raft.snapshot
            assert snap is not None and node.snapshots.view is not None
            index, view, members = node.snapshots.view
            # The view serialized here (on the loop thread: one user at a time).
            data = kv.snapshot_data(view)
            return snap.index, index, kv.applied, data, st.has_snapshot_file(snap.index)

        snap_index, view_index, applied, data, has_file = m.call(inspect)
        assert snap_index == view_index and 100 <= snap_index < applied
        assert not has_file  # nothing was copied to take it
        view_applied, current = _kv_applied_in(data)
        # Exactly the state at the snapshot's index, not the later one.
        assert view_applied == snap_index
        assert current < 120 and current == snap_index - (applied - 120)
    finally:
        m.stop()

    m = InProcessMember(d, snapshot_count=50, ports=m.ports)
    m.start()
    try:
        def after_restart() -> tuple[int, int, int]:
            raft, kv = m.node.raft, m.node.kv
            assert raft is not None and kv is not None and raft.snapshot is not None
            assert m.node.snapshots.view is not None
            return raft.snapshot.index, m.node.snapshots.view[0], kv.applied

        snap_index, view_index, applied_now = m.call(after_restart)
        # The old view died with the process: the member snapshotted its applied state anew.
        assert snap_index == view_index == applied_now >= applied
        with Client(m.endpoint, timeout=10.0) as c:
            got = c.get(b"k", b"l")
            assert {kv.key: kv.value for kv in got.kvs} == {
                b"k%03d" % i: b"v%d" % i for i in range(120)}
            c.put(b"after", b"restart")
            assert c.get(b"after").kvs[0].value == b"restart"
        # And a follower asking for it would get these bytes (built off the loop).
        loop_data = m.call(lambda: m.node.kv.snapshot_data(m.node.snapshots.view[1]))
        idx, members, kv_data = decode_snapshot(
            m.call(lambda: encode_snapshot(view_index, m.node.snapshots.view[2], loop_data)))
        assert idx == view_index and _kv_applied_in(kv_data)[0] == view_index
        assert m.node.id in [mb.id for mb in members]
    finally:
        m.stop()
