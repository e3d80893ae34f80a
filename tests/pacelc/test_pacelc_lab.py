"""A short PACELC lab run (`fastraft pacelc`, src/fastraft/tools/pacelc/): two delays, one
partition (the leader isolated), fastraft and etcd, in network namespaces with the NFQUEUE
delayer. Checked: the report is written; the delay asked for is the delay the delayers applied;
the classes derived from the figures are the ones Raft predicts for the levels this build has
(linearizable and writes PC/EC, serializable PA/EL; etcd l PC/EC, s PA/EL); no bounded read
exceeded its bound; and nothing is left behind (namespaces, processes, scratch directories).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile

import pytest

from fastraft.tools.pacelc import etcd as etcd_side
from fastraft.tools.pacelc import netns

pytestmark = pytest.mark.slow


def lab_unavailable() -> str | None:
    why = netns.available() or etcd_side.available()
    if why is None and __import__("shutil").which("iptables") is None:
        why = "`iptables` is not installed (the delayer's NFQUEUE rule)"
    if why is None:
        try:
            import netfilterqueue  # noqa: F401
        except ImportError:
            why = ("netfilterqueue is not installed (`pip install netfilterqueue` after "
                   "`apt-get install libnetfilter-queue-dev`; .ci/run does both)")
    return why


def require_lab() -> None:
    why = lab_unavailable()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PACELC lab: {why}")  # .ci/run installs what it needs
        pytest.skip(why)


def _ours(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def test_short_lab_run_both_systems(tmp_path) -> None:
    require_lab()
    netns.sweep()
    out = tmp_path / "report"
    p = subprocess.Popen([sys.executable, "-m", "fastraft", "pacelc", "--out", str(out),
                          "--delays", "0,20", "--partitions", "leader", "--seconds", "0.7",
                          "--partition-seconds", "3", "--writer-rate", "40"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    prefix = f"{netns.PREFIX}{p.pid}-"
    assert p.returncode == 0, stderr[-3000:]
    print(stderr)
    assert "pacelc [" in stderr  # progress lines while it runs
    assert not _ours(prefix), "namespaces left behind"
    assert not glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")), "scratch left"

    html = (out / "index.html").read_text()
    assert html.splitlines()[0] == f"<!-- fastraft pacelc --out {out} --delays 0,20 " \
        "--partitions leader --seconds 0.7 --partition-seconds 3 --writer-rate 40 -->"
    for png in ("latency_vs_delay.png", "availability.png", "staleness.png"):
        assert (out / png).stat().st_size > 5000
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "network namespaces, NFQUEUE delayer"
    fr, et = res["systems"]["fastraft"], res["systems"]["etcd"]

    # The delayers held packets for the delay asked (20 ms), one per member: never less, and
    # less than twice that in the median (the slack is for a loaded machine's late wake-ups,
    # which on a 2-core machine running the suite beside other work reach ~10 ms; a delayer
    # that held twice as long or not at all fails it).
    (d,) = fr["delayers"]
    assert len(d["stats"]) == 3
    for st in d["stats"]:
        assert st["packets"] > 50 and 19.9 <= st["held_p50_ms"] < 40.0, st

    cls = {name: {lv: v["label"] for lv, v in s["classification"].items()}
           for name, s in (("fastraft", fr), ("etcd", et))}
    print(cls)
    assert cls["fastraft"]["write"] == "PC/EC"
    assert cls["fastraft"]["linearizable"] == "PC/EC"
    assert cls["fastraft"]["serializable"] == "PA/EL"
    assert cls["etcd"]["write"] == "PC/EC"
    assert cls["etcd"]["linearizable"] == "PC/EC"
    assert cls["etcd"]["serializable"] == "PA/EL"
    # lease and bounded: classified when this build has them (the read-level work), else "-".
    # When present they are the points in between: answered locally (EL), refused on the lone
    # side once the lease or the freshness bound ran out (PC).
    for lv in ("lease", "bounded"):
        ok = sum(pt["latency"]["ok"] for pt in fr["else"] if pt["level"] == lv)
        assert (cls["fastraft"][lv] == "-/-") == (ok == 0), (lv, cls["fastraft"][lv])
        if ok:
            assert cls["fastraft"][lv] == "PC/EL", (lv, cls["fastraft"][lv])

    # Linearizable and lease reads are never stale (with or without a partition); a bounded
    # read never exceeds its bound.
    for s in (fr, et):
        for pt in s["else"]:
            if pt["level"] in ("linearizable", "lease"):
                assert pt["staleness"]["stale"] == 0, pt["staleness"]
            if pt["level"] == "bounded":
                assert pt["staleness"]["violations"] == 0, pt["violations"]
        for part in s["partitions"]:
            assert part["staleness"].get("bounded", {}).get("violations", 0) == 0
            for lv in ("linearizable", "lease"):
                assert part["staleness"].get(lv, {}).get("stale", 0) == 0, (lv, part)
            lone, maj = part["sides"]["lone"], part["sides"]["majority"]
            assert lone["write"]["ok"] == 0  # the cut-off leader acknowledges no write
            assert lone["serializable"]["ok"] > 0
            if s is fr:
                # fastraft's own election: a new leader within the 3 s cut, writes again.
                # etcd's election time is etcd's (1.6-2.0 s on a quiet machine; once, in a
                # loaded CI rehearsal, no leader within the cut): reported, not asserted.
                assert part["new_leader_s"] is not None and part["new_leader_s"] < 3.0
                assert maj["write"]["ok"] > 0
