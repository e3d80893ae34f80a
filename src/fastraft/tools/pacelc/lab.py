"""The PACELC lab run: a 3-member cluster (fastraft, then etcd) under a sweep of one-way delays
between members and under partitions, measured by workers in client hosts (workload.py).

Two ways to run it:

* **netns** (root, ``ip``, ``nft``, ``iptables``): members ``n1..n3`` and clients ``c1..c3``
  in network namespaces on one bridge (netns.py). Client ``ci`` sits beside member ``ni``: in a
  partition it is on ``ni``'s side and sends to ``ni`` first. Delay between members comes from
  an NFQUEUE delayer in each member's namespace (delayer.py), loss and partitions from nftables
  rules. Nothing runs or is sent from the root namespace: the routes from every lab host to every
  member are checked before the first byte.
* **loopback** (no root needed): members on 127.0.0.1, the delay stage in fastraft's own peer
  transport (``--experimental-peer-delay-ms``): no partitions, no etcd (etcd has no such
  stage). Every report of such a run says "loopback, delay in the transport".

Everything started is stopped by PID and every namespace, rule and scratch directory removed at
the end, also when the run fails or is interrupted (SIGINT/SIGTERM end in ``finally``); a run
killed outright is cleaned by the next run's :func:`netns.sweep`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastraft.tools.pacelc import etcd as etcd_side
from fastraft.tools.pacelc import netns
from fastraft.tools.pacelc.classify import Verdict, classify
from fastraft.tools.pacelc.measure import (
    contact_ages,
    latency,
    leader_agreed,
    leader_at,
    leader_elected,
    side_figures,
    staleness,
)
from fastraft.tools.pacelc.workload import ETCD_LEVELS, FASTRAFT_LEVELS
from fastraft.tools.procs import stop_processes

__all__ = ["Options", "run", "MEMBERS", "CLIENTS", "LOOPBACK_LABEL", "NETNS_LABEL",
           "SCENARIOS"]

MEMBERS = ("n1", "n2", "n3")
CLIENTS = ("c1", "c2", "c3")
LOOPBACK_LABEL = "loopback, delay in the transport"
NETNS_LABEL = "network namespaces, NFQUEUE delayer"
SCENARIOS = ("leader", "follower", "oneway")
_STALE_LEVELS = ("serializable", "bounded", "linearizable", "lease")
_KEEP_SAMPLES = 1000  # staleness samples kept per point for the plots


@dataclass
class Options:
    delays_ms: list[float] = field(default_factory=lambda: [0, 1, 5, 20, 50])
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    systems: list[str] = field(default_factory=lambda: ["fastraft", "etcd"])
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    seconds: float = 4.0        # per (delay, level) point
    max_ops: int = 3000         # per (delay, level) point
    conc: int = 4
    writer_rate: float = 50.0   # background puts/s while reads are measured
    max_staleness: float = 0.5  # bounded reads' freshness bound, seconds
    op_timeout: float = 1.0
    pre_s: float = 2.0
    partition_s: float = 6.0
    after_s: float = 4.0
    settle_s: float = 2.0       # a partition's steady state starts this long after the cut
    heartbeat_ms: int = 100
    election_ms: int = 1000
    loopback: bool = False


class _Progress:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.t0 = time.monotonic()
        self.say = say

    def __call__(self, msg: str) -> None:
        self.say(f"pacelc [{time.monotonic() - self.t0:6.1f}s] {msg}")


# ---------------------------------------------------------------------------- where things run


class _Loopback:
    """Hosts on 127.0.0.1 (no namespaces): processes tracked by PID, killed at close."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.addrs = {h: "127.0.0.1" for h in (*MEMBERS, *CLIENTS)}
        self.ports = {m: (_free_port(), _free_port()) for m in MEMBERS}

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(list(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0
            ) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        netns.kill_all(self.procs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Netns:
    def __init__(self, lab: netns.Lab) -> None:
        self.lab = lab
        self.addrs = {h: lab.hosts[h].addr for h in lab.hosts}
        self.ports = {m: (2379, 2380) for m in MEMBERS}

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        return self.lab.popen(host, argv, **kw)

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0
            ) -> subprocess.CompletedProcess:
        return self.lab.run(host, argv, timeout=timeout)


Hosts = _Loopback | _Netns


# ------------------------------------------------------------------------------ a cluster


class _Cluster:
    def __init__(self, system: str, hosts: Hosts, scratch: str, o: Options,
                 peer_delay_ms: int = 0) -> None:
        self.system, self.hosts, self.o = system, hosts, o
        self.dir = os.path.join(scratch, f"{system}-{time.monotonic_ns()}")
        os.makedirs(self.dir)
        self.procs: dict[str, subprocess.Popen] = {}
        a, ports = hosts.addrs, hosts.ports
        self.endpoint = {m: f"{a[m]}:{ports[m][0]}" for m in MEMBERS}
        peers = {m: f"http://{a[m]}:{ports[m][1]}" for m in MEMBERS}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTRAFT_", "ETCD"))}
        for m in MEMBERS:
            if system == "etcd":
                argv = etcd_side.member_argv(m, a[m], {n: a[n] for n in MEMBERS},
                                             os.path.join(self.dir, m), o.heartbeat_ms,
                                             o.election_ms)
            else:
                argv = [sys.executable, "-m", "fastraft", "serve", "--name", m,
                        "--data-dir", os.path.join(self.dir, m),
                        "--listen-client-urls", f"http://{self.endpoint[m]}",
                        "--listen-peer-urls", peers[m],
                        "--initial-cluster", ",".join(f"{n}={peers[n]}" for n in MEMBERS),
                        "--initial-cluster-token", "pacelc",
                        "--heartbeat-interval", str(o.heartbeat_ms),
                        "--election-timeout", str(o.election_ms), "--log-level", "warn"]
                if peer_delay_ms:
                    argv += ["--experimental-peer-delay-ms", str(peer_delay_ms)]
            with open(os.path.join(self.dir, f"{m}.log"), "wb") as log:
                self.procs[m] = hosts.popen(m, argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log, env=env)

    def worker(self, host: str, mode: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "fastraft.tools.pacelc.workload", mode,
                "--system", self.system, "--timeout", str(self.o.op_timeout),
                "--max-staleness", str(self.o.max_staleness), *args]

    def status(self, via: str = "c1") -> dict[str, Any]:
        eps = ",".join(self.endpoint[m] for m in MEMBERS)
        p = self.hosts.run(via, self.worker(via, "status", "--endpoints", eps,
                                            "--timeout", "0.5"), timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"status worker failed: {p.stderr.strip()[-500:]}")
        doc = json.loads(p.stdout)
        return {m: doc[self.endpoint[m]] for m in MEMBERS}

    def leader(self, via: str = "c1") -> tuple[str, int] | None:
        """(name, id) of the leader every member names, or None."""
        st = self.status(via)
        ids = {s.get("member_id"): m for m, s in st.items() if "member_id" in s}
        leaders = {s.get("leader") for s in st.values()}
        if len(leaders) != 1:
            return None
        lead = next(iter(leaders))
        return (ids[lead], lead) if lead in ids else None

    def wait_leader(self, timeout: float = 30.0, via: str = "c1") -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{self.system} member {m} exited ({p.returncode}); "
                                       f"see {self.dir}/{m}.log")
            got = self.leader(via)
            if got is not None:
                return got
            time.sleep(0.3)
        raise RuntimeError(f"{self.system}: no leader within {timeout:g}s")

    def stop(self) -> None:
        stop_processes(list(self.procs.values()))


