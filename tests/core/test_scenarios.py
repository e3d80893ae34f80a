"""Scripted scenarios, one claim of the Raft paper/thesis each, on the simulated cluster.

Every scenario runs with the simulator's invariant checks on after every step (election safety,
log matching, leader completeness, state machine safety, durability of committed entries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import lincheck
from raftsim import Cluster, SimError
from fastraft.errors import LeaseUnavailableError, ProposalDroppedError, TooStaleError
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_ADD_VOTER,
    CC_PROMOTE,
    CC_REMOVE,
    LEADER_COMMIT_UNKNOWN,
    LEASE_MARGIN_TICKS,
    Message,
    MsgType,
)

APP = MsgType.MsgApp.value
APP_RESP = MsgType.MsgAppResp.value
HEARTBEAT = MsgType.MsgHeartbeat.value
HEARTBEAT_RESP = MsgType.MsgHeartbeatResp.value
SNAP = MsgType.MsgSnap.value
TIMEOUT_NOW = MsgType.MsgTimeoutNow.value
READ_INDEX = MsgType.MsgReadIndex.value


def _ok_reads(c: Cluster, id: int, ctx: bytes) -> list:
    return [rs for rs in c.members[id].read_states if rs.ctx == ctx and rs.ok]


def _hold(c: Cluster, pred: Callable[[Message], bool]) -> list[Message]:
    """From now on the network holds back every message matching `pred` (instead of delivering
    it); returns the list they collect in, to be handed over later with `_hand_over`."""
    held: list[Message] = []

    def hold(m: Message) -> bool:
        if pred(m):
            held.append(m)
            return True
        return False

    c.drop_filter = hold
    return held


def _hand_over(c: Cluster, held: list[Message]) -> None:
    """Deliver held messages now, past the network's filter and cuts."""
    for m in held:
        mem = c.members[m.to]
        mem.raft.step(m)
        mem.pump()
    held.clear()


# ------------------------------------------------------------------ Figure 8 (§5.4.2)
def _campaign_until_leader(c: Cluster, id: int, tries: int = 3) -> None:
    """Campaign (no ticks) until `id` wins: a first try may land in a term where some voter
    already voted for someone else."""
    m = c.members[id]
    for _ in range(tries):
        m.raft.campaign()
        m.pump()
        c.stabilize()
        if m.raft.role == "leader":
            return
    raise AssertionError(f"{id} did not win in {tries} campaigns")


def _figure8_setup() -> tuple[Cluster, int, int]:
    """Paper Figure 8 (a)-(c) on members 1..5. Returns (cluster, index of X, term of X)."""
    c = Cluster(5, seed=8, pre_vote=False, check_quorum=False, max_entries_per_msg=1)
    s1 = c.elect(1)
    c.stabilize()
    # (a) 1 leads term t1 and replicates X to 2 only.
    c.partition([1, 2], [3], [4], [5])
    x = c.propose(s1, b"k", b"X")
    assert x is not None
    c.stabilize()
    t1 = s1.raft.term
    assert s1.raft.commit < x and c.members[2].raft.log.entry(x)[1] == t1
    # (b) 1 crashes; 5 wins term t2 with votes from 3 and 4; its new entry at x goes nowhere.
    s1.crash()
    c.partition([3, 4, 5], [2])
    c.drop_filter = lambda m: m.type == APP and m.frm == 5 and bool(m.entries)
    c.elect(5)
    assert c.members[5].raft.log.entry(x)[1] > t1
    c.members[5].crash()
    c.drop_filter = None
    # (c) 1 restarts and wins term t3 (votes of 2 and 3), then replicates X to 3, but not its
    # own new entry: X is now on a majority {1, 2, 3}, still from an old term.
    s1.restart()
    c.partition([1, 2, 3], [4], [5])
    t3_floor = c.members[5].raft.term

    def old_entries_only(m: Message) -> bool:
        # The network cuts 1's appends down to the old-term entries they carry.
        if not (m.type == APP and m.frm == 1 and any(e[1] > t1 for e in m.entries)):
            return False
        cut = m.copy()
        cut.entries = [e for e in m.entries if e[1] <= t1]  # maybe none: still a probe
        c.queue.append((c.now, -1, cut))
        return True

    c.drop_filter = old_entries_only
    _campaign_until_leader(c, 1)
    assert s1.raft.term > t3_floor
    holders = [i for i in (1, 2, 3) if c.members[i].raft.log.entry(x) is not None
               and c.members[i].raft.log.entry(x)[1] == t1]
    assert holders == [1, 2, 3]
    return c, x, t1


