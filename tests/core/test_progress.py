"""Unit tests of fastraft._core's Progress and ProgressTracker (quorum arithmetic, flow control)."""

from __future__ import annotations

from fastraft._core import PROBE, REPLICATE, SNAPSHOT, Progress, ProgressTracker


def test_committed_is_the_quorum_match() -> None:
    t = ProgressTracker((1, 2, 3, 4, 5))
    for id_, m in zip((1, 2, 3, 4, 5), (9, 7, 5, 3, 1)):
        t.progress[id_].match = m
    assert t.quorum() == 3
    assert t.committed() == 5
    t = ProgressTracker((1, 2, 3, 4))
    for id_, m in zip((1, 2, 3, 4), (9, 7, 5, 3)):
        t.progress[id_].match = m
    assert t.committed() == 7 - 2  # three of four needed: the third highest


def test_learners_do_not_count() -> None:
    t = ProgressTracker((1, 2, 3), (4,))
    t.progress[4].match = 100
    t.progress[1].match = 10
    assert t.committed() == 0
    assert t.progress[4].is_learner


def test_votes() -> None:
    t = ProgressTracker((1, 2, 3))
    t.record_vote(1, True)
    assert t.tally_votes() == (1, 0, 0)
    t.record_vote(2, False)
    t.record_vote(2, True)  # a second answer from the same voter is ignored
    assert t.tally_votes() == (1, 1, 0)
    t.record_vote(3, True)
    assert t.tally_votes()[2] == 1
    t.record_vote(9, True)  # not a voter
    assert t.tally_votes()[0] == 2


def test_probe_sends_one_at_a_time() -> None:
    p = Progress(0, 5, 4)
    assert p.state == PROBE and not p.is_paused()
    p.sent_entries(7, 3)
    assert p.is_paused()
    assert p.maybe_update(7)
    assert not p.is_paused()


def test_replicate_window() -> None:
    p = Progress(0, 1, 2)
    p.become_replicate()
    p.sent_entries(3, 3)
    p.sent_entries(5, 2)
    assert p.is_paused() and p.inflight == 2 and p.next == 6
    p.maybe_update(3)
    p.infl_free_le(3)
    assert not p.is_paused() and p.inflight == 1


def test_rejections() -> None:
    p = Progress(5, 10, 8)
    p.become_replicate()
    assert not p.maybe_decr_to(4, 0)  # stale: below match
    assert p.maybe_decr_to(8, 0) and p.next == 6
    q = Progress(0, 10, 8)
    assert not q.maybe_decr_to(5, 0)  # not the probe we sent
    assert q.maybe_decr_to(9, 3) and q.next == 4


def test_snapshot_state() -> None:
    p = Progress(2, 3, 8)
    p.become_snapshot(50)
    assert p.state == SNAPSHOT and p.is_paused()
    p.maybe_update(50)
    p.become_probe()
    assert p.state == PROBE and p.next == 51
    p.become_replicate()
    assert p.state == REPLICATE


def test_set_config_keeps_existing_progress() -> None:
    t = ProgressTracker((1, 2, 3))
    t.progress[2].match = 7
    t.set_config((1, 2, 3, 4), (), 11)
    assert t.progress[2].match == 7 and t.progress[4].next == 11
    assert t.voters == (1, 2, 3, 4)


def test_reset_recent_active_keeps_only_self() -> None:
    # (CheckQuorum itself is the core's _quorum_ack_age, tested in the scenarios.)
    t = ProgressTracker((1, 2, 3))
    for i in (1, 2, 3):
        t.progress[i].recent_active = True
    t.reset_recent_active(1)
    assert [t.progress[i].recent_active for i in (1, 2, 3)] == [True, False, False]
