"""How long writes pause, as a writing client sees it, when the leader is stopped: SIGTERM (each
step of a rolling update: the leader hands over first) and kill -9 (a crash: the others elect
after an election timeout).

    python bench/failover.py [--reps 7] [--events sigterm,kill] [--systems fastraft,etcd]
                             [--python fastraft=/path/to/python ...] [--json out.json]

Per system: 3 members on 127.0.0.1 (fastraft: tools/localcluster, etcd: ``etcd`` from PATH), both
with a 100 ms heartbeat and a 1000 ms election timeout (etcd's defaults). One client process
writes in a loop, one put at a time, each to a new key; it records the CLOCK_MONOTONIC time of
every acknowledged put (and of every error). The harness finds the leader, lets the writer run,
sends the signal to the leader by PID, and keeps the writer going until it has had acks for
``--after`` seconds past the signal (bounded by ``--max-wait``). The pause of one rep is the
largest gap between consecutive acknowledged puts whose later ack comes after the signal; the
baseline gap (median gap before the signal: one put's latency) is printed beside it. Then the
stopped member is started again and the next rep stops whichever member leads then.

Clients: fastraft's own :class:`fastraft.Client` (blocking), default settings. etcd: a blocking
gRPC channel per endpoint with etcd's own protobufs (bench/peers/etcd_driver.py loads them); a put
that fails or gets no answer within 200 ms goes to the next endpoint at once (etcd's followers
forward proposals to the leader, so any live member serves it), as etcd's Go client moves to
another endpoint when one is unavailable.
Writes that fail are counted and listed by error; the pause covers them.

``--python SYSTEM=PATH`` (repeatable, or ``--python fastraft=A,fastraft@main=B``) runs the cluster
and the writer with another interpreter, e.g. one with main's fastraft installed, so before and
after are measured alternating rep by rep in one run: each name is a system ("fastraft@main"
uses fastraft with that interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from fastraft.tools.procs import stop_processes

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_PREFIX = b"failover/"
# Bounds of one writer process: it stops on its own after this long or this many puts.
WRITER_MAX_SECONDS = 60.0
WRITER_MAX_PUTS = 2_000_000
# etcd writer: one attempt's bound before the put goes to the next endpoint. A follower forwards
# a put to the leader it knows: after a kill -9 that is the dead one until the election, and the
# put would wait out its whole timeout. 200 ms is ~100 puts' latency; a put that timed out is
# sent again elsewhere (fine for a benchmark of unique keys; fastraft's client never resends a
# write whose outcome is unknown, and its members answer at once instead).
ETCD_ATTEMPT_TIMEOUT = 0.2


# ----------------------------------------------------------------------------------- writers


def _writer_fastraft(endpoints: str, out: dict[str, Any], stop: threading.Event) -> None:
    from fastraft import Client
    from fastraft.errors import FastraftError

    acks, errors, moves = out["acks"], out["errors"], out["moves"]
    value = b"v" * 64
    with Client(endpoints) as c:
        last = None
        for i in range(WRITER_MAX_PUTS):
            if stop.is_set():
                break
            try:
                c.put(KEY_PREFIX + b"%d" % i, value)
            except FastraftError as e:
                errors.append([time.monotonic(), type(e).__name__, e.message[:200]])
                continue
            acks.append(time.monotonic())
            # Which member acknowledged (the client's remembered leader; a bench-only peek):
            # the first ack from the new leader ends the handover in the breakdown.
            if c._leader != last:
                last = c._leader
                moves.append([acks[-1], f"{last[0]}:{last[1]}" if last else ""])


def _writer_etcd(endpoints: str, out: dict[str, Any], stop: threading.Event) -> None:
    import grpc  # type: ignore[import-untyped]

    sys.path.insert(0, os.path.join(HERE, "peers"))
    from etcd_driver import _methods, load_messages  # type: ignore[import-not-found]

    m = load_messages()
    eps = endpoints.split(",")
    chans = [grpc.insecure_channel(ep) for ep in eps]
    puts = [_methods(ch, m)[0] for ch in chans]
    acks, errors = out["acks"], out["errors"]
    value = b"v" * 64
    cur = int(out.get("start_at", 0))
    try:
        for i in range(WRITER_MAX_PUTS):
            if stop.is_set():
                break
            try:
                puts[cur](m["PutRequest"](key=KEY_PREFIX + b"%d" % i, value=value),
                          timeout=ETCD_ATTEMPT_TIMEOUT)
            except grpc.RpcError as e:
                errors.append([time.monotonic(), str(e.code()), (e.details() or "")[:200]])
                cur = (cur + 1) % len(puts)
                continue
            acks.append(time.monotonic())
    finally:
        for ch in chans:
            ch.close()


def writer_main(kind: str, endpoints: str, start_at: int) -> None:
    """Child process: write until stdin closes (or the bounds); print the record as JSON.

    Prints ``ready`` once the first put is acknowledged."""
    out: dict[str, Any] = {"acks": [], "errors": [], "moves": [], "start_at": start_at}
    stop = threading.Event()
    fn = _writer_fastraft if kind == "fastraft" else _writer_etcd
    t = threading.Thread(target=fn, args=(endpoints, out, stop), daemon=True)
    t.start()
    deadline = time.monotonic() + WRITER_MAX_SECONDS
    while not out["acks"] and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready" if out["acks"] else "failed", flush=True)

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    t.join(10.0)
    print(json.dumps({"acks": out["acks"], "errors": out["errors"], "moves": out["moves"]}),
          flush=True)


# ----------------------------------------------------------------------------------- clusters


class FastraftCluster:
    def __init__(self, base: str, python: str, hb: int, et: int) -> None:
        from fastraft.tools.localcluster import LocalCluster

        self.python = python
        self.c = LocalCluster(3, base, heartbeat_ms=hb, election_ms=et)
        orig_args = self.c.args
        self.c.args = lambda m: [python, *orig_args(m)[1:]]  # type: ignore[method-assign]

    @property
    def endpoints(self) -> str:
        return self.c.endpoints

    def start(self) -> None:
        self.c.start()
        for m in self.c.members:
            self.c.wait_ready(m.name)
        self.c.wait_leader(timeout=30)

    def leader(self) -> tuple[str, int, int]:
        """(name, pid, index in endpoint order) of the leader all members agree on."""
        name = self.c.wait_leader(timeout=30)
        m = self.c.member(name)
        assert m.proc is not None
        return name, m.proc.pid, self.c.members.index(m)

    def restart(self, name: str) -> None:
        m = self.c.member(name)
        if m.proc is not None:
            m.proc.wait(timeout=30)
        self.c.start(name)
        self.c.wait_ready(name, timeout=30)
        # Caught up: its applied index reaches the leader's (bounded).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = {n.name: self.c.status(n.name) for n in self.c.members}
            if all(st.values()):
                applied = [s["raft_applied_index"] for s in st.values() if s]
                if max(applied) - min(applied) <= 1 and len({s["leader"] for s in st.values()
                                                            if s}) == 1:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not catch up within 30 s")

    # What the members logged about the handover, ms after the signal (log stamps: 1 ms).
    _MARKS = (("transfer_started", "old", "starts to transfer leadership"),
              ("timeout_now_received", "any", "received MsgTimeoutNow"),
              ("new_leader_elected", "any", "became leader at term"),
              ("old_leader_learns_it", "old", "elected leader"),
              ("old_member_stopped", "old", " stopped"))

    def log_marks(self, old: str, t_wall: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.c.members:
            for line in m.log_text().splitlines():
                try:
                    stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                    t = stamp + int(line[20:23]) / 1000.0
                except ValueError:
                    continue
                if t < t_wall - 0.002:
                    continue
                for key, who, text in self._MARKS:
                    if key not in out and text in line and (who == "any" or m.name == old):
                        out[key] = round((t - t_wall) * 1e3, 1)
        return out

    def close(self) -> None:
        self.c.close()


class EtcdCluster:
    def __init__(self, base: str, hb: int, et: int) -> None:
        from fastraft.tools.localcluster import free_ports

        if shutil.which("etcd") is None:
            raise RuntimeError("etcd not found on PATH (Debian: etcd-server)")
        self.base = base
        ports = free_ports(6)
        self.members = [(f"e{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.hb, self.et = hb, et

    @property
    def endpoints(self) -> str:
        return ",".join(f"127.0.0.1:{c}" for _, c, _ in self.members)

    def _start_one(self, n: str, state: str) -> None:
        from compare import etcd_command  # bench/ is the script's directory

        cmd = etcd_command(self.base, self.members, n, "failover", state,
                           ["--heartbeat-interval", str(self.hb),
                            "--election-timeout", str(self.et)])
        with open(os.path.join(self.base, f"{n}.log"), "ab") as log:
            self.procs[n] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log)

    def start(self) -> None:
        for n, _, _ in self.members:
            self._start_one(n, "new")
        self.leader()

    def _statuses(self) -> dict[str, Any]:
        import grpc

        sys.path.insert(0, os.path.join(HERE, "peers"))
        from etcd_driver import _methods, load_messages

        m = load_messages()
        out: dict[str, Any] = {}
        for n, c, _ in self.members:
            with grpc.insecure_channel(f"127.0.0.1:{c}") as ch:
                try:
                    out[n] = _methods(ch, m)[2](m["StatusRequest"](), timeout=0.5)
                except grpc.RpcError:
                    out[n] = None
        return out

    def leader(self) -> tuple[str, int, int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = self._statuses()
            live = [s for s in st.values() if s is not None]
            if len(live) == len(self.members) and len({s.leader for s in live}) == 1:
                lid = live[0].leader
                for i, (n, _, _) in enumerate(self.members):
                    s = st[n]
                    if lid and s is not None and s.header.member_id == lid:
                        return n, self.procs[n].pid, i
            time.sleep(0.05)
        raise RuntimeError("etcd: no leader all members agree on within 30 s")

    def restart(self, name: str) -> None:
        self.procs[name].wait(timeout=30)
        self._start_one(name, "existing")
        self.leader()

    def close(self) -> None:
        stop_processes(list(self.procs.values()))


# ----------------------------------------------------------------------------------- one rep


def _start_writer(python: str, kind: str, endpoints: str, start_at: int) -> subprocess.Popen:
    p = subprocess.Popen([python, os.path.abspath(__file__), "--writer", kind,
                          "--endpoints", endpoints, "--start-at", str(start_at)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        p.wait(timeout=10)
        raise RuntimeError(f"{kind} writer did not start: {line!r}")
    return p


def _finish_writer(p: subprocess.Popen) -> dict[str, Any]:
    try:
        out, _ = p.communicate(input="", timeout=WRITER_MAX_SECONDS + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)
        raise
    rec: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return rec


def measure(rec: dict[str, Any], t_event: float) -> dict[str, Any]:
    """The pause: the largest gap between consecutive acks whose later one follows the event."""
    acks: list[float] = rec["acks"]
    before = [b - a for a, b in zip(acks, acks[1:]) if b < t_event]
    after = [(b - a, a, b) for a, b in zip(acks, acks[1:]) if b >= t_event]
    if not after:
        return {"pause_ms": None, "error": "no ack after the event"}
    gap, a, b = max(after)
    errs = [e for e in rec["errors"] if e[0] >= t_event - 1.0]
    kinds: dict[str, int] = {}
    for e in errs:
        kinds[e[1]] = kinds.get(e[1], 0) + 1
    top = sorted(after, reverse=True)[:3]
    return {"pause_ms": gap * 1e3,
            "top_gaps": [[round(g * 1e3, 1), round((x - t_event) * 1e3, 1)] for g, x, _ in top], "gap_start_ms": (a - t_event) * 1e3,
            "gap_end_ms": (b - t_event) * 1e3,
            "base_gap_ms": statistics.median(before) * 1e3 if before else None,
            # The noise floor: the largest gap of the same client before the event.
            "base_max_ms": max(before) * 1e3 if before else None,
            "acks": len(acks), "errors": kinds,
            "error_detail": [[round((e[0] - t_event) * 1e3, 1), e[1], e[2]] for e in errs[:5]]}


def one_rep(cl: Any, python: str, kind: str, event: str, after: float, max_wait: float,
            warmup: float) -> dict[str, Any]:
    name, pid, idx = cl.leader()
    w = _start_writer(python, kind, cl.endpoints, idx)
    try:
        time.sleep(warmup)
        t_event, t_wall = time.monotonic(), time.time()
        os.kill(pid, signal.SIGTERM if event == "sigterm" else signal.SIGKILL)
        # Wait for acks `after` seconds past the event; the writer is bounded on its own too.
        time.sleep(min(max_wait, after + (0.5 if event == "sigterm" else 2.5)))
    finally:
        rec = _finish_writer(w)
    res = measure(rec, t_event)
    res["stopped"] = name
    marks = cl.log_marks(name, t_wall) if hasattr(cl, "log_marks") else {}
    moved = [t for t, _ in rec.get("moves", []) if t >= t_event]
    if moved:
        marks["client_first_ack_elsewhere"] = round((moved[0] - t_event) * 1e3, 1)
    res["marks"] = marks
    if moved:
        # The handover's own gap: the largest one that ends by the first ack from another
        # member (the rest of the window measures the machine as much as the failover).
        own = [b - a for a, b in zip(rec["acks"], rec["acks"][1:]) if t_event < b <= moved[0]]
        res["handover_gap_ms"] = round(max(own) * 1e3, 2) if own else None
    cl.restart(name)
    time.sleep(0.3)
    return res


# ----------------------------------------------------------------------------------- main


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(xs), "max_ms": max(xs), "min_ms": min(xs)}


def _cols(v: dict[str, float] | None, width: int) -> str:
    """median and max, right-aligned under their headers."""
    if v is None:
        return f"{'-':>{width}} {'-':>8}"
    return f"{v['median_ms']:{width}.1f} {v['max_ms']:8.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", choices=("fastraft", "etcd"), help=argparse.SUPPRESS)
    ap.add_argument("--endpoints", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--events", default="sigterm,kill")
    ap.add_argument("--systems", default="fastraft")
    ap.add_argument("--python", action="append", default=[],
                    help="SYSTEM=PATH: interpreter for that system (fastraft@label=PATH adds one)")
    ap.add_argument("--heartbeat-ms", type=int, default=100)
    ap.add_argument("--election-ms", type=int, default=1000)
    ap.add_argument("--after", type=float, default=0.5,
                    help="seconds of writing after the event (plus the failover itself)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of writing before the event (the noise floor is read there)")
    ap.add_argument("--max-wait", type=float, default=8.0)
    ap.add_argument("--json", help="write every rep's record here")
    ap.add_argument("--dir", help="parent of the data dirs (default: a temp dir)")
    a = ap.parse_args(argv)
    if a.writer:
        writer_main(a.writer, a.endpoints, a.start_at)
        return 0
    if not 1 <= a.reps <= 50:
        ap.error("--reps must be 1..50")
    events = [e for e in a.events.split(",") if e]
    if any(e not in ("sigterm", "kill") for e in events):
        ap.error("--events: sigterm and/or kill")
    pythons: dict[str, str] = {}
    for spec in a.python:
        for part in spec.split(","):
            k, _, v = part.partition("=")
            pythons[k] = v
    systems = [s for s in a.systems.split(",") if s] + [k for k in pythons if k not in a.systems]
    for s in systems:
        if s.split("@")[0] not in ("fastraft", "etcd"):
            ap.error(f"unknown system {s}")

    tmp = tempfile.mkdtemp(prefix="failover-", dir=a.dir)
    clusters: dict[str, Any] = {}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {e: [] for e in events}
                                                          for s in systems}
    t_start = time.time()
    try:
        for s in systems:
            base = os.path.join(tmp, s.replace("@", "-"))
            os.makedirs(base)
            if s.startswith("etcd"):
                clusters[s] = EtcdCluster(base, a.heartbeat_ms, a.election_ms)
            else:
                clusters[s] = FastraftCluster(base, pythons.get(s, sys.executable),
                                              a.heartbeat_ms, a.election_ms)
            clusters[s].start()
        # Alternate: rep r of every event on every system before rep r + 1.
        for r in range(a.reps):
            for e in events:
                for s in systems:
                    kind = "etcd" if s.startswith("etcd") else "fastraft"
                    py = pythons.get(s, sys.executable) if kind == "fastraft" else sys.executable
                    res = one_rep(clusters[s], py, kind, e, a.after, a.max_wait, a.warmup)
                    results[s][e].append(res)
                    print(f"rep {r + 1} {s:>16} {e:>7}: pause {res['pause_ms'] or 0:8.1f} ms, "
                          f"handover gap {res.get('handover_gap_ms') or 0:.1f} ms "
                          f"(gap {res.get('gap_start_ms', 0):+.1f}..{res.get('gap_end_ms', 0):+.1f}"
                          f" ms from the signal; base {res.get('base_gap_ms') or 0:.2f} ms, max before "
                          f"{res.get('base_max_ms') or 0:.1f} ms; "
                          f"errors {res.get('errors')}; top gaps [ms, start] {res.get('top_gaps')})\n"
                          f"      marks (ms after the signal): {res.get('marks')}",
                          flush=True)
    finally:
        for cl in clusters.values():
            cl.close()
        if a.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_start))}, "
          f"{os.cpu_count()} cores, heartbeat {a.heartbeat_ms} ms, election {a.election_ms} ms, "
          f"{a.reps} reps")
    print("pause: largest gap between acks after the signal; handover gap: largest one up to "
          "the first ack from another member; floor: largest gap in the same client's "
          f"{a.warmup:g} s before the signal (the machine's own noise)")
    print(f"{'system':>16} {'event':>7} {'pause median':>12} {'max':>8} {'handover med':>12} "
          f"{'max':>8} {'floor med':>9} {'max':>8}  client errors")
    summary: dict[str, Any] = {}
    for s in systems:
        for e in events:
            rs = results[s][e]
            xs = [x["pause_ms"] for x in rs if x["pause_ms"] is not None]
            hs = [x["handover_gap_ms"] for x in rs if x.get("handover_gap_ms") is not None]
            fs = [x["base_max_ms"] for x in rs if x.get("base_max_ms") is not None]
            kinds: dict[str, int] = {}
            for x in rs:
                for k, v in x.get("errors", {}).items():
                    kinds[k] = kinds.get(k, 0) + v
            if not xs:
                continue
            sm: dict[str, Any] = {"pause": _summary(xs), "handover": _summary(hs) if hs else None,
                                  "floor": _summary(fs) if fs else None, "errors": kinds}
            summary[f"{s}/{e}"] = sm
            print(f"{s:>16} {e:>7} {_cols(sm['pause'], 12)} {_cols(sm['handover'], 12)} "
                  f"{_cols(sm['floor'], 9)}  {kinds or 'none'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "summary": summary, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