def test_figure8_old_term_entry_not_committed_by_counting_replicas() -> None:
    c, x, t1 = _figure8_setup()
    s1 = c.members[1]
    # §5.4.2: a majority holds X, but X is from an older term: the leader must not commit it.
    assert s1.raft.commit < x
    assert all(c.members[i].raft.commit < x for i in (1, 2, 3))
    # (d) 1 crashes again; 5 (last term t2 > t1) can win and overwrite X everywhere: safe only
    # because X was never committed. The invariant checks run through all of it.
    s1.crash()
    c.drop_filter = None
    c.members[5].restart()
    c.partition([2, 3, 4, 5], [1])
    _campaign_until_leader(c, 5)
    c.stabilize()
    s5 = c.members[5]
    for i in (2, 3, 4, 5):
        assert c.members[i].raft.log.entry(x)[1] != t1
    assert s5.raft.commit >= x


def test_figure8_old_entry_commits_with_a_current_term_entry() -> None:
    c, x, t1 = _figure8_setup()
    s1 = c.members[1]
    # (e) once an entry of the leader's own term reaches a majority, X commits with it.
    c.drop_filter = None
    c.run(5)  # heartbeats make 1 resend what the filter held back
    assert s1.raft.commit > x
    assert s1.raft.log.entry(s1.raft.commit)[1] == s1.raft.term
    assert c.committed[x][0] == t1
    # And no later leader can lose it: 5 cannot win any more (its log is behind).
    s1.crash()
    c.members[5].restart()
    c.partition([2, 3, 4, 5], [1])
    c.members[5].raft.campaign()
    c.members[5].pump()
    c.stabilize()
    assert c.members[5].raft.role != "leader"


