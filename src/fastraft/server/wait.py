"""What a request waits on (a write for its entry to apply, a read batch for its ReadIndex) and
who gets the answer: a ``done`` callback, whatever front end the request came by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastraft.errors import FastraftError

__all__ = ["Done", "Waiter", "ReadBatch"]

# done(error, result): exactly one of them is None. Given by the front end with the request
# (server/kvservice.py); the msgpack listener's is its connection's reply for that request id.
Done = Callable[[FastraftError | None, dict[str, Any] | None], None]


class Waiter:
    """A client write waiting for its entry (index, term) to apply; ``done`` None: an entry
    of the member's own, nobody to answer."""

    __slots__ = ("term", "done", "deadline")

    def __init__(self, term: int, done: Done | None, deadline: float) -> None:
        self.term = term
        self.done = done
        self.deadline = deadline


class ReadBatch:
    """Linearizable reads that arrived in one loop iteration: one ReadIndex round for all."""

    __slots__ = ("ctx", "cbs", "deadline", "leader", "index", "asked", "on_index")

    def __init__(self, ctx: bytes, deadline: float, asked: float = 0.0) -> None:
        self.ctx = ctx
        self.cbs: list[Callable[[FastraftError | None], None]] = []
        self.deadline = deadline
        self.leader = 0
        self.index = 0
        self.asked = asked  # perf_counter() at the ask (the read-index latency metric)
        # Told the read index once the leader confirms it (readiness compares it to applied).
        self.on_index: Callable[[int], None] | None = None
