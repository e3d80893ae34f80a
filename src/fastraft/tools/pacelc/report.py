"""The PACELC lab's report: ``index.html`` (tables, the classification and the rule that made
it) and matplotlib PNGs (latency against delay per level, availability per level under each
partition, staleness distributions), plus ``results.json`` (everything measured).

The first line of ``index.html`` is the command that made it. Every page states how delay was
made (``mode``): a loopback run says "loopback, delay in the transport" at the top.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from typing import Any

from fastraft.tools.pacelc.classify import RULES

__all__ = ["write_report", "render_html", "plot"]

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #bbb;
padding:3px 7px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}
.mode{background:#fff3c4;padding:6px 10px;border:1px solid #e0c060;display:inline-block}
code{background:#f4f4f4;padding:1px 3px}img{max-width:100%}"""


def _f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    h = "".join(f"<th class='l'>{html.escape(c)}</th>" if i < left else
                f"<th>{html.escape(c)}</th>" for i, c in enumerate(head))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>"
                                     for i, c in enumerate(r)) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _systems(res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n, s) for n, s in res["systems"].items() if "skipped" not in s]


def _label(system: str, level: str) -> str:
    if system == "etcd":
        return {"linearizable": "etcd l", "serializable": "etcd s"}.get(level, f"etcd {level}")
    return f"{system} {level}"


# ------------------------------------------------------------------------------------ plots


