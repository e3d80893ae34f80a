"""Backup and restore, and move-leader, on real members: `fastractl snapshot save` from a
3-member cluster, `snapshot status`, `fastraft snapshot restore` into 3 new data dirs, the new
cluster started on them with the data and the revision; corrupt and foreign files refused; a
save cut by the member's death leaves no file; `fastractl move-leader` moves leadership and
refuses bad targets."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from click.testing import CliRunner, Result

from fastraft import Client, FastraftError, SnapshotFileError
from fastraft.cli import main as fastraft_main
from fastraft.client.snapfile import verify_snapshot
from fastraft.ctl import cli as ctl_cli
from fastraft.tools.localcluster import LocalCluster, free_ports, request
from polling import wait_for  # tests/ is on pytest's pythonpath


def ctl(endpoints: str, *args: str) -> Result:
    return CliRunner().invoke(ctl_cli, ["--endpoints", endpoints, *args])


def restore(path: str, lc: LocalCluster, name: str, *extra: str) -> Result:
    m = lc.member(name)
    return CliRunner().invoke(fastraft_main, [
        "snapshot", "restore", path, "--name", name, "--initial-cluster", lc.initial_cluster,
        "--initial-advertise-peer-urls", m.peer_url, "--initial-cluster-token", lc.token,
        "--data-dir", m.data_dir, *extra])


def _status(lc: LocalCluster, name: str) -> dict:
    st = lc.status(name)
    assert st is not None
    return st


def test_save_status_restore_into_a_new_cluster(make_cluster, tmp_path: pathlib.Path) -> None:
    lc = make_cluster(3)
    with Client(lc.endpoints, timeout=5.0) as c:
        for i in range(300):
            c.put(f"k/{i:04d}", f"v{i}")
        c.put("k/0001", "overwritten")
        c.delete("k/0002")
        rev = c.put("last", "one").header.revision
        expected = {kv.key: kv.value for kv in c.get("k/", prefix=True).kvs}
    follower = next(m for m in lc.members if m.name != lc.wait_leader())
    # The follower has applied the last write once it answers a linearizable read of it.
    wait_for(lambda: _status(lc, follower.name)["raft_applied_index"]
             >= _status(lc, lc.wait_leader())["raft_applied_index"], 10, "the follower applied")
    path = str(tmp_path / "backup.db")

    two = ctl(lc.endpoints, "snapshot", "save", path)
    assert two.exit_code == 1 and "exactly one endpoint" in two.output
    assert not os.path.exists(path)

    r = ctl(follower.endpoint, "snapshot", "save", path)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"Snapshot saved at {path}\n"
    assert os.path.exists(path) and not os.path.exists(path + ".part")

    r = ctl(follower.endpoint, "snapshot", "status", path, "-w", "json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["revision"] == rev
    assert st["totalKey"] == len(expected) + 1  # and "last"
    assert st["totalSize"] == os.path.getsize(path)
    r = ctl(follower.endpoint, "snapshot", "status", path, "-w", "table")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][1:3] == [str(rev), str(st["totalKey"])]
    old_ids = {_status(lc, m.name)["member_id"] for m in lc.members}
    old_cluster = _status(lc, follower.name)["header"]["cluster_id"]

    # A corrupt copy (one byte flipped in the middle) and a foreign file: refused, no dir made.
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(bytes(data))
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000)
    r = ctl(follower.endpoint, "snapshot", "status", str(bad))
    assert r.exit_code == 1 and "corrupt" in r.output and "SHA-256" in r.output
    r = ctl(follower.endpoint, "snapshot", "status", str(foreign))
    assert r.exit_code == 1 and "not a fastraft snapshot file" in r.output

    lc2 = LocalCluster(3, str(tmp_path / "restored"), token="restored-cluster",
                       heartbeat_ms=50, election_ms=500)
    try:
        r = restore(str(bad), lc2, "n1")
        assert r.exit_code == 1 and "corrupt" in r.output
        assert not os.path.exists(lc2.member("n1").data_dir)
        for m in lc2.members:
            r = restore(path, lc2, m.name)
            assert r.exit_code == 0, r.output
        # An existing data dir is never overwritten.
        before = sorted(os.listdir(lc2.member("n1").data_dir))
        r = restore(path, lc2, "n1")
        assert r.exit_code == 1 and "already exists" in r.output
        assert sorted(os.listdir(lc2.member("n1").data_dir)) == before

        lc2.start()
        for m in lc2.members:
            lc2.wait_ready(m.name)
        lc2.wait_leader(timeout=15)
        new = _status(lc2, "n1")
        assert new["member_id"] not in old_ids
        assert new["header"]["cluster_id"] != old_cluster
        with Client(lc2.endpoints, timeout=5.0) as c:
            got = c.get("k/", prefix=True)
            assert {kv.key: kv.value for kv in got.kvs} == expected
            assert got.header.revision == rev  # the revision is kept, as etcd keeps it
            assert c.get("last").kvs[0].mod_revision == rev
            assert c.put("after", "restore").header.revision == rev + 1
        # Every member has the data (each restored the file itself): read each one locally.
        for m in lc2.members:
            with Client(m.endpoint, timeout=5.0) as one:
                got = one.get("k/", prefix=True, consistency="serializable")
                assert {kv.key: kv.value for kv in got.kvs} == expected, m.name
    finally:
        lc2.close()


def test_save_cut_by_the_members_death_leaves_no_file(make_cluster,
                                                     tmp_path: pathlib.Path) -> None:
    lc = make_cluster(3)
    value = os.urandom(1 << 20)
    with Client(lc.endpoints, timeout=10.0) as c:
        for i in range(24):  # ~24 MiB: far more than the sockets and the server's window hold
            c.put(f"big/{i:02d}", value)
    victim = next(m for m in lc.members if m.name != lc.wait_leader())
    wait_for(lambda: _status(lc, victim.name)["raft_applied_index"]
             >= _status(lc, lc.wait_leader())["raft_applied_index"], 10, "the victim applied")
    path = str(tmp_path / "cut.db")
    seen: list[int] = []

    def kill_on_first_chunk(chunks: int, nbytes: int) -> None:
        seen.append(chunks)
        if chunks == 1:
            lc.kill(victim.name)  # SIGKILL by PID, reaped

    with Client(victim.endpoint, timeout=5.0) as c, pytest.raises(FastraftError) as ei:
        c.snapshot(path, progress=kill_on_first_chunk)
    assert "nothing saved" in ei.value.message
    assert seen and max(seen) < 24  # it was cut, not finished
    assert not os.path.exists(path) and not os.path.exists(path + ".part")

    # A member that refuses the connection (it is dead): no file either, and a clear error.
    r = ctl(victim.endpoint, "snapshot", "save", path)
    assert r.exit_code == 1 and "cannot connect" in r.output
    assert not os.path.exists(path) and not os.path.exists(path + ".part")

    # A complete save from a live member holds every byte: status reads it back.
    live = next(m for m in lc.members if m.alive)
    r = ctl(live.endpoint, "snapshot", "save", path)
    assert r.exit_code == 0, r.output
    info = verify_snapshot(path)
    assert info.total_keys == 24 and info.chunk_bytes > 24 << 20
    with pytest.raises(SnapshotFileError, match="truncated|corrupt"):
        with open(path, "r+b") as f:
            f.truncate(info.total_size - 1000)
        verify_snapshot(path)


def test_move_leader(make_cluster) -> None:
    lc = make_cluster(3)
    leader = lc.wait_leader()
    lid = _status(lc, leader)["member_id"]
    target = next(m for m in lc.members if m.name != leader)
    tid = _status(lc, target.name)["member_id"]

    # Sent through a follower's endpoint: found the leader itself.
    r = ctl(target.endpoint, "move-leader", format(tid, "x"))
    assert r.exit_code == 0, r.output
    assert r.stdout == f"Leadership transferred from {lid:x} to {tid:x}\n"
    assert lc.wait_leader(timeout=5) == target.name

    r = ctl(lc.endpoints, "move-leader", "abcdef0123")
    assert r.exit_code == 1 and "abcdef0123 is not in the cluster" in r.output
    r = ctl(lc.endpoints, "move-leader", "not-hex")
    assert r.exit_code == 2
    # Bad requests on the wire: refused, the member goes on serving.
    leader_ep = target.endpoint
    for op, args in (("move_leader", {}), ("move_leader", {"target": "x"}),
                     ("move_leader", {"target": tid, "extra": 1}), ("snapshot", {"x": 1})):
        err, _ = request(leader_ep, op, args)
        assert err is not None and err[0] == "BAD_REQUEST", (op, args, err)
    assert _status(lc, target.name)["leader"] == tid

    peer = free_ports(1)[0]
    r = ctl(lc.endpoints, "member", "add", "n4", f"--peer-urls=http://127.0.0.1:{peer}",
            "--learner")
    assert r.exit_code == 0, r.output
    learner = r.stdout.split()[1]
    r = ctl(lc.endpoints, "move-leader", learner)
    assert r.exit_code == 1 and "is a learner" in r.output
    assert lc.wait_leader(timeout=5) == target.name  # nothing moved

    # A voter that is down: not transferred, the leader stays.
    down = next(m for m in lc.members if m.name != target.name)
    did = _status(lc, down.name)["member_id"]
    lc.kill(down.name)
    r = ctl(target.endpoint, "move-leader", format(did, "x"))
    assert r.exit_code == 1 and f"not transferred to {did:x}" in r.output
    assert f"{tid:x} is still the leader" in r.output
    assert lc.wait_leader(timeout=5, among=[m.name for m in lc.members if m.alive]) == target.name

    # No leader: a majority gone.
    for m in lc.members:
        if m.name != target.name:
            lc.kill(m.name)
    wait_for(lambda: _status(lc, target.name)["leader"] == 0, 10, "the leader to step down")
    r = ctl(target.endpoint, "--command-timeout", "2s", "move-leader", format(lid, "x"))
    assert r.exit_code == 1 and "no leader" in r.output
