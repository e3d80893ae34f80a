"""What a request waits on: a write for its entry to apply, a read batch for its ReadIndex."""

from __future__ import annotations

from collections.abc import Callable

from fastraft.errors import FastraftError
from fastraft.net.listener import ClientConnection

__all__ = ["Waiter", "ReadBatch"]


class Waiter:
    """A client write waiting for its entry (index, term) to apply."""

    __slots__ = ("term", "conn", "req_id", "deadline")

    def __init__(self, term: int, conn: ClientConnection | None, req_id: int,
                 deadline: float) -> None:
        self.term = term
        self.conn = conn
        self.req_id = req_id
        self.deadline = deadline


class ReadBatch:
    """Linearizable reads that arrived in one loop iteration: one ReadIndex round for all."""

    __slots__ = ("ctx", "cbs", "deadline", "leader", "index")

    def __init__(self, ctx: bytes, deadline: float) -> None:
        self.ctx = ctx
        self.cbs: list[Callable[[FastraftError | None], None]] = []
        self.deadline = deadline
        self.leader = 0
        self.index = 0
