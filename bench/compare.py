"""Side by side: fastraft, etcd 3.4 and PySyncObj, 3 members each on 127.0.0.1, every target of
the throughput issue measured in ONE run, systems alternating, repeated; prints medians, ratios
and a verdict per target, and optionally writes all of it as JSON.

    python bench/compare.py                          # defaults: 3 reps, each run 1 s + 3 s;
                                                     # about 7-8 minutes on 2 cores
    python bench/compare.py --reps 1 --duration 2    # quick look
    python bench/compare.py --scenarios put-sat,put-half --sat-clients 64,128,256 --json out.json

Scenarios (256 B values over 1,000 keys by default):

* ``put-sat``: closed loop at each of ``--sat-clients`` requests in flight (64 to 1024 by default,
  the same sweep for every system); each system's best (by median throughput over reps) is its
  saturation figure, and the table says which count. The sweep reaches 1024 because systems peak
  at different depths: here PySyncObj and etcd level off by 256, fastraft still gains at 1024.
* ``put-half``: open loop at half of etcd's saturation rate measured in this run (the running
  median of etcd's ``put-sat`` at the time of each rep; the rate used is printed), latency from
  the intended send time; p99 compared. ``--half-rate`` sets the rate when etcd is not run.
* ``get-lin`` / ``get-ser``: closed-loop reads at each of ``--read-clients``, linearizable and
  serializable (etcd: Range with ``serializable``). PySyncObj has no linearizable read without a
  log write: it takes part in ``get-ser`` only, with reads of a member's local copy, in-process.
* ``put-1``: one client, one request at a time; printed beside the two floors measured in the
  same run by ``bench/probes.py`` (one fsync'd 4 KiB append, one loopback round trip) and the
  issue's bar 2 x (fsync + RTT); as context, the append + fsync timed in 3 processes at once and
  one put through a bare replication pipeline of plain sockets (see ``bench/probes.py``).
* client ceilings: each client against a no-op endpoint of its own protocol (put, the largest
  ``--sat-clients``), after the reps (``--no-ceilings`` skips).

Each system is driven by a client of its own kind:

* fastraft: ``python -m fastraft.tools.loadgen`` (pipelined frames over the client protocol,
  uvloop).
* etcd: ``bench/peers/etcd_driver.py`` (grpc.aio + etcd's protobufs; see its docstring),
  ``--etcd-procs`` driver processes whose histograms are merged.
* PySyncObj: no client protocol, so the load runs inside its 3 member processes
  (``bench/peers/pso_node.py``, long-lived, driven over stdin/stdout); single-client runs on the
  leader, other runs split over the members.

Durability differs and the report says so: fastraft and etcd fsync before acknowledging;
PySyncObj never fsyncs (in-memory log). Every process started here is stopped by PID at the end,
also on Ctrl-C or an error; waits are bounded; the data dirs live in one temp dir, removed at the
end.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
sys.path.insert(0, HERE)  # bench/ is not a package: its sibling module probes.py

import probes  # noqa: E402

from fastraft.tools.localcluster import free_ports  # noqa: E402
from fastraft.tools.procs import stop_processes  # noqa: E402

SCENARIOS = ("put-sat", "put-half", "get-lin", "get-ser", "put-1")
SYSTEMS = ("fastraft", "etcd", "pysyncobj")


@dataclass(frozen=True)
class Point:
    """One measurement: a scenario at one client count (or one offered rate)."""

    scenario: str
    workload: str          # put | get
    consistency: str       # linearizable | serializable
    clients: int           # closed loop: in flight; open loop: the in-flight cap
    rate: float = 0.0      # > 0: open loop, requests/s in total


class _ChildCPU:
    """CPU (user+sys) of waited-for children over a wall-time span; 1.0 = one core.

    Measured over the clients' whole life (start-up and warm-up included): a rough but honest
    sign of whether the client, rather than the server, was the limit.
    """

    def __enter__(self) -> _ChildCPU:
        self.r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.monotonic()
        self.value = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic() - self.t0
        cpu = (r1.ru_utime - self.r0.ru_utime) + (r1.ru_stime - self.r0.ru_stime)
        self.value = round(cpu / wall, 3) if wall > 0 else 0.0


def _check_rc(p: subprocess.Popen | subprocess.CompletedProcess, cmd: list[str], err: str) -> None:
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({p.returncode}):\n{err[-3000:]}")


def _merge(parts: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge results of several load processes (histograms exactly, by HdrHistogram add)."""
    from fastraft.tools.loadgen import latency_summary, merge_encoded
    h = merge_encoded([p["histogram"] for p in parts if p.get("histogram")])
    ops = sum(p["ops"] for p in parts)
    window = max((p["duration_s"] for p in parts), default=0.0)
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out = {"target": ",".join(str(p.get("target", "")) for p in parts), "ops": ops,
           "errors": errors, "timeouts": sum(p.get("timeouts", 0) for p in parts),
           "duration_s": window, "throughput": round(ops / window, 2) if window else 0.0,
           "latency_ms": latency_summary(h)}
    out.update(extra or {})
    return out


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    """A result without the bulky fields (histogram, spec) for the JSON report."""
    return {k: v for k, v in r.items() if k not in ("histogram", "spec", "by_op")}


