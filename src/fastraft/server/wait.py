"""What a request waits on (a write for its entry to apply, a read batch for its ReadIndex) and
who gets the answer: a :class:`Responder`, the one thing the node knows of a front end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastraft.errors import FastraftError

__all__ = ["Responder", "Waiter", "ReadBatch"]


class Responder(Protocol):
    """One client's connection as the node and the watch hub see it, whatever the front end
    (today the msgpack listener's Responder; a gRPC stream could be another):
    ``reply`` queues an answer (error or result map), ``flush`` writes what is queued,
    ``buffered`` is what the client has not read yet."""

    closed: bool

    def reply(self, req_id: int, error: Any, result: dict[str, Any] | None) -> None: ...

    def flush(self) -> None: ...

    def buffered(self) -> int: ...


class Waiter:
    """A client write waiting for its entry (index, term) to apply."""

    __slots__ = ("term", "conn", "req_id", "deadline")

    def __init__(self, term: int, conn: Responder | None, req_id: int,
                 deadline: float) -> None:
        self.term = term
        self.conn = conn
        self.req_id = req_id
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
