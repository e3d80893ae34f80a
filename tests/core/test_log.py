"""Unit tests of fastraft._core.Log: the in-memory log, its truncation and compaction rules."""

from __future__ import annotations

import pytest

from fastraft._core import ENTRY_CONF_CHANGE, ENTRY_NORMAL, Log


def ents(first: int, terms: list[int]) -> list[tuple]:
    return [(first + i, t, ENTRY_NORMAL, b"d%d" % (first + i)) for i, t in enumerate(terms)]


def test_empty_log() -> None:
    log = Log()
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 0, 0)
    assert log.term(0) == 0 and log.term(5) == 0 and log.entry(1) is None


def test_append_new_and_terms() -> None:
    log = Log()
    assert log.append_new(1, [b"a", b"b"]) == 2
    assert log.append_new(2, [b"c"], ENTRY_CONF_CHANGE) == 3
    assert [log.term(i) for i in (1, 2, 3)] == [1, 1, 2]
    assert log.conf_indexes == [3]
    with pytest.raises(TypeError):
        log.append_new(2, ["not bytes"])  # type: ignore[list-item]
    assert log.last_index() == 3  # the bad call appended nothing


def test_malformed_entries_are_refused_and_change_nothing() -> None:
    log = Log(0, 0, ents(1, [1, 1]))
    with pytest.raises(ValueError):
        log.append([(5, 1, 0, b"gap")])
    with pytest.raises(ValueError):
        log.maybe_append(2, 1, [(3, 1, 0, "str")])  # type: ignore[list-item]
    assert log.entries() == ents(1, [1, 1])


def test_maybe_append_truncates_a_conflicting_suffix() -> None:
    log = Log(0, 0, ents(1, [1, 1, 1, 1]))
    assert log.maybe_append(9, 1, ents(10, [2])) == 0  # prev missing: reject
    assert log.maybe_append(2, 2, ents(3, [2])) == 0    # prev term mismatch: reject
    new = ents(3, [2, 2])
    assert log.maybe_append(2, 1, new) == 4
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 2, 2]
    # Re-delivering an older, already-matching prefix does not truncate what follows it.
    assert log.maybe_append(1, 1, ents(2, [1])) == 2
    assert log.last_index() == 4


def test_committed_entries_are_never_truncated() -> None:
    log = Log(0, 0, ents(1, [1, 1, 1]))
    log.committed = 3
    with pytest.raises(ValueError, match="committed"):
        log.truncate_after(1)
    assert log.last_index() == 3


def test_unstable_and_stable() -> None:
    log = Log(0, 0, ents(1, [1]))
    log.append_new(1, [b"x", b"y"])
    assert [e[0] for e in log.take_unstable()] == [2, 3]
    assert log.take_unstable() == []
    log.stable_to(3, 1)
    assert log.stable == 3
    # A stale confirmation (the entry at 3 was since replaced by another term) is ignored.
    log.truncate_after(2)
    log.append([(3, 2, ENTRY_NORMAL, b"z")])
    assert log.stable == 2
    log.stable_to(3, 1)
    assert log.stable == 2


def test_compact_and_restore() -> None:
    log = Log(0, 0, ents(1, [1, 1, 2, 2]))
    log.compact(2)
    assert (log.offset, log.snap_term, log.first_index()) == (2, 1, 3)
    assert log.term(2) == 1 and log.term(1) == 0 and log.entry(2) is None
    with pytest.raises(IndexError):
        log.slice(2, 4)
    with pytest.raises(ValueError):
        log.compact(10)
    log.restore(10, 3)
    assert (log.last_index(), log.last_term(), log.committed, len(log)) == (10, 3, 10, 0)


def test_slice_limits() -> None:
    log = Log(0, 0, ents(1, [1] * 10))
    assert len(log.slice(1, 11, 3)) == 3
    assert len(log.slice(1, 11, 0, 1)) == 1  # at least one entry even over the byte limit
    assert log.slice(5, 5) == []


def test_is_up_to_date_and_find_conflict_by_term() -> None:
    log = Log(0, 0, ents(1, [1, 1, 2, 3, 3]))
    assert log.is_up_to_date(5, 3) and log.is_up_to_date(1, 4)
    assert not log.is_up_to_date(4, 3) and not log.is_up_to_date(9, 2)
    assert log.find_conflict_by_term(5, 2) == 3
    assert log.find_conflict_by_term(5, 0) == 0


def test_entry_field_names_match_the_logs_tuples() -> None:
    # raft/core.py names the fields of an entry tuple for code outside the apply loops: the
    # names must say what _core.Log actually stores at each position.
    from fastraft.raft.core import ENTRY_DATA, ENTRY_INDEX, ENTRY_TERM, ENTRY_TYPE

    log = Log()
    log.append_new(7, [b"x"], ENTRY_CONF_CHANGE)
    e = log.entry(1)
    assert e is not None
    assert (e[ENTRY_INDEX], e[ENTRY_TERM], e[ENTRY_TYPE], e[ENTRY_DATA]) == (
        1, 7, ENTRY_CONF_CHANGE, b"x")