# ------------------------------------------------------------------ PreVote / CheckQuorum
def test_prevote_partitioned_member_rejoins_without_disrupting(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastraft.raft")
    c = Cluster(3, seed=2, election_tick=10)
    lead = c.elect(1)
    term = lead.raft.term
    c.isolate(3)
    c.run(100)  # several election timeouts: 3 keeps trying pre-votes that cannot succeed
    assert c.members[3].raft.term == term  # PreVote: its term did not grow
    assert c.members[3].raft.role == "pre-candidate"
    c.heal()
    c.run(30)
    assert lead.raft.role == "leader" and lead.raft.term == term
    assert all(m.raft.leader == 1 and m.raft.term == term for m in c.members.values())
    text = caplog.text
    assert "3 became pre-candidate at term %d" % term in text
    assert "3 received MsgPreVoteResp from 3" in text
    assert "1 became leader at term %d" % term in text


def test_log_lines_use_hex_ids(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastraft.raft")
    c = Cluster(3, seed=3, ids=[0xab, 0xcd, 0xef])
    c.elect(0xab)
    c.isolate(0xcd)
    c.run(60)
    text = caplog.text
    assert "ab became leader at term 1" in text
    assert "cd became pre-candidate at term 1" in text
    assert "received MsgPreVoteResp" in text
    # The isolated member forgets its leader once its election timeout passes.
    assert "cd lost leader ab at term 1" in text


def test_checkquorum_isolated_leader_steps_down_within_an_election_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastraft.raft")
    et = 10
    c = Cluster(3, seed=4, election_tick=et)
    lead = c.elect(1)
    c.run(3)
    c.isolate(1)
    # The last acks arrived at most a tick or two before the cut; one election timeout after them
    # the leader steps down.
    steps = c.run_until(lambda: lead.raft.role != "leader", 3 * et, "old leader steps down")
    assert et - 2 <= steps <= et
    assert "stepped down to follower since quorum is not active" in caplog.text
    assert "1 lost leader 1" in caplog.text


def test_checkquorum_fresh_leader_without_acks_steps_down_after_one_timeout() -> None:
    et = 10
    c = Cluster(3, seed=4, election_tick=et)
    lead = c.elect(1)
    lead.raft.tick()
    c.isolate(1)
    steps = c.run_until(lambda: lead.raft.role != "leader", 3 * et, "old leader steps down")
    assert steps <= et
    # The majority side elects a new leader and keeps committing.
    c.run_until(lambda: any(m.raft.role == "leader" for m in (c.members[2], c.members[3])),
                6 * et, "new leader on the majority side")
    new = c.leader()
    assert new is not None and new.id != 1
    idx = c.propose(new, b"k", b"after")
    c.run_until(lambda: new.raft.commit >= idx, 50, "commit on the majority side")


# ------------------------------------------------------------------ snapshots
def test_snapshot_catch_up_of_a_follower_behind_the_compaction_point() -> None:
    c = Cluster(3, seed=5, compact_every=5)
    lead = c.elect(1)
    c.members[3].crash()
    for i in range(30):
        c.propose(lead, b"k%d" % (i % 3), b"v%d" % i)
        c.stabilize()
    assert lead.raft.first_index > c.members[3].durable.offset + len(c.members[3].durable.entries)
    c.members[3].restart()
    c.run_until(lambda: c.members[3].sm.index >= lead.sm.index, 100, "follower caught up")
    assert any(ev[1] == "snapshot-restored" and ev[2] == 3 for ev in c.events)
    assert c.members[3].sm.kv == lead.sm.kv
    assert c.members[3].durable.snapshot is not None
    # And it keeps up normally afterwards.
    idx = c.propose(lead, b"k0", b"later")
    c.run_until(lambda: c.members[3].sm.index >= idx, 50, "replicated after the snapshot")
    assert c.members[3].sm.kv[b"k0"] == b"later"


# ------------------------------------------------------------------ membership
def _commit_everywhere(c: Cluster, idx: int, ids: list[int], steps: int = 100) -> None:
    c.run_until(lambda: all(c.members[i].sm.index >= idx for i in ids), steps,
                f"index {idx} applied on {ids}")


def test_joiner_takes_its_configuration_from_the_snapshot_not_a_member_list() -> None:
    """A member joining a running cluster starts with no configuration: it never campaigns, and
    the snapshot the leader sends (the log is compacted past the bootstrap configuration) gives
    it the configuration as of the snapshot's index, including changes made after it was told
    the member list."""
    c = Cluster(3, seed=17, compact_every=5)
    lead = c.elect(1)
    for i in range(12):
        c.propose(lead, b"k%d" % (i % 3), b"v%d" % i)
        c.stabilize()
    joiner = c.add_member(4, joining=True)
    assert joiner.raft.voters == () and joiner.raft.learners == ()
    for _ in range(5 * lead.raft.cfg.election_tick):  # alone and unconfigured: never campaigns
        joiner.raft.tick()
        joiner.pump()
    assert joiner.raft.term == 0 and joiner.raft.role == "follower"
    # A change the joiner was never told about, then its own addition as a learner.
    idx = lead.raft.propose_conf_change(CC_ADD_LEARNER, 5)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3])
    idx = lead.raft.propose_conf_change(CC_REMOVE, 5)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3])
    for i in range(6):
        c.propose(lead, b"k%d" % (i % 3), b"w%d" % i)
        c.stabilize()
    assert lead.raft.first_index > 1
    idx = lead.raft.propose_conf_change(CC_ADD_LEARNER, 4)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3, 4], steps=300)
    assert any(ev[1] == "snapshot-restored" and ev[2] == 4 for ev in c.events)
    assert joiner.raft.voters == (1, 2, 3) and joiner.raft.learners == (4,)
    assert joiner.sm.kv == lead.sm.kv


def test_add_voter_remove_voter_then_failure_stays_safe_and_live() -> None:
    c = Cluster(3, seed=6)
    lead = c.elect(1)
    c.add_member(4)
    idx = lead.raft.propose_conf_change(CC_ADD_VOTER, 4)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3, 4])
    assert all(c.members[i].raft.voters == (1, 2, 3, 4) for i in (1, 2, 3, 4))
    idx = lead.raft.propose_conf_change(CC_REMOVE, 2)
    lead.pump()
    _commit_everywhere(c, idx, [1, 3, 4])
    assert lead.raft.voters == (1, 3, 4)
    c.members[2].crash()  # removed: it must not matter any more
    # Now the leader fails: 3 and 4 are a majority of {1, 3, 4}.
    lead.crash()
    c.run_until(lambda: c.leader() is not None and c.leader().id in (3, 4), 100,
                "new leader among 3 and 4")
    new = c.leader()
    assert new is not None
    idx = c.propose(new, b"k", b"after-failure")
    _commit_everywhere(c, idx, [3, 4])
    assert c.members[3].sm.kv[b"k"] == c.members[4].sm.kv[b"k"] == b"after-failure"


def test_one_conf_change_at_a_time() -> None:
    from fastraft.errors import ConfChangeInProgressError
    c = Cluster(3, seed=9)
    lead = c.elect(1)
    lead.raft.propose_conf_change(CC_ADD_LEARNER, 4)
    with pytest.raises(ConfChangeInProgressError):
        lead.raft.propose_conf_change(CC_ADD_LEARNER, 5)


