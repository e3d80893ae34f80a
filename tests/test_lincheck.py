"""Tests of the linearizability checker (tests/lincheck.py)."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from lincheck import CheckResult, Op, check

K = b"k"


def put(v: bytes, t0: float, t1: float | None, outcome: str = "ok", key: bytes = K) -> Op:
    return Op(key, "put", v, t0, t1, outcome)


def get(v: bytes | None, t0: float, t1: float | None, outcome: str = "ok",
        key: bytes = K) -> Op:
    return Op(key, "get", v, t0, t1, outcome)


def assert_ok(h: list[Op]) -> None:
    for method in ("auto", "search"):
        r = check(h, method=method)
        assert r.ok, (method, r.message)
        assert r.key is None and not r.gave_up


def assert_bad(h: list[Op], key: bytes = K) -> CheckResult:
    """Both methods must reject; returns the default method's result."""
    rs = check(h, method="search")
    assert not rs.ok and not rs.gave_up and rs.key == key, rs
    r = check(h)
    assert not r.ok
    assert not r.gave_up, r.message
    assert r.key == key
    assert r.message
    return r


# ------------------------------------------------------------------ accepted histories
def test_empty_history_is_linearizable() -> None:
    assert_ok([])


def test_initial_value_is_none() -> None:
    assert_ok([get(None, 0, 1)])
    assert_bad([get(b"x", 0, 1)])


def test_sequential_history() -> None:
    assert_ok([put(b"1", 0, 1), get(b"1", 2, 3), put(b"2", 4, 5), get(b"2", 6, 7)])


def test_concurrent_read_may_see_old_or_new() -> None:
    for seen in (None, b"1"):
        assert_ok([put(b"1", 0, 10), get(seen, 1, 2)])


def test_concurrent_writes_any_order_but_consistent() -> None:
    # Two overlapping writes, then two sequential reads that agree on the winner.
    for winner in (b"a", b"b"):
        assert_ok([put(b"a", 0, 5), put(b"b", 1, 6), get(winner, 7, 8), get(winner, 9, 10)])


def test_equal_timestamps_count_as_concurrent() -> None:
    # Completion and invocation at the same monotonic instant: either order is allowed.
    assert_ok([put(b"1", 0, 5), get(None, 5, 6)])


def test_read_during_write_then_read_after() -> None:
    assert_ok([put(b"1", 0, 1), put(b"2", 2, 10), get(b"2", 3, 4), get(b"2", 11, 12)])


# ------------------------------------------------------------------ rejected histories
def test_stale_read_after_completed_write() -> None:
    r = assert_bad([put(b"1", 0, 1), put(b"2", 2, 3), get(b"1", 4, 5)])
    assert "b'1'" in r.message


def test_read_of_initial_value_after_completed_write() -> None:
    assert_bad([put(b"1", 0, 1), get(None, 2, 3)])


def test_value_read_before_it_was_written() -> None:
    r = assert_bad([get(b"1", 0, 1), put(b"1", 2, 3)])
    assert "get() -> b'1'" in r.message
    r = check([get(b"1", 0, 1), put(b"1", 2, 3)], method="search")
    assert not r.ok and "cannot place" in r.message


def test_value_never_written() -> None:
    r = assert_bad([put(b"1", 0, 1), get(b"zzz", 2, 3)])
    assert "no put ever wrote" in r.message


def test_readers_disagree_on_order_of_concurrent_writes() -> None:
    # Writes a and b overlap; reader 1 sees a then b, reader 2 (later, sequential) sees b then a.
    h = [put(b"a", 0, 10), put(b"b", 0, 10),
         get(b"a", 11, 12), get(b"b", 13, 14), get(b"a", 15, 16)]
    assert_bad(h)


def test_value_flips_back_without_a_write() -> None:
    assert_bad([put(b"1", 0, 1), put(b"2", 2, 10), get(b"2", 3, 4), get(b"1", 5, 6)])


# ------------------------------------------------------------------ outcomes
def test_unknown_write_may_or_may_not_appear() -> None:
    assert_ok([put(b"1", 0, 1), put(b"2", 2, None, "unknown"), get(b"2", 5, 6)])
    assert_ok([put(b"1", 0, 1), put(b"2", 2, None, "unknown"), get(b"1", 5, 6)])
    # A completion time on an unknown op does not bound it: the write may land after the client
    # gave up waiting (still in the leader's log).
    assert_ok([put(b"2", 2, 3, "unknown"), get(None, 4, 5), get(b"2", 6, 7)])


def test_unknown_write_takes_effect_once() -> None:
    # Seen, then overwritten, then seen again: a single write cannot take effect twice.
    h = [put(b"u", 0, None, "unknown"), get(b"u", 1, 2), put(b"v", 3, 4), get(b"u", 5, 6)]
    assert_bad(h)


