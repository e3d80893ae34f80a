"""server/readlevels.py's pieces on their own: parsing a range's level, the leader-contact
evidence, the tick clock; and the client's side of the wire fields."""

from __future__ import annotations

from typing import Any

import pytest

from fastraft.client.api import _level_args
from fastraft.errors import BadRequestError, LeaseUnavailableError
from fastraft.raft.core import LEADER_COMMIT_UNKNOWN
from fastraft.server.readlevels import LeaderContacts, ReadLevels, TickClock, parse_read_level


@pytest.mark.parametrize("args, want", [
    ({}, ("linearizable", None)),
    ({"serializable": False}, ("linearizable", None)),
    ({"serializable": True}, ("serializable", None)),
    ({"consistency": "lease"}, ("lease", None)),
    ({"consistency": "serializable", "serializable": True}, ("serializable", None)),
    ({"consistency": "bounded", "max_staleness_ms": 500}, ("bounded", 0.5)),
    ({"consistency": "bounded", "max_staleness_ms": 2.5}, ("bounded", 0.0025)),
    ({"consistency": "lease", "serializable": False}, ("lease", None)),
])
def test_parse_read_level(args: dict, want: tuple) -> None:
    a = dict(args, key=b"k")
    assert parse_read_level(a) == want
    assert a == {"key": b"k"}  # the level's fields are taken out, the range's stay


@pytest.mark.parametrize("args, words", [
    ({"consistency": "strong"}, "consistency must be one of"),
    ({"consistency": None, "serializable": 1}, "serializable must be a bool"),
    ({"consistency": "bounded"}, "needs max_staleness_ms"),
    ({"consistency": "bounded", "max_staleness_ms": 0}, "max_staleness_ms must be"),
    ({"consistency": "bounded", "max_staleness_ms": float("inf")}, "max_staleness_ms must be"),
    ({"consistency": "bounded", "max_staleness_ms": False}, "max_staleness_ms must be"),
    ({"consistency": "lease", "max_staleness_ms": 5}, "bounded only"),
    ({"serializable": True, "consistency": "bounded", "max_staleness_ms": 5}, "contradicts"),
])
def test_parse_read_level_refuses_clearly(args: dict, words: str) -> None:
    with pytest.raises(BadRequestError, match=words):
        parse_read_level(dict(args))


def test_client_level_fields_keep_old_servers_working() -> None:
    # Linearizable and serializable keep the old flag: a server without read levels serves them.
    assert _level_args("l", None) == {"serializable": False}
    assert _level_args("linearizable", None) == {"serializable": False}
    assert _level_args("s", None) == {"serializable": True}
    assert _level_args("lease", None) == {"consistency": "lease"}
    assert _level_args("bounded", 0.5) == {"consistency": "bounded", "max_staleness_ms": 500.0}
    for level, bound in (("bounded", None), ("bounded", -1.0), ("bounded", True),
                         ("lease", 1.0), ("x", None), ("bounded", float("nan"))):
        with pytest.raises(BadRequestError):
            _level_args(level, bound)


def test_leader_contacts_keep_the_freshest_evidence() -> None:
    c = LeaderContacts()
    assert c.fresh_since(100) is None and c.last is None
    c.record(1.0, 10)
    c.record(2.0, 12)
    c.record(3.0, 15)
    assert c.fresh_since(9) is None          # applied below every commit heard
    assert c.fresh_since(12) == (2.0, 12)    # the newest contact that applied covers
    assert c.fresh_since(20) == (3.0, 15)
    assert c.next_needed(12) == 15
    # A later message carrying a lower commit (a reordered or a new leader's): the newest time
    # for that commit; higher commits heard earlier are dominated.
    c.record(4.0, 13)
    assert c.fresh_since(13) == (4.0, 13) and c.next_needed(13) is None
    c.record(5.0, LEADER_COMMIT_UNKNOWN)      # contact, but no evidence
    assert c.last == 5.0 and c.fresh_since(10**9) == (4.0, 13)
    assert c.next_needed(13) == LEADER_COMMIT_UNKNOWN


def test_tick_clock_forgets_old_ticks() -> None:
    clk = TickClock(keep=3)
    for t in range(6):
        clk.record(t, 10.0 + t)
    assert clk.time_of(5) == 15.0 and clk.time_of(3) == 13.0
    assert clk.time_of(2) is None  # forgotten: a round that old counts as too old


def test_lease_lasts_election_timeout_less_a_tick_less_drift() -> None:
    lv = ReadLevels(election_timeout=1.0, heartbeat_interval=0.1, clock_drift=0.1,
                    election_tick=10)
    assert lv.lease_duration == pytest.approx(0.8)
    with pytest.raises(ValueError):
        ReadLevels(election_timeout=1.0, heartbeat_interval=0.1, clock_drift=0.9,
                   election_tick=10)


def test_leader_contacts_stay_bounded_and_only_grow_more_conservative() -> None:
    c = LeaderContacts()
    for i in range(10 * LeaderContacts.MAX_ENTRIES):
        c.record(float(i), i + 1)
    assert len(c._commits) <= LeaderContacts.MAX_ENTRIES
    # Whatever was dropped, no applied index finds evidence fresher than it really had.
    for applied in (1, 500, 5000, 10 * LeaderContacts.MAX_ENTRIES):
        f = c.fresh_since(applied)
        assert f is not None and f[1] <= applied and f[0] <= applied - 1
    c.prune(10 * LeaderContacts.MAX_ENTRIES)
    assert len(c._commits) == 1


class _LeaderStub:
    """The few things ReadLevels.lease_index asks of a core, set per case."""

    def __init__(self, refusal: str | None, check_quorum: bool = True,
                 round_: tuple[int, int] | None = (10, 7), lease_valid: bool = True) -> None:
        self.refusal = refusal
        self.cfg = type("Cfg", (), {"check_quorum": check_quorum})()
        self.round = round_
        self.lease_valid = lease_valid
        self.commit = 7

    def lease_refusal(self) -> str | None:
        return self.refusal

    def quorum_round(self) -> tuple[int, int] | None:
        return self.round


def _lease_error(lv: ReadLevels, raft: Any, now: float) -> LeaseUnavailableError:
    with pytest.raises(LeaseUnavailableError) as ei:
        lv.lease_index(raft, now)
    return ei.value


def test_lease_refusals_say_whether_asking_again_helps() -> None:
    """A refusal that passes on a healthy leader (a new term before its first acknowledged
    round, a transfer) carries retry_ms, the heartbeat interval; an expired lease (a cut-off
    leader) and CheckQuorum off do not, so the client fails fast on those."""
    lv = ReadLevels(election_timeout=1.0, heartbeat_interval=0.1, clock_drift=0.1,
                    election_tick=10)
    lv.clock.record(10, 100.0)  # the round of tick 10 was sent at t=100
    assert lv.lease_index(_LeaderStub(None), 100.5) == 7  # within the 0.8 s lease
    for why in ("no entry of this term is committed yet",
                "leadership transfer to 2 in progress"):
        e = _lease_error(lv, _LeaderStub(why), 100.5)
        assert e.extra == {"retry_ms": 100} and why in e.message
    e = _lease_error(lv, _LeaderStub(None, round_=None), 100.5)
    assert e.extra == {"retry_ms": 100} and "no heartbeat round" in e.message
    e = _lease_error(lv, _LeaderStub(None), 100.9)
    assert e.extra == {} and "lease expired" in e.message
    e = _lease_error(lv, _LeaderStub("CheckQuorum is off", check_quorum=False), 100.5)
    assert e.extra == {}
