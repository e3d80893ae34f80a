"""Figures from the workload's records (workload.py): latency percentiles and throughput,
staleness against the acknowledged write history, and what each side of a partition saw.

Pure functions over records ``[level, invoke, complete, revision | None, error | None,
contact_age | None]`` (times in seconds, CLOCK_MONOTONIC; the last field optional): no lab
needed, unit-tested on their own.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Latency", "Staleness", "SideFigures", "latency", "staleness", "side_figures",
           "leader_elected", "leader_at", "leader_agreed", "contact_ages"]

Op = Sequence[Any]
_US = 1_000_000


@dataclass
class Latency:
    ok: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    throughput: float  # acknowledged operations per second over the run's span
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency(ops: Iterable[Op]) -> Latency:
    """Percentiles (HdrHistogram, 3 significant digits) of the successful operations."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 60 * _US, 3)
    ok = failed = 0
    first, last = float("inf"), float("-inf")
    errors: dict[str, int] = {}
    for op in ops:
        first, last = min(first, op[1]), max(last, op[2])
        if op[4] is None:
            ok += 1
            h.record_value(max(1, int((op[2] - op[1]) * _US)))
        else:
            failed += 1
            errors[op[4]] = errors.get(op[4], 0) + 1
    span = last - first if last > first else 0.0

    def pct(p: float) -> float | None:
        return h.get_value_at_percentile(p) / 1000.0 if ok else None

    return Latency(ok, failed, pct(50), pct(99), pct(99.9), ok / span if span else 0.0, errors)