def test_add_learner_then_promote() -> None:
    c = Cluster(3, seed=7)
    lead = c.elect(1)
    c.add_member(4)
    idx = lead.raft.propose_conf_change(CC_ADD_LEARNER, 4)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3, 4])
    assert lead.raft.learners == (4,) and lead.raft.voters == (1, 2, 3)
    # A learner replicates but does not vote and never campaigns.
    for i in range(5):
        c.propose(lead, b"k", b"v%d" % i)
    c.stabilize()
    assert c.members[4].sm.kv[b"k"] == b"v4"
    c.members[4].raft.campaign()
    assert c.members[4].raft.role == "follower"
    idx = lead.raft.propose_conf_change(CC_PROMOTE, 4)
    lead.pump()
    _commit_everywhere(c, idx, [1, 2, 3, 4])
    assert lead.raft.voters == (1, 2, 3, 4) and lead.raft.learners == ()
    # As a voter it now counts: with 2 and 3 down, 1 and 4 are not a majority of four...
    c.members[2].crash()
    c.members[3].crash()
    idx = c.propose(lead, b"k", b"needs-three")
    c.run(20)
    assert lead.raft.commit < idx
    # ... and with 3 back, {1, 3, 4} commits it.
    c.members[3].restart()
    _commit_everywhere(c, idx, [1, 3, 4], steps=100)


def test_append_reply_that_commits_the_senders_removal_does_not_raise() -> None:
    """Nothing a peer sends makes step raise: an append reply whose ack commits the removal of
    its own sender leaves the leader with no progress for it, and the leader must stop there
    (not keep streaming to a member it no longer tracks)."""
    c = Cluster(3, seed=22)
    lead = c.elect(1)
    c.drop_filter = lambda m: m.type == APP_RESP and m.frm == 2  # only 3's acks count
    idx = lead.raft.propose_conf_change(CC_REMOVE, 3)
    lead.pump()
    c.stabilize()
    assert lead.raft.commit >= idx
    assert lead.raft.voters == (1, 2) and lead.raft.role == "leader"
    c.drop_filter = None
    idx = c.propose(lead, b"k", b"after")
    _commit_everywhere(c, idx, [1, 2])


# ------------------------------------------------------------------ leadership transfer
def test_leadership_transfer() -> None:
    c = Cluster(3, seed=10)
    lead = c.elect(1)
    for i in range(3):
        c.propose(lead, b"k", b"v%d" % i)
    c.stabilize()
    term = lead.raft.term
    lead.raft.transfer_leader(2)
    # Proposals during the transfer are dropped (the client retries at the new leader).
    with pytest.raises(ProposalDroppedError):
        lead.raft.propose(b"dropped")
    lead.pump()
    c.stabilize()
    assert any(ev[1] == "deliver" and ev[2].type == TIMEOUT_NOW for ev in c.events)
    new = c.members[2]
    assert new.raft.role == "leader" and new.raft.term == term + 1
    assert lead.raft.role == "follower" and lead.raft.leader == 2
    idx = c.propose(new, b"k", b"after")
    _commit_everywhere(c, idx, [1, 2, 3])


def test_transfer_with_a_write_in_flight_completes_without_a_tick() -> None:
    """A rolling update stops a leader that has a client write on its way to the followers: the
    target's ack of it brings MsgTimeoutNow at once, and the election needs no tick either (a
    tick is a heartbeat interval a writing client would wait)."""
    c = Cluster(3, seed=12)
    lead = c.elect(1)
    c.stabilize()
    term = lead.raft.term
    idx = c.propose(lead, b"k", b"in flight")  # appended, not yet acked by anyone
    assert idx is not None and c.members[2].raft.log.last_index() < idx
    lead.raft.transfer_leader(2)
    lead.pump()
    c.stabilize()  # delivers messages, never ticks
    new = c.members[2]
    assert new.raft.role == "leader" and new.raft.term == term + 1
    assert lead.raft.leader == 2
    _commit_everywhere(c, idx, [1, 2, 3])  # the write in flight is kept and committed


def test_transfer_to_a_lagging_follower_waits_for_it_to_catch_up() -> None:
    c = Cluster(3, seed=11)
    lead = c.elect(1)
    c.isolate(3)
    for i in range(5):
        c.propose(lead, b"k", b"v%d" % i)
    c.stabilize()
    lead.raft.transfer_leader(3)
    lead.pump()
    c.stabilize()
    assert lead.raft.role == "leader"  # 3 cannot be told to campaign while it lags
    c.heal()
    c.run_until(lambda: c.members[3].raft.role == "leader", 30, "transfer completes")
    assert c.members[3].sm.index >= 6