def test_unknown_write_cannot_appear_before_invocation() -> None:
    assert_bad([get(b"u", 0, 1), put(b"u", 2, None, "unknown")])


def test_unknown_write_cannot_flicker() -> None:
    # Once observed, it has taken effect: a later read of the old value is stale.
    assert_bad([put(b"1", 0, 1), put(b"2", 2, None, "unknown"), get(b"2", 3, 4),
                get(b"1", 5, 6)])


def test_failed_write_never_appears() -> None:
    assert_ok([put(b"1", 0, 1, "fail"), get(None, 2, 3)])
    assert_bad([put(b"1", 0, 1, "fail"), get(b"1", 2, 3)])


def test_gets_without_ok_outcome_are_ignored() -> None:
    assert_ok([put(b"1", 0, 1), get(b"nonsense", 2, None, "unknown"), get(b"x", 2, 3, "fail")])


# ------------------------------------------------------------------ per key
def test_keys_are_independent() -> None:
    h = [put(b"1", 0, 1, key=b"a"), put(b"2", 0, 1, key=b"b"),
         get(b"1", 2, 3, key=b"a"), get(b"2", 2, 3, key=b"b"), get(None, 2, 3, key=b"c")]
    assert_ok(h)


def test_reports_the_bad_key() -> None:
    h = [put(b"1", 0, 1, key=b"a"), get(b"1", 2, 3, key=b"a"),
         put(b"1", 0, 1, key=b"b"), get(None, 2, 3, key=b"b")]
    r = assert_bad(h, key=b"b")
    assert "b'b'" in r.message


