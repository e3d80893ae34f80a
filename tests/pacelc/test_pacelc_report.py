"""The PACELC report (src/fastraft/tools/pacelc/report.py) from synthetic results: the command
on its first line, how delay was made on top, the derived classes and the rule, the tables and
the plots; and the lab's nftables rules (netns.Faults) as text."""

from __future__ import annotations

import json
import os

from fastraft.tools.pacelc.lab import LOOPBACK_LABEL, NETNS_LABEL, Options, _classification
from fastraft.tools.pacelc.netns import Faults
from fastraft.tools.pacelc.report import render_html, write_report


def _lat(ok: int, p50: float | None) -> dict:
    return {"ok": ok, "failed": 0 if ok else 5, "p50_ms": p50, "p99_ms": p50, "p999_ms": p50,
            "throughput": 10.0 * ok, "errors": {} if ok else {"BadRequestError": 5}}


def _side(ok: int, during: int) -> dict:
    return {"during": during, "ok": ok, "error_rate": 1 - ok / during, "steady_ok": ok,
            "steady_total": during, "steady_availability": ok / during, "fail_ms_p50": 1000.0,
            "last_ok_s": 3.9 if ok else None, "recovery_s": 0.3, "errors": {}}


def _results(mode: str) -> dict:
    levels = ["write", "linearizable", "serializable"]
    p50 = {"write": (5.0, 50.0), "linearizable": (0.6, 80.0), "serializable": (0.2, 0.2)}
    fr = {"levels": levels, "else": [], "delayers": [], "partitions": [{
        "scenario": "leader", "lone": "n1", "leader_before": "n1", "t_partition_s": 6,
        "new_leader_s": 1.1, "agreed_after_heal_s": 0.3,
        "sides": {"lone": {"write": _side(0, 4), "linearizable": _side(0, 4),
                           "serializable": _side(150, 150)},
                  "majority": {lv: _side(100, 100) for lv in levels}},
        "staleness": {"serializable": {"reads": 150, "stale": 120, "ms_p50": 800.0,
                                       "ms_max": 2900.0, "revs_max": 180, "violations": 0}}}]}
    for lv in levels:
        for d, v in zip((0, 20), p50[lv]):
            pt = {"delay_ms": d, "level": lv, "latency": _lat(100, v)}
            if lv == "serializable":
                pt["staleness"] = {"reads": 100, "stale": 40, "ms_p50": 1.0, "ms_p99": 20.0,
                                   "ms_max": 21.0, "revs_p50": 1, "revs_max": 1,
                                   "violations": 0}
                pt["staleness_ms"] = [0.0, 1.0, 5.0, 20.0]
            fr["else"].append(pt)
    fr["classification"] = _classification(fr)
    from dataclasses import asdict
    return {"command": "fastraft pacelc --out x --delays 0,20", "mode": mode,
            "date": "2026-12-02 08:00:00 UTC",
            "machine": {"cores": 2, "kernel": "6.1", "python": "3.11"},
            "options": asdict(Options(delays_ms=[0, 20])),
            "systems": {"fastraft": fr, "etcd": {"skipped": "etcd not found"}}}


def test_report_files_first_line_mode_and_derived_classes(tmp_path) -> None:
    res = _results(NETNS_LABEL)
    path = write_report(res, str(tmp_path))
    text = open(path, encoding="utf-8").read()
    assert text.splitlines()[0] == "<!-- fastraft pacelc --out x --delays 0,20 -->"
    assert "<code>fastraft pacelc --out x --delays 0,20</code>" in text
    assert NETNS_LABEL in text
    # The classes shown are the ones derived from the figures above, with their reasons.
    assert "<b>PC/EC</b>" in text and "<b>PA/EL</b>" in text
    assert "+3.97 ms per ms of delay" in text  # linearizable: (80 - 0.6) / 20
    assert "Rule: P: PA if" in text
    assert "etcd: not run</b>: etcd not found" in text
    for png in ("latency_vs_delay.png", "availability.png", "staleness.png"):
        assert os.path.getsize(tmp_path / png) > 5000, png
        assert f"src='{png}'" in text
    assert json.load(open(tmp_path / "results.json"))["mode"] == NETNS_LABEL


def test_a_loopback_report_says_so_in_the_page_and_on_every_plot(tmp_path) -> None:
    res = _results(LOOPBACK_LABEL)
    text = render_html(res, [])
    assert f"<b>{LOOPBACK_LABEL}</b>" in text
    import matplotlib
    matplotlib.use("Agg")
    from fastraft.tools.pacelc import report

    titles: list[str] = []
    import matplotlib.figure

    real = matplotlib.figure.Figure.suptitle

    def spy(self, t, *a, **kw):  # type: ignore[no-untyped-def]
        titles.append(t)
        return real(self, t, *a, **kw)

    matplotlib.figure.Figure.suptitle = spy  # type: ignore[method-assign]
    try:
        made = report.plot(res, str(tmp_path))
    finally:
        matplotlib.figure.Figure.suptitle = real  # type: ignore[method-assign]
    assert "latency_vs_delay.png" in made and titles
    assert all(LOOPBACK_LABEL in t for t in titles)


def test_fault_rules_as_nft_and_iptables_text() -> None:
    f = Faults()
    assert f.empty()
    assert "table inet fastraft_lab {\n" not in f.script()  # nothing but the delete
    f.drop_out.add("10.213.0.12")
    f.drop_in.add("10.213.0.12")
    f.loss_pct, f.loss_to = 2.5, {"10.213.0.13"}
    s = f.script()
    assert "ip daddr { 10.213.0.12 } drop" in s and "ip saddr { 10.213.0.12 } drop" in s
    assert "ip daddr { 10.213.0.13 } numgen random mod 10000 < 250 drop" in s
    f.queue_num, f.queue_to = 1, {"10.213.0.13", "10.213.0.12"}
    cmds = f.queue_args()
    assert cmds[0] == ["iptables", "-w", "-F", "OUTPUT"]
    assert [c[5] for c in cmds[1:]] == ["10.213.0.12", "10.213.0.13"]
    assert all(c[-3:] == ["NFQUEUE", "--queue-num", "1"] for c in cmds[1:])
    assert "--queue-bypass" not in sum(cmds, [])  # a dead delayer drops, never skips the delay
