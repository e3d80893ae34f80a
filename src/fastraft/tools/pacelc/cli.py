"""`fastraft pacelc`: the command line of the PACELC lab (lab.py runs it, report.py writes it)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from typing import Any

import click

from fastraft.tools.pacelc import etcd as etcd_side
from fastraft.tools.pacelc import netns
from fastraft.tools.pacelc.lab import LOOPBACK_LABEL, SCENARIOS, Options, run
from fastraft.tools.pacelc.report import write_report

__all__ = ["pacelc_command"]


def _floats(flag: str, text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint=flag) from None
    if not vals or any(v < 0 or v > 1000 for v in vals):
        raise click.BadParameter("give one or more values within 0..1000", param_hint=flag)
    return sorted(set(vals))


def _seconds(flag: str, text: str) -> float:
    from fastraft.ctl import parse_duration  # fastractl's duration syntax (500ms, 1s, 1m)

    try:
        v = parse_duration(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None
    if not 0 < v <= 60:
        raise click.BadParameter("must be within (0, 60] seconds", param_hint=flag)
    return v


def _choices(flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    if text.strip().lower() == "none":
        return []
    got = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in got if x not in allowed]
    if bad:
        raise click.BadParameter(f"unknown {', '.join(bad)} (choose from {', '.join(allowed)}"
                                 f" or none)", param_hint=flag)
    return got


@click.command("pacelc", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out", default="pacelc-report", show_default=True, metavar="DIR",
              help="where index.html, the PNGs and results.json go")
@click.option("--delays", default="0,1,5,20,50", show_default=True, metavar="MS,...",
              help="one-way delays between members to sweep")
@click.option("--jitter-ms", type=float, default=0.0, show_default=True,
              help="± uniform jitter on each packet's delay (at most the smallest non-zero delay)")
@click.option("--loss", "loss_pct", type=float, default=0.0, show_default=True, metavar="PCT",
              help="random loss between members during the sweep, in percent")
@click.option("--systems", default="fastraft,etcd", show_default=True,
              help="fastraft, etcd (etcd 3.4 from Debian's etcd-server), or both")
@click.option("--partitions", default=",".join(SCENARIOS), show_default=True,
              help="leader (isolate the leader), follower (isolate a follower), oneway (drop "
                   "what the leader sends), or none")
@click.option("--seconds", type=float, default=4.0, show_default=True,
              help="length of one (delay, level) point")
@click.option("--max-ops", type=int, default=3000, show_default=True,
              help="operations of one (delay, level) point at most")
@click.option("--conc", type=int, default=4, show_default=True,
              help="closed-loop clients per point (one request in flight each)")
@click.option("--writer-rate", type=float, default=50.0, show_default=True,
              help="background puts/s while reads are measured (the staleness reference)")
@click.option("--max-staleness", "max_staleness", default="500ms", show_default=True,
              help="bounded reads' freshness bound (500ms, 0.5s)")
@click.option("--timeout", "op_timeout", default="1s", show_default=True,
              help="client timeout of one operation")
@click.option("--partition-seconds", type=float, default=6.0, show_default=True,
              help="how long each partition holds")
@click.option("--loopback", is_flag=True, default=False,
              help="no namespaces: members on 127.0.0.1, delay made by fastraft's own "
                   "transport (--experimental-peer-delay-ms); no partitions, no etcd. "
                   "Reports say 'loopback, delay in the transport'")
def pacelc_command(out: str, delays: str, jitter_ms: float, loss_pct: float, systems: str,
                   partitions: str, seconds: float, max_ops: int, conc: int, writer_rate: float,
                   max_staleness: str, op_timeout: str, partition_seconds: float,
                   loopback: bool) -> None:
    """Measure where each read level sits on the PACELC map, beside etcd.

    PACELC: if there is a Partition, a system chooses Availability or Consistency; Else,
    Latency or Consistency. The lab builds a 3-member cluster in network namespaces (root),
    adds a one-way delay between members (an NFQUEUE delayer: this kernel has no tc netem),
    and measures, per level (write, linearizable, lease, serializable, bounded; etcd: write,
    l, s):

    \b
      Else       latency p50/p99/p99.9 and throughput at each delay
      Partition  isolate the leader, a follower, then a one-way split: which side answers,
                 error rate, time to fail, time to a new leader, recovery after healing
      Staleness  how far behind serializable and bounded answers were (revisions, ms)
                 against the acknowledged writes; bounded reads checked against their bound

    Then it derives each level's class (PA/PC, EL/EC) from those figures (the rule is in the
    report) and writes DIR/index.html with PNG plots and results.json.

    \b
    Examples:
      fastraft pacelc --out pacelc-report                 the full lab (about 5 minutes)
      fastraft pacelc --delays 0,20 --partitions leader --seconds 2     a quick look
      fastraft pacelc --loopback --systems fastraft       without root (delay in transport)

    Nothing is sent outside 127.0.0.0/8 or the lab's own namespaces; every namespace, rule
    and process is removed at the end, also on failure or Ctrl-C.
    """
    o = Options(delays_ms=_floats("--delays", delays), jitter_ms=jitter_ms, loss_pct=loss_pct,
                systems=_choices("--systems", systems, ("fastraft", "etcd")),
                scenarios=_choices("--partitions", partitions, SCENARIOS), seconds=seconds,
                max_ops=max_ops, conc=conc, writer_rate=writer_rate,
                max_staleness=_seconds("--max-staleness", max_staleness),
                op_timeout=_seconds("--timeout", op_timeout), partition_s=partition_seconds,
                # Load before and after a cut in proportion to it (2 s and 4 s for 6 s).
                pre_s=max(1.0, min(2.0, partition_seconds / 3)),
                after_s=max(2.0, min(4.0, partition_seconds * 2 / 3)),
                # The steady state of a cut: after leases and freshness bounds ran out.
                settle_s=min(2.0, partition_seconds / 2), loopback=loopback)
    if not o.systems:
        raise click.BadParameter("name at least one system", param_hint="--systems")
    if not (0 < seconds <= 120 and 1 <= max_ops <= 1_000_000 and 1 <= conc <= 64
            and 0 < writer_rate <= 1000 and 1 <= partition_seconds <= 120
            and 0 <= loss_pct <= 50):
        raise click.UsageError("need 0 < --seconds <= 120, 1 <= --max-ops, 1 <= --conc <= 64, "
                               "0 < --writer-rate <= 1000, 1 <= --partition-seconds <= 120, "
                               "0 <= --loss <= 50")
    nonzero = [d for d in o.delays_ms if d > 0]
    if jitter_ms < 0 or (nonzero and jitter_ms > min(nonzero)):
        raise click.UsageError("--jitter-ms must be within 0 and the smallest non-zero delay")
    for mod in ("hdrh", "matplotlib"):  # needed only at the end: refuse before the long run
        try:
            __import__(mod)
        except ImportError:
            click.echo(f"fastraft pacelc: needs {mod}: pip install 'fastraft[lab]'", err=True)
            sys.exit(2)
    if not loopback:
        why = netns.available()
        if why is None and nonzero:
            why = _delayer_missing()
        if why is not None:
            click.echo(f"fastraft pacelc: the network-namespace lab cannot run here: {why}.\n"
                       f"  A loopback run works without it: add --loopback (members on "
                       f"127.0.0.1, the delay made inside fastraft's transport, no partitions, "
                       f"no etcd; its report says '{LOOPBACK_LABEL}').", err=True)
            sys.exit(2)
        if "etcd" in o.systems and etcd_side.available():
            click.echo(f"fastraft pacelc: {etcd_side.available()}: etcd is left out",
                       err=True)
    elif loss_pct or o.scenarios:
        click.echo("fastraft pacelc: --loopback: partitions and loss need the namespace lab; "
                   "they are left out", err=True)
        o.scenarios, o.loss_pct = [], 0.0

    # SIGTERM ends like Ctrl-C: through every `finally` (members, delayers, namespaces).
    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    command = "fastraft pacelc " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["pacelc"]
                                             else sys.argv[1:])
    try:
        res = run(o, command.strip(), say=lambda s: click.echo(s, err=True))
    except KeyboardInterrupt:
        click.echo("fastraft pacelc: interrupted; the lab was taken down", err=True)
        sys.exit(130)
    except RuntimeError as e:
        click.echo(f"fastraft pacelc: error: {e} (the lab was taken down)", err=True)
        sys.exit(1)
    path = write_report(res, out)
    for name, s in res["systems"].items():
        for lv, v in s.get("classification", {}).items():
            click.echo(f"{name:<9} {lv:<13} {v['label']}")
    click.echo(f"report: {os.path.abspath(path)}")


def _delayer_missing() -> str | None:
    if shutil.which("iptables") is None:
        return "`iptables` is not installed (the delayer's NFQUEUE rule: apt-get install iptables)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return ("the delayer needs netfilterqueue (pip install 'fastraft[lab]', built against "
                "Debian's libnetfilter-queue-dev)")
    return None
