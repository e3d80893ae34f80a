"""A real partition: members and clients in network namespaces, the leader cut off from the
other two members by dropped packets (nftables), not by a kill (tests/netlab.py builds the lab).

The leader and one client (the minority side) are cut off from the two other members and two
other clients (the majority side) for a few seconds, while every client runs puts and
linearizable gets. Checked: a majority-side client writes again within the new leader's
election plus 0.5 s; the minority-side client gets a clear error within its timeout and no
success; after healing, every member holds the same values and the histories of all clients,
with reads of the final state, are linearizable (tests/lincheck.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

import lincheck
import netlab
from polling import wait_for

pytestmark = pytest.mark.slow

_WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "lab_worker.py")
_MEMBERS = ["n1", "n2", "n3"]
_CLIENTS = ["ca", "cb", "cm"]  # ca, cb end on the majority side, cm with the cut-off leader
_KEYS = "k0,k1,k2"
_CLIENT_TIMEOUT = 1.0  # the client: "no endpoint reachable within 1s"
_PRE, _PARTITION, _AFTER = 2.0, 6.0, 3.0  # seconds of load before, during, after the cut


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    why = netlab.available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the partition lab: {why}")  # .ci/run installs what it needs
        pytest.skip(why)
    netlab.sweep()  # what a crashed earlier run left behind
    with netlab.Lab(_MEMBERS + _CLIENTS) as lab:
        yield lab
    left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout.split() if ns.startswith(lab.run_id)]
    assert not left, f"namespaces left behind: {left}"


def _worker(lab: netlab.Lab, host: str, mode: str, *args: str,
            timeout: float = 30.0) -> object:
    p = lab.run(host, [sys.executable, _WORKER, mode, *args], timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _log_times(path: str, pattern: str) -> list[tuple[float, str]]:
    """(wall time, line) of a member's log lines matching ``pattern``."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if re.search(pattern, line):
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
                out.append((stamp.timestamp(), line.rstrip()))
    return out


