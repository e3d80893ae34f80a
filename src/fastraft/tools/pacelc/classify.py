"""The PACELC class of each level, derived from the lab's measurements (never written in).

PACELC (Abadi, 2010): if there is a Partition, does the system choose Availability or
Consistency; Else (no partition), Latency or Consistency. The lab answers both per level:

* **P**: in each scenario that leaves one member alone (the leader isolated, a follower
  isolated), the share of requests that the lone member's side answered in the partition's
  steady state (requests sent after the settle time, by when a lease or a freshness bound has
  run out). **PA** if that share is at least ``PA_MIN`` in every such scenario, **PC** if it is
  below ``PA_MIN`` in every one, else **P?** (mixed). The one-way split is reported, not used
  here: its minority side is the one that cannot send, and what it still answers depends on
  the direction, not on the level's choice.
* **E**: the growth of the median latency with the one-way delay between members, from the
  smallest to the largest delay of the sweep, in ms per ms of added delay. Waiting for one
  message across a delayed link costs a whole one-way delay, so the median answer either waited
  for at least one crossing (growth >= 1) or for none (growth near 0); the line between is
  drawn halfway, at ``EC_MIN``: **EC** at or above it (consistency paid in latency), **EL**
  below (answered without waiting for other members).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PA_MIN", "EC_MIN", "Verdict", "classify_e", "classify_p", "classify",
           "RULES"]

PA_MIN = 0.5
EC_MIN = 0.5

RULES = (f"P: PA if the lone member's side answered at least {PA_MIN:.0%} of its requests in the "
         f"steady state of every isolation (leader isolated, follower isolated), PC if below "
         f"{PA_MIN:.0%} in every one, P? if mixed. E: median latency growth per ms of one-way "
         f"delay between members, smallest to largest delay: EC if >= {EC_MIN:g} (the median "
         f"answer waited for a message across a delayed link, which costs a whole delay), "
         f"else EL. A level that never answered is '-'.")


@dataclass
class Verdict:
    p: str
    e: str
    why_p: str
    why_e: str

    @property
    def label(self) -> str:
        return f"{self.p}/{self.e}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d


def classify_e(p50_by_delay: dict[float, float | None]) -> tuple[str, str]:
    """``{one-way delay ms: median latency ms or None}`` -> (EL|EC|-, why)."""
    pts = sorted((d, v) for d, v in p50_by_delay.items() if v is not None)
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return "-", "not measured at two delays"
    (d0, v0), (d1, v1) = pts[0], pts[-1]
    growth = (v1 - v0) / (d1 - d0)
    what = (f"p50 {v0:.2f} ms at {d0:g} ms, {v1:.2f} ms at {d1:g} ms: "
            f"+{growth:.2f} ms per ms of delay")
    return ("EC" if growth >= EC_MIN else "EL"), what


def classify_p(steady_by_scenario: dict[str, float | None],
               answered_for: dict[str, float | None] | None = None) -> tuple[str, str]:
    """``{isolation scenario: lone side's steady-state availability or None}`` ->
    (PA|PC|P?|-, why). ``answered_for``: seconds after the cut of its last success there."""
    got = {s: v for s, v in steady_by_scenario.items() if v is not None}
    if not got:
        return "-", "not measured under an isolation"
    parts = []
    for s, v in sorted(got.items()):
        extra = ""
        if answered_for and answered_for.get(s) is not None:
            extra = f", last answer {answered_for[s]:.2f} s after the cut"
        parts.append(f"{s}: {v:.0%} answered{extra}")
    why = "; ".join(parts)
    if all(v >= PA_MIN for v in got.values()):
        return "PA", why
    if all(v < PA_MIN for v in got.values()):
        return "PC", why
    return "P?", why


def classify(p50_by_delay: dict[float, float | None], steady_by_scenario: dict[str, float | None],
             answered_for: dict[str, float | None] | None = None) -> Verdict:
    p, why_p = classify_p(steady_by_scenario, answered_for)
    e, why_e = classify_e(p50_by_delay)
    return Verdict(p, e, why_p, why_e)