def plot(res: dict[str, Any], out: str) -> list[str]:
    """Write the PNGs into ``out``; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    mode = res["mode"]
    systems = _systems(res)
    styles = {"fastraft": "-", "etcd": "--"}
    markers = {"write": "s", "linearizable": "o", "lease": "^", "serializable": "v",
               "bounded": "D"}
    colors = {"write": "C0", "linearizable": "C1", "lease": "C2", "serializable": "C3",
              "bounded": "C4"}  # a level keeps its colour across systems; a system its line

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, title in ((axes[0], "p50_ms", "median"), (axes[1], "p99_ms", "p99")):
        for name, s in systems:
            for lv in s["levels"]:
                pts = sorted((p["delay_ms"], p["latency"][key]) for p in s["else"]
                             if p["level"] == lv and p["latency"][key] is not None)
                if pts:
                    ax.plot([d for d, _ in pts], [v for _, v in pts], styles.get(name, ":"),
                            marker=markers.get(lv, "x"), color=colors.get(lv),
                            label=_label(name, lv))
        ax.set_xlabel("one-way delay between members (ms)")
        ax.set_ylabel(f"{title} latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{title} latency against delay")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"PACELC lab: Else (no partition). {mode}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency_vs_delay.png"), dpi=90)
    plt.close(fig)
    made.append("latency_vs_delay.png")

    seen = {p["scenario"] for _, s in systems for p in s.get("partitions", [])}
    scenarios = [sc for sc in ("leader", "follower", "oneway") if sc in seen]
    if scenarios:
        fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4.5),
                                 squeeze=False)
        for ax, sc in zip(axes[0], scenarios):
            labels, lone, maj = [], [], []
            for name, s in systems:
                for p in s.get("partitions", []):
                    if p["scenario"] != sc:
                        continue
                    for lv in s["levels"]:
                        lf, mf = p["sides"]["lone"][lv], p["sides"]["majority"][lv]
                        labels.append(_label(name, lv))
                        # The steady state (what the P class reads): a share of all requests
                        # would weigh fast successes before a lease ran out against slow
                        # failures after it.
                        lone.append(lf["steady_availability"] or 0.0)
                        maj.append(mf["steady_availability"] or 0.0)
            pos = list(range(len(labels)))
            ax.bar([x - 0.2 for x in pos], lone, 0.4, label="lone member's side")
            ax.bar([x + 0.2 for x in pos], maj, 0.4, label="majority side")
            ax.set_xticks(pos)
            ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(f"answered, steady state (sent >= {res['options']['settle_s']:g} s "
                          f"after the cut)", fontsize=8)
            ax.set_title(f"partition: {sc}")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"PACELC lab: availability per level under each partition. {mode}",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "availability.png"), dpi=90)
        plt.close(fig)
        made.append("availability.png")

    series = [(name, p) for name, s in systems for p in s["else"]
              if p["level"] in ("serializable", "bounded") and p.get("staleness_ms")]
    cut = [(name, p["scenario"], lv, st["samples_ms"]) for name, s in systems
           for p in s.get("partitions", []) for lv, st in p.get("staleness", {}).items()
           if lv in ("serializable", "bounded") and st.get("samples_ms")]
    if series or cut:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, rows, title in (
                (axes[0], [(name, f"{_label(name, p['level'])} @ {p['delay_ms']:g} ms",
                            p["staleness_ms"]) for name, p in series],
                 "no partition, at each delay"),
                (axes[1], [(name, f"{_label(name, lv)}, {sc}", xs) for name, sc, lv, xs in cut],
                 "the lone member's side, during each partition")):
            for name, label, samples in rows:
                xs: list[float] = sorted(samples)
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, styles.get(name, ":"), label=label)
            ax.set_xlabel("staleness of an answer (ms behind the acknowledged writes)")
            ax.set_ylabel("share of answers (CDF)")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.grid(True, alpha=0.3)
            if rows:
                ax.legend(fontsize=6, ncol=2)
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"PACELC lab: staleness of local reads. {mode}", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "staleness.png"), dpi=90)
        plt.close(fig)
        made.append("staleness.png")
    return made


# ------------------------------------------------------------------------------------- html


def render_html(res: dict[str, Any], images: Sequence[str]) -> str:
    o = res["options"]
    mode = html.escape(res["mode"])
    cmd = html.escape(res["command"])
    # The exact command on the first line (HTML5 comments may hold "--"; not "-->" or "--!>").
    first = res["command"].replace("-->", "- ->").replace("--!>", "- -!>")
    L = [f"<!-- {first} -->",
         "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastraft PACELC lab</title>",
         f"<style>{_STYLE}</style></head><body>",
         "<h1>PACELC lab: fastraft's read levels beside etcd</h1>",
         f"<p>Made by <code>{cmd}</code> on {html.escape(res['date'])}; "
         f"{res['machine']['cores']} cores, Linux {html.escape(res['machine']['kernel'])}, "
         f"Python {html.escape(res['machine']['python'])}.</p>",
         f"<p class='mode'>How delay was made: <b>{mode}</b></p>",
         "<p>3 members each, heartbeat "
         f"{o['heartbeat_ms']} ms, election timeout {o['election_ms']} ms. One-way delays "
         f"{', '.join(f'{d:g}' for d in o['delays_ms'])} ms between members (jitter "
         f"±{o['jitter_ms']:g} ms, loss {o['loss_pct']:g} %); clients are not delayed. "
         f"Each (delay, level) point: {o['conc']} closed-loop clients at a <i>follower</i> for "
         f"{o['seconds']:g} s or {o['max_ops']} operations, a background writer at "
         f"{o['writer_rate']:g} puts/s beside the reads (the history staleness is measured "
         f"against). Client timeout {o['op_timeout']:g} s; bounded reads' max staleness "
         f"{o['max_staleness']:g} s. etcd 3.4 is driven through its HTTP/JSON gateway (a few "
         "hundred µs a request more than gRPC).</p>"]
    for name, s in res["systems"].items():
        if "skipped" in s:
            L.append(f"<p><b>{html.escape(name)}: not run</b>: {html.escape(s['skipped'])}</p>")
        elif s.get("partitions_skipped"):
            L.append(f"<p><b>{html.escape(name)}: partitions not run</b>: "
                     f"{html.escape(s['partitions_skipped'])}</p>")

    L.append("<h2>Classification (derived from the measurements below)</h2>")
    L.append(f"<p>Rule: {html.escape(RULES)}</p>")
    rows = []
    for name, s in _systems(res):
        for lv, v in s.get("classification", {}).items():
            rows.append([html.escape(_label(name, lv)), f"<b>{html.escape(v['label'])}</b>",
                         html.escape(v["why_p"]), html.escape(v["why_e"])])
    L.append(_table(["level", "PACELC", "partition (P)", "else (E)"], rows, left=4))

    L.append("<h2>Else: latency and throughput against delay</h2>")
    if "latency_vs_delay.png" in images:
        L.append("<img src='latency_vs_delay.png' alt='latency against delay'>")
    for name, s in _systems(res):
        rows = []
        for p in s["else"]:
            lat = p["latency"]
            errs = ", ".join(f"{k} {v}" for k, v in lat["errors"].items())
            rows.append([html.escape(_label(name, p["level"])), _f(p["delay_ms"], 0),
                         lat["ok"], lat["failed"], _f(lat["p50_ms"]), _f(lat["p99_ms"]),
                         _f(lat["p999_ms"]), _f(lat["throughput"], 0), html.escape(errs)])
        L.append(f"<h3>{html.escape(name)}</h3>")
        L.append(_table(["level", "delay ms", "ok", "failed", "p50 ms", "p99 ms", "p99.9 ms",
                         "ok/s", "errors"], rows))
        for d in s.get("delayers", []):
            parts = [f"{st.get('packets')} packets, held p50 {_f(st.get('held_p50_ms'))} ms"
                     for st in d["stats"]]
            L.append(f"<p>Delayers at {d['delay_ms']:g} ms (one per member): "
                     f"{'; '.join(parts)}.</p>")

    L.append("<h2>Staleness of answers (no partition)</h2>")
    L.append("<p>Per successful read: the acknowledged writes it missed (revisions) and how "
             "long before the read was sent its answer was already outdated (ms). Both are "
             "lower bounds (a write counts from its acknowledgement). A bounded read whose ms "
             "exceeds its bound is a violation. Contact age: what the answering member said "
             "of its last contact with a leader (<code>header.contact_age</code>), where it "
             "says.</p>")
    if "staleness.png" in images:
        L.append("<img src='staleness.png' alt='staleness distributions'>")
    rows = []
    for name, s in _systems(res):
        for p in s["else"]:
            st = p.get("staleness")
            if st:
                age = p.get("contact_age") or {}
                rows.append([html.escape(_label(name, p["level"])), _f(p["delay_ms"], 0),
                             st["reads"], st["stale"], _f(st["ms_p50"]), _f(st["ms_p99"]),
                             _f(st["ms_max"]), _f(st["revs_max"]), st["violations"],
                             _f(age.get("p50_ms")), _f(age.get("max_ms"))])
    L.append(_table(["level", "delay ms", "reads", "stale", "ms p50", "ms p99", "ms max",
                     "revs max", "bound violations", "contact age p50 ms",
                     "contact age max ms"], rows))

    L.append("<h2>Partitions</h2>")
    L.append(f"<p>Each: {o['pre_s']:g} s of load, the cut for {o['partition_s']:g} s, "
             f"{o['after_s']:g} s after healing. Every client host sends to the member beside "
             "it (and follows its redirects), one request at a time per level, 20 ms apart. "
             "<i>leader</i>: the leader and its client cut off both ways; <i>follower</i>: a "
             "follower and its client; <i>oneway</i>: what the leader sends to the other "
             "members is dropped, what they send it arrives. Steady state: requests sent "
             f"{o['settle_s']:g} s or more after the cut. Recovered: the first answer sent after "
             f"healing (– : none within the {o['after_s']:g} s after it).</p>")
    if "availability.png" in images:
        L.append("<img src='availability.png' alt='availability under partitions'>")
    for name, s in _systems(res):
        for p in s.get("partitions", []):
            L.append(f"<h3>{html.escape(name)}: {html.escape(p['scenario'])} (lone member "
                     f"{html.escape(p['lone'])}, leader before {html.escape(p['leader_before'])})"
                     f"</h3><p>New leader on the majority side during the cut: "
                     f"{_f(p['new_leader_s'])} s after it (– : none); all members name one "
                     f"leader {_f(p['agreed_after_heal_s'])} s after healing; the majority's "
                     f"leader changed after healing: "
                     f"{_f(p.get('leader_changed_after_heal_s'))} s after it (– : no).</p>")
            rows = []
            for side in ("lone", "majority"):
                for lv in s["levels"]:
                    f = p["sides"][side][lv]
                    errs = ", ".join(f"{k} {v}" for k, v in f["errors"].items())
                    rows.append([html.escape(_label(name, lv)), side, f["during"], f["ok"],
                                 _pct(f["error_rate"]), _pct(f["steady_availability"]),
                                 _f(f["fail_ms_p50"], 1), _f(f["last_ok_s"]),
                                 _f(f["recovery_s"]), html.escape(errs)])
            L.append(_table(["level", "side", "sent", "answered", "error rate",
                             "steady answered", "fail after ms (p50)", "last answer s",
                             "recovered s", "errors"], rows, left=2))
            if p.get("staleness"):
                rows = [[html.escape(_label(name, lv)), st["reads"], st["stale"],
                         _f(st["ms_p50"]), _f(st["ms_max"]), _f(st["revs_max"]),
                         st["violations"], _f((st.get("contact_age") or {}).get("max_ms"))]
                        for lv, st in p["staleness"].items()]
                L.append("<p>Staleness of the lone side's reads during the cut (a stale "
                         "linearizable or lease read would break its guarantee):</p>")
                L.append(_table(["level", "reads", "stale", "ms p50", "ms max", "revs max",
                                 "bound violations", "contact age max ms"], rows))
    L.append("<p>All figures: <a href='results.json'>results.json</a>.</p></body></html>")
    return "\n".join(L) + "\n"


def write_report(res: dict[str, Any], out: str) -> str:
    """Write results.json, the PNGs and index.html into ``out``; returns index.html's path."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    images = plot(res, out)
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(res, images))
    return path
