"""The PACELC classification is derived from measured figures by a stated rule
(src/fastraft/tools/pacelc/classify.py): each class follows from numbers, never from a name."""

from __future__ import annotations

from fastraft.tools.pacelc.classify import (
    EC_MIN,
    PA_MIN,
    RULES,
    classify,
    classify_e,
    classify_p,
)
from fastraft.tools.pacelc.lab import _classification


def test_latency_that_follows_the_delay_is_ec_and_flat_latency_is_el() -> None:
    # A ReadIndex read: two member-to-member crossings per answer.
    assert classify_e({0: 0.6, 5: 10.8, 20: 40.7})[0] == "EC"
    # A local read: the delay does not show.
    assert classify_e({0: 0.20, 20: 0.21, 50: 0.19})[0] == "EL"
    # The line is halfway to one crossing: noise of a loaded machine stays below it.
    assert classify_e({0: 0.2, 20: 6.3})[0] == "EL"
    assert classify_e({0: 1.0, 20: 21.0})[0] == "EC"
    e, why = classify_e({0: 1.0, 50: 51.0})
    assert e == "EC" and "+1.00 ms per ms" in why
    # The thresholds are the rule's.
    assert classify_e({0: 0.0, 10: 10 * EC_MIN})[0] == "EC"
    assert classify_e({0: 0.0, 10: 10 * EC_MIN - 0.01})[0] == "EL"


def test_unmeasured_latency_gives_no_e_class() -> None:
    assert classify_e({0: 1.0})[0] == "-"
    assert classify_e({0: None, 20: 3.0})[0] == "-"
    assert classify_e({})[0] == "-"


def test_a_level_answering_on_the_lone_side_is_pa_refusing_is_pc() -> None:
    assert classify_p({"leader isolated": 1.0, "follower isolated": 0.97})[0] == "PA"
    assert classify_p({"leader isolated": 0.0, "follower isolated": 0.0})[0] == "PC"
    # A lease: answers shortly after the cut, none in the steady state.
    p, why = classify_p({"leader isolated": 0.0}, {"leader isolated": 0.8})
    assert p == "PC" and "0.80 s after the cut" in why
    assert classify_p({"leader isolated": PA_MIN})[0] == "PA"
    assert classify_p({"leader isolated": 1.0, "follower isolated": 0.0})[0] == "P?"
    assert classify_p({"leader isolated": None})[0] == "-"


def test_verdict_label_and_rule_text() -> None:
    v = classify({0: 0.2, 20: 0.2}, {"leader isolated": 1.0})
    assert v.label == "PA/EL"
    assert v.as_dict()["label"] == "PA/EL"
    assert "PA if" in RULES and "EC if" in RULES


def _point(level: str, delay: float, ok: int, p50: float | None,
           errors: dict[str, int] | None = None) -> dict:
    return {"level": level, "delay_ms": delay,
            "latency": {"ok": ok, "failed": sum((errors or {}).values()), "p50_ms": p50,
                        "errors": errors or {}}}


def _lone(steady_ok: int, steady_total: int) -> dict:
    return {"steady_ok": steady_ok, "steady_total": steady_total, "last_ok_s": None}


def test_the_run_classifies_each_level_from_its_own_figures() -> None:
    res = {"levels": ["linearizable", "serializable"],
           "else": [_point("linearizable", 0, 100, 0.6), _point("linearizable", 20, 50, 80.0),
                    _point("serializable", 0, 100, 0.2), _point("serializable", 20, 100, 0.2)],
           "partitions": [{"scenario": "leader",
                           "sides": {"lone": {"linearizable": _lone(0, 3),
                                              "serializable": _lone(80, 80)}}},
                          {"scenario": "oneway",  # reported, not used by the rule
                           "sides": {"lone": {"linearizable": _lone(9, 9),
                                              "serializable": _lone(0, 9)}}}]}
    got = _classification(res)
    assert got["linearizable"]["label"] == "PC/EC"
    assert got["serializable"]["label"] == "PA/EL"
    # Swap the figures: the classes follow them.
    res["else"] = [_point("linearizable", 0, 100, 0.2), _point("linearizable", 20, 100, 0.2),
                   _point("serializable", 0, 100, 0.6), _point("serializable", 20, 50, 80.0)]
    got = _classification(res)
    assert got["linearizable"]["e"] == "EL" and got["serializable"]["e"] == "EC"


def test_a_level_that_never_answered_is_not_classified() -> None:
    # A build without the level refuses everything: that is no choice of consistency.
    res = {"levels": ["lease"],
           "else": [_point("lease", 0, 0, None, {"BadRequestError": 500}),
                    _point("lease", 20, 0, None, {"BadRequestError": 400})],
           "partitions": [{"scenario": "leader", "sides": {"lone": {"lease": _lone(0, 50)}}}]}
    got = _classification(res)["lease"]
    assert got["label"] == "-/-"
    assert "BadRequestError" in got["why_p"]
