"""A client process for the network-namespace lab (run inside a lab host with
``ip netns exec``): it talks to lab members with fastraft.Client and prints what it saw as JSON
on stdout, for the test to check (tests/netlab.py builds the lab).

    lab_worker.py load --endpoints A,B,C --client ca --keys k0,k1,k2 --until WALL --timeout 1
        puts and linearizable gets, one at a time (with the AsyncClient if --async), until the
        wall-clock time WALL (bounded by --max-ops); each op as {kind, key, value, invoke, complete, wall_invoke, wall_complete,
        outcome, error}; invoke/complete are CLOCK_MONOTONIC (shared by every process of the
        machine, so histories of several workers compare), wall_* are time.time().
    lab_worker.py status --endpoints A,B,C
        each member's own status (or its error).
    lab_worker.py read --endpoints A,B,C --keys k0,k1,k2
        each key read linearizably (through the leader) and at each member (serializable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from fastraft import AsyncClient, Client
from fastraft.errors import FastraftError, NoLeaderError, UnavailableError


def _outcome(e: FastraftError) -> str:
    # A write that ends in NoLeader/Unavailable was never applied: every send got a "not
    # applied" answer or no connect completed (a lost answer raises TimeoutError at once).
    # Anything else may or may not have applied: "unknown" is always a safe claim.
    return "fail" if isinstance(e, (NoLeaderError, UnavailableError)) else "unknown"


def _ops(a: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The ops to run, each stamped as invoked when handed out (right before it runs)."""
    keys = a.keys.split(",")
    seq = 0
    while time.time() < a.until and seq < a.max_ops:
        put = seq % 2 == 0
        yield {"kind": "put" if put else "get", "key": keys[seq % len(keys)],
               "value": f"{a.client}:{seq}" if put else None, "client": a.client,
               "invoke": time.monotonic(), "wall_invoke": time.time(), "error": None}
        seq += 1


def _done(op: dict[str, Any], kvs: list[Any] | None, e: FastraftError | None) -> None:
    if e is None:
        op["outcome"] = "ok"
        if op["kind"] == "get":
            op["value"] = kvs[0].value.decode() if kvs else None
    else:
        op["outcome"] = _outcome(e) if op["kind"] == "put" else "fail"
        op["error"] = f"{type(e).__name__}: {e.message}"
    op["complete"], op["wall_complete"] = time.monotonic(), time.time()


def load(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Puts and linearizable gets with the blocking Client, one at a time."""
    ops: list[dict[str, Any]] = []
    with Client(a.endpoints, timeout=a.timeout) as c:
        for op in _ops(a):
            try:
                if op["kind"] == "put":
                    c.put(op["key"], op["value"])
                    _done(op, None, None)
                else:
                    _done(op, c.get(op["key"]).kvs, None)
            except FastraftError as e:
                _done(op, None, e)
            ops.append(op)
            time.sleep(a.pause)  # bounded load on a shared machine
    return ops


async def load_async(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The same with the AsyncClient."""
    ops: list[dict[str, Any]] = []
    async with AsyncClient(a.endpoints, timeout=a.timeout) as c:
        for op in _ops(a):
            try:
                if op["kind"] == "put":
                    await c.put(op["key"], op["value"])
                    _done(op, None, None)
                else:
                    _done(op, (await c.get(op["key"])).kvs, None)
            except FastraftError as e:
                _done(op, None, e)
            ops.append(op)
            await asyncio.sleep(a.pause)
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
    p.add_argument("--async", dest="use_async", action="store_true",
                   help="load with AsyncClient instead of Client")
    a = p.parse_args()
    if a.mode == "load" and a.use_async:
        result: Any = asyncio.run(load_async(a))
    else:
        result = {"load": load, "status": status, "read": read}[a.mode](a)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
