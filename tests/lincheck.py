"""A linearizability checker for histories of a key-value register.

Each key is an independent register (initial value None), so a history is linearizable iff the
sub-history of every key is (P-compositionality, Herlihy & Wing 1990): the checker runs one search
per key, which keeps the state space small.

The search is the Wing & Gong algorithm with Lowe's memoization: walk the operations in invocation
order, repeatedly choosing one that may take effect next (no other pending operation completed
before it was invoked), apply it to the register model, and backtrack on a contradiction.
A search state is (set of operations already placed, register value); states already explored are
remembered so equivalent interleavings are not searched twice.

Outcomes:
* ``ok``: the operation took effect exactly once between invocation and completion.
* ``fail``: it definitely did not take effect: ignored.
* ``unknown`` (a put whose answer never came, e.g. a timeout): it may take effect at any time after
  its invocation, even after the client gave up, or never. A get whose outcome is not ``ok``
  carries no information and is ignored.

When every put of a key writes a distinct value (the usual way to test a store), the checker
uses the polynomial zone test of Gibbons & Korach ("Testing shared memories", 1997) instead of
the search: each value's write and reads form a cluster whose operations must all be linearized
while that value is in the register; the history is linearizable iff no read precedes its
write, no two "forward" zones overlap and no "backward" zone lies inside a forward zone. It gives
the same answers (tests/test_lincheck.py checks both against a brute-force oracle) and stays fast
on the long, concurrent histories that faults produce.

The search is bounded by ``max_states`` (over all keys together): past it the checker gives up
with ``ok=False``, ``gave_up=True`` and a message saying so, instead of hanging.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass

__all__ = ["CheckResult", "Op", "check"]

_KINDS = ("put", "get")
_OUTCOMES = ("ok", "fail", "unknown")


@dataclass
class Op:
    key: bytes
    kind: str               # "put" | "get"
    value: bytes | None     # put: the value written; get: the value read (None = key absent)
    invoke: float           # time.monotonic() at invocation
    complete: float | None  # time.monotonic() at completion; None if it never completed
    outcome: str            # "ok" | "fail" (definitely not applied) | "unknown" (may have applied)


@dataclass
class CheckResult:
    ok: bool
    key: bytes | None       # the first key whose history is not linearizable
    message: str            # human-readable explanation (or why the search gave up)
    # An addition to the shared API (defaulted, so the three-field form still works): True when
    # the search hit max_states, i.e. the answer is "unknown", not "not linearizable".
    gave_up: bool = False


class _GaveUp(Exception):
    pass


def _validate(i: int, op: Op) -> None:
    if not isinstance(op, Op):
        raise TypeError(f"history[{i}] is {type(op).__name__}, not lincheck.Op")
    if not isinstance(op.key, bytes):
        raise ValueError(f"history[{i}]: key must be bytes, got {op.key!r}")
    if op.kind not in _KINDS:
        raise ValueError(f"history[{i}]: kind must be 'put' or 'get', got {op.kind!r}")
    if op.outcome not in _OUTCOMES:
        raise ValueError(f"history[{i}]: outcome must be one of {_OUTCOMES}, got {op.outcome!r}")
    if op.value is not None and not isinstance(op.value, bytes):
        raise ValueError(f"history[{i}]: value must be bytes or None, got {op.value!r}")
    if op.kind == "put" and op.value is None and op.outcome != "fail":
        raise ValueError(f"history[{i}]: a put needs a bytes value")
    if not isinstance(op.invoke, (int, float)) or math.isnan(op.invoke):
        raise ValueError(f"history[{i}]: invoke must be a number, got {op.invoke!r}")
    if op.complete is not None:
        if not isinstance(op.complete, (int, float)) or math.isnan(op.complete):
            raise ValueError(f"history[{i}]: complete must be a number or None")
        if op.complete < op.invoke:
            raise ValueError(f"history[{i}]: completes ({op.complete}) before it was invoked "
                             f"({op.invoke})")
    elif op.outcome == "ok":
        raise ValueError(f"history[{i}]: an 'ok' operation must have a completion time")


def _describe(op: Op) -> str:
    end = "?" if op.complete is None or op.outcome == "unknown" else f"{op.complete:.6f}"
    if op.kind == "put":
        return f"put({op.value!r}) [{op.outcome}] @[{op.invoke:.6f}, {end}]"
    return f"get() -> {op.value!r} @[{op.invoke:.6f}, {end}]"


def _check_key_zones(ops: list[Op]) -> str | None:
    """The zone test for a key whose puts all write distinct values. None if linearizable."""
    inf = math.inf
    puts = {o.value: o for o in ops if o.kind == "put"}
    reads: dict[bytes | None, list[Op]] = defaultdict(list)
    for o in ops:
        if o.kind == "get":
            reads[o.value].append(o)
    forward: list[tuple[float, float, str]] = []   # (f, s, label): the value holds over [f, s]
    backward: list[tuple[float, float, str]] = []  # (s, f, label): fits at one instant in it
    # The initial value None is written by a virtual put before everything.
    clusters: list[tuple[str, float, float, list[Op]]] = [("initial None", -inf, -inf,
                                                           reads.get(None, []))]
    for v, w in puts.items():
        rs = reads.get(v, [])
        if w.outcome == "unknown":
            if not rs:
                continue  # never observed: it may as well never have taken effect
            clusters.append((_describe(w), w.invoke, inf, rs))
        else:
            clusters.append((_describe(w), w.invoke, w.complete if w.complete is not None
                             else inf, rs))
    for label, w_inv, w_comp, rs in clusters:
        for r in rs:
            if r.complete is not None and r.complete < w_inv:
                return f"{_describe(r)} completed before {label} was invoked"
        f = min([w_comp] + [r.complete if r.complete is not None else inf for r in rs])
        s = max([w_inv] + [r.invoke for r in rs])
        if f < s:
            forward.append((f, s, label))
        else:
            backward.append((s, f, label))
    forward.sort()
    run_s, run_label = -inf, ""
    for f, s, label in forward:
        if f < run_s:
            return (f"the value of {run_label} must stay in the register until {run_s:.6f} "
                    f"(a read of it starts then), but {label} must hold from {f:.6f}: the two "
                    f"overlap")
        if s > run_s:
            run_s, run_label = s, label
    starts = [z[0] for z in forward]
    for s, f, label in backward:
        i = bisect.bisect_left(starts, s) - 1  # the forward zone with the last start before s
        if i >= 0 and forward[i][0] < s and f < forward[i][1]:
            return (f"{label} and its reads must take effect within [{s:.6f}, {f:.6f}], while "
                    f"the register must hold the value of {forward[i][2]} the whole time")
    return None


def _check_key(ops: list[Op], budget: list[int], zones: bool) -> str | None:
    """None if the key's history is linearizable, else an explanation. Raises _GaveUp."""
    ops = sorted(ops, key=lambda o: o.invoke)
    n = len(ops)
    inf = math.inf
    invoke = [o.invoke for o in ops]
    # An unknown put may take effect at any time after invocation: it never completes.
    complete = [inf if (o.outcome == "unknown" or o.complete is None) else o.complete
                for o in ops]
    is_put = [o.kind == "put" for o in ops]
    value = [o.value for o in ops]
    required = 0
    for i, o in enumerate(ops):
        if o.outcome == "ok":
            required |= 1 << i

    # A cheap, readable diagnosis for the commonest violation before any search.
    put_values = [o.value for o in ops if o.kind == "put"]
    written = set(put_values)
    for o in ops:
        if o.kind == "get" and o.value is not None and o.value not in written:
            return f"{_describe(o)} read a value no put ever wrote"
    if zones and len(written) == len(put_values):
        return _check_key_zones(ops)

    seen: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[int, bytes | None]] = [(0, None)]
    best_mask, best_count, best_value = 0, -1, None
    while stack:
        mask, cur = stack.pop()
        if mask & required == required:
            return None
        state = (mask, cur)
        if state in seen:
            continue
        seen.add(state)
        budget[0] -= 1
        if budget[0] < 0:
            raise _GaveUp()
        placed = bin(mask & required).count("1")
        if placed > best_count:
            best_mask, best_count, best_value = mask, placed, cur
        # Candidates: unplaced ops invoked no later than the earliest completion among unplaced
        # ops. Ops are in invocation order, so the scan stops at the first one invoked after that
        # bound: it and all later ones started after some pending op had finished.
        bound = inf
        cands: list[int] = []
        # Skip the placed prefix in one step: the lowest zero bit of mask.
        for i in range((~mask & (mask + 1)).bit_length() - 1, n):
            if mask >> i & 1:
                continue
            if invoke[i] > bound:
                break
            cands.append(i)
            if complete[i] < bound:
                bound = complete[i]
        # Push in reverse so the earliest-invoked candidate is explored first.
        for i in reversed(cands):
            if invoke[i] > bound:
                continue
            if is_put[i]:
                stack.append((mask | 1 << i, value[i]))
            elif value[i] == cur:
                stack.append((mask | 1 << i, cur))

    missing = [ops[i] for i in range(n) if (required >> i & 1) and not (best_mask >> i & 1)]
    shown = ", ".join(_describe(o) for o in missing[:4])
    more = f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""
    return (f"not linearizable: at most {best_count} of {bin(required).count('1')} completed "
            f"operations can be ordered (register then holds {best_value!r}); cannot place "
            f"{shown}{more}")


