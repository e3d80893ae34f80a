"""Tests of the side-by-side runner's own logic (bench/compare.py, bench/probes.py and the
PySyncObj member driver). Run: python -m pytest bench/test_compare.py -q"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ is not a package

import compare  # noqa: E402
import probes  # noqa: E402


def _res(tput: float, p50: float, p99: float) -> dict:
    return {"throughput": tput, "latency_ms": {"p50": p50, "p99": p99}, "errors": {}}


def _run(sc: str, system: str, clients: int, tput: float, p50: float = 1.0,
         p99: float = 2.0) -> dict:
    return {"scenario": sc, "system": system, "clients": clients, "rate": 0.0,
            "result": _res(tput, p50, p99)}


def test_summarize_takes_the_best_client_count_by_median() -> None:
    runs = [_run("put-sat", "etcd", 64, t) for t in (100, 300, 200)]      # median 200
    runs += [_run("put-sat", "etcd", 128, t) for t in (250, 260, 10)]     # median 250
    runs.append({"scenario": "put-sat", "system": "etcd", "clients": 256,
                 "rate": 0.0, "result": {"failed": "boom"}})
    s = compare.summarize(runs)["put-sat"]["etcd"]
    assert s["clients"] == 128
    assert s["throughput"] == 250
    assert s["by_clients"][64]["throughput"] == 200
    assert s["by_clients"][256]["reps"] == 0 and s["by_clients"][256]["failed"] == 1
    assert compare.sat_rate(runs, "etcd") == 250
    assert compare.sat_rate(runs, "fastraft") == 0.0


def _summary(f_sat: float, e_sat: float, f_p99: float, e_p99: float, put1_p50: float) -> dict:
    runs = [_run("put-sat", "fastraft", 128, f_sat), _run("put-sat", "etcd", 128, e_sat),
            _run("put-sat", "pysyncobj", 128, e_sat * 2),
            _run("put-half", "fastraft", 256, 100, p99=f_p99),
            _run("put-half", "etcd", 256, 100, p99=e_p99),
            _run("get-lin", "fastraft", 32, 300), _run("get-lin", "etcd", 32, 100),
            _run("get-ser", "fastraft", 32, 250), _run("get-ser", "etcd", 32, 100),
            _run("put-1", "fastraft", 1, 900, p50=put1_p50)]
    return compare.summarize(runs)


def test_verdict_is_computed_from_the_figures() -> None:
    floors = {"fsync_ms": 0.2, "rtt_ms": 0.05, "target_ms": 0.5}
    rows = compare.verdict(_summary(3000, 1000, 10, 30, 0.4), floors)
    assert [r["status"] for r in rows][:6] == ["PASS", "FAIL", "PASS", "PASS", "FAIL", "PASS"]
    sat = rows[0]
    assert "etcd" in sat["target"] and "PySyncObj" in rows[1]["target"]
    assert sat["ratio"] == 3.0 and sat["fastraft"] == 3000 and sat["other"] == 1000
    assert rows[1]["ratio"] == 1.5  # PySyncObj had twice etcd's rate
    assert rows[6]["status"].startswith("N/A")  # memory: not measured by this runner
    # Flip every figure to the other side of its bar: every status flips with it.
    worse = compare.verdict(_summary(1500, 1000, 20, 30, 0.6), floors)
    assert [r["status"] for r in worse][:6] == ["FAIL", "FAIL", "FAIL", "PASS", "FAIL", "FAIL"]
    assert worse[2]["ratio"] == pytest.approx(20 / 30, abs=1e-3)
    assert worse[5]["ratio"] == pytest.approx(1.2)


def test_verdict_says_not_measured_when_a_figure_is_missing() -> None:
    rows = compare.verdict(compare.summarize([_run("put-sat", "fastraft", 128, 5000)]), None)
    assert all(r["status"].startswith("N/A") for r in rows)
    assert rows[0]["fastraft"] == 5000 and rows[0]["ratio"] is None


@pytest.mark.parametrize("argv", [
    ["--scenarios", "put-sat,nope"], ["--systems", "fastraft,zk"], ["--reps", "0"],
    ["--sat-clients", "0"], ["--read-clients", "x"], ["--duration", "0"],
    ["--scenarios", "put-half", "--systems", "fastraft"], ["--half-rate", "-1"],
    ["--etcd-procs", "9"]])
def test_bad_arguments_are_refused_before_anything_starts(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        compare.parse_args(argv)
    assert e.value.code == 2


def test_arguments_parse_into_sorted_sweeps() -> None:
    a = compare.parse_args(["--sat-clients", "256,64,64", "--scenarios", "put-half",
                            "--systems", "fastraft", "--half-rate", "1000"])
    assert a.sat == [64, 256]
    pts = compare.points(a, "put-half", 1000.0)
    assert pts == [compare.Point("put-half", "put", "linearizable", 256, rate=1000.0)]
    assert [p.clients for p in compare.points(a, "put-sat", 0)] == [64, 256]
    assert compare.points(a, "get-ser", 0)[0].consistency == "serializable"


def test_probes_measure_and_clean_up(tmp_path) -> None:
    f = probes.fsync_append_ms(str(tmp_path), n=20)
    assert len(f) == 20 and all(x > 0 for x in f)
    assert os.listdir(tmp_path) == []  # the probe file is removed
    r = probes.loopback_rtt_ms(n=200, warmup=10)
    assert len(r) == 200 and all(0 < x < 1000 for x in r)
    m = probes.measure(str(tmp_path), fsyncs=10, rtts=50)
    assert m["target_ms"] == pytest.approx(2 * (m["fsync_ms"] + m["rtt_ms"]), abs=1e-3)
    assert m["fsync3_ms"] > 0 and m["pipeline_ms"] > 0
    pl = probes.replication_pipeline_ms(str(tmp_path), n=20, warmup=2)
    assert len(pl) == 20 and all(0 < x < 1000 for x in pl)
    f3 = probes.concurrent_fsync_append_ms(str(tmp_path), procs=3, n=5)
    assert len(f3) == 15 and all(x > 0 for x in f3)
    assert os.listdir(tmp_path) == []  # every prober and pipeline member removed its file
    with pytest.raises(ValueError):
        probes.concurrent_fsync_append_ms(str(tmp_path), procs=0)
    with pytest.raises(ValueError):
        probes.fsync_append_ms(str(tmp_path), n=0)


def test_pysyncobj_members_run_every_load_shape(tmp_path) -> None:
    """A real 3-member PySyncObj cluster on loopback, driven for half a second per shape."""
    pytest.importorskip("pysyncobj")
    a = argparse.Namespace(keys=100, value_size=64, warmup=0.2, duration=0.5, pso_batch="off")
    s = compare.PySyncObj(str(tmp_path), a)
    t0 = time.monotonic()
    try:
        s.start()
        closed = s.run(compare.Point("put-sat", "put", "linearizable", 6), str(tmp_path))
        assert closed["ops"] > 0 and closed["errors"] == {} and closed["members_loaded"] == 3
        opened = s.run(compare.Point("put-half", "put", "linearizable", 30, rate=300.0),
                       str(tmp_path))
        # Open loop: the members issue what was offered (300/s for 0.5 s, give or take edges).
        assert 100 <= opened["ops"] <= 200 and opened["timeouts"] == 0
        one = s.run(compare.Point("put-1", "put", "linearizable", 1), str(tmp_path))
        assert one["members_loaded"] == 1 and one["ops"] > 0
        got = s.run(compare.Point("get-ser", "get", "serializable", 32), str(tmp_path))
        assert got["ops"] > 0 and got["errors"] == {}  # preloaded: no missing keys
        assert s.supports(compare.Point("get-lin", "get", "linearizable", 32))
    finally:
        s.stop()
    assert all(m.proc.poll() is not None for m in s.members)
    assert time.monotonic() - t0 < 60


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(x) for x in f.read().split()}
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def test_sigterm_stops_every_child_and_removes_the_data_dir() -> None:
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, os.path.join(here, "compare.py"), "--systems",
                          "fastraft", "--scenarios", "put-sat", "--sat-clients", "6",
                          "--reps", "3", "--warmup", "0", "--duration", "20", "--no-ceilings"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert p.stderr is not None
        base = ""
        deadline = time.monotonic() + 60
        kids: set[int] = set()
        while time.monotonic() < deadline:  # bounded: the members start within seconds
            line = p.stderr.readline()
            assert line, "compare.py exited early"
            if "data dirs under" in line:
                base = line.split("data dirs under", 1)[1].strip()
            if "rep 1/3" in line:  # the cluster is up and the first run is starting
                break
        # Signal once the load tool runs (its command line is there: exec is done), not while
        # the runner is still inside Popen for it.
        while time.monotonic() < deadline and not any(
                "fastraft.tools.loadgen" in _cmdline(k) for k in _children(p.pid)):
            time.sleep(0.05)
        time.sleep(0.3)
        kids = _children(p.pid)
        assert base and os.path.isdir(base) and len(kids) >= 4
        p.terminate()
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    assert rc == 130
    gone_by = time.monotonic() + 10
    while time.monotonic() < gone_by and any(os.path.exists(f"/proc/{k}") for k in kids):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{k}") for k in kids)
    assert not os.path.exists(base)
