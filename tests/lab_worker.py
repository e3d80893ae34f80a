"""A client process for the network-namespace lab (run inside a lab host with
``ip netns exec``): it talks to lab members with fastraft.Client and prints what it saw as JSON
on stdout, for the test to check (tests/netlab.py builds the lab).

    lab_worker.py load --endpoints A,B,C --client ca --keys k0,k1,k2 --until WALL --timeout 1
        puts and linearizable gets, one at a time, until the wall-clock time WALL (bounded by
        --max-ops); each op as {kind, key, value, invoke, complete, wall_invoke, wall_complete,
        outcome, error}; invoke/complete are CLOCK_MONOTONIC (shared by every process of the
        machine, so histories of several workers compare), wall_* are time.time().
    lab_worker.py status --endpoints A,B,C
        each member's own status (or its error).
    lab_worker.py read --endpoints A,B,C --keys k0,k1,k2
        each key read linearizably (through the leader) and at each member (serializable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from fastraft import Client
from fastraft.errors import FastraftError, NoLeaderError, UnavailableError


def _outcome(e: FastraftError) -> str:
    # A write that ends in NoLeader/Unavailable was never applied: every send got a "not
    # applied" answer or no connect completed (a lost answer raises TimeoutError at once).
    # Anything else may or may not have applied: "unknown" is always a safe claim.
    return "fail" if isinstance(e, (NoLeaderError, UnavailableError)) else "unknown"


def load(a: argparse.Namespace) -> list[dict[str, Any]]:
    keys = a.keys.split(",")
    ops: list[dict[str, Any]] = []
    with Client(a.endpoints, timeout=a.timeout) as c:
        seq = 0
        while time.time() < a.until and seq < a.max_ops:
            key = keys[seq % len(keys)]
            put = seq % 2 == 0
            value = f"{a.client}:{seq}"
            op: dict[str, Any] = {"kind": "put" if put else "get", "key": key,
                                  "value": value if put else None, "client": a.client,
                                  "invoke": time.monotonic(), "wall_invoke": time.time(),
                                  "error": None}
            try:
                if put:
                    c.put(key, value)
                else:
                    kvs = c.get(key).kvs
                    op["value"] = kvs[0].value.decode() if kvs else None
                op["outcome"] = "ok"
            except FastraftError as e:
                op["outcome"] = _outcome(e) if put else "fail"
                op["error"] = f"{type(e).__name__}: {e.message}"
            op["complete"], op["wall_complete"] = time.monotonic(), time.time()
            ops.append(op)
            seq += 1
            time.sleep(a.pause)  # bounded load on a shared machine
    return ops


def status(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Client(a.endpoints, timeout=a.timeout) as c:
        for ep in a.endpoints.split(","):
            try:
                out[ep] = c.status(ep)
            except FastraftError as e:
                out[ep] = {"error": e.message}
    return out


def read(a: argparse.Namespace) -> dict[str, Any]:
    keys = a.keys.split(",")
    out: dict[str, Any] = {"linearizable": [], "members": {}}
    with Client(a.endpoints, timeout=a.timeout) as c:
        for key in keys:
            t0 = time.monotonic()
            kvs = c.get(key).kvs
            out["linearizable"].append({"key": key, "value": kvs[0].value.decode() if kvs
                                        else None, "invoke": t0,
                                        "complete": time.monotonic()})
    for ep in a.endpoints.split(","):
        with Client([ep], timeout=a.timeout) as one:
            got = {}
            for key in keys:
                kvs = one.get(key, consistency="serializable").kvs
                got[key] = kvs[0].value.decode() if kvs else None
            out["members"][ep] = got
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["load", "status", "read"])
    p.add_argument("--endpoints", required=True)
    p.add_argument("--client", default="c")
    p.add_argument("--keys", default="k0,k1,k2")
    p.add_argument("--until", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--pause", type=float, default=0.005)
    p.add_argument("--max-ops", type=int, default=20_000)
    a = p.parse_args()
    result = {"load": load, "status": status, "read": read}[a.mode](a)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