# ------------------------------------------------------------------ reads
def test_read_index_on_a_healthy_leader_returns_the_commit_index() -> None:
    c = Cluster(3, seed=12)
    lead = c.elect(1)
    for i in range(4):
        c.propose(lead, b"k", b"v%d" % i)
    c.stabilize()
    ctx = c.read(lead, b"k")
    c.stabilize()
    (rs,) = _ok_reads(c, 1, ctx)
    assert rs.index == lead.raft.commit
    assert c.read_ops[(1, ctx)].value == b"v3"


def test_follower_read_index_is_forwarded_and_answered() -> None:
    c = Cluster(3, seed=13)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v")
    c.stabilize()
    ctx = c.read(c.members[2], b"k")
    c.stabilize()
    assert any(ev[1] == "deliver" and ev[2].type == READ_INDEX and ev[2].frm == 2
               for ev in c.events)
    (rs,) = _ok_reads(c, 2, ctx)
    assert rs.index == lead.raft.commit
    assert c.read_ops[(2, ctx)].value == b"v"


def test_stale_leader_never_confirms_a_read() -> None:
    c = Cluster(3, seed=14, election_tick=10)
    old = c.elect(1)
    c.propose(old, b"k", b"old")
    c.stabilize()
    c.partition([1], [2, 3])
    ctx = c.read(old, b"k")
    # The majority elects a new leader and writes; the old one must never confirm the read.
    c.run_until(lambda: any(c.members[i].raft.role == "leader" for i in (2, 3)), 80,
                "new leader")
    new = c.leader()
    assert new is not None and new.id != 1
    c.propose(new, b"k", b"new")
    c.run(40)
    assert _ok_reads(c, 1, ctx) == []
    # It was refused (CheckQuorum deposed the old leader), so the client fails it at once.
    assert any(rs.ctx == ctx and not rs.ok for rs in old.read_states)


def test_stale_leader_without_checkquorum_never_confirms_a_read() -> None:
    c = Cluster(3, seed=15, check_quorum=False, pre_vote=False)
    old = c.elect(1)
    c.stabilize()
    c.partition([1], [2, 3])
    ctx = c.read(old, b"k")
    c.elect(2)
    c.run(60)
    assert old.raft.role == "leader"  # without CheckQuorum it does not know it was deposed
    assert _ok_reads(c, 1, ctx) == []


def test_lease_read_only_while_the_lease_holds() -> None:
    et = 10
    c = Cluster(3, seed=16, lease_read=True, election_tick=et)
    lead = c.elect(1)
    c.run(3)
    assert lead.raft.lease_valid
    # Within the lease the read is answered at once, with no heartbeat round.
    ctx = b"lease-1"
    lead.raft.read_index(ctx)
    rd_reads = []
    if lead.pending is None and lead.raft.has_ready():
        rd = lead.raft.ready()
        rd_reads = list(rd.read_states)
        lead.pending = rd
        lead.persist_left = 0
        lead.pump()
    assert [rs.ctx for rs in rd_reads if rs.ok] == [ctx]
    # Cut off: the lease runs out before anyone else can be elected.
    c.isolate(1)
    expired_at = c.run_until(lambda: not lead.raft.lease_valid, et, "lease expires")
    assert expired_at <= et - LEASE_MARGIN_TICKS
    c.run_until(lambda: any(c.members[i].raft.role == "leader" for i in (2, 3)), 8 * et,
                "new leader")
    assert not lead.raft.lease_valid
    # A read now falls back to ReadIndex and is never confirmed.
    ctx2 = c.read(lead, b"k")
    c.run(5)
    assert _ok_reads(c, 1, ctx2) == []


