"""Get throughput and latency at each read level, side by side, against a running cluster.

    fastraft cluster --size 3 --data-dir D --base-port 23790 &
    python bench/read_levels.py --endpoints 127.0.0.1:23790,127.0.0.1:23800,127.0.0.1:23810

Each rep runs the four levels one after the other (the first level rotating each rep, so none
always runs on a warmer or quieter machine) with the same closed loop; the table gives the
median of the reps per level. The load tool sends every get to the leader, so the levels are
compared on the same member.
"""

from __future__ import annotations

import statistics
from typing import Any

import click

from fastraft.tools import loadgen as L

LEVELS = ("linearizable", "lease", "serializable", "bounded")


@click.command()
@click.option("--endpoints", required=True, help="comma-separated host:port of the members")
@click.option("--clients", type=int, default=32, show_default=True)
@click.option("--conns", type=int, default=4, show_default=True)
@click.option("--duration", type=float, default=4.0, show_default=True)
@click.option("--reps", type=int, default=3, show_default=True)
@click.option("--max-staleness", type=float, default=0.5, show_default=True,
              help="seconds, for bounded reads")
def main(endpoints: str, clients: int, conns: int, duration: float, reps: int,
         max_staleness: float) -> None:
    eps = [e.strip() for e in endpoints.split(",") if e.strip()]
    runs: dict[str, list[dict[str, Any]]] = {lv: [] for lv in LEVELS}
    for rep in range(reps):
        order = LEVELS[rep % len(LEVELS):] + LEVELS[:rep % len(LEVELS)]
        for lv in order:
            spec = L.Spec(endpoints=eps, workload="get", consistency=lv,
                          max_staleness=max_staleness if lv == "bounded" else 0.0,
                          clients=clients, conns=conns, warmup=1.0, duration=duration,
                          keys=1000, preload=rep == 0 and lv == order[0])
            res = L.run(spec)
            runs[lv].append(res)
            lat = res["latency_ms"]
            click.echo(f"rep {rep} {lv:12s} {res['throughput']:10.0f}/s  p50 {lat['p50']:.3f} ms"
                       f"  p99 {lat['p99']:.3f} ms  errors {dict(res['errors'])}")
    click.echo(f"\n| level | gets/s | p50 ms | p99 ms | errors | ({reps} reps, median; "
               f"{clients} clients, {conns} conns) |")
    click.echo("|---|---|---|---|---|---|")
    for lv in LEVELS:
        rs = runs[lv]
        med = statistics.median
        click.echo(f"| {lv} | {med(r['throughput'] for r in rs):,.0f} | "
                   f"{med(r['latency_ms']['p50'] for r in rs):.3f} | "
                   f"{med(r['latency_ms']['p99'] for r in rs):.3f} | "
                   f"{sum(sum(r['errors'].values()) for r in rs)} | |")


if __name__ == "__main__":
    main()
