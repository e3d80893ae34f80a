"""One PySyncObj member (a replicated dict) that also generates load inside its own process, as
PySyncObj's design expects (it has no client protocol: commands are method calls on a member).

Each member: wait until the cluster has a leader, wait for the common start time (wall clock,
same machine), keep ``--inflight`` asynchronous ``set`` calls outstanding (closed loop: each
callback, run on PySyncObj's own thread once the command is committed and applied, records the
latency and issues the next), then write its result JSON to ``--out`` and keep serving until
SIGTERM (the others may still need it for a quorum).

PySyncObj never fsyncs: its log lives in memory (no journal file configured here, its default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict

from fastraft.loadgen import HIST_MAX_US, HIST_MIN_US, latency_summary, new_histogram


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", required=True)
    ap.add_argument("--partners", required=True, help="comma-separated host:port")
    ap.add_argument("--batch", choices=["on", "off"], default="off",
                    help="appendEntriesUseBatch (on = as shipped)")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--start-at", type=float, required=True, help="time.time() to start")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    d = ReplDict()
    conf = SyncObjConf(appendEntriesUseBatch=a.batch == "on", dynamicMembershipChange=False)
    node = SyncObj(a.self, a.partners.split(","), conf=conf, consumers=[d])
    deadline = time.time() + 30
    while node._getLeader() is None:  # bounded: the cluster elects within seconds
        if time.time() > deadline or stop.is_set():
            sys.exit("no leader within 30 s")
        time.sleep(0.05)

    rng = random.Random(a.seed)
    value = rng.randbytes(a.value_size).hex()[: a.value_size]  # str: PySyncObj pickles it
    hist = new_histogram()
    lock = threading.Lock()
    state: dict[str, Any] = {"ops": 0, "errors": 0, "last": 0.0, "outstanding": 0}
    measure_start = a.start_at + a.warmup
    end = measure_start + a.duration
    done = threading.Event()

    def issue() -> None:
        t = time.time()
        if t >= end:
            with lock:
                state["outstanding"] -= 1
                if state["outstanding"] == 0:
                    done.set()
            return
        with lock:  # callbacks run on PySyncObj's thread, the first calls on ours
            key = f"key-{rng.randrange(a.keys):012d}"
        d.set(key, value, callback=lambda res, err, t=t: finished(t, err))

    def finished(t: float, err: Any) -> None:
        now = time.time()
        with lock:
            if err is not None and err != 0:  # FAIL_REASON.SUCCESS == 0
                state["errors"] += 1
            elif t >= measure_start:
                hist.record_value(min(max(int((now - t) * 1e6), HIST_MIN_US), HIST_MAX_US))
                state["ops"] += 1
                state["last"] = now
        issue()

    time.sleep(max(0.0, a.start_at - time.time()))
    with lock:
        state["outstanding"] = a.inflight
    for _ in range(a.inflight):
        issue()
    done.wait(timeout=a.warmup + a.duration + 30)
    window = state["last"] - measure_start if state["last"] > measure_start else 0.0
    res = {"target": a.self, "ops": state["ops"], "errors": {"FAIL": state["errors"]}
           if state["errors"] else {}, "duration_s": round(window, 6),
           "throughput": round(state["ops"] / window, 2) if window else 0.0,
           "latency_ms": latency_summary(hist),
           "histogram": hist.encode().decode() if state["ops"] else "",
           "timeouts": state["outstanding"]}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)  # the parent polls for the file: it appears complete or not at all
    stop.wait(timeout=120)
    node.destroy()


if __name__ == "__main__":
    main()
