"""Nothing a peer sends makes ``Raft.step`` raise.

A member's core is fed random well-typed messages (what the wire decoder lets through: every
message type (and two unknown ones), any 64-bit numbers, entries and snapshots of the right shape
but any content, from members, from strangers and from itself) in each role it can be in, with ticks and ready/advance
cycles in between, and must never raise. What it does with the nonsense is not checked here (the
simulator checks the rules); only that a peer cannot crash it.
"""

from __future__ import annotations

import logging
import random

import pytest

import raftsim
from fastraft.raft.core import (
    CC_ADD_LEARNER,
    CC_ADD_VOTER,
    CC_PROMOTE,
    CC_REMOVE,
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
    Message,
    Raft,
    Snapshot,
    encode_conf_change,
)

U64 = (1 << 64) - 1
MESSAGES_PER_ROLE = 1500


def _number(rng: random.Random, near: list[int]) -> int:
    r = rng.random()
    if r < 0.6:
        return min(U64, max(0, rng.choice(near) + rng.randint(-2, 2)))
    if r < 0.8:
        return rng.randint(0, 50)
    return rng.choice([0, 1, 1 << 32, 1 << 62, U64 - 1, U64])


def _entries(rng: random.Random, first: int, term: int, ids: list[int]) -> list[tuple]:
    if rng.random() < 0.3:
        return []
    n = rng.randint(1, 5)
    if rng.random() < 0.2:  # indexes that do not follow the append's previous index
        first = rng.choice([0, first + rng.randint(1, 3), max(0, first - 2), U64])
    out = []
    t = rng.randint(0, max(term, 1))
    for i in range(n):
        t = min(U64, t + rng.choice([0, 0, 1]))
        if rng.random() < 0.15:
            data = encode_conf_change(rng.choice([CC_ADD_VOTER, CC_REMOVE, CC_ADD_LEARNER,
                                                  CC_PROMOTE, 7]), rng.choice(ids))
            etype = ENTRY_CONF_CHANGE
        else:
            data = rng.randbytes(rng.randint(0, 6))
            etype = rng.choice([ENTRY_NORMAL, ENTRY_NORMAL, ENTRY_CONF_CHANGE])
        out.append((min(U64, first + i), t, etype, data))
    return out


def _snapshot(rng: random.Random, near: list[int], ids: list[int]) -> Snapshot | None:
    if rng.random() < 0.3:
        return None
    voters = tuple(rng.sample(ids, rng.randint(0, 3)))
    learners = tuple(rng.sample(ids, rng.randint(0, 2)))
    data = rng.choice([None, b"", rng.randbytes(8)])
    return Snapshot(_number(rng, near), _number(rng, near), voters, learners, data)


def _context(rng: random.Random, r: Raft) -> bytes:
    k = rng.random()
    if k < 0.4:
        return b""
    if k < 0.7:  # shaped like a heartbeat round (round, tick), sometimes one this core sent
        rnd = rng.choice([0, 1, rng.randint(0, 100), U64])
        tick = rng.choice([0, rng.randint(0, 200), U64])
        return rnd.to_bytes(8, "big") + tick.to_bytes(8, "big")
    return rng.randbytes(rng.choice([1, 8, 15, 16, 17, 32]))


def random_message(rng: random.Random, r: Raft, ids: list[int]) -> Message:
    near = [r.term, r.last_index, r.commit, r.first_index, 0]
    term = rng.choice([r.term, r.term, min(U64, r.term + 1), max(0, r.term - 1),
                       _number(rng, near)])
    index = _number(rng, near)
    log_term = _number(rng, near)
    if rng.random() < 0.4 and r.first_index - 1 <= min(index, r.last_index):
        # An append that matches this log, so its entries are looked at.
        index = min(index, r.last_index)
        log_term = r.log.term(index)
    m = Message(rng.randint(0, 13),
                r.id if rng.random() < 0.9 else rng.choice(ids),
                rng.choice(ids),
                term,
                log_term=log_term,
                index=index,
                entries=_entries(rng, min(U64, index + 1), term, ids),
                commit=_number(rng, near),
                reject=rng.random() < 0.3,
                reject_hint=_number(rng, near),
                snapshot=_snapshot(rng, near, ids),
                context=_context(rng, r))
    return m


def _host_round(r: Raft) -> None:
    """What a host does: take the ready, 'persist' it, advance."""
    if r.has_ready():
        rd = r.ready()
        r.advance(rd)


def _in_role(role: str, seed: int) -> Raft:
    logging.disable(logging.CRITICAL)
    try:
        if role == "leader-compacted":
            c = raftsim.Cluster(3, seed=seed, compact_every=5)
        elif role == "learner":
            c = raftsim.Cluster(3, seed=seed, learners=(4,))
        else:
            c = raftsim.Cluster(3, seed=seed, pre_vote=role != "candidate")
        lead = c.elect(1)
        for i in range(12):
            c.propose(lead, b"k", b"v%d" % i)
        c.stabilize()
        if role in ("leader", "leader-compacted"):
            lead.raft.read_index(b"pending")  # a read waiting for its heartbeat round
            return lead.raft
        if role == "follower":
            return c.members[2].raft
        if role == "learner":
            return c.members[4].raft
        r = c.members[3].raft
        r.campaign()  # isolated from here on: it stays (pre-)candidate
        assert r.role == {"candidate": "candidate", "pre-candidate": "pre-candidate"}[role]
        return r
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("role", ["follower", "pre-candidate", "candidate", "leader",
                                  "leader-compacted", "learner"])
def test_no_message_makes_step_raise(role: str) -> None:
    """step() must not raise whatever a peer sends (the host runs it on every received
    message); each role is fed random messages with ticks and ready cycles in between."""
    rng = random.Random(f"fuzz-{role}")
    r = _in_role(role, seed=31)
    ids = [1, 2, 3, 4, 5, 99, 1 << 63, U64, r.id]
    roles_seen = set()
    logging.disable(logging.CRITICAL)
    try:
        for i in range(MESSAGES_PER_ROLE):
            m = random_message(rng, r, ids)
            try:
                r.step(m)
                if rng.random() < 0.3:
                    r.tick()
                if rng.random() < 0.5:
                    _host_round(r)
            except Exception as e:
                raise AssertionError(f"message {i} ({m!r}) to a {r.role} made the core raise "
                                     f"{e!r}") from e
            roles_seen.add(r.role)
    finally:
        logging.disable(logging.NOTSET)
    assert roles_seen  # it ran
