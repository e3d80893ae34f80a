"""Read levels against real members (3 processes on loopback): linearizable, lease, serializable,
bounded staleness (README, "Read levels").

A member is cut off by freezing the others (SIGSTOP by PID, SIGCONT before the test ends, also
when it fails): its peers fall silent as in a partition, and it stays reachable by clients.
Timing assertions are generous (the machine is shared); what they check is the order of events
(answers stop, refusals follow), not speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polling import wait_for

from fastraft import AsyncClient, Client
from fastraft.errors import BadRequestError, LeaseUnavailableError, TooStaleError
from fastraft.tools.localcluster import LocalCluster, request

# The cluster's timings (tests/node/conftest.py): 50 ms heartbeat, 500 ms election timeout, and
# the default --lease-clock-drift of 100 ms: the lease lasts 500 - 50 - 100 = 350 ms.
LEASE_S = 0.35


@contextmanager
def _frozen(lc: LocalCluster, names: list[str]) -> Iterator[float]:
    """SIGSTOP these members; yields the time they stopped; SIGCONT them on the way out."""
    procs = [lc.member(n).proc for n in names]
    stopped = []
    try:
        for p in procs:
            assert p is not None and p.poll() is None
            os.kill(p.pid, signal.SIGSTOP)
            stopped.append(p)
        yield time.monotonic()
    finally:
        for p in stopped:
            os.kill(p.pid, signal.SIGCONT)


def _range(endpoint: str, key: bytes, **level: Any) -> tuple[str | None, str, dict[str, Any]]:
    """One range to one member, no retry: (error code or None, message, result)."""
    err, res = request(endpoint, "range", {"key": key, "range_end": b"", **level}, timeout=5.0)
    if err is not None:
        return err[0], err[1], {}
    return None, "", res


def _value(res: dict[str, Any]) -> bytes | None:
    kvs = res.get("kvs") or []
    return bytes(kvs[0]["value"]) if kvs else None


def _roles(lc: LocalCluster) -> tuple[str, list[str]]:
    leader = lc.wait_leader()
    return leader, [m.name for m in lc.members if m.name != leader]


def _put_everywhere(lc: LocalCluster, key: bytes, value: bytes) -> None:
    with Client(lc.endpoints, timeout=5.0) as c:
        c.put(key, value)
    for m in lc.members:
        wait_for(lambda m=m: _value(_range(m.endpoint, key, serializable=True)[2]) == value,
                 timeout=10, what=f"{m.name} applies the put")


def _lease_held(lc: LocalCluster, leader: str) -> None:
    """Wait until the leader can serve a lease read: a lease needs a heartbeat round of this term
    acknowledged by a quorum within the last 350 ms, which a loaded machine can delay."""
    ep = lc.member(leader).endpoint
    wait_for(lambda: _range(ep, b"k", consistency="lease")[0] is None, timeout=10,
             what=f"{leader} holds a lease")


def test_wire_levels_and_bad_values(make_cluster) -> None:
    lc = make_cluster(3)
    leader, (f1, _) = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    lep, fep = lc.member(leader).endpoint, lc.member(f1).endpoint
    for ep in (lep, fep):
        for level in ({}, {"serializable": True}, {"serializable": False},
                      {"consistency": "linearizable"}, {"consistency": "serializable"},
                      {"consistency": "bounded", "max_staleness_ms": 2000}):
            code, msg, res = _range(ep, b"k", **level)
            assert code is None, (ep, level, msg)
            assert _value(res) == b"v1"
            local = level.get("serializable") is True or level.get("consistency") in (
                "serializable", "bounded")
            # contact_age_ms on local answers only: how long since the member heard a leader.
            assert ("contact_age_ms" in res["header"]) == local, (level, res["header"])
            if local:
                assert 0 <= res["header"]["contact_age_ms"] < 2000
    _lease_held(lc, leader)
    code, _, res = _range(lep, b"k", consistency="lease")
    assert code is None and _value(res) == b"v1" and "contact_age_ms" not in res["header"]
    code, msg, _ = _range(fep, b"k", consistency="lease")
    assert code == "NOT_LEADER", msg  # the client goes to the leader, as for writes
    bad = [{"consistency": "bogus"}, {"consistency": 1}, {"consistency": "bounded"},
           {"consistency": "bounded", "max_staleness_ms": 0},
           {"consistency": "bounded", "max_staleness_ms": -5},
           {"consistency": "bounded", "max_staleness_ms": True},
           {"consistency": "bounded", "max_staleness_ms": "500ms"},
           {"consistency": "bounded", "max_staleness_ms": float("nan")},
           {"consistency": "lease", "max_staleness_ms": 100},
           {"max_staleness_ms": 100}, {"serializable": "yes"},
           {"serializable": True, "consistency": "lease"}]
    for level in bad:
        code, msg, _ = _range(lep, b"k", **level)
        assert code == "BAD_REQUEST", (level, code, msg)
        assert "range:" in msg and ("consistency" in msg or "staleness" in msg
                                    or "serializable" in msg), msg
    # Nothing changed, and the members still serve.
    assert _value(_range(lep, b"k")[2]) == b"v1"


def test_client_levels_and_contact_age(make_cluster) -> None:
    lc = make_cluster(3)
    leader, (f1, _) = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    _lease_held(lc, leader)
    with Client([lc.member(f1).endpoint], timeout=5.0) as c:
        r = c.get("k", consistency="lease")  # redirected to the leader
        assert r.kvs[0].value == b"v1" and r.header.contact_age is None
        assert r.header.member_id == lc.status(leader)["member_id"]  # type: ignore[index]
        for level in ("s", "serializable"):
            r = c.get("k", consistency=level)  # type: ignore[arg-type]
            assert r.kvs[0].value == b"v1" and r.header.contact_age is not None
        r = c.get("k", consistency="bounded", max_staleness=2.0)
        assert r.kvs[0].value == b"v1"
        assert r.header.contact_age is not None and 0 <= r.header.contact_age < 2.0
        r = c.get("k", consistency="l")
        assert r.header.contact_age is None
        for kw in ({"consistency": "bounded"}, {"consistency": "lease", "max_staleness": 1.0},
                   {"consistency": "bounded", "max_staleness": 0},
                   {"consistency": "x"}):
            try:
                c.get("k", **kw)  # type: ignore[arg-type]
            except BadRequestError:
                pass
            else:
                raise AssertionError(f"{kw} was accepted")


def test_async_client_levels(make_cluster) -> None:
    lc = make_cluster(3)
    leader, (f1, _) = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    _lease_held(lc, leader)

    async def go() -> None:
        async with AsyncClient([lc.member(f1).endpoint], timeout=5.0) as c:
            r = await c.get("k", consistency="lease")
            assert r.kvs[0].value == b"v1" and r.header.contact_age is None
            r = await c.get("k", consistency="bounded", max_staleness=2.0)
            assert r.kvs[0].value == b"v1" and r.header.contact_age is not None
            r = await c.get("k", consistency="s")
            assert r.header.contact_age is not None
            try:
                await c.get("k", consistency="bounded")
            except BadRequestError:
                pass
            else:
                raise AssertionError("bounded without max_staleness was accepted")

    asyncio.run(go())


def test_isolated_follower_serves_serializable_and_bounded_until_the_bound(
        make_cluster) -> None:
    """On a member cut off from the others: a serializable read answers; a linearizable and a
    lease read fail fast with clear errors; a bounded read answers until its freshness runs
    out, then refuses (and keeps refusing)."""
    lc = make_cluster(3)
    leader, (f1, f2) = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    ep = lc.member(f1).endpoint
    bound_s = 1.0
    with _frozen(lc, [leader, f2]) as t0:
        results: list[tuple[float, str | None, str, float | None]] = []
        while time.monotonic() - t0 < bound_s + 1.0:
            code, msg, res = _range(ep, b"k", consistency="bounded",
                                    max_staleness_ms=bound_s * 1000)
            if code is None:
                assert _value(res) == b"v1"
            age = res.get("header", {}).get("contact_age_ms") if code is None else None
            results.append((time.monotonic() - t0, code, msg, age))
            time.sleep(0.02)
        ok = [r for r in results if r[1] is None]
        refused = [r for r in results if r[1] is not None]
        assert ok and refused, results[:3]
        assert all(r[1] == "TOO_STALE" for r in refused), refused[:3]
        assert "bounded read refused" in refused[0][2] and "bound is 1000 ms" in refused[0][2]
        # Answers stop and refusals follow, never the other way round.
        assert max(r[0] for r in ok) < min(r[0] for r in refused)
        # The last contact came before the freeze: no answer later than the bound after it.
        assert max(r[0] for r in ok) <= bound_s + 0.15
        assert min(r[0] for r in refused) >= bound_s - 0.3
        # Each answer said how old its contact was, within the bound.
        assert all(r[3] is not None and r[3] <= bound_s * 1000 for r in ok)
        # Serializable: answers, with a contact age that shows the cut.
        code, msg, res = _range(ep, b"k", consistency="serializable")
        assert code is None and _value(res) == b"v1"
        assert res["header"]["contact_age_ms"] >= bound_s * 1000
        # Linearizable and lease: clear errors, fast (no leader to confirm anything).
        t = time.monotonic()
        code, msg, _ = _range(ep, b"k")
        assert code in ("NO_LEADER", "NOT_LEADER") and time.monotonic() - t < 4.0, (code, msg)
        t = time.monotonic()
        code, msg, _ = _range(ep, b"k", consistency="lease")
        assert code in ("NO_LEADER", "NOT_LEADER") and time.monotonic() - t < 1.0, (code, msg)
    # Healed: the follower catches up and is fresh again.
    wait_for(lambda: _range(ep, b"k", consistency="bounded", max_staleness_ms=1000)[0] is None,
             timeout=15, what="bounded reads answer again after the heal")


def test_lease_read_refused_once_the_lease_expires(make_cluster) -> None:
    """On a leader cut off from its followers, lease reads answer only while the lease holds,
    then are refused with LEASE_UNAVAILABLE before it steps down (NOT/NO_LEADER after)."""
    lc = make_cluster(3)
    leader, followers = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    ep = lc.member(leader).endpoint
    _lease_held(lc, leader)
    with _frozen(lc, followers) as t0:
        # (time the read was SENT, code, message): a lease read answers from a round sent before
        # the freeze, so one sent more than the lease after it must not answer, however late
        # a loaded machine delivers the reply.
        results: list[tuple[float, str | None, str]] = []
        while time.monotonic() - t0 < 1.5:
            sent = time.monotonic() - t0
            code, msg, _ = _range(ep, b"k", consistency="lease")
            results.append((sent, code, msg))
            time.sleep(0.01)
    codes = [r[1] for r in results]
    assert "LEASE_UNAVAILABLE" in codes, results
    first_refusal = codes.index("LEASE_UNAVAILABLE")
    assert all(c is None for c in codes[:first_refusal]), results
    assert all(c is not None for c in codes[first_refusal:]), results
    assert set(codes[first_refusal:]) <= {"LEASE_UNAVAILABLE", "NOT_LEADER", "NO_LEADER"}
    msg = results[first_refusal][2]
    assert "lease expired" in msg and "lease lasts 350 ms" in msg, msg
    # No answer from the lease after it ran out (it started before the freeze).
    ok_times = [r[0] for r in results if r[1] is None]
    assert not ok_times or max(ok_times) <= LEASE_S
    lc.wait_leader(timeout=15)  # thawed: the cluster has a leader again


def test_lease_error_type_reaches_the_client(make_cluster) -> None:
    lc = make_cluster(3)
    leader, followers = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    with _frozen(lc, followers):
        time.sleep(LEASE_S + 0.05)
        with Client([lc.member(leader).endpoint], timeout=2.0) as c:
            try:
                c.get("k", consistency="lease")
            except LeaseUnavailableError as e:
                assert "lease" in e.message
            except Exception as e:  # stepped down already: a leader error, also clear
                assert type(e).__name__ in ("NoLeaderError", "NotLeaderError",
                                            "TimeoutError"), repr(e)
            else:
                raise AssertionError("a lease read answered after the lease expired")
    _, (f1, _) = _roles(lc)
    with _frozen(lc, [m.name for m in lc.members if m.name != f1]):
        time.sleep(0.6)
        with Client([lc.member(f1).endpoint], timeout=2.0) as c:
            try:
                c.get("k", consistency="bounded", max_staleness=0.3)
            except TooStaleError as e:
                assert "bound is 300 ms" in e.message
            else:
                raise AssertionError("a bounded read answered past its bound")


def _lease_get(c: Client) -> Any:
    """A lease read, asked again while the leader says its lease expired (a stall on a loaded
    machine): refusing is allowed, answering with an old value is not. The refusals that pass by
    themselves (a new leader before its first acknowledged round, a transfer) never reach here:
    the client asks again after the pause the leader names."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return c.get("k", consistency="lease")
        except LeaseUnavailableError as e:
            assert "lease expired" in e.message, e.message
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_linearizable_and_lease_reads_see_every_acknowledged_write(make_cluster) -> None:
    """A read that starts after a write was acknowledged returns it (or something newer), at
    every level that promises so, from any member, across a leadership change."""
    lc = make_cluster(3)
    leader, _ = _roles(lc)
    with Client(lc.endpoints, timeout=5.0) as c:
        pinned = {m.name: Client([m.endpoint], timeout=5.0) for m in lc.members}
        try:
            for i in range(60):
                if i == 30:
                    # Hand leadership over (SIGTERM = graceful: transfers first), then back up.
                    lc.stop(leader)
                    lc.start(leader)
                    lc.wait_ready(leader)
                v = b"v%d" % i
                c.put("k", v)
                for name, pc in pinned.items():
                    if not lc.member(name).alive:
                        continue
                    assert pc.get("k").kvs[0].value == v, (name, i)
                    assert _lease_get(pc).kvs[0].value == v, (name, i)
        finally:
            for pc in pinned.values():
                pc.close()