def test_clients_follow_the_majority_through_a_partition(lab: netlab.Lab, tmp_path) -> None:
    addr = {h: lab.hosts[h].addr for h in lab.hosts}
    for src in lab.hosts:  # nothing is sent anywhere but into the lab
        for m in _MEMBERS:
            lab.check_route(src, addr[m])
    cluster = ",".join(f"{m}=http://{addr[m]}:2380" for m in _MEMBERS)
    endpoints = ",".join(f"{addr[m]}:2379" for m in _MEMBERS)
    logs = {m: str(tmp_path / f"{m}.log") for m in _MEMBERS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRAFT_")}
    for m in _MEMBERS:
        with open(logs[m], "wb") as logf:
            lab.popen(m, [sys.executable, "-m", "fastraft", "serve", "--name", m,
                          "--data-dir", str(tmp_path / m),
                          "--listen-client-urls", f"http://{addr[m]}:2379",
                          "--listen-peer-urls", f"http://{addr[m]}:2380",
                          "--initial-advertise-peer-urls", f"http://{addr[m]}:2380",
                          "--initial-cluster", cluster, "--initial-cluster-token", "lab",
                          "--heartbeat-interval", "100", "--election-timeout", "1000"],
                      stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env)

    def leader() -> str | None:
        st = _worker(lab, "ca", "status", "--endpoints", endpoints, "--timeout", "0.5")
        ids = {s.get("leader") for s in st.values()}  # type: ignore[union-attr]
        if len(ids) != 1 or not next(iter(ids)):
            return None
        lead = next(iter(ids))
        return next(m for m in _MEMBERS if st[f"{addr[m]}:2379"].get("member_id") == lead)

    old = ""

    def leader_known() -> bool:
        nonlocal old
        old = leader() or ""
        return bool(old)

    wait_for(leader_known, 30, "a leader")
    majority = [m for m in _MEMBERS if m != old]

    until = time.time() + 1.0 + _PRE + _PARTITION + _AFTER
    # ca uses the blocking Client, cb the AsyncClient, cm (cut off later) the blocking one.
    workers = {c: lab.popen(c, [sys.executable, _WORKER, "load", "--endpoints", endpoints,
                                "--client", c, "--keys", _KEYS, "--until", str(until),
                                "--timeout", str(_CLIENT_TIMEOUT),
                                *(["--async"] if c == "cb" else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in _CLIENTS}
    time.sleep(1.0 + _PRE)
    lab.partition([old, "cm"], [*majority, "ca", "cb"])
    t_cut = time.time()  # after: every host's rules are in

    # Once the majority has a leader, fastractl on its side writes, though the cut-off member
    # comes first in its endpoints (a fresh process: nothing remembered).
    wait_for(lambda: any(t > t_cut for m in majority
                         for t, _ in _log_times(logs[m], r"became leader at term")),
             _PARTITION - 1.0, "a leader on the majority side")
    ctl_eps = ",".join(f"{addr[m]}:2379" for m in [old, *majority])
    ctl_put = lab.run("ca", [sys.executable, "-m", "fastraft.ctl", "put", "ctl", "during-cut",
                             "--endpoints", ctl_eps, "--command-timeout", "2s"], env=env)
    assert ctl_put.returncode == 0 and ctl_put.stdout == "OK\n", ctl_put.stderr
    time.sleep(max(0.0, t_cut + _PARTITION - time.time()))
    t_heal = time.time()  # before: healing takes each host's rules out in turn
    lab.heal()

    history: dict[str, list[dict]] = {}
    for c, p in workers.items():
        out, err = p.communicate(timeout=until - time.time() + 60)
        assert p.returncode == 0, err
        history[c] = json.loads(out)

    # The majority elected a new leader while the old one was cut off.
    elected = [t for m in majority
               for t, _ in _log_times(logs[m], r"became leader at term") if t_cut < t < t_heal]
    assert elected, "no leader was elected on the majority side"
    t_elected = min(elected)

    # Each majority-side client writes again within the election plus 0.5 s.
    print(f"leader {old} cut off; new leader elected {t_elected - t_cut:.2f}s after the cut")
    for c in ("ca", "cb"):
        ok = [op["wall_complete"] for op in history[c] if op["kind"] == "put"
              and op["outcome"] == "ok" and t_cut < op["wall_invoke"] < t_heal]
        assert ok, f"{c} wrote nothing during the partition"
        print(f"{c} wrote again {min(ok) - t_cut:.2f}s after the cut; "
              f"{len(ok)} puts acknowledged during it")
        assert min(ok) <= t_elected + 0.5, (
            f"{c} wrote again {min(ok) - t_cut:.2f}s after the cut, the leader was elected "
            f"{t_elected - t_cut:.2f}s after it")

    # The minority-side client gets clear errors within its timeout, and nothing succeeds.
    cut_ops = [op for op in history["cm"]
               if t_cut < op["wall_invoke"] and op["wall_complete"] < t_heal]
    assert len(cut_ops) >= 3, cut_ops
    for op in cut_ops:
        assert op["outcome"] != "ok", (f"the cut-off side served {op} (cut at {t_cut}, "
                                       f"healed at {t_heal})")
        assert re.match(r"(NoLeaderError|UnavailableError|TimeoutError): \S", op["error"]), op
        assert op["wall_complete"] - op["wall_invoke"] <= _CLIENT_TIMEOUT + 0.5, op
    print(f"cm: {len(cut_ops)} ops during the cut, errors: "
          f"{sorted({op['error'].split(':')[0] for op in cut_ops})}")

    # After healing every member holds the same values; with the final linearizable reads
    # the histories of all clients are linearizable.
    def settled() -> bool:
        st = _worker(lab, "ca", "status", "--endpoints", endpoints)
        applied = {s.get("raft_applied_index") for s in st.values()}  # type: ignore[union-attr]
        return len(applied) == 1 and None not in applied

    wait_for(settled, 20, "every member to apply the same index")
    final = _worker(lab, "cm", "read", "--endpoints", endpoints, "--keys", _KEYS + ",ctl")
    views = list(final["members"].values())  # type: ignore[index]
    assert all(v == views[0] for v in views), final
    assert views[0]["ctl"] == "during-cut"  # fastractl's write reached every member
    final["linearizable"] = [r for r in final["linearizable"] if r["key"] != "ctl"]  # type: ignore
    ops = []
    for op in [o for c in _CLIENTS for o in history[c]] + [
            dict(r, kind="get", outcome="ok") for r in final["linearizable"]]:  # type: ignore
        unknown = op["outcome"] == "unknown"
        value = None if op["value"] is None else op["value"].encode()
        ops.append(lincheck.Op(op["key"].encode(), op["kind"], value, op["invoke"],
                               None if unknown else op["complete"], op["outcome"]))
    result = lincheck.check(ops)
    assert result.ok, result.message
    written = {op.value for op in ops if op.kind == "put" and op.outcome == "ok"}
    assert written and any(v is not None and v.encode() in written for v in views[0].values())
