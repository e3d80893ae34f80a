"""Crashes under load: linearizability (checked by tests/lincheck.py) and durability.

Real members, kill -9 by PID. Clients are threads with the blocking ``fastraft.Client``; every
operation is recorded with its outcome: success = ok, TIMEOUT/STOPPING/a lost answer = unknown
(the write may have applied), NOT_LEADER/NO_LEADER/NOT_COMMITTED/nothing sent = fail.
"""

from __future__ import annotations

import random
import threading
import time

import lincheck
from acked_writes import write_acked

from fastraft import Client
from fastraft.errors import (
    FastraftError,
    NoLeaderError,
    NotCommittedError,
    NotLeaderError,
    StoppingError,
    TimeoutError,
    UnavailableError,
)
from fastraft.tools.localcluster import LocalCluster

_DEFINITELY_NOT_APPLIED = (NotLeaderError, NoLeaderError, NotCommittedError, UnavailableError)


def _put_outcome(e: FastraftError) -> str:
    if isinstance(e, (TimeoutError, StoppingError)):
        return "unknown"
    if isinstance(e, _DEFINITELY_NOT_APPLIED):
        return "fail"
    return "unknown"  # anything else: do not claim it was not applied


def _client_loop(lc: LocalCluster, cid: int, keys: list[bytes], stop: threading.Event,
                 history: list[lincheck.Op], lock: threading.Lock, max_ops: int) -> None:
    rng = random.Random(cid)
    with Client(lc.endpoints, timeout=2.0) as c:
        for i in range(max_ops):
            if stop.is_set():
                return
            key = rng.choice(keys)
            if rng.random() < 0.5:
                value = b"c%d-%d" % (cid, i)
                t0 = time.monotonic()
                try:
                    c.put(key, value)
                    op = lincheck.Op(key, "put", value, t0, time.monotonic(), "ok")
                except FastraftError as e:
                    outcome = _put_outcome(e)
                    op = lincheck.Op(key, "put", value, t0,
                                     None if outcome == "unknown" else time.monotonic(), outcome)
            else:
                t0 = time.monotonic()
                try:
                    r = c.get(key)
                    got = r.kvs[0].value if r.kvs else None
                    op = lincheck.Op(key, "get", got, t0, time.monotonic(), "ok")
                except FastraftError:
                    op = lincheck.Op(key, "get", None, t0, time.monotonic(), "fail")
            with lock:
                history.append(op)
            stop.wait(0.005)  # pacing (not waiting for anything): keeps the history small


def test_linearizable_while_the_leader_is_killed_and_restarted(make_cluster) -> None:
    lc = make_cluster(3)
    keys = [b"x", b"y", b"z"]
    history: list[lincheck.Op] = []
    lock = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=_client_loop, args=(lc, cid, keys, stop, history, lock, 5000),
                                daemon=True) for cid in range(3)]
    for t in threads:
        t.start()
    killed: list[str] = []
    kill_times: list[float] = []
    try:
        time.sleep(1.0)  # load before the first crash (not waiting for anything)
        for _ in range(2):
            leader = lc.wait_leader(timeout=10)
            kill_times.append(time.monotonic())
            lc.kill(leader)
            killed.append(leader)
            lc.wait_leader(timeout=10, among=[m.name for m in lc.members if m.alive])
            time.sleep(0.7)  # load on the new leader while one member is down
            lc.start(leader)
            lc.wait_ready(leader)
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert len(killed) == 2
    # The clients were busy across each crash (so the history covers the failovers).
    for kt in kill_times:
        assert any(op.invoke < kt + 0.3 and (op.complete is None or op.complete > kt)
                   for op in history), f"no operation around the kill at {kt}"
    lc.wait_leader(timeout=10)
    # Final reads after everything settled: they must see the last acknowledged state.
    with Client(lc.endpoints, timeout=5.0) as c:
        for k in keys:
            t0 = time.monotonic()
            r = c.get(k)
            history.append(lincheck.Op(k, "get", r.kvs[0].value if r.kvs else None, t0,
                                       time.monotonic(), "ok"))
            acked = [op for op in history if op.key == k and op.kind == "put"
                     and op.outcome == "ok"]
            if acked:
                assert r.kvs, f"{k!r}: acknowledged puts but the key is gone"
    ok_puts = sum(1 for op in history if op.kind == "put" and op.outcome == "ok")
    ok_gets = sum(1 for op in history if op.kind == "get" and op.outcome == "ok")
    unknown = sum(1 for op in history if op.outcome == "unknown")
    print(f"history: {len(history)} ops, {ok_puts} acked puts, {ok_gets} gets, "
          f"{unknown} unknown")
    assert ok_puts >= 30 and ok_gets >= 30, (ok_puts, ok_gets)
    res = lincheck.check(history)
    assert res.ok, res.message


def test_acknowledged_writes_survive_kill_9_of_the_leader_and_a_full_crash(make_cluster) -> None:
    lc = make_cluster(3)
    acked: list[int] = []
    stop = threading.Event()

    t = threading.Thread(target=write_acked, args=(lc.endpoints, 0, 100_000, acked, stop),
                         daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        leader = lc.wait_leader(timeout=10)
        lc.kill(leader)  # mid-stream
        lc.wait_leader(timeout=10, among=[m.name for m in lc.members if m.alive])
        before = len(acked)
        deadline = time.monotonic() + 10
        while len(acked) < before + 200 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(timeout=10)
    assert len(acked) >= 400
    # Everyone crashes at once: only what was fsync'd survives, and every ack was fsync'd on a
    # majority first.
    for m in lc.members:
        lc.kill(m.name)
    lc.start()
    for m in lc.members:
        lc.wait_ready(m.name)
    lc.wait_leader(timeout=15)
    with Client(lc.endpoints, timeout=5.0) as c:
        r = c.get(b"k", b"l")  # every key in [k, l)
        have = {kv.key: kv.value for kv in r.kvs}
    missing = [i for i in acked if have.get(b"k%06d" % i) != b"v%d" % i]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