# ------------------------------------------------------------------------------ the delays


class _Delayers:
    """One delayer per member namespace, queue 1: what it sends to the other members."""

    def __init__(self, lab: netns.Lab, scratch: str, delay_ms: float, jitter_ms: float) -> None:
        self.lab, self.procs, self.stats_files = lab, [], []
        for i, m in enumerate(MEMBERS):
            stats = os.path.join(scratch, f"delayer-{m}-{time.monotonic_ns()}.json")
            p = lab.popen(m, [sys.executable, "-m", "fastraft.tools.pacelc.delayer",
                              "--queue", "1", "--delay-ms", str(delay_ms),
                              "--jitter-ms", str(jitter_ms), "--seed", str(i + 1),
                              "--stats", stats], stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"the delayer in {m} did not start ({line!r})")
            self.procs.append(p)
            self.stats_files.append(stats)
            lab.queue(m, [n for n in MEMBERS if n != m], 1)

    def check(self) -> None:
        for m, p in zip(MEMBERS, self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"the delayer in {m} died ({p.returncode})")

    def stop(self) -> list[dict[str, Any]]:
        for m in MEMBERS:  # rule first: no packet queued to a reader that is gone
            rules = self.lab.faults(m)
            rules.queue_num, rules.queue_to = None, set()
        self.lab.apply(MEMBERS)
        out = []
        for p, stats in zip(self.procs, self.stats_files):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
            try:
                with open(stats, encoding="utf-8") as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                out.append({"error": "no stats"})
        return out


# ------------------------------------------------------------------------------ measuring