def test_fastractl_get_levels(make_cluster) -> None:
    lc = make_cluster(3)
    leader, _ = _roles(lc)
    _put_everywhere(lc, b"k", b"v1")
    _lease_held(lc, leader)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ETCDCTL_") and not k.startswith("FASTRAFT_")}

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fastraft.ctl", "--endpoints",
                               lc.endpoints, *args], env=env, capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)

    for level in (["--consistency", "l"], ["--consistency", "s"], ["--consistency", "lease"],
                  ["--consistency", "bounded", "--max-staleness", "500ms"],
                  ["--consistency", "bounded", "--max-staleness", "2s"]):
        p = ctl("get", "k", *level)
        assert p.returncode == 0 and p.stdout == "k\nv1\n", (level, p.stderr)
    p = ctl("get", "k", "--consistency", "bounded", "--max-staleness", "2s", "-w", "json")
    assert p.returncode == 0 and '"contact_age_ms"' in p.stdout, p.stdout
    for bad in (["--consistency", "bounded"], ["--max-staleness", "500ms"],
                ["--consistency", "bounded", "--max-staleness", "soon"],
                ["--consistency", "x"]):
        p = ctl("get", "k", *bad)
        assert p.returncode != 0 and p.stderr.strip(), (bad, p.stdout)