# ------------------------------------------------------------------------------- fastraft


class Fastraft:
    name = "fastraft"
    durability = "fsyncs before ack (group commit)"

    def __init__(self, base: str, a: argparse.Namespace) -> None:
        from fastraft.tools.localcluster import LocalCluster
        self.a = a
        self.cluster = LocalCluster(3, os.path.join(base, "fastraft"))
        self.client = (f"fastraft.tools.loadgen (python -m fastraft.tools.loadgen): pipelined "
                       f"msgpack frames, uvloop, 1 process, up to {a.conns} connections")

    def start(self) -> None:
        self.cluster.start()
        for m in self.cluster.members:
            self.cluster.wait_ready(m.name, timeout=30)
        self.cluster.wait_leader(timeout=30)

    def stop(self) -> None:
        self.cluster.close()

    def supports(self, pt: Point) -> str | None:
        return None

    def _cmd(self, endpoints: str, pt: Point, out: str) -> list[str]:
        a = self.a
        conns = min(a.conns, pt.clients)
        cmd = [sys.executable, "-m", "fastraft.tools.loadgen", "--endpoints", endpoints,
               "--workload", pt.workload, "--consistency", pt.consistency,
               "--clients", str(pt.clients), "--conns", str(conns), "--keys", str(a.keys),
               "--value-size", str(a.value_size), "--warmup", str(a.warmup),
               "--duration", str(a.duration), "--quiet", "--json", out]
        if pt.rate > 0:
            # Open loop: the in-flight cap is per connection in loadgen; spread the total cap.
            cmd += ["--rate", str(pt.rate), "--max-inflight", str(max(1, pt.clients // conns))]
        return cmd

    def run(self, pt: Point, tmp: str, endpoints: str | None = None) -> dict[str, Any]:
        out = os.path.join(tmp, "fastraft.json")
        cmd = self._cmd(endpoints or self.cluster.endpoints, pt, out)
        with _ChildCPU() as cpu:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=self.a.warmup + self.a.duration + 120)
        _check_rc(r, cmd, r.stderr)
        with open(out) as f:
            res = json.load(f)["result"]
        os.remove(out)
        res["client_cpu"] = cpu.value
        return res

    def ceiling(self, pt: Point, tmp: str) -> dict[str, Any]:
        from fastraft.tools.loadgen import start_noop_subprocess
        p, ep = start_noop_subprocess()
        try:
            return self.run(pt, tmp, endpoints=ep)
        finally:
            stop_processes([p], timeout=5.0)


# ----------------------------------------------------------------------------------- etcd


def etcd_command(base: str, members: list[tuple[str, int, int]], name: str, token: str,
                 state: str, extra: list[str] | None = None) -> list[str]:
    """The command line of etcd member ``name`` of ``members`` ((name, client port, peer port)
    on 127.0.0.1), its data dir under ``base``."""
    cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in members)
    c, p = next((c, p) for n, c, p in members if n == name)
    return ["etcd", "--name", name, "--data-dir", os.path.join(base, f"{name}.etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{c}",
            "--advertise-client-urls", f"http://127.0.0.1:{c}",
            "--listen-peer-urls", f"http://127.0.0.1:{p}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
            "--initial-cluster", cluster, "--initial-cluster-token", token,
            "--initial-cluster-state", state, *(extra or [])]


class Etcd:
    name = "etcd"
    durability = "fsyncs before ack (etcd default)"

    def __init__(self, base: str, a: argparse.Namespace) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd not found: apt-get install -y etcd-server etcd-client")
        self.a = a
        self.base = os.path.join(base, "etcd")
        os.makedirs(self.base, exist_ok=True)
        ports = free_ports(6)
        self.members = [(f"e{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        self.procs: list[subprocess.Popen] = []
        self.client = (f"bench/peers/etcd_driver.py: grpc.aio with etcd's rpc.proto (fast "
                       f"protobuf runtime), {a.etcd_procs} process(es) (1 for put-1), up to {a.conns} "
                       f"channels")

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{c}" for _, c, _ in self.members]

    def start(self) -> None:
        for n, c, p in self.members:
            with open(os.path.join(self.base, f"{n}.log"), "ab") as log:
                self.procs.append(subprocess.Popen(
                    etcd_command(self.base, self.members, n, "compare", "new"),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log))

    def stop(self) -> None:
        stop_processes(self.procs)

    def supports(self, pt: Point) -> str | None:
        return None

    def run(self, pt: Point, tmp: str, endpoints: list[str] | None = None) -> dict[str, Any]:
        a = self.a
        nproc = max(1, min(a.etcd_procs, pt.clients))
        # Drivers start Python + grpc and find the leader; they then wait for one common
        # CLOCK_MONOTONIC instant (system-wide on Linux) so their windows coincide.
        # (start-up is ~0.2 s, finding the leader and preloading 1,000 keys well under 1 s; a
        # driver that is late anyway starts at once, and the merged window is the longest one).
        start_at = time.monotonic_ns() + int(1.5e9) if nproc > 1 else 0
        cmds = []
        for i in range(nproc):
            clients = pt.clients // nproc + (1 if i < pt.clients % nproc else 0)
            chans = max(1, min(a.conns // nproc, clients))
            cmd = [sys.executable, os.path.join(PEERS, "etcd_driver.py"),
                   "--endpoints", ",".join(endpoints or self.endpoints),
                   "--workload", pt.workload, "--consistency", pt.consistency,
                   "--clients", str(clients), "--channels", str(chans), "--keys", str(a.keys),
                   "--value-size", str(a.value_size), "--warmup", str(a.warmup),
                   "--duration", str(a.duration), "--seed", str(i + 1),
                   "--preload", "auto" if i == 0 else "no", "--start-at", str(start_at)]
            if pt.rate > 0:
                cmd += ["--rate", str(pt.rate / nproc)]
            cmds.append(cmd)
        procs: list[subprocess.Popen] = []
        parts = []
        try:
            with _ChildCPU() as cpu:
                for cmd in cmds:
                    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE,
                                                  stdin=subprocess.DEVNULL, text=True))
                for p, cmd in zip(procs, cmds):
                    out, err = p.communicate(timeout=a.warmup + a.duration + 120)
                    _check_rc(p, cmd, err)
                    parts.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            stop_processes(procs)
        res = _merge(parts, {"procs": nproc})
        res["client_cpu"] = cpu.value
        return res

    def ceiling(self, pt: Point, tmp: str) -> dict[str, Any]:
        p = subprocess.Popen([sys.executable, os.path.join(PEERS, "etcd_driver.py"),
                              "--noop-server"], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True)
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("LISTENING "):
                raise RuntimeError(f"etcd no-op server did not start: {line!r}")
            return self.run(pt, tmp, endpoints=[f"127.0.0.1:{int(line.split()[1])}"])
        finally:
            stop_processes([p])


# ------------------------------------------------------------------------------ PySyncObj


class _Member:
    """A pso_node.py process and a line-reader thread, so every answer is awaited with a bound."""

    def __init__(self, addr: str, partners: list[str], batch: str, log_path: str) -> None:
        self.addr = addr
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.join(PEERS, "pso_node.py"), "--self", addr,
                 "--partners", ",".join(partners), "--batch", batch],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # EOF: the member exited

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"PySyncObj member {self.addr} did not answer in {timeout:.0f} s")
        if line is None:
            raise RuntimeError(f"PySyncObj member {self.addr} exited ({self.proc.poll()})")
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError(f"PySyncObj member {self.addr}: {r['error']}")
        return r


class PySyncObj:
    name = "pysyncobj"
    durability = "never fsyncs (in-memory log)"

    def __init__(self, base: str, a: argparse.Namespace) -> None:
        self.a = a
        self.base = os.path.join(base, "pysyncobj")
        os.makedirs(self.base, exist_ok=True)
        self.members: list[_Member] = []
        self.preloaded = False
        self.client = (f"none: load generated inside its 3 member processes (ReplDict.set with "
                       f"callbacks; reads = ReplDict.get of the local copy), "
                       f"appendEntriesUseBatch {a.pso_batch}")

    def start(self) -> None:
        addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        for i, me in enumerate(addrs):
            self.members.append(_Member(me, [x for x in addrs if x != me], self.a.pso_batch,
                                        os.path.join(self.base, f"m{i}.log")))
        self.leader()  # waits (bounded) until the cluster has elected

    def stop(self) -> None:
        for m in self.members:
            if m.proc.poll() is None and m.proc.stdin is not None:
                try:  # a clean exit first; stop_processes below is the bounded fallback
                    m.send({"cmd": "quit"})
                    m.proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
        stop_processes([m.proc for m in self.members])

    def leader(self, timeout: float = 30.0) -> _Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                m.send({"cmd": "status"})
                if m.answer(10.0)["is_leader"]:
                    return m
            time.sleep(0.1)
        raise RuntimeError(f"PySyncObj elected no leader within {timeout:.0f} s")

    def supports(self, pt: Point) -> str | None:
        if pt.workload == "get" and pt.consistency == "linearizable":
            return "no linearizable read without a log write"
        return None

    def run(self, pt: Point, tmp: str) -> dict[str, Any]:
        a = self.a
        base = {"cmd": "run", "op": pt.workload, "keys": a.keys, "value_size": a.value_size,
                "warmup": a.warmup, "duration": a.duration}
        if pt.workload == "get":
            self.preload()
        if pt.clients == 1 and pt.rate == 0:
            loads = [(self.leader(), 1, 0.0)]  # one client: on the leader, no forwarding hop
        else:
            n = len(self.members)
            loads = [(m, pt.clients // n + (1 if i < pt.clients % n else 0), pt.rate / n)
                     for i, m in enumerate(self.members)]
        start_at = time.monotonic_ns() + int(0.3e9)  # all members share one window
        for i, (m, inflight, rate) in enumerate(loads):
            m.send(dict(base, inflight=max(1, inflight), rate=rate, start_at=start_at,
                        seed=i + 1))
        parts = [m.answer(a.warmup + a.duration + 60) for m, _, _ in loads]
        return _merge(parts, {"members_loaded": len(loads)})

    def preload(self) -> None:
        if self.preloaded:
            return
        m = self.leader()
        m.send({"cmd": "preload", "keys": self.a.keys, "value_size": self.a.value_size})
        m.answer(max(60.0, self.a.keys / 100))
        self.preloaded = True


# ------------------------------------------------------------------------------- summary


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def summarize_point(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the reps of one (scenario, system, client count)."""
    ok = [r for r in rs if "failed" not in r]
    return {"reps": len(ok), "failed": len(rs) - len(ok),
            "throughput": _median([r["throughput"] for r in ok]),
            "p50": _median([r["latency_ms"]["p50"] for r in ok]),
            "p99": _median([r["latency_ms"]["p99"] for r in ok]),
            "errors": sum(sum(r["errors"].values()) for r in ok),
            "timeouts": sum(r.get("timeouts", 0) for r in ok),
            "client_cpu": _median([r.get("client_cpu", 0.0) for r in ok]),
            "rate": _median([r["offered_rate"] for r in ok if r.get("offered_rate")])}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """summary[scenario][system]: the best client count by median throughput (for put-sat and
    the reads: 'best of the sweep'), with every count's medians under 'by_clients'."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("skipped"):
            continue
        groups.setdefault((r["scenario"], r["system"], r["clients"]), []).append(r["result"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (sc, sysname, clients), rs in groups.items():
        slot = out.setdefault(sc, {}).setdefault(sysname, {"by_clients": {}})
        slot["by_clients"][clients] = summarize_point(rs)
    for sc, per in out.items():
        for sysname, slot in per.items():
            usable = {c: m for c, m in slot["by_clients"].items() if m["reps"]}
            if not usable:
                slot.update(clients=None, reps=0, throughput=0.0, p50=0.0, p99=0.0)
                continue
            best = max(usable, key=lambda c: usable[c]["throughput"])
            slot.update(usable[best], clients=best)
    return out


def sat_rate(runs: list[dict[str, Any]], system: str) -> float:
    """A system's saturation rate so far in this run: its best put-sat median throughput."""
    s = summarize([r for r in runs if r["scenario"] == "put-sat" and r["system"] == system])
    return s.get("put-sat", {}).get(system, {}).get("throughput", 0.0)


def verdict(summary: dict[str, dict[str, dict[str, Any]]], floors: dict[str, float] | None
            ) -> list[dict[str, Any]]:
    """Each target of the issue: measured values, ratio, PASS / FAIL (N/A when not measured)."""
    rows: list[dict[str, Any]] = []

    def get(sc: str, system: str, field: str) -> float | None:
        v = summary.get(sc, {}).get(system, {})
        return v.get(field) if v.get("reps") else None

    def ratio_row(target: str, sc: str, other: str, field: str, need: float,
                  higher: bool, unit: str) -> None:
        f, o = get(sc, "fastraft", field), get(sc, other, field)
        if f is None or o is None or o <= 0:
            rows.append({"target": target, "fastraft": f, "other": o, "unit": unit,
                         "ratio": None, "need": need, "status": "N/A (not measured)"})
            return
        ratio = f / o
        ok = ratio >= need if higher else ratio <= need
        rows.append({"target": target, "fastraft": f, "other": o, "unit": unit,
                     "ratio": round(ratio, 3), "need": need, "status": "PASS" if ok else "FAIL"})

    ratio_row("put-sat throughput >= 2x etcd (issue not done below 1.0x)", "put-sat", "etcd",
              "throughput", 2.0, True, "ops/s")
    ratio_row("put-sat throughput >= 2x PySyncObj (PySyncObj never fsyncs)", "put-sat",
              "pysyncobj", "throughput", 2.0, True, "ops/s")
    ratio_row("put p99 at half etcd's saturation rate <= 1/2 etcd's", "put-half", "etcd",
              "p99", 0.5, False, "ms")
    ratio_row("linearizable get throughput >= 2x etcd", "get-lin", "etcd", "throughput", 2.0,
              True, "ops/s")
    ratio_row("serializable get throughput >= 3x etcd", "get-ser", "etcd", "throughput", 3.0,
              True, "ops/s")
    p50 = get("put-1", "fastraft", "p50")
    bar = floors["target_ms"] if floors else None
    if p50 is None or not bar:
        rows.append({"target": "put-1 p50 <= 2 x (fsync + RTT)", "fastraft": p50, "other": bar,
                     "unit": "ms", "ratio": None, "need": 1.0, "status": "N/A (not measured)"})
    else:
        rows.append({"target": "put-1 p50 <= 2 x (fsync + RTT)", "fastraft": p50, "other": bar,
                     "unit": "ms", "ratio": round(p50 / bar, 3), "need": 1.0,
                     "status": "PASS" if p50 <= bar else "FAIL"})
    rows.append({"target": "member RSS after 1M keys of 256 B < 2x raw data", "fastraft": None,
                 "other": None, "unit": "", "ratio": None, "need": 2.0,
                 "status": "N/A (not measured by this runner)"})
    return rows


# ---------------------------------------------------------------------------------- report


def _ms(v: float) -> str:
    """Milliseconds, with more digits below 0.1 ms (in-process reads take microseconds)."""
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}/s" if unit == "ops/s" else f"{v:.2f} ms"


def report(a: argparse.Namespace, names: list[str], summary: dict[str, Any],
           floors: dict[str, float] | None, ceilings: dict[str, Any],
           systems: dict[str, Any], skipped: dict[tuple[str, str], str],
           rows: list[dict[str, Any]], floors_runs: list[dict[str, float]] | None = None,
           half_rates: list[float] | None = None) -> str:
    L: list[str] = []
    L.append(f"fastraft vs etcd vs PySyncObj: 3 members each on 127.0.0.1, {a.value_size} B values, "
             f"{a.keys} keys; {a.reps} rep(s) x ({a.warmup:g} s warm-up + {a.duration:g} s), "
             f"systems alternating; medians over reps")
    head = (f"{'scenario':<9} {'system':<10} {'clients':>7} {'ops/s':>10} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'err':>5} {'cli CPU':>7} {'fr ratio':>9}")
    L.append("")
    L.append(head)
    L.append("-" * len(head))
    for sc in [s for s in SCENARIOS if s in a.scenario_list]:
        per = summary.get(sc, {})
        f = per.get("fastraft", {})
        for n in names:
            m = per.get(n)
            if (sc, n) in skipped:
                L.append(f"{sc:<9} {n:<10} {'n/a: ' + skipped[(sc, n)]}")
                continue
            if not m or not m.get("reps"):
                L.append(f"{sc:<9} {n:<10} {'failed (see stderr above)'}")
                continue
            if sc == "put-half":
                ratio = f"{f['p99'] / m['p99']:.2f}x p99" if f.get("reps") and m["p99"] else ""
                cl = f"@{m['rate']:,.0f}"
            elif sc == "put-1":
                ratio = f"{f['p50'] / m['p50']:.2f}x p50" if f.get("reps") and m["p50"] else ""
                cl = "1"
            else:
                ratio = (f"{f['throughput'] / m['throughput']:.2f}x"
                         if f.get("reps") and m["throughput"] else "")
                cl = str(m["clients"])
            cpu = "in-proc" if n == "pysyncobj" else f"{100 * m['client_cpu']:.0f}%"
            if n == "pysyncobj" and sc == "get-ser":
                cl = "3 x 1"  # one local reader in each member; the client count does not apply
            L.append(f"{sc:<9} {n:<10} {cl:>7} {m['throughput']:>10,.0f} {_ms(m['p50']):>8} "
                     f"{_ms(m['p99']):>8} {m['errors'] + m['timeouts']:>5} {cpu:>7} {ratio:>9}")
        if sc in ("put-sat", "get-lin", "get-ser"):
            sweeps = [f"{n} " + ", ".join(f"{c}: {v['throughput']:,.0f}"
                                          for c, v in sorted(per[n]["by_clients"].items()))
                      for n in names if n in per and len(per[n]["by_clients"]) > 1]
            if sweeps:
                L.append(f"{'':<9} sweep (clients: ops/s): " + "; ".join(sweeps))
    L.append("")
    L.append("fr ratio: fastraft's figure / that system's (throughput; p99 for put-half; p50 for "
             "put-1). put-half: open loop at the rate shown, latency from the intended send time. "
             "clients: best of the sweep. err: errors + timeouts. cli CPU: the client processes' "
             "CPU over their life (100% = one core).")
    if "pysyncobj" in names and "get-ser" in a.scenario_list:
        L.append("PySyncObj get-ser: a dict read of each member's local copy inside the member "
                 "process (no network, no client): serializable only, and not comparable with "
                 "the networked reads above; it is not a target of the issue.")
    if half_rates:
        L.append("put-half offered rates, one a rep (half of etcd's running put-sat median): "
                 + ", ".join(f"{r:,.0f}/s" for r in half_rates))
    if floors:
        L.append(f"floors (same run, median of reps): fsync'd 4 KiB append {floors['fsync_ms']:.3f} "
                 f"ms; loopback TCP RTT {floors['rtt_ms']:.3f} ms; 2 x (fsync + RTT) = "
                 f"{floors['target_ms']:.3f} ms")
        L.append(f"  context, not in the bar: the same append + fsync in 3 processes at once (as "
                 f"a local cluster's 3 members do for each put) {floors['fsync3_ms']:.3f} ms; "
                 f"one put through a bare replication pipeline (plain sockets, 3 processes, "
                 f"fsync each; bench/probes.py) {floors['pipeline_ms']:.3f} ms")
        if floors_runs and len(floors_runs) > 1:
            fs = [x["fsync_ms"] for x in floors_runs]
            rs = [x["rtt_ms"] for x in floors_runs]
            L.append(f"  per rep: fsync {min(fs):.3f}-{max(fs):.3f} ms, RTT {min(rs):.3f}-"
                     f"{max(rs):.3f} ms (each a median of 200 fsyncs / 2,000 round trips)")
    if ceilings:
        L.append("client ceilings (the same client, put, against a no-op endpoint of its own "
                 "protocol; a lower bound when that Python endpoint is itself the limit):")
        for n, kinds in ceilings.items():
            for kind, c in kinds.items():
                what = (f"closed loop, {c.get('clients')} in flight" if kind == "closed" else
                        f"open loop at {c.get('offered_rate') or 0:,.0f}/s (put-half's rate)")
                if "failed" in c:
                    L.append(f"  {n:<10} {what}: failed: {c['failed'][:200]}")
                else:
                    L.append(f"  {n:<10} {what}: {c['throughput']:,.0f} ops/s, p50 "
                             f"{_ms(c['latency_ms']['p50'])} p99 {_ms(c['latency_ms']['p99'])} ms")
        if "pysyncobj" in names:
            L.append(f"  {'pysyncobj':<10} n/a: no client; the load runs inside its members")
    L.append("durability and clients:")
    for n in names:
        L.append(f"  {n:<10} {systems[n]['durability']}; client: {systems[n]['client']}")
    L.append("")
    L.append("verdict (targets of issue 4, computed from the medians above):")
    vh = f"{'target':<62} {'fastraft':>10} {'vs':>10} {'ratio':>7} {'need':>7}  status"
    L.append(vh)
    L.append("-" * len(vh))
    for r in rows:
        need = ("-" if r["ratio"] is None and r["unit"] == "" else
                f"{'>=' if r['unit'] == 'ops/s' else '<='}{r['need']:g}x")
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        L.append(f"{r['target']:<62} {_fmt(r['fastraft'], r['unit']):>10} "
                 f"{_fmt(r['other'], r['unit']):>10} {ratio:>7} {need:>7}  {r['status']}")
    return "\n".join(L)


# ---------------------------------------------------------------------------------- main


def _int_list(text: str, what: str) -> list[int]:
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: comma-separated integers, got {text!r}")
    if not xs or any(x < 1 or x > 4096 for x in xs):
        raise argparse.ArgumentTypeError(f"{what}: each in [1, 4096], got {text!r}")
    return sorted(set(xs))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="fastraft vs etcd vs PySyncObj, every target of "
                                             "the throughput issue, side by side")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds, each run")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured, each run")
    ap.add_argument("--sat-clients", default="64,128,256,512,1024",
                    help="put-sat: in-flight counts to sweep, the same for every system (each "
                         "one's best is its saturation figure)")
    ap.add_argument("--read-clients", default="32", help="get-lin/get-ser: in-flight counts")
    ap.add_argument("--half-rate", type=float, default=0.0,
                    help="put-half: offered rate (default: half etcd's put-sat in this run)")
    ap.add_argument("--half-inflight", type=int, default=256,
                    help="put-half: cap on requests in flight (later ones wait, and are charged)")
    ap.add_argument("--conns", type=int, default=4, help="connections (fastraft) / channels (etcd)")
    ap.add_argument("--etcd-procs", type=int, default=2,
                    help="etcd driver processes (2: its Python gRPC client is not the limit so "
                         "soon; single-client runs use 1)")
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--pso-batch", choices=["on", "off"], default="off",
                    help="PySyncObj appendEntriesUseBatch (on = as shipped; off is its best "
                         "configuration here, see FACTS.md)")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the client ceilings")
    ap.add_argument("--json", default=None, help="write everything measured here")
    a = ap.parse_args(argv)
    a.system_list = [s.strip() for s in a.systems.split(",") if s.strip()]
    a.scenario_list = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = set(a.system_list) - set(SYSTEMS)
    if bad or not a.system_list:
        ap.error(f"unknown systems: {', '.join(sorted(bad)) or '(none)'}")
    bad = set(a.scenario_list) - set(SCENARIOS)
    if bad or not a.scenario_list:
        ap.error(f"unknown scenarios: {', '.join(sorted(bad)) or '(none)'}; "
                 f"choose from {', '.join(SCENARIOS)}")
    try:
        a.sat = _int_list(a.sat_clients, "--sat-clients")
        a.read = _int_list(a.read_clients, "--read-clients")
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if not (1 <= a.reps <= 100 and 0 < a.duration <= 600 and 0 <= a.warmup <= 60):
        ap.error("need 1 <= reps <= 100, 0 < duration <= 600, 0 <= warmup <= 60")
    if not (1 <= a.conns <= 256 and 1 <= a.etcd_procs <= 8 and 1 <= a.half_inflight <= 65536):
        ap.error("need 1 <= conns <= 256, 1 <= etcd-procs <= 8, 1 <= half-inflight <= 65536")
    if not (1 <= a.keys <= 1_000_000 and 0 <= a.value_size <= 1 << 20):
        ap.error("need 1 <= keys <= 1000000 and 0 <= value-size <= 1 MiB")
    if a.half_rate < 0:
        ap.error("--half-rate must be >= 0")
    if ("put-half" in a.scenario_list and not a.half_rate
            and not ("etcd" in a.system_list and "put-sat" in a.scenario_list)):
        ap.error("put-half needs etcd's put-sat in the same run, or --half-rate")
    return a


def points(a: argparse.Namespace, sc: str, half_rate: float) -> list[Point]:
    if sc == "put-sat":
        return [Point(sc, "put", "linearizable", c) for c in a.sat]
    if sc == "put-half":
        return [Point(sc, "put", "linearizable", a.half_inflight, rate=half_rate)]
    if sc == "get-lin":
        return [Point(sc, "get", "linearizable", c) for c in a.read]
    if sc == "get-ser":
        return [Point(sc, "get", "serializable", c) for c in a.read]
    return [Point(sc, "put", "linearizable", 1)]


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop every child


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    names = a.system_list
    base = tempfile.mkdtemp(prefix="fastraft-compare-")
    tmp = os.path.join(base, "results")
    os.makedirs(tmp)
    make: dict[str, Callable[[], Any]] = {"fastraft": lambda: Fastraft(base, a),
                                          "etcd": lambda: Etcd(base, a),
                                          "pysyncobj": lambda: PySyncObj(base, a)}
    systems: list[Any] = []
    runs: list[dict[str, Any]] = []
    floors_runs: list[dict[str, float]] = []
    ceilings: dict[str, Any] = {}
    skipped: dict[tuple[str, str], str] = {}
    half_rates: list[float] = []
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    log(f"data dirs under {base}")
    try:
        for n in names:
            s = make[n]()
            systems.append(s)  # before start(): a half-started system is still stopped
            log(f"starting {n} ...")
            s.start()
        for rep in range(a.reps):
            # Rotate who goes first, so no system always runs on a freshly idle machine.
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            fl = probes.measure(base)
            floors_runs.append(fl)
            log(f"rep {rep + 1}/{a.reps}: fsync {fl['fsync_ms']:.3f} ms, RTT {fl['rtt_ms']:.3f} ms")
            for sc in [s for s in SCENARIOS if s in a.scenario_list]:
                half = 0.0
                if sc == "put-half":
                    half = a.half_rate or sat_rate(runs, "etcd") / 2
                    if half <= 0:
                        log("put-half skipped: no etcd saturation figure yet")
                        continue
                    half_rates.append(half)
                for pt in points(a, sc, half):
                    for s in order:
                        why = s.supports(pt)
                        if why:
                            skipped[(sc, s.name)] = why
                            continue
                        rec = {"rep": rep + 1, "scenario": sc, "system": s.name,
                               "clients": pt.clients, "rate": pt.rate}
                        try:
                            r = s.run(pt, tmp)
                            r["offered_rate"] = pt.rate or None
                        except (RuntimeError, subprocess.TimeoutExpired, OSError,
                                ValueError) as e:
                            r = {"failed": f"{type(e).__name__}: {e}"}
                            log(f"{sc} {s.name} c={pt.clients}: FAILED {r['failed'][:500]}")
                        else:
                            log(f"{sc:<8} {s.name:<9} c={pt.clients:<4}"
                                f"{f' rate={pt.rate:,.0f}' if pt.rate else ''} "
                                f"{r['throughput']:>9,.0f} ops/s  p50 "
                                f"{r['latency_ms']['p50']:.2f}  p99 {r['latency_ms']['p99']:.2f} ms"
                                f"  errors {r['errors']}")
                        rec["result"] = r
                        runs.append(rec)
        if not a.no_ceilings:
            # Closed loop at the largest saturation count; and, when put-half ran, the same open
            # loop against the no-op endpoint: the client's own share of put-half's p99.
            cpts = [("closed", Point("ceiling", "put", "linearizable", max(a.sat)))]
            if half_rates:
                cpts.append(("open", Point("ceiling", "put", "linearizable", a.half_inflight,
                                           rate=half_rates[-1])))
            for s in systems:
                if s.name not in ("fastraft", "etcd"):
                    continue
                for kind, pt in cpts:
                    log(f"client ceiling: {s.name} {kind} loop ...")
                    try:
                        c = s.ceiling(pt, tmp)
                        c.update(clients=pt.clients, offered_rate=pt.rate or None)
                    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as e:
                        c = {"failed": f"{type(e).__name__}: {e}"}
                    ceilings.setdefault(s.name, {})[kind] = c
    finally:
        for s in systems:
            try:
                s.stop()
            except Exception as e:  # keep stopping the others; say what went wrong
                print(f"stopping {s.name}: {type(e).__name__}: {e}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)

    summary = summarize(runs)
    floors = None
    if floors_runs:
        f, r, f3, pl = (_median([x[k] for x in floors_runs])
                        for k in ("fsync_ms", "rtt_ms", "fsync3_ms", "pipeline_ms"))
        floors = {"fsync_ms": f, "rtt_ms": r, "target_ms": 2 * (f + r), "fsync3_ms": f3,
                  "pipeline_ms": pl}
    rows = verdict(summary, floors)
    info = {s.name: {"durability": s.durability, "client": s.client} for s in systems}
    print(report(a, names, summary, floors, ceilings, info, skipped, rows, floors_runs,
                 half_rates))
    log("done")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": {k: v for k, v in vars(a).items()}, "cores": os.cpu_count(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "systems": info,
                       "floors_per_rep": floors_runs, "floors": floors, "half_rates": half_rates,
                       "runs": [dict(r, result=_slim(r["result"])) for r in runs],
                       "summary": summary, "skipped": {f"{k[0]}/{k[1]}": v
                                                       for k, v in skipped.items()},
                       "ceilings": {n: {k: _slim(v) for k, v in kinds.items()}
                                    for n, kinds in ceilings.items()},
                       "verdict": rows}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: every child was stopped in main's finally
        print("interrupted: all processes started here were stopped", file=sys.stderr)
        sys.exit(130)