def test_read_index_is_confirmed_only_by_heartbeats_sent_after_it() -> None:
    """ReadIndex (thesis §6.4): a read is confirmed by a quorum answering heartbeats the leader
    sent after the read was queued. Read contexts are numbered per member, so two members' reads
    share a context: an answer to a heartbeat sent for one must not confirm the other.

    Member 2's read #1 goes to leader 1; 2 answers the heartbeat round sent for it at once, 3's
    answer is delayed. Leadership moves to 2, which commits k=v2 and acknowledges it; 1, still
    leader of the old term, queues its own read #1; 3's old answer arrives: it must not confirm
    that read, which would return v1."""
    c = Cluster(3, seed=18)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v1")
    c.stabilize()
    term = lead.raft.term
    held = _hold(c, lambda m: m.type == HEARTBEAT_RESP and m.frm == 3 and m.to == 1)
    ctx2 = c.read(c.members[2], b"k")
    c.stabilize()
    assert [rs.index for rs in _ok_reads(c, 2, ctx2)] == [lead.raft.commit]
    assert len(held) == 1  # 3's answer to the round sent for member 2's read
    # Leadership moves to 2; from here on nothing reaches 1 (3's old answer stays held).
    old_answer = held[:]
    c.drop_filter = lambda m: m.to == 1
    lead.raft.transfer_leader(2)
    lead.pump()
    c.stabilize()
    new = c.members[2]
    assert new.raft.role == "leader" and new.raft.term == term + 1
    c.propose(new, b"k", b"v2")
    c.stabilize()
    assert new.sm.kv[b"k"] == b"v2"
    assert lead.raft.role == "leader" and lead.raft.term == term  # it has not heard
    ctx1 = c.read(lead, b"k")
    assert ctx1 == ctx2  # each member's first read of its first run
    _hand_over(c, old_answer)
    c.stabilize()
    assert _ok_reads(c, 1, ctx1) == []
    assert c.read_ops[(1, ctx1)].complete is None
    assert lincheck.check(c.history).ok


def test_lease_read_refused_during_leadership_transfer() -> None:
    """Lease reads: a transfer makes the followers vote for the target at once, ignoring the
    lease they promised the leader (MsgTimeoutNow forces the election), so a leader answers no
    read from its lease while a transfer is in progress."""
    c = Cluster(3, seed=19, lease_read=True, election_tick=10)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v1")
    c.stabilize()
    c.run(3)
    assert lead.raft.lease_valid
    c.drop_filter = lambda m: m.to == 1  # 1 will not hear that it was replaced
    lead.raft.transfer_leader(2)
    assert not lead.raft.lease_valid
    lead.pump()
    c.stabilize()
    new = c.members[2]
    assert new.raft.role == "leader"
    c.propose(new, b"k", b"v2")
    c.stabilize()
    assert new.sm.kv[b"k"] == b"v2"
    assert lead.raft.role == "leader" and not lead.raft.lease_valid
    ctx = c.read(lead, b"k")  # would answer v1 from the lease
    c.stabilize()
    assert _ok_reads(c, 1, ctx) == []
    assert lincheck.check(c.history).ok


def test_no_lease_for_the_rest_of_a_term_in_which_timeout_now_was_sent() -> None:
    """Lease reads: a MsgTimeoutNow may arrive late, after the transfer was given up, and still
    win its target the followers' votes; once one went out the lease stays off for the term."""
    et = 10
    c = Cluster(3, seed=23, lease_read=True, election_tick=et)
    lead = c.elect(1)
    c.run(3)
    held = _hold(c, lambda m: m.type == TIMEOUT_NOW)
    lead.raft.transfer_leader(2)
    lead.pump()
    c.run_until(lambda: lead.raft.lead_transferee == 0, 2 * et, "transfer given up")
    assert lead.raft.role == "leader" and held
    c.run(2)  # heartbeats still answered by everyone
    assert not lead.raft.lease_valid
    # The late MsgTimeoutNow still elects 2, though 3 acked 1 just now.
    c.drop_filter = lambda m: m.to == 1
    _hand_over(c, held)
    c.stabilize()
    assert c.members[2].raft.role == "leader"


def test_lease_is_timed_from_when_the_heartbeat_was_sent() -> None:
    """Lease reads: a follower restarts its election timer when a heartbeat arrives, not when
    the leader gets its answer, so the lease counts from the heartbeat's sending. Answers that
    were delayed must not stretch it past the followers' timers."""
    et = 10
    c = Cluster(3, seed=20, lease_read=True, election_tick=et)
    lead = c.elect(1)
    c.run(3)
    assert lead.raft.lease_valid
    held = _hold(c, lambda m: m.to == 1)
    c.run(1)  # one more heartbeat round reaches the followers; their answers are held
    assert any(m.type == HEARTBEAT_RESP for m in held)
    c.isolate(1)  # then 1 is cut off
    c.run(et - LEASE_MARGIN_TICKS)
    assert lead.raft.role == "leader"
    _hand_over(c, held)  # the answers to that last round arrive only now
    assert not lead.raft.lease_valid


