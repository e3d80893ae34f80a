"""Figures from workload records (src/fastraft/tools/pacelc/measure.py): staleness against the
acknowledged writes, bounded-read violations, partition sides, leader timings."""

from __future__ import annotations

import pytest

from fastraft.tools.pacelc.measure import (
    contact_ages,
    latency,
    leader_agreed,
    leader_at,
    leader_elected,
    side_figures,
    staleness,
)


def w(invoke: float, complete: float, rev: int | None, err: str | None = None) -> list:
    return ["write", invoke, complete, rev, err]


def r(invoke: float, rev: int | None, level: str = "serializable", err: str | None = None
      ) -> list:
    return [level, invoke, invoke + 0.001, rev, err]


WRITES = [w(0.0, 0.010, 2), w(0.020, 0.030, 3), w(0.040, 0.050, 4),
          w(0.060, 0.070, None, "TimeoutError")]


def test_a_read_is_as_stale_as_the_writes_acknowledged_before_it_that_it_missed() -> None:
    st = staleness([r(0.005, 1),    # before any acknowledgement: not stale
                    r(0.035, 3),    # saw everything acknowledged (rev 3 at 0.030)
                    r(0.055, 2),    # missed rev 3 (acked 0.030) and 4 (acked 0.050)
                    r(0.100, 1)],   # missed 2, 3, 4; outdated since 0.010
                   WRITES)
    assert st.revs == [0, 0, 2, 3]
    assert st.ms == pytest.approx([0.0, 0.0, 25.0, 90.0])
    assert st.violations == []


def test_failed_reads_and_unacknowledged_writes_do_not_count() -> None:
    st = staleness([r(0.1, None, err="NoLeaderError")], WRITES)
    assert st.revs == [] and st.ms == []
    st = staleness([r(0.1, 4)], WRITES)  # the timed-out write has no revision: not missed
    assert st.revs == [0] and st.ms == [0.0]


def test_a_bounded_read_staler_than_its_bound_is_a_violation() -> None:
    st = staleness([r(0.055, 2, "bounded"), r(0.100, 1, "bounded")], WRITES, bound_s=0.050)
    assert [v["revision"] for v in st.violations] == [1]  # 90 ms > 50 ms; 25 ms is within
    assert st.summary()["violations"] == 1
    assert st.summary()["stale"] == 2


def test_latency_percentiles_and_errors() -> None:
    ops = [["write", i * 0.01, i * 0.01 + 0.002, i, None] for i in range(100)]
    ops.append(["write", 1.0, 1.5, None, "TimeoutError"])
    lat = latency(ops)
    assert lat.ok == 100 and lat.failed == 1 and lat.errors == {"TimeoutError": 1}
    assert lat.p50_ms == pytest.approx(2.0, rel=0.01)
    assert lat.throughput == pytest.approx(100 / 1.5, rel=0.01)
    assert latency([]).p50_ms is None


def test_side_figures_split_the_partition_from_before_and_after() -> None:
    t_cut, t_heal = 10.0, 20.0
    ops = [["linearizable", 9.0, 9.1, 5, None],          # before the cut: not counted
           ["linearizable", 10.5, 10.6, 5, None],        # answered just after the cut
           ["linearizable", 11.0, 12.0, None, "NoLeaderError"],
           ["linearizable", 13.0, 14.0, None, "NoLeaderError"],   # steady state (settle 2)
           ["linearizable", 19.5, 20.5, None, "TimeoutError"],    # straddles the heal
           ["linearizable", 20.8, 20.9, 9, None]]        # recovered
    f = side_figures(ops, t_cut, t_heal, settle=2.0)
    assert (f.during, f.ok, f.steady_ok, f.steady_total) == (3, 1, 0, 1)
    assert f.error_rate == pytest.approx(2 / 3)
    assert f.steady_availability == 0.0
    assert f.fail_ms_p50 == pytest.approx(1000.0)
    assert f.last_ok_s == pytest.approx(0.5)
    assert f.recovery_s == pytest.approx(0.8)
    assert f.errors == {"NoLeaderError": 2}


def test_leader_timings_from_status_samples() -> None:
    old, new = 0xA, 0xB
    samples = [[9.9, 2, old, 3], [10.5, 2, old, 3], [11.2, 2, 0, 3], [11.4, 2, new, 4]]
    assert leader_elected(samples, old, 10.0) == pytest.approx(1.4)
    assert leader_elected(samples[:3], old, 10.0) is None
    # Only during the cut: a change after healing is not the cut's election.
    assert leader_elected(samples, old, 10.0, 11.3) is None
    assert leader_at(samples, 11.3) == old and leader_at(samples, 12.0) == new
    assert leader_at(samples, 9.0) is None
    by_member = {"n1": [[20.1, 1, old, 3], [20.6, 1, new, 4]],
                 "n2": [[20.2, 2, new, 4]], "n3": [[20.3, 3, None, "TimeoutError"]]}
    # n3's poll failed (no member id): it does not count; n1 agrees at 20.6.
    by_member["n3"] = [[20.3, None, None, "TimeoutError"], [20.4, 3, new, 4]]
    assert leader_agreed(by_member, 20.0) == pytest.approx(0.6)


def test_contact_ages_of_the_answers_that_report_one() -> None:
    ops = [["bounded", 0, 1, 5, None, 0.120], ["bounded", 0, 1, 5, None, 0.020],
           ["bounded", 0, 1, None, "TooStaleError", None], ["bounded", 0, 1, 5, None, None],
           ["serializable", 0, 1, 5, None]]  # an older record without the field
    got = contact_ages(ops)
    assert got is not None and got["answers"] == 2
    assert got["max_ms"] == pytest.approx(120.0) and got["p50_ms"] == pytest.approx(120.0)
    assert contact_ages(ops[2:]) is None
