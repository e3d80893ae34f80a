"""The PACELC lab's workload: a worker process that runs inside a lab client host (``ip netns
exec``) and records every operation it made, for measure.py to turn into figures.

Each operation is a *level*: ``write`` (a put), or a read at ``linearizable``, ``lease``,
``serializable`` or ``bounded`` (etcd: ``linearizable`` and ``serializable`` only). A record is
``[level, invoke, complete, revision | None, error | None, contact_age | None]``:
invoke/complete are CLOCK_MONOTONIC (one clock for every process of the machine, namespaces
included, so the write history of one worker and the reads of another compare); revision is the
answer's ``header.revision`` (what the member had applied); error the error's type name;
contact_age the answer's ``header.contact_age`` (seconds since the answering member last heard
from a leader, for local reads of builds that report it; etcd: None).

Modes (every loop is bounded by a count and a time):

* ``closed``: ``--conc`` threads, each one operation at a time at ``--level``, until
  ``--max-ops`` in all or ``--seconds``; for latency and throughput. With ``--bg-writer EP``
  a thread also puts at ``--rate`` to EP from a little before until the end (``writes``).
* ``writer``: puts at ``--rate`` per second (paced, one at a time) for ``--seconds``: the
  acknowledged write history that staleness is measured against.
* ``status``: each of ``--endpoints``' status once (member id, leader, term), to stdout.
* ``sides``: one thread per level in ``--levels``, each one operation at a time with
  ``--pause`` between, plus a status poller of the client's own member every 0.1 s, until
  CLOCK_MONOTONIC ``--until``; for partitions.

Output: one JSON document to ``--out``: ``{"ops": [...], "status": [[t, member, leader, term |
error]...], "errors": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, Protocol

from fastraft.tools.pacelc.etcd import EtcdClient, EtcdError

__all__ = ["FASTRAFT_LEVELS", "ETCD_LEVELS", "Target", "main"]

FASTRAFT_LEVELS = ("write", "linearizable", "lease", "serializable", "bounded")
ETCD_LEVELS = ("write", "linearizable", "serializable")

Op = list[Any]


class Target(Protocol):
    def put(self, key: str, value: str) -> int: ...
    def get(self, key: str, level: str) -> tuple[int, float | None]: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _Fastraft:
    """fastraft's blocking Client, its endpoints the client host's own member first."""

    def __init__(self, endpoint: str, timeout: float, max_staleness: float) -> None:
        from fastraft.client import Client
        self.endpoint = endpoint
        self.c = Client([endpoint], timeout=timeout)
        self.max_staleness = max_staleness

    def put(self, key: str, value: str) -> int:
        return int(self.c.put(key, value).header.revision)

    def get(self, key: str, level: str) -> tuple[int, float | None]:
        if level == "bounded":
            r = self.c.get(key, consistency=level,  # type: ignore[arg-type,call-arg,unused-ignore]
                           max_staleness=self.max_staleness)
        else:
            r = self.c.get(key, consistency=level)  # type: ignore[arg-type,unused-ignore]
        age = getattr(r.header, "contact_age", None)  # builds before read levels: absent
        return int(r.header.revision), (None if age is None else float(age))

    def status(self) -> dict[str, Any]:
        st = self.c.status(self.endpoint)
        return {"member_id": int(st["member_id"]), "leader": int(st.get("leader") or 0),
                "term": int(st.get("raft_term") or 0)}

    def close(self) -> None:
        self.c.close()


class _Etcd:
    def __init__(self, endpoint: str, timeout: float) -> None:
        host, _, port = endpoint.rpartition(":")
        self.c = EtcdClient(host, int(port), timeout)

    def put(self, key: str, value: str) -> int:
        return self.c.put(key, value)

    def get(self, key: str, level: str) -> tuple[int, float | None]:
        if level not in ("linearizable", "serializable"):
            raise EtcdError("Unsupported", f"etcd has no {level} read")
        return self.c.get(key, level == "serializable"), None

    def status(self) -> dict[str, Any]:
        return self.c.status()

    def close(self) -> None:
        self.c.close()


def make_target(system: str, endpoint: str, timeout: float, max_staleness: float) -> Target:
    if system == "fastraft":
        return _Fastraft(endpoint, timeout, max_staleness)
    return _Etcd(endpoint, timeout)


def _error_name(e: BaseException) -> str:
    if isinstance(e, EtcdError):
        return e.kind
    return type(e).__name__


def one(t: Target, level: str, key: str, seq: int, tag: str) -> Op:
    """Run one operation and return its record (never raises for an operation's failure)."""
    t0 = time.monotonic()
    try:
        age = None
        if level == "write":
            rev = t.put(key, f"{tag}:{seq}")
        else:
            rev, age = t.get(key, level)
        return [level, t0, time.monotonic(), rev, None, age]
    # Any failure of the operation is a measurement (a refusal, a timeout, a level this build
    # does not have: BadRequest/TypeError), recorded by type name; nothing is swallowed silently.
    except Exception as e:  # noqa: BLE001
        return [level, t0, time.monotonic(), None, _error_name(e), None]


def closed(a: argparse.Namespace) -> dict[str, Any]:
    ops: list[Op] = []
    writes: list[Op] = []
    lock = threading.Lock()
    count = [0]
    done = threading.Event()

    def background() -> None:
        # The acknowledged write history that the reads' staleness is measured against.
        t = make_target(a.system, a.bg_writer, a.timeout, a.max_staleness)
        start, seq = time.monotonic(), 0
        try:
            while not done.is_set() and seq < 100_000:
                seq += 1
                writes.append(one(t, "write", a.key, seq, "bg"))
                done.wait(max(0.0, start + seq / a.rate - time.monotonic()))
        finally:
            t.close()

    bg = None
    if a.bg_writer:
        bg = threading.Thread(target=background)
        bg.start()
        time.sleep(0.2)  # some history before the first read
    deadline = time.monotonic() + a.seconds

    def run(i: int) -> None:
        t = make_target(a.system, a.endpoint, a.timeout, a.max_staleness)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if count[0] >= a.max_ops:
                        return
                    count[0] += 1
                    seq = count[0]
                op = one(t, a.level, a.key, seq, f"{a.tag}{i}")
                with lock:
                    ops.append(op)
                if op[4] is not None:
                    time.sleep(0.01)  # a refusal comes back fast: do not spin on it
        finally:
            t.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(a.conc)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    if bg is not None:
        bg.join()
    return {"ops": ops, "writes": writes, "status": []}


def writer(a: argparse.Namespace) -> dict[str, Any]:
    ops: list[Op] = []
    t = make_target(a.system, a.endpoint, a.timeout, a.max_staleness)
    start = time.monotonic()
    deadline = start + a.seconds
    seq = 0
    try:
        while time.monotonic() < deadline and seq < a.max_ops:
            seq += 1
            ops.append(one(t, "write", a.key, seq, a.tag))
            nxt = start + seq / a.rate
            time.sleep(max(0.0, min(nxt, deadline) - time.monotonic()))
    finally:
        t.close()
    return {"ops": ops, "status": []}


def sides(a: argparse.Namespace) -> dict[str, Any]:
    ops: list[Op] = []
    status: list[list[Any]] = []
    lock = threading.Lock()

    def run(level: str) -> None:
        t = make_target(a.system, a.endpoint, a.timeout, a.max_staleness)
        seq = 0
        try:
            while time.monotonic() < a.until and seq < a.max_ops:
                seq += 1
                op = one(t, level, a.key, seq, a.tag)
                with lock:
                    ops.append(op)
                time.sleep(a.pause)
        finally:
            t.close()

    def poll() -> None:
        t = make_target(a.system, a.endpoint, min(a.timeout, 0.5), a.max_staleness)
        try:
            while time.monotonic() < a.until:
                t0 = time.monotonic()
                try:
                    st = t.status()
                    status.append([t0, st["member_id"], st["leader"], st["term"]])
                except Exception as e:  # noqa: BLE001 - an unanswered poll is a data point
                    status.append([t0, None, None, _error_name(e)])
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
        finally:
            t.close()

    threads = [threading.Thread(target=run, args=(lv,)) for lv in a.levels.split(",")]
    threads.append(threading.Thread(target=poll))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"ops": ops, "status": status}


