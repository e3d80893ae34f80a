"""CPU time the members spend per put: a cost figure that load on a shared machine disturbs far
less than throughput does (a busy neighbour delays a member, it does not add to its CPU time).

    python bench/cpu_per_put.py --ops 30000 --clients 64 --reps 3

Starts a 3-member LocalCluster of the fastraft installed in this interpreter (members stopped by
PID at the end), drives it with ``fastraft bench`` for exactly ``--ops`` puts (no warm-up, so
every put is counted), and reads each member's user+system CPU seconds from /proc before and
after. Prints µs of CPU per put for the leader and for all three members together, per rep, and
the medians. Used to show what counting for /metrics costs the put path (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from fastraft.tools.localcluster import LocalCluster

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def one_rep(ops: int, clients: int, metrics: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="fastraft-cpu-") as tmp:
        # (metrics only when asked: a fastraft without a metrics port can be measured too)
        extra: dict[str, bool] = {"metrics": True} if metrics else {}
        lc = LocalCluster(3, tmp, heartbeat_ms=100, election_ms=1000, **extra)
        try:
            lc.start()
            for m in lc.members:
                lc.wait_ready(m.name)
            leader = lc.wait_leader()
            pids = {m.name: m.proc.pid for m in lc.members if m.proc is not None}
            before = {n: cpu_seconds(p) for n, p in pids.items()}
            out = subprocess.run(
                [sys.executable, "-m", "fastraft.tools.loadgen", "--endpoints", lc.endpoints,
                 "--workload", "put", "--clients", str(clients), "--warmup", "0",
                 "--ops", str(ops), "--duration", "120"],
                capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise SystemExit(f"loadgen failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
            after = {n: cpu_seconds(p) for n, p in pids.items()}
        finally:
            lc.close()
    used = {n: after[n] - before[n] for n in pids}
    rate = next((ln for ln in out.stdout.splitlines() if "ops/s" in ln), "").strip()
    print(f"  leader {used[leader] / ops * 1e6:7.1f} µs/put   all members "
          f"{sum(used.values()) / ops * 1e6:7.1f} µs/put   ({rate})", flush=True)
    return used[leader] / ops * 1e6, sum(used.values()) / ops * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=30000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--metrics", action="store_true",
                    help="give the members a metrics port (needs a fastraft that has one)")
    a = ap.parse_args()
    res = [one_rep(a.ops, a.clients, a.metrics) for _ in range(a.reps)]
    print(f"median: leader {statistics.median(r[0] for r in res):.1f} µs/put, all members "
          f"{statistics.median(r[1] for r in res):.1f} µs/put")


if __name__ == "__main__":
    main()
