"""Seeded random simulations of 3- and 5-member clusters under faults (drops, duplicates, delays,
reordering, partitions, crashes with restarts from durable state, slow disks), leadership
transfers, membership changes (add learner, promote, remove, re-add), linearizable reads with
member-local contexts, and lease and bounded-staleness reads (raftsim.py says how each is
checked), with the Raft safety properties checked after every step, the client history checked
for linearizability and liveness checked after a final heal.

Replay one seed:   FASTRAFT_SIM_SEED=<n> pytest tests/core/test_simulation.py -k <test>
Wider sweep:       FASTRAFT_SIM_SEEDS=2000 pytest tests/core/test_simulation.py
"""

from __future__ import annotations

import os
import random

import pytest

import raftsim
from fastraft._core import Log
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_PROMOTE,
    CC_REMOVE,
    Message,
    MsgType,
    ReadState,
    Ready,
)

SWEEP_3 = 120
SWEEP_5 = 50
STEPS = int(os.environ.get("FASTRAFT_SIM_STEPS", "2000"))


def _sweep(test: str, profile: raftsim.Profile, default: int, base: int) -> list[raftsim.RunResult]:
    results = []
    for seed in raftsim.seeds_from_env(default, base):
        try:
            results.append(raftsim.run_random(seed, profile))
        except AssertionError as e:
            pytest.fail(f"seed {seed} failed; replay with:\n  FASTRAFT_SIM_SEED={seed} "
                        f"pytest tests/core/test_simulation.py -k {test}\n{e}", pytrace=False)
    return results


def _sweep_was_meaningful(results: list[raftsim.RunResult]) -> None:
    # A sweep that never crashed, elected twice or sent a snapshot would prove little.
    if len(results) < 10:
        return  # a single replayed seed
    assert sum(r.crashes for r in results) > 0
    assert sum(r.snapshots_sent for r in results) > 0
    assert sum(1 for r in results if r.leaders > 1) > len(results) // 4
    assert all(r.committed > 0 and r.applied_min >= 5 for r in results)
    assert all(r.lincheck.ok for r in results)
    # The churn the runs are meant to have: transfers, membership changes, checked reads.
    assert sum(1 for r in results if r.transfers) > len(results) // 4
    assert sum(1 for r in results if r.conf_changes) > len(results) // 4
    assert sum(r.reads_ok for r in results) > 10 * len(results)
    # Lease and bounded-staleness reads answered (each checked) and refused, in most runs.
    assert sum(1 for r in results if r.lease_ok) > len(results) // 3
    assert sum(1 for r in results if r.bounded_ok) > len(results) // 3
    assert sum(r.level_refused for r in results) > len(results)


def test_random_faults_3_members() -> None:
    results = _sweep("test_random_faults_3_members", raftsim.Profile(n=3, steps=STEPS),
                     SWEEP_3, base=0)
    _sweep_was_meaningful(results)


def test_random_faults_5_members() -> None:
    results = _sweep("test_random_faults_5_members", raftsim.Profile(n=5, steps=STEPS),
                     SWEEP_5, base=100_000)
    _sweep_was_meaningful(results)


def test_no_faults_elects_once_and_commits_everything() -> None:
    for seed in range(5):
        r = raftsim.run_random(seed, raftsim.Profile(n=3, steps=600, faults=False))
        # Nothing disturbs the first leader: one (term, leader) for the whole run.
        assert r.leaders == 1
        assert r.crashes == 0
        assert r.applied_min == r.committed


def test_same_seed_same_run() -> None:
    a = raftsim.run_random(7, raftsim.Profile(n=3, steps=800))
    b = raftsim.run_random(7, raftsim.Profile(n=3, steps=800))
    assert a == b


# ------------------------------------------------------------------ the checker catches bugs
# The properties above pass on a correct core; these show the same checks fail on broken states.

def _running_cluster() -> raftsim.Cluster:
    c = raftsim.Cluster(3, seed=1)
    lead = c.elect(1)
    for i in range(5):
        c.propose(lead, b"k", b"v%d" % i)
    c.stabilize()
    return c


def test_checker_catches_two_leaders_in_a_term() -> None:
    c = _running_cluster()
    other = c.members[2].raft
    other.role = "leader"  # forge a second leader in the same term
    with pytest.raises(raftsim.SimError, match="two leaders in term"):
        c.check()