def test_single_voter_leader_sends_nothing_of_its_term_before_the_term_is_durable() -> None:
    """A leader elected in the step its term changed (here the only voter) holds its messages
    (appends to a learner) until the ready that carries the new term is durable: a crash before
    that could make it forget the term and lead it again with a different log."""
    c = Cluster(1, seed=21, learners=(2,))
    m = c.members[1]
    m.raft.campaign()
    assert m.raft.role == "leader"
    rd = m.raft.ready()
    assert rd.hard_state is not None and rd.hard_state[0] == m.raft.term
    assert [msg for msg in rd.messages if msg.term >= m.raft.term] == []
    assert any(msg.type == APP and msg.to == 2 for msg in rd.persisted_messages)
    m.pending, m.persist_left = rd, 0
    m.pump()
    c.stabilize()
    idx = c.propose(m, b"k", b"v")
    c.stabilize()
    assert c.members[2].sm.kv[b"k"] == b"v" and c.members[2].sm.index >= idx


def test_sim_stabilize_is_bounded() -> None:
    c = Cluster(3, seed=17)
    c.elect(1)
    # A message storm that never settles (a member bouncing heartbeats to itself) must end in a
    # clear error, not hang.
    c.members[2].raft.step = lambda m: c.send(c.members[2], Message(  # type: ignore[method-assign]
        MsgType.MsgHeartbeatResp.value, 1, 2, m.term))
    c.send(c.members[1], Message(MsgType.MsgHeartbeat.value, 2, 1, c.members[1].raft.term))
    c.drop_filter = None
    c.members[1].raft.step = lambda m: c.send(c.members[1], Message(  # type: ignore[method-assign]
        MsgType.MsgHeartbeat.value, 2, 1, m.term))
    with pytest.raises(SimError):
        c.stabilize(max_steps=20)


# ------------------------------------------------------------------ read levels (lease, bounded)
# The host's side runs server/readlevels.py with the simulator's step as the clock (one tick per
# step), as the node runs it with its monotonic clock.

def _lease_refusal(c: Cluster, id: int) -> str | None:
    m = c.members[id]
    try:
        m.levels.lease_index(m.raft, float(c.now))
    except LeaseUnavailableError as e:
        return e.message
    return None


def _bounded_refusal(c: Cluster, id: int, bound: float) -> str | None:
    m = c.members[id]
    try:
        m.levels.bounded_check(m.raft, m.sm.index, float(c.now), bound)
    except TooStaleError as e:
        return e.message
    return None


def test_heartbeat_tells_a_lagging_follower_the_leaders_real_commit() -> None:
    """Bounded reads: a heartbeat's commit field is min(the follower's match, the leader's
    commit), which for a follower that lags is its own match, not the leader's commit. Taken as
    the leader's commit it would make a lagging follower believe it is up to date. The heartbeat
    context carries the leader's commit; the follower holds it as evidence only if its log has
    that entry (else: unknown), so a lagging follower refuses bounded reads."""
    c = Cluster(3, seed=31, election_tick=10)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v0")
    c.stabilize()
    c.run(2)
    assert _bounded_refusal(c, 3, 3.0) is None
    c.drop_filter = lambda m: m.type == APP and m.to == 3  # 3 gets heartbeats only
    for i in range(5):
        c.propose(lead, b"k", b"v%d" % (i + 1))
    c.run(3)
    f = c.members[3]
    assert lead.raft.commit > f.sm.index
    hb = [ev[2] for ev in c.events if ev[1] == "deliver" and ev[2].type == HEARTBEAT
          and ev[2].to == 3]
    assert hb and hb[-1].commit < lead.raft.commit  # the field says less than the commit
    assert f.raft.leader_commit == LEADER_COMMIT_UNKNOWN
    why = _bounded_refusal(c, 3, 3.0)
    assert why is not None and "fresh only as of" in why
    assert not c.bounded_read(f, 3)
    c.drop_filter = None
    c.run_until(lambda: f.sm.index == lead.raft.commit, 20, "3 catches up")
    c.run(2)
    assert f.raft.leader_commit == lead.raft.commit
    assert c.bounded_read(f, 3)


