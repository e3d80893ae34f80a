"""The load tool against the in-process no-op endpoint: counts, percentiles, open-loop queueing,
key distributions, the JSON report, multi-process merging, bad input."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import uvloop
from click.testing import CliRunner
from hdrh.histogram import HdrHistogram

from fastraft.tools import loadgen as L
from fastraft.client.codec import decode_request, encode_response


def _monotonic_percentiles(lat: dict[str, float]) -> None:
    seq = [lat["min"], lat["p50"], lat["p90"], lat["p99"], lat["p99.9"], lat["max"]]
    assert seq == sorted(seq), lat
    assert lat["max"] > 0


def _hist_count(encoded: str) -> int:
    return HdrHistogram.decode(encoded.encode()).get_total_count() if encoded else 0


# ------------------------------------------------------------------------------ wire pieces


_LEVEL_ARGS = {"linearizable": {"serializable": False}, "serializable": {"serializable": True},
               "lease": {"consistency": "lease"},
               "bounded": {"consistency": "bounded", "max_staleness_ms": 250.0}}


@pytest.mark.parametrize("consistency", list(_LEVEL_ARGS))
def test_request_frames_decode_as_the_protocol_says(consistency: str) -> None:
    spec = L.Spec(value_size=33, consistency=consistency,
                  max_staleness=0.25 if consistency == "bounded" else 0.0)
    spec.check()
    maker = L._RequestMaker(spec, random.Random(1))
    for rid, kind in ((1, L._UPDATE), (70000, L._READ), (2**32 - 1, L._UPDATE)):
        f = maker.build(rid, kind, b"key-000000000042")
        assert int.from_bytes(f[:4], "big") == len(f) - 4
        got_id, op, args = decode_request(f[4:])
        assert got_id == rid
        if kind == L._UPDATE:
            assert op == "put"
            assert args["key"] == b"key-000000000042" and len(args["value"]) == 33
        else:
            assert op == "range"
            assert args == {"key": b"key-000000000042", **_LEVEL_ARGS[consistency]}


def test_max_staleness_goes_with_bounded_reads_only() -> None:
    with pytest.raises(ValueError, match="bounded"):
        L.Spec(consistency="bounded").check()
    with pytest.raises(ValueError, match="bounded"):
        L.Spec(consistency="lease", max_staleness=0.5).check()


@pytest.mark.parametrize("rid", [0, 5, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63])
def test_response_head_reads_every_id_width(rid: int) -> None:
    assert L._response_head(encode_response(rid, None, {"header": {}})) == (rid, True)
    assert L._response_head(encode_response(rid, ("NO_LEADER", "x", {}), None)) == (rid, False)


# ----------------------------------------------------------------------------- closed loop


def test_closed_loop_counts_match_the_endpoint() -> None:
    srv = L.NoopServerThread()
    with srv as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="put", clients=32, conns=4, warmup=0.0,
                           duration=0.8))
    assert res["mode"] == "closed"
    # a floor, not a speed claim: a busy 2-core CI box may give this test little CPU
    assert res["ops"] > 100, res
    assert res["errors"] == {} and res["timeouts"] == 0, res
    # every request the endpoint answered (but the one status probe) is in the histogram
    assert srv.server.requests == 1 + res["ops"] + res["warmup_ops"]
    assert res["warmup_ops"] == 0
    assert _hist_count(res["histogram"]) == res["ops"]
    assert res["by_op"]["update"]["ops"] == res["ops"]
    _monotonic_percentiles(res["latency_ms"])
    assert res["throughput"] == pytest.approx(res["ops"] / res["duration_s"], rel=0.01)
    assert 0.7 <= res["duration_s"] <= 3.0, res


def test_a_run_runs_on_uvloop_and_leaves_the_event_loop_policy_alone() -> None:
    # The tool is also a library (bench/compare.py, tests): installing uvloop's policy for the
    # whole process changed the loop of every later asyncio.run of its caller.
    before = asyncio.get_event_loop_policy()
    seen: list[type] = []
    real = L._find_target

    async def spy(endpoints: list[str], timeout: float = 10.0) -> tuple[str, int]:
        seen.append(type(asyncio.get_running_loop()))
        return await real(endpoints, timeout)

    with L.NoopServerThread() as ep:
        try:
            L._find_target = spy  # type: ignore[assignment]
            res = L.run(L.Spec(endpoints=[ep], workload="put", clients=2, conns=1, warmup=0.0,
                               duration=0.2))
        finally:
            L._find_target = real  # type: ignore[assignment]
    assert res["ops"] > 0
    assert seen and all(issubclass(t, uvloop.Loop) for t in seen), seen
    assert asyncio.get_event_loop_policy() is before


def test_closed_loop_op_count_and_warmup() -> None:
    srv = L.NoopServerThread()
    with srv as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="ycsb-a", keys=50, clients=8, conns=2,
                           warmup=0.2, duration=20.0, ops=700))
    assert res["ops"] == 700  # exactly: no more are started once 700 measured ones are out
    assert res["warmup_ops"] > 0
    assert srv.server.requests == 1 + 50 + res["ops"] + res["warmup_ops"]  # status, preload
    assert res["duration_s"] < 10  # ended by the count, not the 20 s cap
    reads, updates = res["by_op"]["read"]["ops"], res["by_op"]["update"]["ops"]
    assert reads + updates == 700
    assert 250 < reads < 450  # YCSB A is 50/50 (binomial, seeded)
    for b in res["by_op"].values():
        _monotonic_percentiles(b["latency_ms"])


def test_ycsb_b_mix_and_preload_make_reads_hit() -> None:
    srv = L.NoopServerThread()
    with srv as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="ycsb-b", keys=100, clients=4, conns=1,
                           warmup=0.0, duration=5.0, ops=2000, consistency="serializable"))
    assert len(srv.server.store) == 100  # preloaded every key
    frac = res["by_op"]["read"]["ops"] / res["ops"]
    assert 0.93 < frac < 0.97


# ------------------------------------------------------------------------------- open loop


def test_open_loop_sends_exactly_the_offered_schedule() -> None:
    with L.NoopServerThread() as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="put", rate=500, conns=2, warmup=0.0,
                           duration=0.6))
    assert res["mode"] == "open" and res["offered_rate"] == 500
    assert res["ops"] == 300  # i/rate < duration for i = 0..299
    assert _hist_count(res["histogram"]) == 300
    _monotonic_percentiles(res["latency_ms"])
    assert res["latency_ms"]["p50"] < 100  # an idle fast endpoint: no queueing (loose: busy CI)


def test_open_loop_latency_counts_queueing_from_intended_time() -> None:
    # Endpoint: one request at a time, 5 ms each (capacity 200/s); offered 300/s for 0.6 s with
    # one request in flight allowed. Requests pile up in the generator's backlog; the last is due
    # at 0.6 s but answered near 0.9 s. Measured from the actual send time every latency would be
    # about 5 ms; measured from the intended time the median is well over 50 ms.
    srv = L.NoopServerThread(delay=0.005)
    with srv as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="put", rate=300, conns=1, max_inflight=1,
                           warmup=0.0, duration=0.6))
    assert res["ops"] == 180
    assert res["max_backlog"] > 20
    lat = res["latency_ms"]
    assert lat["min"] >= 4.5  # nothing can beat the endpoint's service time
    assert lat["p50"] > 50
    assert lat["max"] > 200
    _monotonic_percentiles(lat)
    assert res["throughput"] < 230  # achieved is the endpoint's capacity, not the offered rate


# ---------------------------------------------------------------------------- distributions


def test_zipfian_is_skewed_as_zipf_says() -> None:
    z = L.Zipfian(1000, 0.99, random.Random(7))
    n = 200_000
    c = Counter(z.next() for _ in range(n))
    assert min(c) >= 0 and max(c) < 1000
    p0 = c[0] / n
    assert p0 == pytest.approx(1 / z.zetan, rel=0.08)  # P(rank 0) = 1 / zeta(n)
    # P(r) ∝ 1/(r+1)^theta: rank 0 vs rank 9 is 10^0.99 ≈ 9.8
    assert c[0] / c[9] == pytest.approx(10 ** 0.99, rel=0.25)
    top10 = sum(v for _, v in c.most_common(10)) / n
    assert top10 > 0.35


def test_uniform_is_flat_and_keys_have_fixed_size() -> None:
    kc = L.KeyChooser(L.Spec(keys=100, distribution="uniform", key_size=20), random.Random(3))
    n = 50_000
    c = Counter(kc.next_index() for _ in range(n))
    assert len(c) == 100
    assert max(c.values()) < 1.3 * n / 100 and min(c.values()) > 0.7 * n / 100
    assert {len(kc.key(i)) for i in (0, 7, 99)} == {20}
    assert kc.key(7) != kc.key(8)


# ------------------------------------------------------------------------ merge, processes


def test_merge_of_encoded_histograms_adds_counts() -> None:
    a, b = L.new_histogram(), L.new_histogram()
    for v in range(1, 1001):
        a.record_value(v)
    b.record_value(50_000)
    m = L.merge_encoded([L._encode(a), "", L._encode(b)])
    assert m.get_total_count() == 1001
    assert m.get_max_value() == pytest.approx(50_000, rel=0.001)
    assert m.get_value_at_percentile(50) == pytest.approx(501, rel=0.01)


def test_two_processes_merge_into_one_report() -> None:
    srv = L.NoopServerThread()
    with srv as ep:
        res = L.run(L.Spec(endpoints=[ep], workload="put", procs=2, clients=16, conns=4,
                           warmup=0.0, duration=0.8))
    assert res["spec"]["procs"] == 2
    assert res["ops"] > 50, res
    assert res["errors"] == {} and res["timeouts"] == 0
    assert srv.server.requests == 1 + res["ops"] + res["warmup_ops"]
    assert _hist_count(res["histogram"]) == res["ops"]
    _monotonic_percentiles(res["latency_ms"])


def test_share_splits_the_load_without_losing_any() -> None:
    spec = L.Spec(procs=3, conns=7, clients=22, ops=1000, rate=900)
    parts = [spec.share(i) for i in range(3)]
    assert sum(p.conns for p in parts) == 7 and min(p.conns for p in parts) >= 1
    assert sum(p.clients for p in parts) == 22
    assert sum(p.ops for p in parts) == 1000
    assert sum(p.rate for p in parts) == pytest.approx(900)
    assert len({p.seed for p in parts}) == 3


# ----------------------------------------------------------------------------------- CLI


def test_cli_json_report_schema(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    srv = L.NoopServerThread()
    with srv as ep:
        r = CliRunner().invoke(L.bench_command, [
            "--endpoints", ep, "--workload", "ycsb-c", "--keys", "20", "--clients", "4",
            "--conns", "2", "--warmup", "0", "--duration", "0.5", "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "ops/s" in r.output and "p99.9" in r.output
    rep = json.loads(out.read_text())
    assert rep["schema"] == L.SCHEMA_VERSION and rep["tool"] == "fastraft-loadgen"
    res = rep["result"]
    for k, t in {"target": str, "spec": dict, "mode": str, "ops": int, "errors": dict,
                 "timeouts": int, "duration_s": float, "throughput": float, "latency_ms": dict,
                 "by_op": dict, "histogram": str, "warmup_ops": int}.items():
        assert isinstance(res[k], t), k
    assert set(res["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "max"}
    assert res["spec"]["workload"] == "ycsb-c" and res["spec"]["keys"] == 20
    assert list(res["by_op"]) == ["read"]
    assert _hist_count(res["histogram"]) == res["ops"] > 0


def test_cli_sweep_writes_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    with L.NoopServerThread() as ep:
        r = CliRunner().invoke(L.bench_command, [
            "--endpoints", ep, "--sweep", "200,400", "--conns", "1", "--warmup", "0",
            "--duration", "0.4", "--json", str(out), "--plot", str(png), "--quiet"])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert [s["offered_rate"] for s in rep["sweep"]] == [200, 400]
    assert [s["ops"] for s in rep["sweep"]] == [80, 160]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, msg", [
    (["--keys", "0"], "keys must be >= 1"),
    (["--workload", "ycsb-z"], "ycsb-z"),
    (["--rate", "-5"], "rate must be >= 0"),
    (["--procs", "3", "--conns", "2"], "procs must be <= conns"),
    (["--sweep", "100,abc"], "comma-separated numbers"),
    (["--plot", "x.png"], "--plot needs --sweep"),
    (["--endpoints", "localhost"], "bad endpoint"),
])
def test_cli_bad_input_is_refused_before_any_request(args: list[str], msg: str) -> None:
    srv = L.NoopServerThread()
    with srv as ep:
        base = [] if "--endpoints" in args else ["--endpoints", ep]
        r = CliRunner().invoke(L.bench_command, base + args + ["--quiet"])
    assert r.exit_code == 2
    assert msg in r.output
    assert srv.server.requests == 0


def test_no_leader_is_a_clear_error() -> None:
    # an endpoint that refuses connections: nothing answers status
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(RuntimeError, match="no leader found"):
        import asyncio
        asyncio.run(L._find_target([f"127.0.0.1:{port}"], timeout=0.5))


def test_module_help_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "fastraft.tools.loadgen", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--noop-ceiling" in r.stdout and "--sweep" in r.stdout
    assert L.bench_command.name == "bench"  # the lead mounts it as `fastraft bench`
