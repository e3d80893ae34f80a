"""Side by side: fastraft, etcd 3.4 and PySyncObj, 3 members each on 127.0.0.1, same workload
shape (closed loop, N requests in flight, puts of V-byte values over K keys), alternating
systems, repeated; prints medians and ratios.

    python bench/compare.py                       # defaults: 3 reps x (1 s warm-up + 3 s) each
    python bench/compare.py --reps 5 --duration 10 --clients 128 --json out.json

Each system is driven by a client of its own kind:

* fastraft: ``python -m fastraft.loadgen`` (pipelined frames over the client protocol).
* etcd: ``bench/peers/etcd_driver.py`` (grpc.aio + etcd's protobufs; see its docstring).
* PySyncObj: no client protocol, so the load runs inside its 3 member processes
  (``bench/peers/pso_node.py``), ``--clients`` split over them, each member its own generator.

Durability differs and the table says so: fastraft and etcd fsync before acknowledging;
PySyncObj never fsyncs (in-memory log). Each client's own ceiling (against a do-nothing server
of the same protocol) is measured once and printed, so a ratio is not read as a server's limit
when it is the client's. Every process started here is stopped by PID; waits are bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")


def free_ports(n: int) -> list[int]:
    import socket
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_pids(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM each by PID, bounded wait, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _timed_run(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run a client process; also return its CPU use (user+sys over wall time, 1.0 = a core).

    Measured over the client's whole life (start-up and warm-up included): a rough but honest
    sign of whether the client, rather than the server, was the limit.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r, round(cpu / wall, 3) if wall > 0 else 0.0


def _run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    r, cpu = _timed_run(cmd, timeout)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["client_cpu"] = cpu
    return res


def _start_line_server(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    """Start a server that prints `LISTENING <port>` first."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("LISTENING "):
        stop_pids([p])
        raise RuntimeError(f"{cmd} did not start: {line!r}")
    return p, int(line.split()[1])


# ------------------------------------------------------------------------------- fastraft


class Fastraft:
    name = "fastraft"
    durability = "fsync before ack (group commit)"

    def __init__(self, base: str) -> None:
        from fastraft.localcluster import LocalCluster
        self.cluster = LocalCluster(3, os.path.join(base, "fastraft"))

    def start(self) -> None:
        self.cluster.start()
        for m in self.cluster.members:
            self.cluster.wait_ready(m.name, timeout=30)
        self.cluster.wait_leader(timeout=30)

    def stop(self) -> None:
        self.cluster.close()

    @staticmethod
    def _cmd(endpoints: str, a: argparse.Namespace, out: str) -> list[str]:
        return [sys.executable, "-m", "fastraft.loadgen", "--endpoints", endpoints,
                "--workload", "put", "--clients", str(a.clients), "--conns", str(a.conns),
                "--keys", str(a.keys), "--value-size", str(a.value_size),
                "--warmup", str(a.warmup), "--duration", str(a.duration), "--quiet",
                "--json", out]

    def run(self, a: argparse.Namespace, tmp: str) -> dict[str, Any]:
        out = os.path.join(tmp, "fastraft.json")
        _, cpu = _timed_run(self._cmd(self.cluster.endpoints, a, out),
                            timeout=a.warmup + a.duration + 120)
        with open(out) as f:
            res = json.load(f)["result"]
        res["client_cpu"] = cpu
        return res

    @classmethod
    def ceiling(cls, a: argparse.Namespace, tmp: str) -> dict[str, Any]:
        from fastraft.loadgen import _stop_proc, start_noop_subprocess
        p, ep = start_noop_subprocess()
        try:
            out = os.path.join(tmp, "fastraft-noop.json")
            subprocess.run(cls._cmd(ep, a, out), check=True, capture_output=True,
                           timeout=a.warmup + a.duration + 120)
            with open(out) as f:
                return json.load(f)["result"]
        finally:
            _stop_proc(p)


# ----------------------------------------------------------------------------------- etcd