def status(a: argparse.Namespace) -> dict[str, Any]:
    """Each of ``--endpoints``' own status, or the error's name."""
    out: dict[str, Any] = {}
    for ep in a.endpoints.split(","):
        t = make_target(a.system, ep, a.timeout, a.max_staleness)
        try:
            out[ep] = t.status()
        except Exception as e:  # noqa: BLE001 - an unanswered member is an answer here
            out[ep] = {"error": _error_name(e)}
        finally:
            t.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="PACELC lab worker (runs inside a lab host)")
    ap.add_argument("mode", choices=["closed", "writer", "sides", "status"])
    ap.add_argument("--system", choices=["fastraft", "etcd"], required=True)
    ap.add_argument("--endpoint", default="", help="host:port of the client's own member")
    ap.add_argument("--endpoints", default="", help="status: host:port,...")
    ap.add_argument("--level", default="write")
    ap.add_argument("--levels", default=",".join(FASTRAFT_LEVELS))
    ap.add_argument("--key", default="pacelc")
    ap.add_argument("--tag", default="w")
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--max-ops", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=50.0, help="writer / --bg-writer: puts/s")
    ap.add_argument("--bg-writer", default="", help="closed: also put at --rate to this "
                                                   "endpoint while the operations run")
    ap.add_argument("--until", type=float, default=0.0)
    ap.add_argument("--pause", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--max-staleness", type=float, default=0.5)
    ap.add_argument("--out", default="-", help="file for the JSON result (- : stdout)")
    a = ap.parse_args(argv)
    if not (1 <= a.conc <= 64 and a.max_ops >= 1 and 0 < a.seconds <= 600 and a.rate > 0):
        ap.error("need 1 <= conc <= 64, max-ops >= 1, 0 < seconds <= 600, rate > 0")
    if a.mode == "sides" and not 0 < a.until - time.monotonic() <= 600:
        ap.error("--until must be within the next 600 s (CLOCK_MONOTONIC)")
    if a.mode != "status" and not a.endpoint:
        ap.error("--endpoint is required")
    result = {"closed": closed, "writer": writer, "sides": sides, "status": status}[a.mode](a)
    if a.out == "-":
        json.dump(result, sys.stdout)
    else:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