def test_new_leaders_commit_is_no_evidence_until_an_entry_of_its_term_commits() -> None:
    """Bounded reads (§6.4): a new leader's commit index may lag what the old leader committed,
    so until an entry of its own term commits, neither it nor its followers take its commit
    index as evidence of freshness."""
    c = Cluster(3, seed=32, election_tick=10)
    old = c.elect(1)
    c.propose(old, b"k", b"v1")
    c.stabilize()
    c.run(2)
    # Leadership goes to 2; the answers to its appends are held back, so its no-op never
    # commits.
    held = _hold(c, lambda m: m.type == APP_RESP and m.to == 2)
    old.raft.transfer_leader(2)
    old.pump()
    c.stabilize()
    new = c.members[2]
    c.run(8)  # past the bound below: the old leader's evidence is too old now
    assert new.raft.role == "leader" and new.raft.commit < new.raft.last_index
    assert c.members[3].raft.leader_commit == LEADER_COMMIT_UNKNOWN
    assert new.raft.quorum_round() is not None
    assert new.raft.quorum_round()[1] == LEADER_COMMIT_UNKNOWN  # type: ignore[index]
    why = _bounded_refusal(c, 3, 3.0)
    assert why is not None and "has not yet committed an entry of its term" in why
    assert _bounded_refusal(c, 2, 3.0) is not None
    assert "no entry of this term is committed" in (_lease_refusal(c, 2) or "")
    c.drop_filter = None
    _hand_over(c, held)
    c.run(3)
    assert new.raft.commit == new.raft.last_index
    assert c.members[3].raft.leader_commit == new.raft.commit
    assert _bounded_refusal(c, 3, 3.0) is None
    assert _bounded_refusal(c, 2, 3.0) is None
    assert _lease_refusal(c, 2) is None


def test_lease_read_refused_once_the_lease_expires_and_before_a_new_leader() -> None:
    """Lease reads: the isolated leader answers from its lease only while a quorum acknowledged
    a round sent less than (election timeout - 1 tick - drift) ago; it refuses before the other
    members can elect anyone, and never answers from its lease again in that term."""
    et = 10
    c = Cluster(3, seed=33, election_tick=et)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v1")
    c.stabilize()
    c.run(3)
    assert _lease_refusal(c, 1) is None
    c.isolate(1)
    answered = 0
    refused_at = None
    while c.leader() is lead or c.leader() is None or c.leader().raft.term == lead.raft.term:
        why = _lease_refusal(c, 1) if lead.raft.role == "leader" else "deposed"
        if why is None:
            assert refused_at is None, "a lease read answered after one was refused"
            answered += 1
        elif refused_at is None:
            refused_at = c.now
            assert "lease expired" in why
        c.step()
        assert c.now < 200
    assert answered >= 1 and refused_at is not None
    assert refused_at < c.now  # refused before the majority had a new leader
    new = c.leader()
    assert new is not None and new.id != 1
    c.propose(new, b"k", b"v2")
    c.stabilize()
    assert not c.lease_read(lead, b"k")


def test_bounded_read_at_an_isolated_follower_answers_until_its_bound_then_refuses() -> None:
    """Bounded reads: a member cut off from the leader answers from its applied state while its
    last contact is within the bound, then refuses, and says how stale it is."""
    c = Cluster(3, seed=34, election_tick=10)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v1")
    c.stabilize()
    c.run(2)
    c.isolate(3)
    cut = c.now
    bound = 6
    answered = []
    while c.now < cut + bound + 5:
        answered.append((c.now, c.bounded_read(c.members[3], bound)))
        c.step()
    ok_steps = [t for t, ok in answered if ok]
    assert ok_steps and max(ok_steps) <= cut + bound
    assert not answered[-1][1]
    # Once refused, refused for good while cut off.
    first_refused = min(t for t, ok in answered if not ok)
    assert all(not ok for t, ok in answered if t >= first_refused)
    why = _bounded_refusal(c, 3, bound)
    assert why is not None and "fresh only as of" in why and f"bound is {bound * 1000}" in why
    # Meanwhile the majority side goes on; the leader's bounded reads are fresh.
    c.propose(lead, b"k", b"v2")
    c.stabilize()
    assert _bounded_refusal(c, 1, 2.0) is None


def test_leader_is_fresh_as_of_its_newest_quorum_round() -> None:
    """Bounded reads at the leader: evidence is the send tick of the newest round a quorum
    echoed, with the commit index then; a leader cut off from its followers goes stale."""
    c = Cluster(3, seed=35, election_tick=10)
    lead = c.elect(1)
    c.propose(lead, b"k", b"v1")
    c.stabilize()
    c.run(3)
    q = lead.raft.quorum_round()
    assert q is not None and q[1] == lead.raft.commit
    assert lead.raft.ticks - q[0] <= 1
    c.isolate(1)
    c.run(4)
    q2 = lead.raft.quorum_round()
    assert q2 is not None and lead.raft.ticks - q2[0] >= 4
    assert _bounded_refusal(c, 1, 3.0) is not None
    assert _bounded_refusal(c, 1, 8.0) is None