def check(history: list[Op], *, max_states: int = 1_000_000,
          method: str = "auto") -> CheckResult:
    """Whether `history` is linearizable as a map of independent registers (initial value None).

    `method` "auto" uses the zone test for keys whose puts write distinct values and the search
    otherwise; "search" always searches (tests compare the two).
    Raises ValueError/TypeError on a malformed history (nothing is checked then)."""
    if max_states <= 0:
        raise ValueError("max_states must be positive")
    if method not in ("auto", "search"):
        raise ValueError(f"method must be 'auto' or 'search', got {method!r}")
    for i, op in enumerate(history):
        _validate(i, op)
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    for op in history:
        if op.outcome == "fail" or (op.kind == "get" and op.outcome != "ok"):
            continue
        by_key[op.key].append(op)
    budget = [max_states]
    # Keys in a fixed order so the reported key does not depend on dict/hash order.
    for key in sorted(by_key):
        try:
            why = _check_key(by_key[key], budget, method == "auto")
        except _GaveUp:
            return CheckResult(False, key, f"gave up on key {key!r} ({len(by_key[key])} ops): "
                               f"the search explored more than {max_states} states; the "
                               f"history is too large or too concurrent to decide",
                               gave_up=True)
        if why is not None:
            return CheckResult(False, key, f"key {key!r}: {why}")
    return CheckResult(True, None, f"linearizable ({len(by_key)} keys, "
                       f"{sum(len(v) for v in by_key.values())} ops considered)")