def test_checker_catches_divergent_logs() -> None:
    c = _running_cluster()
    r = c.members[3].raft
    old = r.log
    # Rebuild member 3's log with one old entry rewritten (same index and term, other data).
    forged = old.entries()
    i = len(forged) - 3
    idx, term, et, _ = forged[i]
    forged[i] = (idx, term, et, b"forged")
    r.log = Log(old.offset, old.snap_term, forged)
    r.log.committed = old.committed
    c.members[3].seen_commit = 0  # make the checker look at its committed entries again
    with pytest.raises(raftsim.SimError, match="log matching|committed"):
        c.check()


def test_checker_catches_state_machine_divergence() -> None:
    c = _running_cluster()
    m = c.members[2]
    bad = (m.sm.index + 1, 99, 0, raftsim.encode_put(b"k", b"evil"))
    c.applied_at[bad[0]] = (1, b"the real entry")
    with pytest.raises(raftsim.SimError, match="state machine safety"):
        m.sm.apply(bad)
        c.on_apply(m, bad)


def test_checker_catches_a_lost_committed_entry() -> None:
    c = _running_cluster()
    top = c.max_committed
    for i in (1, 2):  # a majority "loses" the tail of its disk
        d = c.members[i].durable
        d.entries = [e for e in d.entries if e[0] < top]
    with pytest.raises(raftsim.SimError, match="durable at only"):
        c.check_durable_majority()


def test_checker_catches_a_stale_read_index() -> None:
    c = _running_cluster()
    ctx = c.read(c.members[1], b"k")
    with pytest.raises(raftsim.SimError, match="ReadIndex"):
        c.on_read_state(c.members[1], ReadState(ctx, 1, True))


def test_checker_catches_a_read_confirmed_by_answers_older_than_the_read() -> None:
    c = _running_cluster()
    lead = c.members[1]
    term = lead.raft.term
    for i in (2, 3):  # both followers had durably moved past the leader's term
        c.members[i].durable.hard_state = (term + 1, 2, c.members[i].durable.hard_state[2])
    ctx = c.read(lead, b"k")
    with pytest.raises(raftsim.SimError, match="confirmed 1's read"):
        c.check_read_confirmation(lead, term, 1, ctx)
    c.check_read_confirmation(lead, term + 1, 1, ctx)  # a leader of that term could have


def test_checker_catches_a_message_sent_before_its_term_is_durable() -> None:
    c = _running_cluster()
    m = c.members[1]
    rd = Ready(99)
    rd.messages = [Message(MsgType.MsgApp.value, 2, 1, m.durable.hard_state[0] + 1)]
    with pytest.raises(raftsim.SimError, match="before its term"):
        c.on_ready(m, rd)


def test_read_contexts_are_member_local_as_the_nodes() -> None:
    # Each member numbers its reads from 1 (within one run of it), so members share contexts:
    # the core must tell their reads apart by more than the context.
    c = _running_cluster()
    a = c.read(c.members[1], b"k")
    b = c.read(c.members[2], b"k")
    assert a == b
    c.stabilize()
    assert c.read_ops[(1, a)].value == c.read_ops[(2, b)].value == b"v4"
    c.members[2].crash()
    c.members[2].restart()
    assert c.read(c.members[2], b"k") != b  # a restart never reuses one at the same member


def test_membership_history_follows_committed_conf_changes() -> None:
    c = _running_cluster()
    lead = c.members[1]
    c.add_member(4)
    for op, node in ((CC_ADD_LEARNER, 4), (CC_PROMOTE, 4), (CC_REMOVE, 2)):
        idx = lead.raft.propose_conf_change(op, node)
        lead.pump()
        c.run_until(lambda: lead.raft.commit >= idx, 50, "conf change committed")
        c.stabilize()
    assert [v for v, _ in c.configs()] == [(1, 2, 3), (1, 2, 3), (1, 2, 3, 4), (1, 3, 4)]
    assert c.configs()[1][1] == (4,)
    c.check_durable_majority()


def test_message_to_a_crashed_member_is_dropped() -> None:
    c = _running_cluster()
    c.members[3].crash()
    before = c.members[3].raft.term
    c.deliver(Message(MsgType.MsgHeartbeat.value, 3, 1, before + 5))
    assert c.members[3].raft.term == before
    c.members[3].restart()
    c.stabilize()
    c.run(30)
    assert c.members[3].sm.index == c.members[1].sm.index
    assert c.members[3].sm.kv == c.members[1].sm.kv


def test_random_faults_draws_vary() -> None:
    draws = {repr(raftsim.random_faults(random.Random(s))) for s in range(50)}
    assert len(draws) > 20