@dataclass
class Staleness:
    """How far behind each successful read was: ``revs`` (acknowledged revisions it missed)
    and ``ms`` (how long before the read was sent its answer was already outdated: since the
    first write it missed was acknowledged). Both are lower bounds of the true staleness (a
    write counts from its acknowledgement, which follows its commit)."""

    revs: list[int]
    ms: list[float]
    violations: list[dict[str, Any]]  # bounded reads whose ms exceeded the bound

    def summary(self) -> dict[str, Any]:
        n = len(self.ms)
        s = sorted(self.ms)
        r = sorted(self.revs)
        return {"reads": n, "stale": sum(1 for x in self.revs if x > 0),
                "ms_p50": s[n // 2] if n else None, "ms_p99": s[min(n - 1, n * 99 // 100)]
                if n else None, "ms_max": s[-1] if n else None,
                "revs_p50": r[n // 2] if n else None, "revs_max": r[-1] if n else None,
                "violations": len(self.violations)}


def staleness(reads: Iterable[Op], writes: Iterable[Op], bound_s: float | None = None
              ) -> Staleness:
    """Staleness of each successful read against the successful writes.

    A read invoked at t that answered revision r missed every write acknowledged before t with
    a revision above r: ``revs`` = (highest revision acknowledged before t) - r, at least 0;
    ``ms`` = t - (earliest acknowledgement among the writes above r), if that was before t,
    else 0. With ``bound_s`` (a bounded read's max staleness), a read whose ``ms`` exceeds it
    is a violation: its member had not applied a write committed longer than the bound before
    the read reached it."""
    acked = sorted((op[2], op[3]) for op in writes if op[4] is None and op[3] is not None)
    ack_times = [t for t, _ in acked]
    prefix_max: list[int] = []
    m = 0
    for _, rev in acked:
        m = max(m, rev)
        prefix_max.append(m)
    by_rev = sorted((rev, t) for t, rev in acked)
    revs = [rev for rev, _ in by_rev]
    suffix_min = [0.0] * len(by_rev)
    lo = float("inf")
    for i in range(len(by_rev) - 1, -1, -1):
        lo = min(lo, by_rev[i][1])
        suffix_min[i] = lo
    out = Staleness([], [], [])
    for op in reads:
        if op[4] is not None or op[3] is None:
            continue
        t, r = op[1], op[3]
        i = bisect.bisect_left(ack_times, t)
        behind = max(0, prefix_max[i - 1] - r) if i else 0
        j = bisect.bisect_right(revs, r)
        ms = (t - suffix_min[j]) * 1000.0 if j < len(revs) and suffix_min[j] < t else 0.0
        out.revs.append(behind)
        out.ms.append(ms)
        if bound_s is not None and ms > bound_s * 1000.0:
            out.violations.append({"invoke": t, "revision": r, "ms_behind": ms,
                                   "bound_ms": bound_s * 1000.0})
    return out


@dataclass
class SideFigures:
    """What one side of a partition saw at one level."""

    during: int            # operations sent and finished while the partition held
    ok: int
    error_rate: float | None
    steady_ok: int         # of those sent after the settle time (the partition's steady state)
    steady_total: int
    fail_ms_p50: float | None  # how long a failed operation took to fail
    last_ok_s: float | None    # latest success sent during the partition, after the cut
    recovery_s: float | None   # first success sent after healing, after the heal
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def steady_availability(self) -> float | None:
        return self.steady_ok / self.steady_total if self.steady_total else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steady_availability"] = self.steady_availability
        return d


def side_figures(ops: Iterable[Op], t_cut: float, t_heal: float, settle: float) -> SideFigures:
    during = [op for op in ops if op[1] >= t_cut and op[2] <= t_heal]
    after = sorted(op[1] for op in ops if op[1] >= t_heal and op[4] is None)
    ok = [op for op in during if op[4] is None]
    steady = [op for op in during if op[1] >= t_cut + settle]
    fails = sorted((op[2] - op[1]) * 1000.0 for op in during if op[4] is not None)
    errors: dict[str, int] = {}
    for op in during:
        if op[4] is not None:
            errors[op[4]] = errors.get(op[4], 0) + 1
    return SideFigures(
        during=len(during), ok=len(ok),
        error_rate=(len(during) - len(ok)) / len(during) if during else None,
        steady_ok=sum(1 for op in steady if op[4] is None), steady_total=len(steady),
        fail_ms_p50=fails[len(fails) // 2] if fails else None,
        last_ok_s=max(op[1] for op in ok) - t_cut if ok else None,
        recovery_s=after[0] - t_heal if after else None, errors=errors)


def leader_elected(samples: Iterable[Sequence[Any]], old_leader: int, t_from: float,
                   t_until: float = float("inf")) -> float | None:
    """Seconds from ``t_from`` to the first status sample before ``t_until`` (of a
    majority-side member) naming a leader other than ``old_leader``; None if none did."""
    ts = [s[0] for s in samples if t_from <= s[0] < t_until and s[1] is not None
          and s[2] not in (0, None, old_leader)]
    return min(ts) - t_from if ts else None


def leader_at(samples: Iterable[Sequence[Any]], t: float) -> int | None:
    """The last non-zero leader the samples named before ``t``."""
    seen = sorted((s[0], s[2]) for s in samples
                  if s[0] < t and s[1] is not None and s[2] not in (0, None))
    return seen[-1][1] if seen else None


def leader_agreed(samples_by_member: dict[str, list[Sequence[Any]]], t_heal: float
                  ) -> float | None:
    """Seconds from healing until every member's status names the same, non-zero leader."""
    cur: dict[str, int | None] = {m: None for m in samples_by_member}
    events = sorted((s[0], m, s[2]) for m, ss in samples_by_member.items() for s in ss
                    if s[1] is not None)
    for t, m, leader in events:
        cur[m] = leader
        if t >= t_heal and len(set(cur.values())) == 1 and cur[m] not in (0, None):
            return t - t_heal
    return None


def contact_ages(ops: Iterable[Op]) -> dict[str, Any] | None:
    """p50/max (ms) of the contact age the answers reported (``header.contact_age``), and how
    many answers reported one; None if none did."""
    ages = sorted(op[5] * 1000.0 for op in ops
                  if len(op) > 5 and op[4] is None and op[5] is not None)
    if not ages:
        return None
    return {"answers": len(ages), "p50_ms": ages[len(ages) // 2], "max_ms": ages[-1]}