def _run_worker(hosts: Hosts, host: str, argv: list[str], out: str) -> subprocess.Popen:
    return hosts.popen(host, [*argv, "--out", out], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)


def _collect(p: subprocess.Popen, out: str, timeout: float) -> dict[str, Any]:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        raise RuntimeError("a lab worker did not finish in time") from None
    if p.returncode != 0:
        raise RuntimeError(f"a lab worker failed ({p.returncode}): {(err or '')[-800:]}")
    with open(out, encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def _thin(xs: list[float]) -> list[float]:
    if len(xs) <= _KEEP_SAMPLES:
        return xs
    step = len(xs) / _KEEP_SAMPLES
    return [xs[int(i * step)] for i in range(_KEEP_SAMPLES)]


def _else_point(c: _Cluster, scratch: str, delay: float, level: str, lead_name: str,
                o: Options, say: _Progress) -> dict[str, Any]:
    follower = next(m for m in MEMBERS if m != lead_name)
    reader_host = CLIENTS[MEMBERS.index(follower)]
    rd_out = os.path.join(scratch, f"else-{time.monotonic_ns()}.json")
    # Reads run beside a paced writer (to the leader): the history staleness is measured against.
    bg = [] if level == "write" else ["--bg-writer", c.endpoint[lead_name],
                                      "--rate", str(o.writer_rate)]
    reader = _run_worker(c.hosts, reader_host, c.worker(
        reader_host, "closed", "--endpoint", c.endpoint[follower], "--level", level,
        "--conc", str(o.conc), "--tag", "fg", "--seconds", str(o.seconds),
        "--max-ops", str(o.max_ops), *bg), rd_out)
    got = _collect(reader, rd_out, o.seconds + 60)
    ops = got["ops"]
    point: dict[str, Any] = {"delay_ms": delay, "level": level, "at": follower,
                             "leader": lead_name, "latency": latency(ops).as_dict()}
    if level in _STALE_LEVELS:
        st = staleness(ops, got["writes"], o.max_staleness if level == "bounded" else None)
        point["staleness"] = st.summary()
        point["staleness_ms"] = _thin(st.ms)
        point["violations"] = st.violations[:20]
        point["background_writes"] = sum(1 for w in got["writes"] if w[4] is None)
        point["contact_age"] = contact_ages(ops)
    lat = point["latency"]
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")  # noqa: E731
    stale = point.get("staleness") or {}
    say(f"{c.system} delay {delay:g} ms {level:<12} ok {lat['ok']:>5} failed "
        f"{lat['failed']:>4}  p50 {fmt(lat['p50_ms'])} p99 {fmt(lat['p99_ms'])} ms  "
        f"{lat['throughput']:.0f}/s" + (f"  stale p50 {fmt(stale.get('ms_p50'))} ms, "
                                         f"violations {stale.get('violations')}"
                                         if stale else "")
        + (f"  errors {lat['errors']}" if lat["errors"] else ""))
    return point


def _partition(c: _Cluster, lab: netns.Lab, scratch: str, scenario: str, levels: Sequence[str],
               o: Options, say: _Progress) -> dict[str, Any]:
    lead_name, lead_id = c.wait_leader()
    if scenario == "follower":
        lone = next(m for m in MEMBERS if m != lead_name)
    else:
        lone = lead_name
    rest = [m for m in MEMBERS if m != lone]
    side = {m: ("lone" if m == lone else "majority") for m in MEMBERS}
    total = o.pre_s + o.partition_s + o.after_s
    until = time.monotonic() + total
    procs = {}
    for m, h in zip(MEMBERS, CLIENTS):
        out = os.path.join(scratch, f"part-{scenario}-{h}-{time.monotonic_ns()}.json")
        procs[h] = (out, _run_worker(c.hosts, h, c.worker(
            h, "sides", "--endpoint", c.endpoint[m], "--levels", ",".join(levels),
            "--until", str(until), "--pause", "0.02", "--tag", h,
            "--max-ops", str(int(total / 0.02) + 10)), out))
    time.sleep(o.pre_s)
    lone_client = CLIENTS[MEMBERS.index(lone)]
    rest_clients = [CLIENTS[MEMBERS.index(m)] for m in rest]
    if scenario == "oneway":
        lab.cut([lone], rest)  # the leader's packets to the others are dropped, theirs flow
    else:
        lab.partition([lone, lone_client], [*rest, *rest_clients])
    t_cut = time.monotonic()
    say(f"{c.system} partition '{scenario}': {lone} ({'leader' if lone == lead_name else 'follower'}"
        f") cut off for {o.partition_s:g}s")
    time.sleep(o.partition_s)
    t_heal = time.monotonic()
    lab.unpartition()
    docs = {h: _collect(p, out, total + 60) for h, (out, p) in procs.items()}
    by_side: dict[str, dict[str, list[Any]]] = {"lone": {}, "majority": {}}
    writes: list[Any] = []
    for m, h in zip(MEMBERS, CLIENTS):
        for op in docs[h]["ops"]:
            by_side[side[m]].setdefault(op[0], []).append(op)
            if op[0] == "write":
                writes.append(op)
    figures = {s: {lv: side_figures(by_side[s].get(lv, []), t_cut, t_heal, o.settle_s).as_dict()
                   for lv in levels} for s in by_side}
    stale: dict[str, Any] = {}
    for lv in levels:
        # Local reads: how stale. Linearizable and lease reads: a stale one would break their
        # guarantee (a lease outliving the new leader's first write), so they are checked too.
        if lv in _STALE_LEVELS:
            reads = [op for op in by_side["lone"].get(lv, []) if t_cut <= op[1] <= t_heal]
            st = staleness(reads, writes, o.max_staleness if lv == "bounded" else None)
            stale[lv] = dict(st.summary(), violations_sample=st.violations[:10],
                             samples_ms=_thin(st.ms), contact_age=contact_ages(reads))
    majority_samples = [s for m in rest for s in docs[CLIENTS[MEMBERS.index(m)]]["status"]]
    result = {
        "scenario": scenario, "lone": lone, "leader_before": lead_name,
        "t_partition_s": o.partition_s,
        "new_leader_s": leader_elected(majority_samples, lead_id, t_cut, t_heal),
        # A leader change after healing: the returning member disrupted the majority's leader
        # (a higher term from its own elections while cut off, when there is no pre-vote).
        "leader_changed_after_heal_s": leader_elected(
            majority_samples, leader_at(majority_samples, t_heal) or lead_id, t_heal),
        "agreed_after_heal_s": leader_agreed(
            {m: docs[CLIENTS[MEMBERS.index(m)]]["status"] for m in MEMBERS}, t_heal),
        "sides": figures, "staleness": stale,
    }
    for lv in levels:
        lf, mf = figures["lone"][lv], figures["majority"][lv]
        say(f"{c.system} '{scenario}' {lv:<12} lone side {lf['ok']}/{lf['during']} ok, "
            f"majority {mf['ok']}/{mf['during']} ok"
            + (f", lone recovered {lf['recovery_s']:.2f}s after healing"
               if lf["recovery_s"] is not None else ""))
    nl = result["new_leader_s"]
    say(f"{c.system} '{scenario}': new leader "
        f"{'none' if nl is None else f'{nl:.2f}s after the cut'}")
    return result


# ------------------------------------------------------------------------------- the run


def _levels(system: str) -> tuple[str, ...]:
    return ETCD_LEVELS if system == "etcd" else FASTRAFT_LEVELS


def _classification(sys_res: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for lv in sys_res["levels"]:
        points = [pt for pt in sys_res["else"] if pt["level"] == lv]
        if not any(pt["latency"]["ok"] for pt in points):
            # Never answered, partition or not: this build lacks the level (or it is broken);
            # refusing everything is not a choice of consistency, so no class.
            errors: dict[str, int] = {}
            for pt in points:
                for k, v in pt["latency"]["errors"].items():
                    errors[k] = errors.get(k, 0) + v
            why = f"no answer at any delay without a partition (errors: {errors})"
            out[lv] = Verdict("-", "-", why, why).as_dict()
            continue
        p50 = {pt["delay_ms"]: pt["latency"]["p50_ms"] for pt in sys_res["else"]
               if pt["level"] == lv}
        steady: dict[str, float | None] = {}
        last: dict[str, float | None] = {}
        for part in sys_res.get("partitions", []):
            if part["scenario"] in ("leader", "follower"):
                f = part["sides"]["lone"][lv]
                name = f"{part['scenario']} isolated"
                steady[name] = (f["steady_ok"] / f["steady_total"] if f["steady_total"]
                                else None)
                last[name] = f["last_ok_s"]
        out[lv] = classify(p50, steady, last).as_dict()
    return out


def run(o: Options, command: str, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the lab; return the results (the report is made from them)."""
    prog = _Progress(say)
    mode = LOOPBACK_LABEL if o.loopback else NETNS_LABEL
    results: dict[str, Any] = {
        "command": command, "mode": mode,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "options": asdict(o), "systems": {},
    }
    if o.loopback:
        _run_loopback(o, results, prog)
    else:
        _run_netns(o, results, prog)
    for name, res in results["systems"].items():
        if "skipped" not in res:
            res["classification"] = _classification(res)
    return results


def _sweep(c: _Cluster, scratch: str, delay: float, o: Options, prog: _Progress
           ) -> list[dict[str, Any]]:
    lead, _ = c.wait_leader()
    return [_else_point(c, scratch, delay, lv, lead, o, prog) for lv in _levels(c.system)]


def _warm_up(c: _Cluster, scratch: str, o: Options) -> None:
    """Up to a second of unmeasured writes after start-up (connections, first compactions, caches),
    so that the first point of the sweep is not the cluster's first second."""
    lead, _ = c.wait_leader()
    out = os.path.join(scratch, f"warm-{time.monotonic_ns()}.json")
    p = _run_worker(c.hosts, "c1", c.worker("c1", "writer", "--endpoint", c.endpoint[lead],
                                            "--rate", "200", "--seconds", str(min(1.0, o.seconds)),
                                            "--tag", "warm"), out)
    _collect(p, out, 30)


def _run_loopback(o: Options, results: dict[str, Any], prog: _Progress) -> None:
    scratch = netns.scratch_dir(f"{netns.PREFIX}{os.getpid()}-pacelc")
    hosts = _Loopback()
    try:
        for system in o.systems:
            if system == "etcd":
                results["systems"]["etcd"] = {"skipped": "a loopback run has no delay for etcd "
                                              "(the delay stage is fastraft's own transport)"}
                continue
            res: dict[str, Any] = {"levels": list(_levels(system)), "else": [],
                                   "partitions": [],
                                   "partitions_skipped": "partitions need the network-namespace "
                                                         "lab (root, ip, nft)"}
            for d in o.delays_ms:
                prog(f"{system}: starting 3 members on 127.0.0.1, transport delay {d:g} ms")
                c = _Cluster(system, hosts, scratch, o, peer_delay_ms=int(round(d)))
                try:
                    _warm_up(c, scratch, o)
                    res["else"] += _sweep(c, scratch, d, o, prog)
                finally:
                    c.stop()
            results["systems"][system] = res
    finally:
        hosts.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _run_netns(o: Options, results: dict[str, Any], prog: _Progress) -> None:
    removed = netns.sweep()
    if removed:
        prog(f"removed what an earlier run left behind: {', '.join(removed)}")
    with netns.Lab([*MEMBERS, *CLIENTS], tag="pacelc") as lab:
        scratch = netns.scratch_dir(lab.run_id)
        try:
            for src in lab.hosts:  # nothing is ever sent anywhere but into the lab
                for m in MEMBERS:
                    lab.check_route(src, lab.hosts[m].addr)
            prog(f"lab up: {', '.join(f'{h}={lab.hosts[h].addr}' for h in lab.hosts)} "
                 f"(namespaces {lab.run_id}-*)")
            hosts = _Netns(lab)
            for system in o.systems:
                if system == "etcd" and etcd_side.available() is not None:
                    results["systems"]["etcd"] = {"skipped": etcd_side.available()}
                    prog(f"etcd skipped: {etcd_side.available()}")
                    continue
                results["systems"][system] = _one_system(system, lab, hosts, scratch, o, prog)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _one_system(system: str, lab: netns.Lab, hosts: _Netns, scratch: str, o: Options,
                prog: _Progress) -> dict[str, Any]:
    levels = _levels(system)
    res: dict[str, Any] = {"levels": list(levels), "else": [], "partitions": [],
                           "delayers": []}
    prog(f"{system}: starting 3 members")
    c = _Cluster(system, hosts, scratch, o)
    try:
        lead, _ = c.wait_leader()
        prog(f"{system}: leader {lead}")
        _warm_up(c, scratch, o)
        for d in o.delays_ms:
            delayers = _Delayers(lab, scratch, d, o.jitter_ms) if d > 0 else None
            if o.loss_pct:
                lab.loss(MEMBERS, MEMBERS, o.loss_pct)
            try:
                res["else"] += _sweep(c, scratch, d, o, prog)
                if delayers:
                    delayers.check()
            finally:
                if o.loss_pct:
                    lab.loss(MEMBERS, MEMBERS, 0)
                if delayers:
                    res["delayers"].append({"delay_ms": d, "stats": delayers.stop()})
        for s in o.scenarios:
            res["partitions"].append(_partition(c, lab, scratch, s, levels, o, prog))
            c.wait_leader()
            time.sleep(1.0)
    finally:
        c.stop()
    return res
