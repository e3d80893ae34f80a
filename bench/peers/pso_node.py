"""One PySyncObj member (a replicated dict) that also generates load inside its own process, as
PySyncObj's design expects (it has no client protocol: commands are method calls on a member).

The member lives for the whole comparison and takes commands from its parent, one JSON object a
line on stdin, answering one JSON line each on stdout (EOF on stdin = the parent is gone: exit):

* ``{"cmd": "status"}`` -> ``{"self", "leader", "is_leader"}``
* ``{"cmd": "preload", "keys", "value_size", "seed"}`` -> set every key once, wait for all
* ``{"cmd": "run", "op": "put"|"get", "inflight", "rate", "start_at", "warmup", "duration",
  "keys", "value_size", "seed"}`` -> a result with the fields of ``fastraft.tools.loadgen`` results
  (HdrHistogram encoded, so the parent merges members exactly):

  - put, closed loop (``rate`` 0): ``inflight`` asynchronous ``set`` calls kept outstanding; each
    callback (run on PySyncObj's own thread once the command is committed and applied) records the
    latency and issues the next.
  - put, open loop (``rate`` > 0, this member's share): set *i* is due at start + i/rate; latency
    is measured from that intended time (no coordinated omission); at most ``inflight`` are
    outstanding, later ones wait and are charged for it.
  - get: ``ReplDict.get`` is a read of this member's local copy, no network, no log write: a
    *serializable* read only. PySyncObj has no linearizable read short of a log write.
* ``{"cmd": "quit"}``

``start_at`` is a ``time.monotonic_ns()`` value: CLOCK_MONOTONIC is system-wide on Linux, so the
three members (and the parent) share one measurement window.

PySyncObj never fsyncs: its log lives in memory (no journal file configured here, its default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from typing import Any, TextIO

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict

from fastraft.tools.loadgen import HIST_MAX_US, HIST_MIN_US, latency_summary, new_histogram

_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}


def _key(i: int) -> str:
    return f"key-{i:012d}"


def _value(size: int, seed: int) -> str:
    return random.Random(seed).randbytes(size).hex()[:size]  # str: PySyncObj pickles it


class Load:
    """One measured run on this member."""

    def __init__(self, d: ReplDict, c: dict[str, Any]) -> None:
        self.d = d
        self.keys = int(c["keys"])
        self.value = _value(int(c["value_size"]), int(c.get("seed", 1)))
        self.rng = random.Random(int(c.get("seed", 1)))
        self.inflight = max(1, int(c.get("inflight", 1)))
        self.rate = float(c.get("rate", 0.0))
        self.timeout = float(c.get("timeout", 10.0))
        start = int(c.get("start_at", 0))
        now = time.monotonic_ns()
        self.t0 = start if start > now else now
        self.measure_start = self.t0 + int(float(c.get("warmup", 1.0)) * 1e9)
        self.end = self.measure_start + int(float(c["duration"]) * 1e9)
        self.hist = new_histogram()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.ops = 0
        self.last = 0
        self.errors: dict[str, int] = {}
        self.outstanding = 0

    # -- puts

    def _finished(self, intended: int, err: Any) -> None:
        now = time.monotonic_ns()
        with self.lock:
            self.outstanding -= 1
            if err is not None and err != FAIL_REASON.SUCCESS:
                name = _FAIL_NAMES.get(err, str(err))
                self.errors[name] = self.errors.get(name, 0) + 1
            elif intended >= self.measure_start:
                self.hist.record_value(min(max((now - intended) // 1000, HIST_MIN_US),
                                           HIST_MAX_US))
                self.ops += 1
                self.last = now
            self.cond.notify_all()

    def _set(self, intended: int) -> None:
        with self.lock:
            self.outstanding += 1
            key = _key(self.rng.randrange(self.keys))
        done = self._closed_next if self.rate == 0 else self._finished
        self.d.set(key, self.value, callback=lambda res, err, t=intended: done(t, err))

    def _closed_next(self, intended: int, err: Any) -> None:
        self._finished(intended, err)
        now = time.monotonic_ns()
        if now < self.end:
            self._set(now)

    def run_put(self) -> None:
        time.sleep(max(0.0, (self.t0 - time.monotonic_ns()) / 1e9))
        if self.rate == 0:
            for _ in range(self.inflight):
                self._set(time.monotonic_ns())
        else:
            interval = 1e9 / self.rate
            i = 0
            while True:
                due = self.t0 + int(i * interval)
                if due >= self.end:
                    break
                wait = due - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                with self.cond:  # the in-flight cap: wait (bounded) and charge the wait
                    self.cond.wait_for(lambda: self.outstanding < self.inflight,
                                       timeout=max(0.0, (self.end - time.monotonic_ns()) / 1e9)
                                       + self.timeout)
                self._set(due)
                i += 1
        # Wait for the answers still in flight, bounded; the rest count as timeouts. Polled in
        # short slices: the predicate also depends on the clock, which notifies nobody.
        deadline = self.end + int(self.timeout * 1e9)
        with self.cond:
            while time.monotonic_ns() < deadline:
                if self.outstanding == 0 and time.monotonic_ns() >= self.end:
                    break
                self.cond.wait(timeout=0.05)

    # -- gets

    def run_get(self) -> None:
        time.sleep(max(0.0, (self.t0 - time.monotonic_ns()) / 1e9))
        get = self.d.get
        keys = self.keys
        rnd = self.rng.randrange
        rec = self.hist.record_value
        misses = 0
        while True:
            start = time.monotonic_ns()
            if start >= self.end:
                break
            v = get(_key(rnd(keys)))
            now = time.monotonic_ns()
            if v is None:
                misses += 1
            elif start >= self.measure_start:
                rec(min(max((now - start) // 1000, HIST_MIN_US), HIST_MAX_US))
                self.ops += 1
                self.last = now
        if misses:
            self.errors["MISSING_KEY"] = misses

    def result(self, target: str) -> dict[str, Any]:
        with self.lock:
            window = (self.last - self.measure_start) / 1e9 if self.last > self.measure_start else 0
            return {"target": target, "ops": self.ops, "errors": dict(self.errors),
                    "duration_s": round(window, 6),
                    "throughput": round(self.ops / window, 2) if window else 0.0,
                    "latency_ms": latency_summary(self.hist),
                    "histogram": self.hist.encode().decode() if self.ops else "",
                    "timeouts": self.outstanding}


def preload(d: ReplDict, c: dict[str, Any]) -> dict[str, Any]:
    """Set every key once (at most 256 outstanding); bounded wait for all of them."""
    keys = int(c["keys"])
    value = _value(int(c["value_size"]), int(c.get("seed", 1)))
    cond = threading.Condition()
    state = {"out": 0, "done": 0, "errors": 0}

    def cb(res: Any, err: Any) -> None:
        with cond:
            state["out"] -= 1
            state["done"] += 1
            if err != FAIL_REASON.SUCCESS:
                state["errors"] += 1
            cond.notify_all()

    deadline = time.monotonic() + max(30.0, keys / 200)
    for i in range(keys):
        with cond:
            if not cond.wait_for(lambda: state["out"] < 256,
                                 timeout=max(0.0, deadline - time.monotonic())):
                return {"error": f"preload stalled at {i} of {keys}"}
            state["out"] += 1
        d.set(_key(i), value, callback=cb)
    with cond:
        if not cond.wait_for(lambda: state["out"] == 0,
                             timeout=max(0.0, deadline - time.monotonic())):
            return {"error": f"preload: {state['out']} sets unanswered"}
    return {"ops": state["done"], "errors": state["errors"]}


def serve(node: SyncObj, d: ReplDict, me: str, inp: TextIO, out: TextIO) -> None:
    for line in inp:  # EOF: the parent is gone
        try:
            c = json.loads(line)
            cmd = c.get("cmd")
            if cmd == "quit":
                return
            if cmd == "status":
                leader = node._getLeader()
                r: dict[str, Any] = {"self": me, "leader": str(leader) if leader else None,
                                     "is_leader": leader is not None and str(leader) == me}
            elif cmd == "preload":
                r = preload(d, c)
            elif cmd == "run":
                if c.get("op") not in ("put", "get"):
                    raise ValueError(f"unknown op {c.get('op')!r}")
                load = Load(d, c)
                load.run_put() if c["op"] == "put" else load.run_get()
                r = load.result(me)
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except (ValueError, KeyError, TypeError) as e:
            r = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(r) + "\n")
        out.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", required=True)
    ap.add_argument("--partners", required=True, help="comma-separated host:port")
    ap.add_argument("--batch", choices=["on", "off"], default="off",
                    help="appendEntriesUseBatch (on = as shipped)")
    a = ap.parse_args()

    # Answers go to the real stdout; anything a library prints goes to stderr (the log file).
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    d = ReplDict()
    conf = SyncObjConf(appendEntriesUseBatch=a.batch == "on", dynamicMembershipChange=False)
    node = SyncObj(a.self, a.partners.split(","), conf=conf, consumers=[d])
    try:
        serve(node, d, a.self, sys.stdin, out)
    finally:
        node.destroy()


if __name__ == "__main__":
    main()
