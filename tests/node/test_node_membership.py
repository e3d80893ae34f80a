"""Runtime membership on real processes: member add (learner) / join / promote / remove."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from fastraft import AsyncClient, BadRequestError, Client, ConfChangeInProgressError, FastraftError
from fastraft.config import member_id
from fastraft.tools.localcluster import LocalCluster, MemberProc, free_ports, request
from fastraft.storage.logstore import Storage
from inprocess_member import InProcessMember  # tests/ is on pytest's pythonpath
from polling import wait_for


def _ctl(lc: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastraft.ctl", f"--endpoints={lc.endpoints}",
                           "--command-timeout=10s", *args],
                          capture_output=True, text=True, timeout=60)


def _local_get(endpoint: str, key: bytes) -> bytes | None:
    """A serializable read of one key on one member (its own applied state)."""
    try:
        err, res = request(endpoint, "range", {"key": key, "serializable": True}, timeout=1)
    except OSError:
        return None
    if err is not None or not res["kvs"]:
        return None
    return res["kvs"][0]["value"]


def _start_joiner(lc: LocalCluster, settings: dict[str, str], cport: int,
                  pport: int) -> tuple[MemberProc, list[str], dict[str, str]]:
    """Start the member just added with the settings fastractl printed (as environment
    variables, as an operator would export them), and register it for teardown by PID."""
    name = settings["FASTRAFT_NAME"]
    m = MemberProc(name, cport, pport, os.path.join(lc.base_dir, f"{name}.fastraft"),
                   os.path.join(lc.base_dir, f"{name}.log"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    args = [sys.executable, "-m", "fastraft", "serve", "--data-dir", m.data_dir,
            "--listen-client-urls", f"http://{m.endpoint}", "--listen-peer-urls", m.peer_url,
            "--heartbeat-interval", str(lc.heartbeat_ms),
            "--election-timeout", str(lc.election_ms)]
    with open(m.log_path, "ab") as logf:
        m.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                  env=env)
    lc.members.append(m)  # lc.close() stops it by PID
    return m, args, env


@pytest.mark.parametrize("snapshot_count", [10000, 20], ids=["from-log", "from-snapshot"])
def test_learner_joins_catches_up_is_promoted_and_counts_for_quorum(make_cluster,
                                                                    snapshot_count) -> None:
    # from-log: the log was never compacted before the member add; from-snapshot: it was. The
    # new member starts from a snapshot either way (the initial configuration is not in the
    # log): its configuration and member list come from the snapshot, not from the member
    # list it was told when it joined.
    lc = make_cluster(3, extra_args=["--snapshot-count", str(snapshot_count)])
    with Client(lc.endpoints, timeout=10) as c:
        for i in range(30):
            c.put(b"pre%02d" % i, b"v%d" % i)
        cid = c.get(b"pre00").header.cluster_id
        cport, pport = free_ports(2)
        purl = f"http://127.0.0.1:{pport}"

        out = _ctl(lc, "member", "add", "n4", f"--peer-urls={purl}", "--learner")
        assert out.returncode == 0, out.stderr
        new_id = member_id("n4", [purl], lc.token)
        lines = out.stdout.splitlines()
        assert lines[0] == f"Member {new_id:x} added to cluster {cid:x}"
        settings = dict(re.fullmatch(r'(FASTRAFT_[A-Z_]+)="(.*)"', ln).groups()  # type: ignore
                        for ln in lines[1:] if ln)
        assert settings["FASTRAFT_NAME"] == "n4"
        assert settings["FASTRAFT_INITIAL_CLUSTER_STATE"] == "existing"
        assert settings["FASTRAFT_INITIAL_ADVERTISE_PEER_URLS"] == purl
        assert set(settings["FASTRAFT_INITIAL_CLUSTER"].split(",")) == {
            f"{m.name}={m.peer_url}" for m in lc.members} | {f"n4={purl}"}
        assert settings["FASTRAFT_INITIAL_CLUSTER_TOKEN"] == lc.token
        listed = {m.name: m for m in c.member_list()}
        assert listed["n4"].id == new_id and listed["n4"].is_learner
        assert not listed["n1"].is_learner

        # A second change of the same name or peer URL is refused, and changes nothing.
        with pytest.raises(BadRequestError, match="already used"):
            c.member_add("n5", [purl])
        with pytest.raises(BadRequestError, match="already used"):
            c.member_add("n4", [f"http://127.0.0.1:{free_ports(1)[0]}"])
        assert len(c.member_list()) == 4

        if snapshot_count == 20:
            # As if a first start crashed right after creating the data dir: the next start
            # must still ask the cluster (not fall back to --initial-cluster's list).
            Storage.open(os.path.join(lc.base_dir, "n4.fastraft"), cluster_id=cid,
                         member_id=new_id, name="n4").close()
        n4, n4_args, n4_env = _start_joiner(lc, settings, cport, pport)
        lc.wait_ready("n4")
        # A learner once its applied configuration says so: between installing a snapshot
        # older than its own addition and applying that addition (a few ms; a loaded CI
        # rehearsal asked in between) it is in neither list of its configuration.
        wait_for(lambda: (lc.status("n4") or {}).get("is_learner") is True, 15,
                 "n4 to apply its addition as a learner")
        st = lc.status("n4")
        assert st is not None and st["member_id"] == new_id and st["is_learner"] is True
        assert st["header"]["cluster_id"] == cid
        # It caught up: its own (serializable) read sees what was written before it joined.
        wait_for(lambda: _local_get(n4.endpoint, b"pre29") == b"v29", 15, "n4 to catch up")
        # Its client URL is in the member list (it asked the leader to record it).
        wait_for(lambda: (_listed_client_urls(lc.member(lc.wait_leader()).endpoint) or {}).get(
            "n4") == [f"http://{n4.endpoint}"], 15, "n4's client URL in the member list")
        assert "restored state from snapshot" in n4.log_text()

        # Promote it (the leader refuses while it is behind, so retry a bounded number of times).
        for _ in range(50):
            out = _ctl(lc, "member", "promote", format(new_id, "x"))
            if out.returncode == 0 or "in sync" not in out.stderr:
                break
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"Member {new_id:x} promoted in cluster {cid:x}"
        assert not {m.name: m for m in c.member_list()}["n4"].is_learner
        wait_for(lambda: (lc.status("n4") or {}).get("is_learner") is False, 10,
                 "n4 to apply its promotion")

        # With 4 voters the quorum is 3: after one original member dies, commits need n4.
        leader = lc.wait_leader()
        lc.kill(leader)
        c.put(b"post", b"after-kill")
        wait_for(lambda: _local_get(n4.endpoint, b"post") == b"after-kill", 10,
                 "n4 to apply a write made without the killed member")

        # Restarted with the same settings, n4 resumes from its data dir (the 'existing' state
        # is ignored then): same id and cluster, and it still counts for the quorum.
        lc.stop("n4")
        assert n4.proc is not None and n4.proc.returncode == 0
        with open(n4.log_path, "ab") as logf:
            n4.proc = subprocess.Popen(n4_args, stdin=subprocess.DEVNULL, stdout=logf,
                                       stderr=logf, env=n4_env)
        lc.wait_ready("n4")
        st = lc.status("n4")
        assert st is not None and st["member_id"] == new_id
        assert st["header"]["cluster_id"] == cid and st["is_learner"] is False
        c.put(b"post2", b"after-restart")
        wait_for(lambda: _local_get(n4.endpoint, b"post2") == b"after-restart", 10,
                 "the restarted n4 to apply a new write")


def test_member_errors_and_follower_redirect(make_cluster) -> None:
    lc = make_cluster(3)
    leader = lc.wait_leader()
    follower = next(m for m in lc.members if m.name != leader)
    # A follower answers NOT_LEADER (the raw protocol), like a write...
    pport = free_ports(1)[0]
    err, _ = request(follower.endpoint, "member_add",
                     {"name": "n9", "peer_urls": [f"http://127.0.0.1:{pport}"], "learner": True})
    assert err is not None and err[0] == "NOT_LEADER"
    # ... and a client that only knows the follower is redirected to the leader.
    with Client([follower.endpoint] + [m.endpoint for m in lc.members
                                       if m.name != follower.name], timeout=10) as c:
        res = c.member_add("n9", [f"http://127.0.0.1:{pport}"], learner=True)
        assert res.member is not None and res.member.name == "n9" and res.member.is_learner
        assert len(res.members) == 4
        n9 = res.member.id
        # Bad input: a clear error, nothing changes.
        with pytest.raises(BadRequestError, match="bad peer URL"):
            c.member_add("n10", ["ftp://127.0.0.1:1"])
        with pytest.raises(BadRequestError, match="not found"):
            c.member_promote(0xdeadbeef)
        with pytest.raises(BadRequestError, match="not found"):
            c.member_remove(0xdeadbeef)
        # A learner that never started is not in sync: not promoted.
        with pytest.raises(BadRequestError, match="in sync with leader"):
            c.member_promote(n9)
        with pytest.raises(BadRequestError, match="not a learner"):
            c.member_promote(lc.status(leader)["member_id"])  # type: ignore[index]
        assert {m.name: m.is_learner for m in c.member_list()} == {
            "n1": False, "n2": False, "n3": False, "n9": True}
    # Removing the learner that never started (AsyncClient, from the follower: redirected).

    async def remove() -> int:
        async with AsyncClient([follower.endpoint] + [m.endpoint for m in lc.members],
                               timeout=10) as ac:
            with pytest.raises(BadRequestError, match="in sync with leader"):
                await ac.member_promote(n9)
            return len((await ac.member_remove(format(n9, "x"))).members)

    assert asyncio.run(remove()) == 3
    out = _ctl(lc, "member", "promote", "zz")
    assert out.returncode == 2 and "not a hexadecimal member id" in out.stderr
    out = _ctl(lc, "member", "remove", "deadbeef")
    assert out.returncode == 1 and "not found" in out.stderr


def test_removed_member_stops_receiving_and_leader_can_remove_itself(make_cluster) -> None:
    lc = make_cluster(3)
    leader = lc.wait_leader()
    victim = next(m for m in lc.members if m.name != leader)
    with Client(lc.endpoints, timeout=10) as c:
        c.put(b"a", b"1")
        vid = lc.status(victim.name)["member_id"]  # type: ignore[index]
        res = c.member_remove(vid)
        assert victim.name not in {m.name for m in res.members} and len(res.members) == 2
        # Nothing else is proposed meanwhile: the removal is the leader's last entry.
        removal = lc.status(leader)["raft_index"]  # type: ignore[index]
        for i in range(20):
            c.put(b"b%d" % i, b"x")
        # The two left commit on their own; the removed member gets none of it.
        assert lc.status(leader)["raft_index"] >= removal + 20  # type: ignore[index]
        st = lc.status(victim.name)
        assert st is not None and st["raft_index"] <= removal
        assert _local_get(victim.endpoint, b"b19") is None

        # Removing the leader itself: it hands leadership over, the client is redirected to
        # the new leader, which removes it; the last member goes on alone.
        lid = lc.status(leader)["member_id"]  # type: ignore[index]
        res = c.member_remove(lid)
        assert [m.name for m in res.members] == [
            m.name for m in lc.members if m.name not in (leader, victim.name)]
        last = res.members[0]
        assert res.header.member_id == last.id
        c.put(b"c", b"alone")
        assert _local_get(lc.member(last.name).endpoint, b"c") == b"alone"


def test_join_errors(make_cluster, tmp_path) -> None:
    lc = make_cluster(1)
    cport, pport = free_ports(2)
    base = [sys.executable, "-m", "fastraft", "serve", "--name", "n7",
            "--listen-client-urls", f"http://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster-state", "existing", "--initial-cluster-token", lc.token]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    # Not added first: a clear error naming the command to run; the data dir stays empty.
    ic = f"{lc.initial_cluster},n7=http://127.0.0.1:{pport}"
    d = tmp_path / "n7"
    out = subprocess.run(base + ["--data-dir", str(d), "--initial-cluster", ic],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "fastractl member add n7" in out.stderr, out.stderr
    assert not d.exists() or not any(d.iterdir())
    # Nobody listed answers.
    dead = free_ports(1)[0]
    out = subprocess.run(base + ["--data-dir", str(d), "--initial-cluster",
                                 f"x=http://127.0.0.1:{dead},n7=http://127.0.0.1:{pport}"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "no member of --initial-cluster answered" in out.stderr


class _Replies:
    """Stands in for a front end: records what the KV service answers, per request."""

    def __init__(self) -> None:
        self.got: list[tuple[int, Any, Any]] = []

    def done(self, req_id: int) -> Callable[[Any, Any], None]:
        return lambda err, res: self.got.append((req_id, err, res))


def test_one_membership_change_at_a_time(tmp_path) -> None:
    m = InProcessMember(tmp_path / "m")
    m.start()
    try:
        with Client(m.endpoint, timeout=10) as c:
            c.put(b"warm", b"up")  # a leader whose own term has committed
        conn = _Replies()

        def two_changes() -> FastraftError | None:
            # In one loop callback: the first is proposed and cannot commit before the second.
            m.node.service.submit("member_add", {"name": "x1", "peer_urls": [
                "http://127.0.0.1:1"], "learner": True}, conn.done(1))
            m.node.service.submit("member_add", {"name": "x2", "peer_urls": [
                "http://127.0.0.1:2"], "learner": True}, conn.done(2))
            return conn.got[0][1] if conn.got else None

        err = m.call(two_changes)
        assert isinstance(err, ConfChangeInProgressError)
        assert err.code == "CONF_CHANGE_IN_PROGRESS"
        wait_for(lambda: len(m.call(lambda: list(conn.got))) == 2, 10, "the first change")
        assert m.call(lambda: conn.got[0][0]) == 2  # the refusal came at once
        rid, e, res = conn.got[1]
        assert rid == 1 and e is None and res["member"]["name"] == "x1"
        assert sorted(x["name"] for x in res["members"]) == ["solo", "x1"]
        # Once applied, the next change is accepted.
        with Client(m.endpoint, timeout=10) as c:
            assert [x.name for x in c.member_remove(res["member"]["id"]).members] == ["solo"]
    finally:
        m.stop()


def test_a_removed_member_wiped_and_added_again_rejoins(make_cluster) -> None:
    """The operator's replace-a-disk cycle: stop a member, remove it, wipe its data dir, add it
    again under the same name and peer URL, start it empty: it joins, catches up, and counts
    for the quorum again."""
    lc = make_cluster(3)
    leader = lc.wait_leader()
    victim = next(m for m in lc.members if m.name != leader)
    with Client(lc.endpoints, timeout=10) as c:
        c.put(b"a", b"before")
        vid = lc.status(victim.name)["member_id"]  # type: ignore[index]
        lc.stop(victim.name)
        c.member_remove(vid)
        c.put(b"b", b"while-gone")
        shutil.rmtree(victim.data_dir)
        lc.members.remove(victim)

        out = _ctl(lc, "member", "add", victim.name, f"--peer-urls={victim.peer_url}")
        assert out.returncode == 0, out.stderr
        settings = dict(re.fullmatch(r'(FASTRAFT_[A-Z_]+)="(.*)"', ln).groups()  # type: ignore
                        for ln in out.stdout.splitlines()[1:] if ln)
        back, _, _ = _start_joiner(lc, settings, victim.client_port, victim.peer_port)
        lc.wait_ready(back.name)
        wait_for(lambda: _local_get(back.endpoint, b"b") == b"while-gone", 15,
                 "the re-added member to catch up")
        assert _local_get(back.endpoint, b"a") == b"before"
        # A voter again: with one of the other two killed, writes need it.
        other = next(m.name for m in lc.members if m.name not in (victim.name,))
        lc.kill(other)
        c.put(b"c", b"needs-the-re-added-member")
        wait_for(lambda: _local_get(back.endpoint, b"c") == b"needs-the-re-added-member", 15,
                 "the re-added member to apply a write made without the killed one")


def _listed_client_urls(endpoint: str) -> dict[str, list[str]] | None:
    try:
        err, res = request(endpoint, "member_list", {}, timeout=2)
    except OSError:
        return None
    if err is not None:
        return None
    return {m["name"]: m["client_urls"] for m in res["members"]}


def test_member_list_shows_every_member_s_client_urls(make_cluster) -> None:
    """`--initial-cluster` names peer URLs only: the leader records its own client URLs when
    elected and each follower asks the leader to record its own (member_publish), so the
    member list shows them all, asked of any member, and again after a restart."""
    lc = make_cluster(3)
    want = {m.name: [f"http://{m.endpoint}"] for m in lc.members}
    for m in lc.members:
        wait_for(lambda m=m: _listed_client_urls(m.endpoint) == want, 15,
                 f"{m.name} to list every member's client URLs")
    leader = lc.wait_leader()
    follower = next(m for m in lc.members if m.name != leader)
    fid = lc.status(follower.name)["member_id"]  # type: ignore[index]

    # The request's refusals change nothing.
    for args, words in (({"id": 12345, "client_urls": ["http://127.0.0.1:1"]}, "not found"),
                        ({"id": fid, "client_urls": []}, "list of 1 to"),
                        ({"id": fid, "client_urls": ["ftp://x:1"]}, "bad client URL"),
                        ({"id": fid, "client_urls": ["http://127.0.0.1:1"], "x": 1},
                         "unknown argument")):
        err, _ = request(lc.member(leader).endpoint, "member_publish", args)
        assert err is not None and err[0] == "BAD_REQUEST" and words in err[1], (args, err)
    err, _ = request(follower.endpoint, "member_publish",
                     {"id": fid, "client_urls": ["http://127.0.0.1:1"]})
    assert err is not None and err[0] == "NOT_LEADER"
    assert _listed_client_urls(lc.member(leader).endpoint) == want

    # Restarted, the follower finds its URLs recorded (by its earlier run) and they stay.
    lc.stop(follower.name)
    lc.start(follower.name)
    lc.wait_ready(follower.name)
    wait_for(lambda: _listed_client_urls(follower.endpoint) == want, 15,
             "the restarted follower to list every member's client URLs")