def test_a_value_read_on_another_key_does_not_count() -> None:
    # b"1" was written to key a, not to key b.
    assert_bad([put(b"1", 0, 1, key=b"a"), get(b"1", 2, 3, key=b"b")], key=b"b")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("op, fragment", [
    (Op(K, "delete", b"1", 0, 1, "ok"), "kind"),
    (Op(K, "put", b"1", 0, 1, "maybe"), "outcome"),
    (Op("k", "put", b"1", 0, 1, "ok"), "key must be bytes"),  # type: ignore[arg-type]
    (Op(K, "put", None, 0, 1, "ok"), "bytes value"),
    (Op(K, "put", b"1", 0, None, "ok"), "completion time"),
    (Op(K, "put", b"1", 5, 1, "ok"), "before it was invoked"),
    (Op(K, "get", "1", 0, 1, "ok"), "bytes or None"),  # type: ignore[arg-type]
])
def test_malformed_history_raises_clearly(op: Op, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check([put(b"ok", 0, 1), op])


def test_max_states_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_states"):
        check([], max_states=0)


# ------------------------------------------------------------------ bounded search
def _hard_history(n: int) -> list[Op]:
    # n fully concurrent writes of distinct values and a read of a value nobody could read last:
    # every order of the writes must be ruled out, which is exponential.
    h = [put(bytes([i]), 0, 100, key=K) for i in range(n)]
    h += [get(bytes([i]), 50, 60) for i in range(n)]
    h.append(get(b"\x00", 101, 102))
    h.append(get(b"\x01", 103, 104))
    return h


def test_gives_up_on_huge_history_with_a_clear_message() -> None:
    # This thread's CPU time, not the wall clock: other processes on the cores do not count.
    # A hang guard only (the budget stops it in well under a second).
    t0 = time.thread_time()
    r = check(_hard_history(40), max_states=20_000, method="search")
    assert time.thread_time() - t0 < 10
    assert not r.ok and r.gave_up
    assert r.key == K
    assert "gave up" in r.message and "20000" in r.message


def test_large_sequential_history_is_fast() -> None:
    h: list[Op] = []
    t = 0.0
    for i in range(3000):
        h.append(put(str(i).encode(), t, t + 1, key=bytes([i % 7])))
        h.append(get(str(i).encode(), t + 2, t + 3, key=bytes([i % 7])))
        t += 4
    t0 = time.thread_time()
    r = check(h)
    assert r.ok, r.message
    assert time.thread_time() - t0 < 10  # this thread's CPU: a hang guard, load does not count
    # Fast in effort, not in seconds: even the full search needs no backtracking here, one
    # state per operation; a search that did backtrack would exhaust this budget and give up.
    r = check(h, method="search", max_states=2 * len(h))
    assert r.ok and not r.gave_up, r.message


# ------------------------------------------------------------------ against a brute force oracle
def _brute_force(h: list[Op]) -> bool:
    """Try every order of every admissible subset (all ok ops, any subset of unknown puts)."""
    for key in {o.key for o in h}:
        ops = [o for o in h if o.key == key and o.outcome != "fail"
               and not (o.kind == "get" and o.outcome != "ok")]
        must = [o for o in ops if o.outcome == "ok"]
        maybe = [o for o in ops if o.outcome == "unknown"]
        found = False
        for r in range(len(maybe) + 1):
            for extra in itertools.combinations(maybe, r):
                chosen = must + list(extra)
                for perm in itertools.permutations(chosen):
                    if _legal(perm):
                        found = True
                        break
                if found:
                    break
            if found:
                break
        if not found:
            return False
    return True


def _end(o: Op) -> float:
    return float("inf") if o.outcome == "unknown" or o.complete is None else o.complete


def _legal(perm: tuple[Op, ...]) -> bool:
    for i, a in enumerate(perm):
        for b in perm[i + 1:]:
            if _end(b) < a.invoke:  # b finished before a started, but is ordered after it
                return False
    cur: bytes | None = None
    for o in perm:
        if o.kind == "put":
            cur = o.value
        elif o.value != cur:
            return False
    return True


def _random_history(rng: random.Random, n: int, distinct: bool = False) -> list[Op]:
    h: list[Op] = []
    for j in range(n):
        t0 = rng.randrange(0, 20)
        t1 = t0 + rng.randrange(0, 8)
        key = rng.choice([b"a", b"a", b"b"])
        if rng.random() < 0.5:
            outcome = rng.choice(["ok", "ok", "ok", "unknown", "fail"])
            v = b"%d" % j if distinct else rng.choice([b"1", b"2", b"3"])
            h.append(Op(key, "put", v, t0,
                        None if outcome == "unknown" and rng.random() < 0.5 else t1, outcome))
        else:
            vals = [None] + [b"%d" % i for i in range(n)] if distinct else [None, b"1", b"2", b"3"]
            h.append(Op(key, "get", rng.choice(vals), t0, t1,
                        rng.choice(["ok", "ok", "ok", "unknown"])))
    return h


def test_agrees_with_brute_force_on_random_small_histories() -> None:
    rng = random.Random(20261125)
    verdicts = {True: 0, False: 0}
    for _ in range(400):
        h = _random_history(rng, rng.randrange(1, 7))
        expected = _brute_force(h)
        r = check(h)
        assert r.ok == expected, (h, r.message)
        verdicts[expected] += 1
    # The generator must exercise both answers for this to mean anything.
    assert verdicts[True] > 40 and verdicts[False] > 40, verdicts


@pytest.mark.parametrize("method", ["auto", "search"])
def test_distinct_values_agree_with_brute_force(method: str) -> None:
    # Distinct values take the zone test under "auto": both paths against the oracle.
    rng = random.Random(99)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        h = _random_history(rng, rng.randrange(1, 8), distinct=True)
        expected = _brute_force(h)
        r = check(h, method=method)
        assert r.ok == expected, (h, r.message)
        verdicts[expected] += 1
    assert verdicts[True] > 100 and verdicts[False] > 100, verdicts


def test_zones_and_search_agree_on_medium_histories() -> None:
    # Too big for the oracle: the two methods check each other.
    rng = random.Random(5)
    verdicts = {True: 0, False: 0}
    for _ in range(150):
        h = _register_history(rng, rng.randrange(10, 30), keys=[K], span=3.0)
        reads = [o for o in h if o.kind == "get"]
        if reads and rng.random() < 0.5:
            # Corrupt one read: often (not always) a violation.
            rng.choice(reads).value = rng.choice([o.value for o in h if o.kind == "put"] + [None])
        a, b = check(h), check(h, method="search")
        assert not b.gave_up
        assert a.ok == b.ok, (h, a.message, b.message)
        verdicts[a.ok] += 1
    assert verdicts[True] > 10 and verdicts[False] > 10, verdicts


def _register_history(rng: random.Random, n: int, keys: list[bytes],
                      span: float = 5.0) -> list[Op]:
    """Clients against a real atomic store: each op takes effect at one instant inside its
    interval; some writes lose their answer (unknown) or are never applied (fail)."""
    store: dict[bytes, bytes | None] = {}
    h: list[Op] = []
    for t_eff, j in sorted((rng.uniform(0, 100), j) for j in range(n)):
        key = rng.choice(keys)
        t0 = t_eff - rng.uniform(0, span)
        t1 = t_eff + rng.uniform(0, span)
        if rng.random() < 0.5:
            v = f"{j}".encode()
            r = rng.random()
            if r < 0.1:
                h.append(Op(key, "put", v, t0, None, "unknown"))
                store[key] = v
            elif r < 0.15:
                h.append(Op(key, "put", v, t0, t1, "fail"))
            else:
                h.append(Op(key, "put", v, t0, t1, "ok"))
                store[key] = v
        else:
            h.append(Op(key, "get", store.get(key), t0, t1, "ok"))
    return h


@pytest.mark.parametrize("method", ["auto", "search"])
def test_histories_from_an_atomic_register_are_accepted(method: str) -> None:
    rng = random.Random(7)
    for _ in range(30):
        r = check(_register_history(rng, 60, [b"x", b"y"]), method=method)
        assert r.ok, r.message