class Etcd:
    name = "etcd"
    durability = "fsync before ack (etcd default)"

    def __init__(self, base: str) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd not found: apt-get install -y etcd-server etcd-client")
        self.base = os.path.join(base, "etcd")
        os.makedirs(self.base, exist_ok=True)
        ports = free_ports(6)
        self.members = [(f"e{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        self.procs: list[subprocess.Popen] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{c}" for _, c, _ in self.members]

    def start(self) -> None:
        cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in self.members)
        for n, c, p in self.members:
            log = open(os.path.join(self.base, f"{n}.log"), "ab")
            self.procs.append(subprocess.Popen([
                "etcd", "--name", n, "--data-dir", os.path.join(self.base, f"{n}.etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{c}",
                "--advertise-client-urls", f"http://127.0.0.1:{c}",
                "--listen-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-cluster", cluster, "--initial-cluster-token", "compare",
                "--initial-cluster-state", "new"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            log.close()

    def stop(self) -> None:
        stop_pids(self.procs)

    @staticmethod
    def _cmd(endpoints: list[str], a: argparse.Namespace) -> list[str]:
        return [sys.executable, os.path.join(PEERS, "etcd_driver.py"),
                "--endpoints", ",".join(endpoints), "--clients", str(a.clients),
                "--channels", str(a.conns), "--keys", str(a.keys),
                "--value-size", str(a.value_size), "--warmup", str(a.warmup),
                "--duration", str(a.duration)]

    def run(self, a: argparse.Namespace, tmp: str) -> dict[str, Any]:
        return _run_json(self._cmd(self.endpoints, a), timeout=a.warmup + a.duration + 120)

    @classmethod
    def ceiling(cls, a: argparse.Namespace, tmp: str) -> dict[str, Any]:
        p, port = _start_line_server([sys.executable, os.path.join(PEERS, "etcd_driver.py"),
                                      "--noop-server"])
        try:
            return _run_json(cls._cmd([f"127.0.0.1:{port}"], a),
                             timeout=a.warmup + a.duration + 120)
        finally:
            stop_pids([p])


# ------------------------------------------------------------------------------ PySyncObj


class PySyncObj:
    name = "pysyncobj"
    durability = "never fsyncs (in-memory log)"

    def __init__(self, base: str, batch: str) -> None:
        self.base = os.path.join(base, "pysyncobj")
        os.makedirs(self.base, exist_ok=True)
        self.batch = batch

    def start(self) -> None:  # the members are the load generators: started per run
        pass

    def stop(self) -> None:
        pass

    def run(self, a: argparse.Namespace, tmp: str) -> dict[str, Any]:
        from fastraft.loadgen import latency_summary, merge_encoded
        ports = free_ports(3)
        addrs = [f"127.0.0.1:{p}" for p in ports]
        start_at = time.time() + 4.0  # members start and elect within this (bounded below)
        outs = [os.path.join(tmp, f"pso{i}.json") for i in range(3)]
        procs = []
        for i, me in enumerate(addrs):
            inflight = a.clients // 3 + (1 if i < a.clients % 3 else 0)
            log = open(os.path.join(self.base, f"m{i}.log"), "ab")
            procs.append(subprocess.Popen([
                sys.executable, os.path.join(PEERS, "pso_node.py"), "--self", me,
                "--partners", ",".join(x for x in addrs if x != me), "--batch", self.batch,
                "--inflight", str(max(1, inflight)), "--keys", str(a.keys),
                "--value-size", str(a.value_size), "--start-at", str(start_at),
                "--warmup", str(a.warmup), "--duration", str(a.duration), "--out", outs[i],
                "--seed", str(i + 1)], stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            log.close()
        try:
            deadline = time.monotonic() + 4.0 + a.warmup + a.duration + 60
            while not all(os.path.exists(o) for o in outs):
                if time.monotonic() > deadline:
                    raise RuntimeError("PySyncObj members did not report in time")
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a PySyncObj member exited ({dead[0].returncode}); "
                                       f"see {self.base}")
                time.sleep(0.1)
        finally:
            stop_pids(procs)
        parts = []
        for o in outs:
            with open(o) as f:
                parts.append(json.load(f))
            os.remove(o)
        h = merge_encoded([p["histogram"] for p in parts])
        ops = sum(p["ops"] for p in parts)
        window = max(p["duration_s"] for p in parts)
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {"target": ",".join(addrs), "ops": ops, "errors": errors,
                "duration_s": window, "throughput": round(ops / window, 2) if window else 0.0,
                "latency_ms": latency_summary(h)}


# ---------------------------------------------------------------------------------- main


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fastraft vs etcd vs PySyncObj, side by side")
    ap.add_argument("--systems", default="fastraft,etcd,pysyncobj")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=64, help="requests in flight in total")
    ap.add_argument("--conns", type=int, default=4, help="connections (fastraft) / channels (etcd)")
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--pso-batch", choices=["on", "off"], default="off",
                    help="PySyncObj appendEntriesUseBatch (on = as shipped; off is far faster "
                         "here, see FACTS.md)")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the client ceilings")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = set(names) - {"fastraft", "etcd", "pysyncobj"}
    if bad or not names:
        ap.error(f"unknown systems: {', '.join(sorted(bad)) or '(none)'}")
    if a.reps < 1 or a.duration <= 0 or a.warmup < 0 or a.clients < a.conns or a.conns < 1:
        ap.error("need reps >= 1, duration > 0, warmup >= 0, clients >= conns >= 1")

    base = tempfile.mkdtemp(prefix="fastraft-compare-")
    tmp = os.path.join(base, "results")
    os.makedirs(tmp)
    systems: list[Any] = []
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    ceilings: dict[str, Any] = {}
    try:
        for n in names:
            s = {"fastraft": lambda: Fastraft(base), "etcd": lambda: Etcd(base),
                 "pysyncobj": lambda: PySyncObj(base, a.pso_batch)}[n]()
            s.start()
            systems.append(s)
        for rep in range(a.reps):
            order = systems if rep % 2 == 0 else systems[::-1]  # alternate who goes first
            for s in order:
                print(f"rep {rep + 1}/{a.reps}: {s.name} ...", file=sys.stderr, flush=True)
                r = s.run(a, tmp)
                results[s.name].append(r)
                print(f"  {r['throughput']:,.0f} ops/s  p50 {r['latency_ms']['p50']:.2f} ms  "
                      f"p99 {r['latency_ms']['p99']:.2f} ms  errors {r['errors']}",
                      file=sys.stderr, flush=True)
        if not a.no_ceilings:
            for s in systems:
                if s.name in ("fastraft", "etcd"):
                    print(f"client ceiling: {s.name} ...", file=sys.stderr, flush=True)
                    ceilings[s.name] = type(s).ceiling(a, tmp)
    finally:
        for s in systems:
            s.stop()
        shutil.rmtree(base, ignore_errors=True)

    med = {n: {"throughput": _median([r["throughput"] for r in rs]),
               "p50": _median([r["latency_ms"]["p50"] for r in rs]),
               "p99": _median([r["latency_ms"]["p99"] for r in rs]),
               "errors": sum(sum(r["errors"].values()) for r in rs),
               "client_cpu": _median([r.get("client_cpu", 0.0) for r in rs])}
           for n, rs in results.items()}
    dur = {s.name: s.durability for s in systems}
    print(f"\nput, {a.clients} in flight, {a.value_size} B values, {a.keys} keys; "
          f"{a.reps} reps x {a.duration:g} s (+{a.warmup:g} s warm-up); medians")
    print(f"{'system':<10} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'client CPU':>10} {'vs no-op':>10}  durability")
    for n in names:
        m = med[n]
        c = ceilings.get(n)
        cs = f"{c['throughput']:,.0f}/s" if c else "-"
        cpu = f"{100 * m['client_cpu']:.0f}%" if n != "pysyncobj" else "in-proc"
        print(f"{n:<10} {m['throughput']:>10,.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} "
              f"{m['errors']:>7} {cpu:>10} {cs:>10}  {dur[n]}")
    print("client CPU: the client process's CPU over its life (100% = one core). vs no-op: the "
          "same client against a do-nothing Python server of its protocol; that server may be "
          "the limit there (etcd's is Python grpc.aio), so it is a lower bound on the client's "
          "ceiling.")
    if "fastraft" in med:
        for n in names:
            if n != "fastraft" and med[n]["throughput"] > 0:
                print(f"fastraft / {n}: {med['fastraft']['throughput'] / med[n]['throughput']:.2f}x"
                      f" throughput, p99 {med['fastraft']['p99'] / max(med[n]['p99'], 1e-9):.2f}x")
    print("note: fastraft and etcd fsync every acknowledged write; PySyncObj never fsyncs "
          f"(appendEntriesUseBatch {a.pso_batch}).")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "results": results, "medians": med,
                       "ceilings": ceilings, "durability": dur}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
